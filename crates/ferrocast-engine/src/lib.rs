//! The cluster backplane of ferrocast.
//!
//! A node talks to the rest of the cluster only through the [`Engine`] trait: publish
//! into a channel, follow a channel on this node, read history, keep presence. Events
//! from the backplane (publications, joins, leaves) come back through one
//! [`EventHandler`]. Two implementations: [`memory::MemoryEngine`] (one node, embedded
//! default) and the Redis engine (a cluster of nodes).

pub mod memory;

use async_trait::async_trait;
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
    /// A publication arrived for a channel this node follows.
    fn on_publication(&self, channel: &str, publication: &Publication);
    /// A client joined a channel this node follows.
    fn on_join(&self, channel: &str, info: &ClientInfo);
    /// A client left a channel this node follows.
    fn on_leave(&self, channel: &str, info: &ClientInfo);
}

/// The backplane: publish/subscribe, history and presence.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Starts delivering events to `handler`. Called once, before anything else.
    async fn start(&self, handler: Arc<dyn EventHandler>) -> Result<(), EngineError>;
    /// Whether the engine can serve requests now.
    fn is_ready(&self) -> bool;
    /// Publishes into a channel; returns the publication's stream position.
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, EngineError>;
    /// Announces that a client joined a channel.
    async fn publish_join(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError>;
    /// Announces that a client left a channel.
    async fn publish_leave(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError>;
    /// Starts following a channel on this node (its first local subscriber arrived).
    async fn subscribe(&self, channel: &str) -> Result<(), EngineError>;
    /// Stops following a channel on this node (its last local subscriber left).
    async fn unsubscribe(&self, channel: &str) -> Result<(), EngineError>;
    /// Reads history; `history_ttl` is the channel's configured history lifetime.
    async fn history(
        &self,
        channel: &str,
        filter: HistoryFilter,
    ) -> Result<HistoryResult, EngineError>;
    /// Removes a channel's history (its position keeps counting).
    async fn remove_history(&self, channel: &str) -> Result<(), EngineError>;
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
}

/// A new random stream epoch.
pub fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..8].to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
