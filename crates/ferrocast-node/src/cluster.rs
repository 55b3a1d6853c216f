//! Background work that keeps this node visible to the cluster: node announcements on
//! the control channel and the refresh of user registrations. The node starts both with
//! what they need; they end when `stop` is cancelled (the node is dropped).

use crate::hub::Hub;
use ferrocast_engine::{Controller, PresenceManager};
use ferrocast_protocol::envelope::{ControlMessage, NodeInfo};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a node announces itself.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// The server version announced to clients and other nodes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who this node is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Unique id of this process.
    pub id: String,
    /// Human readable name.
    pub name: String,
    /// When the node started.
    pub started: Instant,
}

impl Identity {
    /// A fresh identity; an empty `name` becomes the start of the id.
    pub fn new(name: String) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let name = if name.is_empty() {
            id[..8].to_string()
        } else {
            name
        };
        Identity {
            id,
            name,
            started: Instant::now(),
        }
    }

    /// This node's announcement: identity and the hub's current counts.
    pub fn info(&self, hub: &Hub) -> NodeInfo {
        let s = hub.stats();
        NodeInfo {
            uid: self.id.clone(),
            name: self.name.clone(),
            version: VERSION.to_string(),
            num_clients: s.clients as u64,
            num_users: s.users as u64,
            num_channels: s.channels as u64,
            num_subs: s.subscriptions as u64,
            uptime: self.started.elapsed().as_secs(),
        }
    }
}

/// Announces the node every [`ANNOUNCE_INTERVAL`] until `stop`.
pub async fn announce(
    identity: Identity,
    hub: Arc<Hub>,
    controller: Arc<dyn Controller>,
    stop: CancellationToken,
) {
    let mut t = tokio::time::interval(ANNOUNCE_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = t.tick() => {}
        }
        let info = ControlMessage::Node(identity.info(&hub));
        if let Err(e) = controller.publish_control(&info).await {
            tracing::debug!(error = %e, "node announcement failed");
        }
    }
}

/// Extends the registration of the hub's user connections by `ttl` every `interval`,
/// until `stop`.
pub async fn refresh_users(
    hub: Arc<Hub>,
    presence: Arc<dyn PresenceManager>,
    (interval, ttl): (Duration, Duration),
    stop: CancellationToken,
) {
    let mut t = tokio::time::interval(interval);
    t.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = t.tick() => {}
        }
        let conns = hub.user_connections();
        if let Err(e) = presence.refresh_user_connections(&conns, ttl).await {
            tracing::debug!(error = %e, "user registration refresh failed");
        }
    }
}
