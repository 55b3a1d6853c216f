//! Pub/sub workers: where publications from Redis enter a node.
//!
//! Each Redis instance gets a few pub/sub connections; a channel always goes through the
//! same one, so its messages stay in order. A worker batches subscribe and unsubscribe
//! requests into single commands, pings its connection, reconnects with backoff and then
//! resubscribes. It does not check offsets itself: each publication goes to the node with
//! its offset and epoch, and each subscription checks them (the node's `subscriber`
//! module), so an offset gap or an epoch change makes that subscriber recover from
//! history. After a lost connection the worker resubscribes and reports each followed
//! channel's current stream position (`on_stream_position`), or, when it cannot read it,
//! that the channel's subscribers must recover (`on_insufficient_state`).

use super::Inner;
use super::conn::Target;
use super::keys::Keys;
use super::link::{self, ClusterLink, Link, Messages};
use crate::{EngineError, feed_namespace};
use ferrocast_protocol::envelope::{ControlMessage, Envelope, decode_message};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most subscribe/unsubscribe requests combined into one command.
const MAX_BATCH: usize = 512;
/// Queue of pending requests per worker.
const REQUEST_QUEUE: usize = 4096;
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Follow or stop following a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// SUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE (skipped if the node got subscribers again meanwhile).
    Unsubscribe,
}

struct Request {
    channel: String,
    op: Op,
    ack: oneshot::Sender<Result<(), EngineError>>,
}

/// The handle of one worker.
pub struct Worker {
    tx: mpsc::Sender<Request>,
    connected: Arc<AtomicBool>,
}

impl Worker {
    /// Starts a worker on `target`; `control` also subscribes the control channel.
    pub fn spawn(
        target: Target,
        keys: Keys,
        inner: Weak<Inner>,
        shard: usize,
        control: bool,
    ) -> Worker {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let state = WorkerState {
            target,
            kept: None,
            keys,
            inner,
            shard,
            control,
            connected: connected.clone(),
            subscribed: HashSet::new(),
            orphans: Vec::new(),
        };
        tokio::spawn(state.run(rx));
        Worker { tx, connected }
    }

    /// Whether the worker's connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Asks the worker to (un)subscribe and waits for Redis to confirm.
    pub async fn request(&self, channel: &str, op: Op) -> Result<(), EngineError> {
        let (ack, done) = oneshot::channel();
        let req = Request {
            channel: channel.to_string(),
            op,
            ack,
        };
        self.tx
            .send(req)
            .await
            .map_err(|_| EngineError::Internal("pub/sub worker stopped".into()))?;
        match tokio::time::timeout(Duration::from_secs(5), done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EngineError::Unavailable(
                "pub/sub worker dropped request".into(),
            )),
            Err(_) => Err(EngineError::Unavailable("pub/sub request timed out".into())),
        }
    }
}

struct WorkerState {
    target: Target,
    /// A cluster connection, kept across link losses.
    kept: Option<ClusterLink>,
    keys: Keys,
    inner: Weak<Inner>,
    shard: usize,
    control: bool,
    connected: Arc<AtomicBool>,
    /// Broker channels this worker follows (kept across reconnects).
    subscribed: HashSet<String>,
    /// Channels whose subscribers were all sent away to recover: unsubscribe them.
    orphans: Vec<String>,
}

enum SessionEnd {
    /// The link was lost: reconnect.
    Lost,
    /// The engine is gone: stop.
    Exit,
}

impl WorkerState {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut backoff = Duration::from_millis(100);
        let mut first = true;
        loop {
            if self.inner.upgrade().is_none() {
                return;
            }
            let connect = tokio::time::timeout(
                Duration::from_secs(2),
                link::open(&self.target, &mut self.kept),
            );
            let (mut sink, mut stream) = match connect.await {
                Ok(Ok(p)) => p,
                _ => {
                    self.fail_pending(&mut rx);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let end = self
                .session(&mut sink, &mut stream, &mut rx, &mut first)
                .await;
            link::close(stream, &mut self.kept);
            self.connected.store(false, Ordering::Release);
            match end {
                SessionEnd::Exit => return,
                SessionEnd::Lost if first => {
                    // Never got going: the subscriptions could not be made.
                    self.fail_pending(&mut rx);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                SessionEnd::Lost => {
                    tracing::warn!("redis pub/sub connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// (Re)subscribes everything followed, checks positions after a reconnect, then
    /// serves messages, requests and pings until the link is lost.
    async fn session(
        &mut self,
        sink: &mut Link,
        stream: &mut Messages,
        rx: &mut mpsc::Receiver<Request>,
        first: &mut bool,
    ) -> SessionEnd {
        let mut names: Vec<String> = self
            .subscribed
            .iter()
            .map(|c| self.keys.pubsub(c))
            .collect();
        if self.control {
            names.push(self.keys.control());
        }
        for chunk in names.chunks(MAX_BATCH) {
            let sub = tokio::time::timeout(PING_TIMEOUT, sink.subscribe(chunk));
            if !matches!(sub.await, Ok(Ok(()))) {
                return SessionEnd::Lost;
            }
        }
        self.connected.store(true, Ordering::Release);
        if !*first {
            tracing::info!(
                channels = self.subscribed.len(),
                "redis pub/sub reconnected"
            );
            // Publications made while the connection was down never reach this node:
            // subscribers that are now behind their channel's stream recover from it.
            self.check_positions().await;
            if !self.orphans.is_empty() && !self.drop_orphans(sink).await {
                return SessionEnd::Lost;
            }
        }
        *first = false;
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(m) => {
                        let (name, payload) = m.parts();
                        self.dispatch(name, payload);
                        if !self.orphans.is_empty() && !self.drop_orphans(sink).await {
                            return SessionEnd::Lost;
                        }
                    }
                    None => return SessionEnd::Lost,
                },
                req = rx.recv() => match req {
                    Some(r) => {
                        let mut batch = vec![r];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                        if !self.apply(sink, batch).await {
                            return SessionEnd::Lost;
                        }
                    }
                    None => return SessionEnd::Exit,
                },
                _ = ping.tick() => {
                    if !sink.ping(PING_TIMEOUT).await {
                        tracing::warn!("redis pub/sub ping failed");
                        return SessionEnd::Lost;
                    }
                }
            }
        }
    }

    /// Fails queued requests while disconnected, remembering subscriptions for later.
    fn fail_pending(&mut self, rx: &mut mpsc::Receiver<Request>) {
        while let Ok(r) = rx.try_recv() {
            let _ = r.ack.send(Err(EngineError::Unavailable(
                "redis pub/sub not connected".into(),
            )));
        }
    }

    /// Applies a batch of requests; returns false when the connection failed.
    async fn apply(&mut self, sink: &mut Link, batch: Vec<Request>) -> bool {
        let Some(inner) = self.inner.upgrade() else {
            return false;
        };
        let handler = inner.handler.get().cloned();
        let mut subs: Vec<Request> = Vec::new();
        let mut unsubs: Vec<Request> = Vec::new();
        for r in batch {
            match r.op {
                Op::Subscribe if self.subscribed.contains(&r.channel) => {
                    let _ = r.ack.send(Ok(()));
                }
                Op::Subscribe => subs.push(r),
                Op::Unsubscribe => {
                    let still_wanted = handler
                        .as_ref()
                        .is_some_and(|h| h.has_local_subscribers(&r.channel));
                    if still_wanted || !self.subscribed.contains(&r.channel) {
                        let _ = r.ack.send(Ok(()));
                    } else {
                        unsubs.push(r);
                    }
                }
            }
        }
        for (op, reqs) in [(Op::Subscribe, subs), (Op::Unsubscribe, unsubs)] {
            if reqs.is_empty() {
                continue;
            }
            let mut names: Vec<String> =
                reqs.iter().map(|r| self.keys.pubsub(&r.channel)).collect();
            names.sort();
            names.dedup();
            let res = match op {
                Op::Subscribe => tokio::time::timeout(PING_TIMEOUT, sink.subscribe(&names)).await,
                Op::Unsubscribe => {
                    tokio::time::timeout(PING_TIMEOUT, sink.unsubscribe(&names)).await
                }
            };
            let ok = matches!(res, Ok(Ok(())));
            for r in reqs {
                if ok {
                    match op {
                        Op::Subscribe => {
                            self.subscribed.insert(r.channel.clone());
                        }
                        Op::Unsubscribe => {
                            self.subscribed.remove(&r.channel);
                        }
                    }
                    let _ = r.ack.send(Ok(()));
                } else {
                    if op == Op::Subscribe {
                        // Followed after the reconnect; this subscriber recovers then.
                        self.subscribed.insert(r.channel.clone());
                    }
                    let _ = r
                        .ack
                        .send(Err(EngineError::Unavailable("redis pub/sub failed".into())));
                }
            }
            if !ok {
                return false;
            }
        }
        true
    }

    fn insufficient(&mut self, channels: &[String]) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        if let Some(h) = inner.handler.get() {
            for c in channels {
                h.on_insufficient_state(c);
                if !h.has_local_subscribers(c) {
                    self.orphans.push(c.clone());
                }
            }
        }
    }

    /// Compares every followed channel's stream position with its subscribers; when the
    /// positions cannot be read, every recoverable subscriber recovers.
    async fn check_positions(&mut self) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let Some(handler) = inner.handler.get().cloned() else {
            return;
        };
        // Wildcard feeds have no stream: their subscriptions do not recover.
        let channels: Vec<String> = self
            .subscribed
            .iter()
            .filter(|c| feed_namespace(c).is_none())
            .cloned()
            .collect();
        // The command connection may come back a moment after this one.
        let mut positions = inner.stream_positions(self.shard, &channels).await;
        for _ in 0..30 {
            if positions.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            positions = inner.stream_positions(self.shard, &channels).await;
        }
        match positions {
            Ok(positions) => {
                for (channel, position) in positions {
                    handler.on_stream_position(&channel, &position);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read stream positions: every subscriber recovers");
                self.insufficient(&channels);
            }
        }
    }

    async fn drop_orphans(&mut self, sink: &mut Link) -> bool {
        let batch: Vec<Request> = self
            .orphans
            .drain(..)
            .map(|channel| Request {
                channel,
                op: Op::Unsubscribe,
                ack: oneshot::channel().0,
            })
            .collect();
        self.apply(sink, batch).await
    }

    fn dispatch(&mut self, name: &[u8], payload: &[u8]) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let Some(handler) = inner.handler.get() else {
            return;
        };
        let Ok(name) = std::str::from_utf8(name) else {
            return;
        };
        if self.control && name == self.keys.control() {
            match ControlMessage::decode(payload) {
                Ok(ControlMessage::Node(info)) => inner.node_seen(info),
                Ok(ControlMessage::NodeLeft { uid }) => inner.node_left(&uid),
                Ok(m) => handler.on_control(m),
                Err(e) => tracing::warn!(error = %e, "undecodable control message"),
            }
            return;
        }
        let Some(channel) = self.keys.channel_of(name) else {
            return;
        };
        let channel = channel.as_ref();
        let (offset, epoch, envelope) = match decode_message(payload) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(channel, error = %e, "undecodable message");
                return;
            }
        };
        match envelope {
            Envelope::Pub(mut wp) => {
                // Offsets and epochs are checked per subscription by the hub.
                let trace = wp.trace.take();
                let p = wp.into_publication(offset);
                handler.on_publication(channel, &p, &epoch, trace.as_deref());
            }
            Envelope::Join(info) => handler.on_join(channel, &info.into_info()),
            Envelope::Leave(info) => handler.on_leave(channel, &info.into_info()),
            Envelope::Feed {
                channel: concrete,
                publication: mut wp,
            } if feed_namespace(channel).is_some() => {
                let trace = wp.trace.take();
                let p = wp.into_publication(offset);
                handler.on_feed_publication(&concrete, &p, trace.as_deref());
            }
            Envelope::Feed { .. } => {
                tracing::warn!(channel, "feed message outside a feed");
            }
        }
    }
}
