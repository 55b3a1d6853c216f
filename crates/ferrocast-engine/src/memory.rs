//! The in-memory engine: one node, same semantics as the Redis engine.
//!
//! History streams, epochs, idempotency keys and presence live in sharded maps. A
//! publication is appended and handed to the node's [`EventHandler`] under the channel's
//! shard lock, so subscribers see publications in offset order.

use crate::{
    Broker, Controller, Engine, EngineError, EventHandler, HistoryFilter, HistoryResult,
    PresenceManager, PresenceStats, PublishOptions, new_epoch,
};
use async_trait::async_trait;
use ferrocast_protocol::envelope::{ControlMessage, NodeInfo};
use ferrocast_protocol::{ClientInfo, Publication, StreamPosition};
use parking_lot::Mutex;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

struct Stream {
    epoch: String,
    top: u64,
    publications: VecDeque<Publication>,
    expires_at: Option<Instant>,
}

impl Stream {
    fn new() -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            publications: VecDeque::new(),
            expires_at: None,
        }
    }

    fn drop_if_expired(&mut self, now: Instant) {
        if self.expires_at.is_some_and(|t| t <= now) {
            self.publications.clear();
            self.expires_at = None;
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

#[derive(Default)]
struct Shard {
    streams: HashMap<String, Stream>,
    idempotency: HashMap<(String, String), (Instant, StreamPosition)>,
    presence: HashMap<String, HashMap<String, ClientInfo>>,
}

/// The embedded single-node engine.
pub struct MemoryEngine {
    shards: Box<[Mutex<Shard>]>,
    handler: OnceLock<Arc<dyn EventHandler>>,
    node: Mutex<Option<NodeInfo>>,
    users: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEngine {
    /// A new empty engine.
    pub fn new() -> Self {
        MemoryEngine {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            handler: OnceLock::new(),
            node: Mutex::new(None),
            users: Mutex::new(HashMap::new()),
        }
    }

    fn shard(&self, channel: &str) -> &Mutex<Shard> {
        let mut h = DefaultHasher::new();
        channel.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Drops expired history and idempotency keys. Called periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            for stream in s.streams.values_mut() {
                stream.drop_if_expired(now);
            }
            s.idempotency.retain(|_, (until, _)| *until > now);
        }
        let mut users = self.users.lock();
        for conns in users.values_mut() {
            conns.retain(|_, until| *until > now);
        }
        users.retain(|_, conns| !conns.is_empty());
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    async fn start(&self, handler: Arc<dyn EventHandler>) -> Result<(), EngineError> {
        self.handler
            .set(handler)
            .map_err(|_| EngineError::Internal("engine started twice".into()))
    }

    fn is_ready(&self) -> bool {
        true
    }
}

#[async_trait]
impl Broker for MemoryEngine {
    async fn publish(
        &self,
        channel: &str,
        mut publication: Publication,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, EngineError> {
        let now = Instant::now();
        let mut shard = self.shard(channel).lock();
        if let Some(key) = &opts.idempotency_key {
            let k = (channel.to_string(), key.clone());
            if let Some((until, pos)) = shard.idempotency.get(&k)
                && *until > now
            {
                return Ok(pos.clone());
            }
        }
        let mut epoch = String::new();
        let position = if opts.uses_history() {
            let stream = shard
                .streams
                .entry(channel.to_string())
                .or_insert_with(Stream::new);
            stream.drop_if_expired(now);
            stream.top += 1;
            publication.offset = stream.top;
            stream.publications.push_back(publication.clone());
            while stream.publications.len() > opts.history_size {
                stream.publications.pop_front();
            }
            stream.expires_at = Some(now + opts.history_ttl);
            epoch = stream.epoch.clone();
            stream.position()
        } else {
            publication.offset = 0;
            StreamPosition::default()
        };
        if let Some(key) = &opts.idempotency_key {
            let window = if opts.idempotency_window.is_zero() {
                Duration::from_secs(300)
            } else {
                opts.idempotency_window
            };
            shard.idempotency.insert(
                (channel.to_string(), key.clone()),
                (now + window, position.clone()),
            );
        }
        if let Some(h) = self.handler.get() {
            h.on_publication(channel, &publication, &epoch, opts.trace.as_deref());
            if opts.feed.is_some() {
                h.on_feed_publication(channel, &publication, opts.trace.as_deref());
            }
        }
        Ok(position)
    }

    async fn publish_join(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        let _order = self.shard(channel).lock();
        if let Some(h) = self.handler.get() {
            h.on_join(channel, info);
        }
        Ok(())
    }

    async fn publish_leave(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        let _order = self.shard(channel).lock();
        if let Some(h) = self.handler.get() {
            h.on_leave(channel, info);
        }
        Ok(())
    }

    async fn subscribe(&self, _channel: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn unsubscribe(&self, _channel: &str) -> Result<(), EngineError> {
        Ok(())
    }

    async fn history(
        &self,
        channel: &str,
        filter: HistoryFilter,
    ) -> Result<HistoryResult, EngineError> {
        let now = Instant::now();
        let mut shard = self.shard(channel).lock();
        let stream = shard
            .streams
            .entry(channel.to_string())
            .or_insert_with(Stream::new);
        stream.drop_if_expired(now);
        let position = stream.position();
        if let Some(since) = &filter.since
            && since.epoch != stream.epoch
        {
            return Err(EngineError::UnrecoverablePosition);
        }
        let limit = if filter.limit < 0 {
            usize::MAX
        } else {
            filter.limit as usize
        };
        let mut publications = Vec::new();
        if limit > 0 {
            let pubs = &stream.publications;
            match (&filter.since, filter.reverse) {
                (None, false) => publications.extend(pubs.iter().take(limit).cloned()),
                (None, true) => publications.extend(pubs.iter().rev().take(limit).cloned()),
                (Some(s), false) => publications.extend(
                    pubs.iter()
                        .filter(|p| p.offset > s.offset)
                        .take(limit)
                        .cloned(),
                ),
                (Some(s), true) => publications.extend(
                    pubs.iter()
                        .rev()
                        .filter(|p| p.offset < s.offset)
                        .take(limit)
                        .cloned(),
                ),
            }
        }
        Ok(HistoryResult {
            publications,
            position,
        })
    }

    async fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        let mut shard = self.shard(channel).lock();
        if let Some(s) = shard.streams.get_mut(channel) {
            s.publications.clear();
            s.expires_at = None;
        }
        Ok(())
    }
}

#[async_trait]
impl PresenceManager for MemoryEngine {
    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        _ttl: Duration,
    ) -> Result<(), EngineError> {
        let mut shard = self.shard(channel).lock();
        shard
            .presence
            .entry(channel.to_string())
            .or_default()
            .insert(info.client.clone(), info.clone());
        Ok(())
    }

    async fn remove_presence(&self, channel: &str, client_id: &str) -> Result<(), EngineError> {
        let mut shard = self.shard(channel).lock();
        if let Some(m) = shard.presence.get_mut(channel) {
            m.remove(client_id);
            if m.is_empty() {
                shard.presence.remove(channel);
            }
        }
        Ok(())
    }

    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError> {
        let shard = self.shard(channel).lock();
        Ok(shard.presence.get(channel).cloned().unwrap_or_default())
    }

    async fn add_user_connection(
        &self,
        user: &str,
        client: &str,
        ttl: Duration,
        limit: u32,
    ) -> Result<bool, EngineError> {
        let now = Instant::now();
        let mut users = self.users.lock();
        let conns = users.entry(user.to_string()).or_default();
        conns.retain(|_, until| *until > now);
        if limit > 0 && conns.len() >= limit as usize && !conns.contains_key(client) {
            return Ok(false);
        }
        conns.insert(client.to_string(), now + ttl);
        Ok(true)
    }

    async fn remove_user_connection(&self, user: &str, client: &str) -> Result<(), EngineError> {
        let mut users = self.users.lock();
        if let Some(conns) = users.get_mut(user) {
            conns.remove(client);
            if conns.is_empty() {
                users.remove(user);
            }
        }
        Ok(())
    }

    async fn refresh_user_connections(
        &self,
        connections: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), EngineError> {
        let until = Instant::now() + ttl;
        let mut users = self.users.lock();
        for (user, client) in connections {
            users
                .entry(user.clone())
                .or_default()
                .insert(client.clone(), until);
        }
        Ok(())
    }

    async fn user_status(&self, users: &[String]) -> Result<Vec<bool>, EngineError> {
        let now = Instant::now();
        let map = self.users.lock();
        Ok(users
            .iter()
            .map(|u| map.get(u).is_some_and(|c| c.values().any(|t| *t > now)))
            .collect())
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, EngineError> {
        let shard = self.shard(channel).lock();
        let Some(m) = shard.presence.get(channel) else {
            return Ok(PresenceStats::default());
        };
        let users: HashSet<&str> = m.values().map(|i| i.user.as_str()).collect();
        Ok(PresenceStats {
            num_clients: m.len() as u32,
            num_users: users.len() as u32,
        })
    }
}

#[async_trait]
impl Controller for MemoryEngine {
    async fn publish_control(&self, message: &ControlMessage) -> Result<(), EngineError> {
        match message {
            ControlMessage::Node(info) => *self.node.lock() = Some(info.clone()),
            ControlMessage::NodeLeft { .. } => *self.node.lock() = None,
            other => {
                if let Some(h) = self.handler.get() {
                    h.on_control(other.clone());
                }
            }
        }
        Ok(())
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        self.node.lock().iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_protocol::Payload;

    fn publication(n: u32) -> Publication {
        Publication {
            data: Payload::json(bytes::Bytes::from(n.to_string())).unwrap(),
            info: None,
            offset: 0,
            tags: None,
            time: 0,
            channel: None,
        }
    }

    fn with_history(size: usize) -> PublishOptions {
        PublishOptions {
            history_size: size,
            history_ttl: Duration::from_secs(60),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn history_offsets_trim_and_since() {
        let e = MemoryEngine::new();
        for i in 1..=5 {
            let pos = e
                .publish("c", publication(i), &with_history(3))
                .await
                .unwrap();
            assert_eq!(pos.offset, i as u64);
        }
        let all = e
            .history(
                "c",
                HistoryFilter {
                    limit: -1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let offsets: Vec<u64> = all.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5]);
        let since = e
            .history(
                "c",
                HistoryFilter {
                    limit: -1,
                    since: Some(StreamPosition {
                        offset: 3,
                        epoch: all.position.epoch.clone(),
                    }),
                    reverse: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(since.publications.len(), 2);
        let rev = e
            .history(
                "c",
                HistoryFilter {
                    limit: 2,
                    reverse: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(rev.publications[0].offset, 5);
        let bad = e
            .history(
                "c",
                HistoryFilter {
                    limit: -1,
                    since: Some(StreamPosition {
                        offset: 1,
                        epoch: "other".into(),
                    }),
                    reverse: false,
                },
            )
            .await;
        assert!(matches!(bad, Err(EngineError::UnrecoverablePosition)));
    }

    #[tokio::test]
    async fn idempotent_publish_applies_once() {
        let e = MemoryEngine::new();
        let mut opts = with_history(10);
        opts.idempotency_key = Some("k".into());
        let a = e.publish("c", publication(1), &opts).await.unwrap();
        let b = e.publish("c", publication(2), &opts).await.unwrap();
        assert_eq!(a, b);
        let h = e
            .history(
                "c",
                HistoryFilter {
                    limit: -1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(h.publications.len(), 1);
    }

    #[tokio::test]
    async fn presence_counts_users() {
        let e = MemoryEngine::new();
        for (c, u) in [("a", "1"), ("b", "1"), ("c", "2")] {
            let info = ClientInfo {
                user: u.into(),
                client: c.into(),
                ..Default::default()
            };
            e.add_presence("ch", &info, Duration::from_secs(60))
                .await
                .unwrap();
        }
        let s = e.presence_stats("ch").await.unwrap();
        assert_eq!((s.num_clients, s.num_users), (3, 2));
        e.remove_presence("ch", "a").await.unwrap();
        assert_eq!(e.presence("ch").await.unwrap().len(), 2);
    }
}
