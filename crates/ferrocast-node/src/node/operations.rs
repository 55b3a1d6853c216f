//! What sessions and the server API ask of the node besides publishing: history,
//! presence, following channels, registering connections and cluster-wide commands.
//! Each checks the channel's namespace options where they apply and maps engine errors
//! with [`engine_error`].

use super::{Node, engine_error};
use crate::control::ClientHandle;
use crate::stats::ChannelStat;
use crate::subscriber::Subscriber;
use crate::survey::{Question, local_channels, local_health};
use ferrocast_engine::{HistoryFilter, HistoryResult, PresenceStats, feed_channel};
use ferrocast_protocol::envelope::{ConnectionHealth, ControlMessage, NodeInfo};
use ferrocast_protocol::{ClientInfo, ProtocolError, StreamPosition};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

impl Node {
    /// Reads a channel's history (108 when its namespace keeps none; 112 when `since` is
    /// a position the stream no longer has).
    pub async fn history(
        &self,
        channel: &str,
        filter: HistoryFilter,
    ) -> Result<HistoryResult, ProtocolError> {
        self.history_options(channel)?;
        self.broker
            .history(channel, filter)
            .await
            .map_err(engine_error)
    }

    /// The current position of a channel's stream (108 when its namespace keeps no
    /// history).
    pub async fn stream_position(&self, channel: &str) -> Result<StreamPosition, ProtocolError> {
        let filter = HistoryFilter {
            limit: 0,
            ..Default::default()
        };
        Ok(self.history(channel, filter).await?.position)
    }

    /// Removes a channel's history.
    pub async fn remove_history(&self, channel: &str) -> Result<(), ProtocolError> {
        self.channel_options(channel)?;
        self.broker
            .remove_history(channel)
            .await
            .map_err(engine_error)
    }

    /// Clients present in a channel (108 when its namespace has no presence).
    pub async fn presence(
        &self,
        channel: &str,
    ) -> Result<HashMap<String, ClientInfo>, ProtocolError> {
        self.presence_options(channel)?;
        self.presence.presence(channel).await.map_err(engine_error)
    }

    /// Presence counts of a channel (108 when its namespace has no presence).
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, ProtocolError> {
        self.presence_options(channel)?;
        self.presence
            .presence_stats(channel)
            .await
            .map_err(engine_error)
    }

    /// Adds or refreshes a client's presence for `client.presence_ttl`.
    pub async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
    ) -> Result<(), ProtocolError> {
        self.presence
            .add_presence(channel, info, self.client.presence_ttl)
            .await
            .map_err(engine_error)
    }

    /// Removes a client's presence (failures logged).
    pub async fn remove_presence(&self, channel: &str, client_id: &str) {
        if let Err(e) = self.presence.remove_presence(channel, client_id).await {
            tracing::warn!(channel, error = %e, "presence remove failed");
        }
    }

    /// Announces a join to the channel's subscribers on every node (failures logged).
    pub async fn publish_join(&self, channel: &str, info: &ClientInfo) {
        if let Err(e) = self.broker.publish_join(channel, info).await {
            tracing::warn!(channel, error = %e, "join publish failed");
        }
    }

    /// Announces a leave to the channel's subscribers on every node (failures logged).
    pub async fn publish_leave(&self, channel: &str, info: &ClientInfo) {
        if let Err(e) = self.broker.publish_leave(channel, info).await {
            tracing::warn!(channel, error = %e, "leave publish failed");
        }
    }

    /// Adds a local subscriber and waits until the node follows the channel. Every
    /// subscriber waits, not only the first: a position read before that could miss
    /// publications made meanwhile. On failure the subscriber is removed again.
    pub async fn add_subscriber(
        &self,
        channel: &str,
        subscriber: Arc<Subscriber>,
    ) -> Result<(), ProtocolError> {
        let client_id = subscriber.client.id.clone();
        if let Some(pattern) = self.pattern(channel)? {
            // A wildcard subscription: the node follows its namespace's feed.
            self.hub
                .add_pattern_subscriber(channel, &pattern, subscriber);
            let feed = feed_channel(&pattern.namespace);
            if let Err(e) = self.broker.subscribe(&feed).await {
                self.remove_subscriber(channel, &client_id).await;
                return Err(engine_error(e));
            }
            return Ok(());
        }
        self.hub.add_subscriber(channel, subscriber);
        if let Err(e) = self.broker.subscribe(channel).await {
            self.remove_subscriber(channel, &client_id).await;
            return Err(engine_error(e));
        }
        Ok(())
    }

    /// Removes a local subscriber; the node stops following the channel when it was the
    /// last one.
    pub async fn remove_subscriber(&self, channel: &str, client_id: &str) {
        if let Ok(Some(pattern)) = self.pattern(channel) {
            if self
                .hub
                .remove_pattern_subscriber(channel, &pattern, client_id)
            {
                let feed = feed_channel(&pattern.namespace);
                if let Err(e) = self.broker.unsubscribe(&feed).await {
                    tracing::warn!(channel, error = %e, "engine unsubscribe of a wildcard feed failed");
                }
            }
            return;
        }
        self.hub.remove_subscriber(channel, client_id);
        if !self.hub.has_subscribers(channel)
            && let Err(e) = self.broker.unsubscribe(channel).await
        {
            tracing::warn!(channel, error = %e, "engine unsubscribe failed");
        }
    }

    /// Whether this node holds `client.connection_limit` connections already.
    pub fn at_connection_limit(&self) -> bool {
        let limit = self.client.connection_limit as usize;
        limit > 0 && self.hub.stats().clients >= limit
    }

    /// Registers a connection of `user` cluster-wide; false when the user already has
    /// `client.user_connection_limit` connections.
    pub async fn add_user_connection(
        &self,
        user: &str,
        client: &str,
    ) -> Result<bool, ProtocolError> {
        self.presence
            .add_user_connection(
                user,
                client,
                self.client.presence_ttl,
                self.client.user_connection_limit,
            )
            .await
            .map_err(engine_error)
    }

    /// Makes a connected client reachable by the hub (fan-out, control, drain).
    pub fn add_client(&self, handle: Arc<ClientHandle>) {
        self.hub.add_client(handle);
    }

    /// Removes a client from the hub first (nobody reaches it any more), then its
    /// cluster-wide user registration (failures logged).
    pub async fn remove_client(&self, handle: &ClientHandle) {
        self.hub.remove_client(handle);
        if !handle.user.is_empty()
            && let Err(e) = self
                .presence
                .remove_user_connection(&handle.user, &handle.id)
                .await
        {
            tracing::debug!(error = %e, "user connection removal failed");
        }
    }

    /// Sends a cluster-wide command over the control channel (every node applies it to
    /// the connections it addresses).
    pub async fn send_control(&self, message: &ControlMessage) -> Result<(), ProtocolError> {
        self.controller
            .publish_control(message)
            .await
            .map_err(engine_error)
    }

    /// For each user, whether it has a connection anywhere in the cluster.
    pub async fn user_status(&self, users: &[String]) -> Result<Vec<bool>, ProtocolError> {
        self.presence.user_status(users).await.map_err(engine_error)
    }

    /// Channels matching `pattern` (`*` as wildcard, empty for all) with subscriber
    /// counts summed over every live node.
    pub async fn channels(&self, pattern: &str) -> BTreeMap<String, u64> {
        self.survey(Question::Channels, pattern)
            .await
            .into_iter()
            .map(|(name, s)| (name, s.num_clients))
            .collect()
    }

    /// Channels matching `pattern` with their statistics merged over every live node.
    pub async fn channel_stats(&self, pattern: &str) -> BTreeMap<String, ChannelStat> {
        self.survey(Question::Stats, pattern).await
    }

    async fn survey(&self, question: Question, pattern: &str) -> BTreeMap<String, ChannelStat> {
        let others = self.other_nodes();
        let local = local_channels(&self.hub, pattern);
        self.surveys
            .ask(question, self.controller.as_ref(), local, others, pattern)
            .await
    }

    /// How the connections of `user` (or the one `client`, or that client of the user)
    /// keep up, on every live node (nodes that do not answer within the survey timeout
    /// are left out).
    pub async fn connection_health(&self, user: &str, client: &str) -> Vec<ConnectionHealth> {
        let local = local_health(&self.hub, self.name(), user, client);
        self.surveys
            .health(
                self.controller.as_ref(),
                local,
                self.other_nodes(),
                user,
                client,
            )
            .await
    }

    fn other_nodes(&self) -> usize {
        self.controller
            .nodes()
            .iter()
            .filter(|n| n.uid != self.identity.id)
            .count()
    }

    /// Every live node (this one with its current counts), sorted by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let own = self.info();
        let mut nodes: Vec<_> = self
            .controller
            .nodes()
            .into_iter()
            .filter(|n| n.uid != own.uid)
            .collect();
        nodes.push(own);
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }
}
