//! The local hub: which connections this node holds, which users they belong to and
//! which channels (and wildcard patterns) they follow. This is where a publication fans
//! out: it is encoded once and the same bytes are queued to every local subscriber.

use crate::control::{ClientHandle, SessionControl};
use crate::metrics as m;
use crate::stats::{ChannelCounters, ChannelStat};
use crate::subscriber::{Delivery, Subscriber};
use crate::wildcards::{Pattern, PatternIndex};
use bytes::Bytes;
use ferrocast_protocol::{
    ClientInfo, Disconnect, Publication, PushBody, PushFrames, StreamPosition,
};
use parking_lot::RwLock;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const SHARDS: usize = 32;

#[derive(Default)]
struct ChannelShard {
    channels: HashMap<String, ChannelSubs>,
}

/// The local subscribers of one channel, by client id, and its counters.
#[derive(Default)]
struct ChannelSubs {
    subs: HashMap<String, Arc<Subscriber>>,
    counters: Arc<ChannelCounters>,
}

impl std::ops::Deref for ChannelSubs {
    type Target = HashMap<String, Arc<Subscriber>>;
    fn deref(&self) -> &Self::Target {
        &self.subs
    }
}

impl std::ops::DerefMut for ChannelSubs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.subs
    }
}

#[derive(Default)]
struct ClientShard {
    clients: HashMap<String, Arc<ClientHandle>>,
    users: HashMap<String, HashSet<String>>,
}

/// Counts of what the hub holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Connections.
    pub clients: usize,
    /// Distinct users.
    pub users: usize,
    /// Channels with at least one local subscriber.
    pub channels: usize,
    /// Subscriptions.
    pub subscriptions: usize,
}

/// The local connection and subscription index (sharded, no global lock).
pub struct Hub {
    channel_shards: Box<[RwLock<ChannelShard>]>,
    client_shards: Box<[RwLock<ClientShard>]>,
    clients: AtomicUsize,
    subscriptions: AtomicUsize,
    patterns: RwLock<PatternIndex>,
    /// Wildcard subscriptions held: publications skip the pattern index while it is 0.
    pattern_subscriptions: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

fn shard_of(key: &str) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

/// The push encoded for the subscriber's protocol. A push that cannot be encoded for it
/// (a binary payload for a JSON client) closes the connection with 3506, as Centrifugo
/// does: the client could not parse the frame.
fn frame_for<'f>(
    frames: &'f PushFrames<'_>,
    sub: &Subscriber,
    refused: &mut usize,
) -> Option<&'f Bytes> {
    match frames.get(sub.client.protocol) {
        Ok(frame) => Some(frame),
        Err(_) => {
            sub.client.outbox.close(Disconnect::INAPPROPRIATE_PROTOCOL);
            *refused += 1;
            None
        }
    }
}

/// Records what a fan-out encoded and whom it had to close.
fn encoded(frames: &PushFrames<'_>, channel: &str, refused: usize) {
    for protocol in frames.encoded() {
        m::push_encoded(protocol.name());
    }
    if refused > 0 {
        tracing::warn!(
            channel,
            connections = refused,
            "binary payload for JSON clients: closed with 3506 (inappropriate protocol)"
        );
        m::inappropriate_protocol_closed(refused);
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Hub {
            channel_shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            client_shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            clients: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            patterns: RwLock::default(),
            pattern_subscriptions: AtomicUsize::new(0),
        }
    }

    /// Registers a connected client.
    pub fn add_client(&self, client: Arc<ClientHandle>) {
        {
            let mut s = self.client_shards[shard_of(&client.id)].write();
            s.clients.insert(client.id.clone(), client.clone());
        }
        let mut s = self.client_shards[shard_of(&client.user)].write();
        s.users
            .entry(client.user.clone())
            .or_default()
            .insert(client.id.clone());
        self.clients.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a client.
    pub fn remove_client(&self, client: &ClientHandle) {
        let removed = {
            let mut s = self.client_shards[shard_of(&client.id)].write();
            s.clients.remove(&client.id).is_some()
        };
        if !removed {
            return;
        }
        let mut s = self.client_shards[shard_of(&client.user)].write();
        if let Some(set) = s.users.get_mut(&client.user) {
            set.remove(&client.id);
            if set.is_empty() {
                s.users.remove(&client.user);
            }
        }
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// The connections of a user on this node.
    pub fn user_clients(&self, user: &str) -> Vec<Arc<ClientHandle>> {
        let ids: Vec<String> = {
            let s = self.client_shards[shard_of(user)].read();
            s.users
                .get(user)
                .map(|c| c.iter().cloned().collect())
                .unwrap_or_default()
        };
        ids.iter().filter_map(|id| self.client(id)).collect()
    }

    /// A connection by client id.
    pub fn client(&self, id: &str) -> Option<Arc<ClientHandle>> {
        self.client_shards[shard_of(id)]
            .read()
            .clients
            .get(id)
            .cloned()
    }

    /// Every connection (for drain).
    pub fn all_clients(&self) -> Vec<Arc<ClientHandle>> {
        let mut out = Vec::with_capacity(self.clients.load(Ordering::Relaxed));
        for shard in self.client_shards.iter() {
            out.extend(shard.read().clients.values().cloned());
        }
        out
    }

    /// Adds a subscriber; returns true when it is the channel's first local subscriber.
    pub fn add_subscriber(&self, channel: &str, sub: Arc<Subscriber>) -> bool {
        let mut s = self.channel_shards[shard_of(channel)].write();
        let subs = s.channels.entry(channel.to_string()).or_default();
        let first = subs.is_empty();
        sub.count_drops_in(&subs.counters);
        if subs.insert(sub.client.id.clone(), sub).is_none() {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Removes a subscriber; returns true when the channel has no local subscriber left.
    pub fn remove_subscriber(&self, channel: &str, client_id: &str) -> bool {
        let mut s = self.channel_shards[shard_of(channel)].write();
        let Some(subs) = s.channels.get_mut(channel) else {
            return false;
        };
        if subs.remove(client_id).is_some() {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        if subs.is_empty() {
            s.channels.remove(channel);
            true
        } else {
            false
        }
    }

    /// Adds a wildcard subscriber of `pattern` (named `channel`); returns true when it is
    /// the first of its namespace.
    pub fn add_pattern_subscriber(
        &self,
        channel: &str,
        pattern: &Pattern,
        sub: Arc<Subscriber>,
    ) -> bool {
        let mut index = self.patterns.write();
        let first = index.add(channel, pattern, sub);
        self.sync_pattern_count(&index);
        first
    }

    /// Removes a wildcard subscriber of `pattern` (named `channel`); returns true when its
    /// namespace has none left.
    pub fn remove_pattern_subscriber(
        &self,
        channel: &str,
        pattern: &Pattern,
        client_id: &str,
    ) -> bool {
        let mut index = self.patterns.write();
        let last = index.remove(channel, pattern, client_id);
        self.sync_pattern_count(&index);
        last
    }

    fn sync_pattern_count(&self, index: &PatternIndex) {
        let before = self
            .pattern_subscriptions
            .swap(index.len(), Ordering::Relaxed);
        let after = index.len();
        if after > before {
            self.subscriptions
                .fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.subscriptions
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Whether a namespace has local wildcard subscribers.
    pub fn has_pattern_subscribers(&self, namespace: &str) -> bool {
        self.patterns.read().has_namespace(namespace)
    }

    /// Fans a publication of the concrete `channel` out to the local wildcard
    /// subscriptions matching it: each push names its pattern (the channel the client
    /// subscribed) and carries `channel` in the publication; one encode per pattern and
    /// protocol. Returns the number of subscribers reached.
    pub fn broadcast_to_patterns(&self, channel: &str, publication: &Publication) -> usize {
        if self.pattern_subscriptions.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let started = Instant::now();
        let mut concrete = publication.clone();
        concrete.channel = Some(channel.to_string());
        concrete.offset = 0;
        let body = PushBody::Pub(&concrete);
        let mut n = 0;
        let index = self.patterns.read();
        index.matching(channel, |pattern, subs| {
            let frames = PushFrames::new(pattern, &body);
            let mut refused = 0;
            for sub in subs.values() {
                if let Some(frame) = frame_for(&frames, sub, &mut refused) {
                    sub.deliver(0, "", frame);
                }
            }
            encoded(&frames, pattern, refused);
            n += subs.len();
        });
        drop(index);
        if n > 0 {
            m::fanout(n, started.elapsed());
        }
        n
    }

    /// Whether a channel has local subscribers.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        self.channel_shards[shard_of(channel)]
            .read()
            .channels
            .contains_key(channel)
    }

    /// Fans a publication out to every local subscriber of `channel`: at most one encode
    /// per protocol, shared bytes, a non-blocking queue push per subscriber. A subscriber
    /// for which this publication is not the next one it expects is sent to recover
    /// instead. Returns the number of local subscribers of the channel.
    pub fn broadcast_publication(
        &self,
        channel: &str,
        publication: &Publication,
        epoch: &str,
    ) -> usize {
        let started = Instant::now();
        let mut behind = Vec::new();
        let n = {
            let s = self.channel_shards[shard_of(channel)].read();
            let Some(subs) = s.channels.get(channel) else {
                return 0;
            };
            let body = PushBody::Pub(publication);
            let frames = PushFrames::new(channel, &body);
            let mut refused = 0;
            let (mut delivered, mut dropped) = (0, 0);
            for (id, sub) in subs.iter() {
                let Some(frame) = frame_for(&frames, sub, &mut refused) else {
                    continue;
                };
                match sub.deliver(publication.offset, epoch, frame) {
                    Delivery::Gap => behind.push(id.clone()),
                    Delivery::Sent | Delivery::Held => delivered += 1,
                    Delivery::Duplicate => {}
                    Delivery::Dropped => dropped += 1,
                }
            }
            subs.counters.record(delivered, refused as u64 + dropped);
            encoded(&frames, channel, refused);
            subs.len()
        };
        m::fanout(n, started.elapsed());
        if !behind.is_empty() {
            tracing::info!(
                channel,
                subscribers = behind.len(),
                offset = publication.offset,
                "offset gap: subscribers recover"
            );
            self.recover(channel, &behind);
        }
        n
    }

    /// Stops delivering `channel` to these clients and tells their sessions to recover.
    pub fn recover(&self, channel: &str, clients: &[String]) {
        let removed: Vec<Arc<Subscriber>> = {
            let mut s = self.channel_shards[shard_of(channel)].write();
            let Some(subs) = s.channels.get_mut(channel) else {
                return;
            };
            let removed = clients.iter().filter_map(|id| subs.remove(id)).collect();
            if subs.is_empty() {
                s.channels.remove(channel);
            }
            removed
        };
        self.subscriptions
            .fetch_sub(removed.len(), Ordering::Relaxed);
        for sub in removed {
            sub.client.control(
                SessionControl::InsufficientState {
                    channel: channel.to_string(),
                },
                Disconnect::INSUFFICIENT_STATE,
            );
        }
    }

    /// After the engine may have missed publications: subscribers behind `position` (or
    /// on another epoch) recover; the others are up to date and stay.
    pub fn check_position(&self, channel: &str, position: &StreamPosition) {
        let behind: Vec<String> = {
            let s = self.channel_shards[shard_of(channel)].read();
            let Some(subs) = s.channels.get(channel) else {
                return;
            };
            subs.iter()
                .filter(|(_, sub)| sub.is_behind(position))
                .map(|(id, _)| id.clone())
                .collect()
        };
        if !behind.is_empty() {
            tracing::info!(
                channel,
                subscribers = behind.len(),
                "subscribers behind the stream recover"
            );
            self.recover(channel, &behind);
        }
    }

    /// Sends a join or leave push to the subscribers of `channel` that asked for them.
    pub fn broadcast_join_leave(&self, channel: &str, info: &ClientInfo, join: bool) {
        let s = self.channel_shards[shard_of(channel)].read();
        let Some(subs) = s.channels.get(channel) else {
            return;
        };
        let body = if join {
            PushBody::Join(info)
        } else {
            PushBody::Leave(info)
        };
        let frames = PushFrames::new(channel, &body);
        let (mut sent, mut refused) = (0, 0);
        for sub in subs.values().filter(|s| s.join_leave) {
            if let Some(frame) = frame_for(&frames, sub, &mut refused) {
                let _ = sub.deliver(0, "", frame);
                sent += 1;
            }
        }
        encoded(&frames, channel, refused);
        m::pushes_sent(if join { "join" } else { "leave" }, sent);
    }

    /// Stops delivering `channel` to every subscriber that can recover and tells their
    /// sessions to do so (subscriptions without a stream position keep at-most-once
    /// delivery and stay).
    pub fn insufficient_state(&self, channel: &str) {
        let recoverable: Vec<String> = {
            let s = self.channel_shards[shard_of(channel)].read();
            let Some(subs) = s.channels.get(channel) else {
                return;
            };
            subs.iter()
                .filter(|(_, sub)| sub.recoverable)
                .map(|(id, _)| id.clone())
                .collect()
        };
        self.recover(channel, &recoverable);
    }

    /// Clients addressed by a control message: one client, or all of a user's.
    pub fn addressed(&self, user: &str, client: &str) -> Vec<Arc<ClientHandle>> {
        if user.is_empty() {
            return self.client(client).into_iter().collect();
        }
        self.user_clients(user)
            .into_iter()
            .filter(|c| client.is_empty() || c.id == client)
            .collect()
    }

    /// Every (user, client) pair held here.
    pub fn user_connections(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for shard in self.client_shards.iter() {
            out.extend(
                shard
                    .read()
                    .clients
                    .values()
                    .filter(|c| !c.user.is_empty())
                    .map(|c| (c.user.clone(), c.id.clone())),
            );
        }
        out
    }

    /// Local channels and their local subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for shard in self.channel_shards.iter() {
            out.extend(
                shard
                    .read()
                    .channels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len())),
            );
        }
        out
    }

    /// Statistics of the local channels matching `filter`.
    pub fn channel_stats(&self, filter: impl Fn(&str) -> bool) -> Vec<ChannelStat> {
        let mut out = Vec::new();
        for shard in self.channel_shards.iter() {
            let s = shard.read();
            for (name, subs) in &s.channels {
                if filter(name) {
                    out.push(subs.counters.snapshot(name, subs.len() as u64));
                }
            }
        }
        out
    }

    /// Computes every local channel's rates over the `elapsed` time since the last call.
    pub fn sample_channel_stats(&self, elapsed: std::time::Duration) {
        for shard in self.channel_shards.iter() {
            for subs in shard.read().channels.values() {
                subs.counters.sample(elapsed);
            }
        }
    }

    /// The local channels each of `clients` is subscribed to. Scans every channel: for
    /// diagnostics (`connection_health`), not for hot paths.
    pub fn subscriptions_of(&self, clients: &[&str]) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for shard in self.channel_shards.iter() {
            for (channel, subs) in shard.read().channels.iter() {
                for id in clients.iter().filter(|id| subs.contains_key(**id)) {
                    out.entry(id.to_string()).or_default().push(channel.clone());
                }
            }
        }
        out
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        let mut users = 0;
        let mut channels = 0;
        for shard in self.client_shards.iter() {
            users += shard.read().users.len();
        }
        for shard in self.channel_shards.iter() {
            channels += shard.read().channels.len();
        }
        HubStats {
            clients: self.clients.load(Ordering::Relaxed),
            users,
            channels,
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
        }
    }
}
