//! Background work that keeps this node visible to the cluster: node announcements on
//! the control channel and the refresh of user registrations.

use crate::node::{Node, VERSION};
use ferrocast_protocol::envelope::{ControlMessage, NodeInfo};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a node announces itself.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// This node's current counts.
pub fn node_info(node: &Node) -> NodeInfo {
    let s = node.hub.stats();
    NodeInfo {
        uid: node.id.clone(),
        name: node.name.clone(),
        version: VERSION.to_string(),
        num_clients: s.clients as u64,
        num_users: s.users as u64,
        num_channels: s.channels as u64,
        num_subs: s.subscriptions as u64,
        uptime: node.uptime(),
    }
}

/// Starts the announce and refresh loops; they end when the node is dropped.
pub fn spawn(node: &Arc<Node>) {
    tokio::spawn(announce(Arc::downgrade(node)));
    tokio::spawn(refresh_users(Arc::downgrade(node)));
}

async fn announce(node: Weak<Node>) {
    let mut t = tokio::time::interval(ANNOUNCE_INTERVAL);
    loop {
        t.tick().await;
        let Some(node) = node.upgrade() else { return };
        let msg = ControlMessage::Node(node_info(&node));
        if let Err(e) = node.engine.publish_control(&msg).await {
            tracing::debug!(error = %e, "node announcement failed");
        }
    }
}

async fn refresh_users(node: Weak<Node>) {
    let interval = match node.upgrade() {
        Some(n) => n.client.presence_update_interval,
        None => return,
    };
    let mut t = tokio::time::interval(interval);
    t.tick().await;
    loop {
        t.tick().await;
        let Some(node) = node.upgrade() else { return };
        let conns = node.hub.user_connections();
        if let Err(e) = node
            .engine
            .refresh_user_connections(&conns, node.client.presence_ttl)
            .await
        {
            tracing::debug!(error = %e, "user registration refresh failed");
        }
    }
}
