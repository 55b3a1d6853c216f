//! The cluster backplane of ferrocast.
//!
//! A node talks to the rest of the cluster only through three interfaces, as centrifuge
//! does: a [`Broker`] (publish, follow a channel on this node, history), a
//! [`PresenceManager`] (channel presence, users online anywhere) and a [`Controller`]
//! (messages between nodes); an [`Engine`] is all three with their lifecycle. Events
//! from the backplane (publications, joins, leaves) come back through one
//! [`EventHandler`]. Two implementations: [`memory::MemoryEngine`] (one node, embedded
//! default) and the Redis engine (a cluster of nodes).

pub mod clock;
pub mod memory;
pub mod redis;

use async_trait::async_trait;
use ferrocast_protocol::envelope::{ControlMessage, NodeInfo};
use ferrocast_protocol::{ClientInfo, Publication, StreamPosition};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Errors of an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The backplane cannot be reached now; retry later.
    #[error("engine not available: {0}")]
    Unavailable(String),
    /// The requested stream position is gone (trimmed, expired, or another epoch).
    #[error("unrecoverable position")]
    UnrecoverablePosition,
    /// An unexpected failure.
    #[error("engine error: {0}")]
    Internal(String),
}

/// How a publication is stored.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Keep at most this many publications in history (0: no history).
    pub history_size: usize,
    /// Keep history this long after the last publication (zero: no history).
    pub history_ttl: Duration,
    /// Apply a publish with the same key only once within `idempotency_window`.
    pub idempotency_key: Option<String>,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// W3C `traceparent` of the publish when it is traced: carried with the publication
    /// to every node, where its fan-out joins the same trace.
    pub trace: Option<String>,
    /// The wildcard feed (namespace) that also carries this publication, to the nodes
    /// with wildcard subscriptions in it ([`feed_channel`]).
    pub feed: Option<String>,
}

/// Marks the broker channel names of wildcard feeds: channel names never contain
/// control characters, so these never collide with a channel.
const FEED_MARK: char = '\u{1}';

/// The broker channel a node follows to receive every publication of `namespace` (`""`:
/// channels without a namespace) for its wildcard subscriptions.
pub fn feed_channel(namespace: &str) -> String {
    format!("{FEED_MARK}{namespace}")
}

/// The namespace of a wildcard feed's broker channel; `None` for an ordinary channel.
pub fn feed_namespace(channel: &str) -> Option<&str> {
    channel.strip_prefix(FEED_MARK)
}

impl PublishOptions {
    /// Whether this publish goes into history.
    pub fn uses_history(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

/// Which publications to read from history.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Only publications after this position.
    pub since: Option<StreamPosition>,
    /// Maximum count: 0 returns only the stream position, a negative value everything.
    pub limit: i32,
    /// Newest first.
    pub reverse: bool,
}

/// Publications read from history and the stream's current position.
#[derive(Debug, Clone, Default)]
pub struct HistoryResult {
    /// The publications.
    pub publications: Vec<Publication>,
    /// Current top offset and epoch of the stream.
    pub position: StreamPosition,
}

/// Presence counts of a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Connections present.
    pub num_clients: u32,
    /// Distinct users present.
    pub num_users: u32,
}

/// Receives what the backplane delivers to this node. Called synchronously in channel
/// order: implementations must not block.
pub trait EventHandler: Send + Sync + 'static {
    /// A publication arrived for a channel this node follows (`epoch` is its stream's
    /// epoch; empty for channels without history; `trace` is the W3C `traceparent` of
    /// the publish when it was traced).
    fn on_publication(
        &self,
        channel: &str,
        publication: &Publication,
        epoch: &str,
        trace: Option<&str>,
    );
    /// A client joined a channel this node follows.
    fn on_join(&self, channel: &str, info: &ClientInfo);
    /// A client left a channel this node follows.
    fn on_leave(&self, channel: &str, info: &ClientInfo);
    /// The engine may have missed publications of `channel` (offset gap, lost pub/sub
    /// connection): its subscribers must recover from history.
    fn on_insufficient_state(&self, channel: &str);
    /// After a pub/sub reconnect: the current position of a followed channel's stream;
    /// subscribers behind it must recover.
    fn on_stream_position(&self, channel: &str, position: &StreamPosition);
    /// A publication of `channel` arrived on a wildcard feed this node follows: for the
    /// wildcard subscriptions that match it (no stream position: they do not recover).
    fn on_feed_publication(&self, channel: &str, publication: &Publication, trace: Option<&str>);
    /// A cluster-wide command arrived on the control channel.
    fn on_control(&self, message: ControlMessage);
    /// Whether this node still has subscribers of `channel`, or of the wildcard feed it
    /// names (checked before the engine stops following it).
    fn has_local_subscribers(&self, channel: &str) -> bool;
}

/// One entry of the backend command stream.
#[derive(Debug, Clone)]
pub struct StreamCommand {
    /// Stream entry id.
    pub id: String,
    /// The `method` field, if present and UTF-8.
    pub method: Option<String>,
    /// The `payload` field, if present.
    pub payload: Option<Vec<u8>>,
    /// The optional `traceparent` field: the W3C trace context of the backend that wrote
    /// the entry, continued by the span that applies it.
    pub traceparent: Option<String>,
}

/// The backend command stream (`<prefix>:api`): entries any backend can append.
#[async_trait]
pub trait CommandStream: Send + Sync + 'static {
    /// Takes or renews the consumer lease for `consumer`; only the lease holder consumes,
    /// which keeps per-channel order equal to stream order.
    async fn acquire_lease(&self, consumer: &str, ttl: Duration) -> Result<bool, EngineError>;
    /// Gives the lease up (a draining node), so another node takes over at once.
    async fn release_lease(&self, consumer: &str) -> Result<(), EngineError>;
    /// Next entries for `consumer`: its own pending ones first, then pending entries of
    /// other consumers, then new ones (waiting up to `block`).
    async fn read(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamCommand>, EngineError>;
    /// Marks entries as applied (one command for all of them).
    async fn ack(&self, ids: &[String]) -> Result<(), EngineError>;
    /// Moves an entry that can never be applied to the dead-letter stream, with `error`.
    async fn dead_letter(&self, entry: &StreamCommand, error: &str) -> Result<(), EngineError>;
}

/// Channel fan-out and history: what a publication goes through (centrifuge's `Broker`).
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes into a channel; returns the publication's stream position.
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, EngineError>;
    /// Publishes several publications into one channel in this order; one result per item
    /// tried. The default publishes them one after the other and stops after the first
    /// failure (the results end there). The Redis engine sends them as one `MULTI`/`EXEC`
    /// transaction (one round trip): every item is tried, in order, and `Err` for the whole
    /// call means it is unknown whether they took effect (retry them with idempotency keys).
    async fn publish_many(
        &self,
        channel: &str,
        items: Vec<(Publication, PublishOptions)>,
    ) -> Result<Vec<Result<StreamPosition, EngineError>>, EngineError> {
        let mut out = Vec::with_capacity(items.len());
        for (publication, opts) in items {
            let r = self.publish(channel, publication, &opts).await;
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        Ok(out)
    }
    /// Announces that a client joined a channel.
    async fn publish_join(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError>;
    /// Announces that a client left a channel.
    async fn publish_leave(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError>;
    /// Starts following a channel on this node (its first local subscriber arrived).
    async fn subscribe(&self, channel: &str) -> Result<(), EngineError>;
    /// Stops following a channel on this node (its last local subscriber left).
    async fn unsubscribe(&self, channel: &str) -> Result<(), EngineError>;
    /// Reads history.
    async fn history(
        &self,
        channel: &str,
        filter: HistoryFilter,
    ) -> Result<HistoryResult, EngineError>;
    /// Removes a channel's history (its position keeps counting).
    async fn remove_history(&self, channel: &str) -> Result<(), EngineError>;
}

/// Who is where: clients present in channels, and users connected anywhere in the
/// cluster (centrifuge's `PresenceManager`, plus the cluster-wide user registry).
#[async_trait]
pub trait PresenceManager: Send + Sync + 'static {
    /// Adds or refreshes a client's presence in a channel for `ttl`.
    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), EngineError>;
    /// Removes a client's presence from a channel.
    async fn remove_presence(&self, channel: &str, client_id: &str) -> Result<(), EngineError>;
    /// Clients present in a channel.
    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError>;
    /// Presence counts of a channel.
    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, EngineError>;
    /// Registers a connection of `user` cluster-wide for `ttl`; returns false (and
    /// registers nothing) when the user already has `limit` connections (0: no limit).
    async fn add_user_connection(
        &self,
        user: &str,
        client: &str,
        ttl: Duration,
        limit: u32,
    ) -> Result<bool, EngineError>;
    /// Removes a connection of `user`.
    async fn remove_user_connection(&self, user: &str, client: &str) -> Result<(), EngineError>;
    /// Extends the registration of these (user, client) connections by `ttl`.
    async fn refresh_user_connections(
        &self,
        connections: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), EngineError>;
    /// For each user, whether it has a connection anywhere in the cluster.
    async fn user_status(&self, users: &[String]) -> Result<Vec<bool>, EngineError>;
}

/// Messages between nodes: the control channel (centrifuge's `Controller`).
#[async_trait]
pub trait Controller: Send + Sync + 'static {
    /// Sends a message to every node (this one included) on the control channel.
    async fn publish_control(&self, message: &ControlMessage) -> Result<(), EngineError>;
    /// Nodes that announced themselves recently (this one included once it announced).
    fn nodes(&self) -> Vec<NodeInfo>;
}

/// A whole backplane: one value that is a [`Broker`], a [`PresenceManager`] and a
/// [`Controller`], with the lifecycle they share.
#[async_trait]
pub trait Engine: Broker + PresenceManager + Controller {
    /// Starts delivering events to `handler`. Called once, before anything else.
    async fn start(&self, handler: Arc<dyn EventHandler>) -> Result<(), EngineError>;
    /// Whether the engine can serve requests now.
    fn is_ready(&self) -> bool;
    /// The backend command stream, when the engine has one.
    fn command_stream(&self) -> Option<Arc<dyn CommandStream>> {
        None
    }
}

/// A new random stream epoch.
pub fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..8].to_string()
}

/// A stable 64-bit FNV-1a hash (the same on every node and version).
pub fn stable_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
