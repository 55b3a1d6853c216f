//! Configuration of a node: client limits, token keys and channel namespaces.
//!
//! Key names follow Centrifugo v6 so its configuration files migrate with few changes.
//! Unknown keys are refused.

mod proxy;
mod slow_consumer;

pub use proxy::*;
pub use slow_consumer::SlowConsumerPolicy;

use crate::duration::serde_str;
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

/// `node.*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Human readable node name (defaults to the host name and port).
    pub name: String,
}

/// `client.token.*`: how connection and subscription tokens are verified.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Shared secret for HS256/HS384/HS512 tokens.
    pub hmac_secret_key: String,
    /// PEM public key for RS256/RS384/RS512 tokens.
    pub rsa_public_key: String,
    /// PEM public key for ES256/ES384 tokens.
    pub ecdsa_public_key: String,
}

/// `client.*`: what clients may do and how much.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Token verification keys.
    pub token: TokenConfig,
    /// Connect and refresh proxies.
    pub proxy: ClientProxyConfig,
    /// Accept connections without a token (anonymous) and skip channel permission checks
    /// for subscribe, publish, presence and history. Development only.
    pub insecure: bool,
    /// Origins allowed to open WebSocket connections (`*` and `https://*.example.com`
    /// patterns). Empty: only the same host as the request, or requests without `Origin`.
    pub allowed_origins: Vec<String>,
    /// Interval between server pings.
    #[serde(with = "serde_str")]
    pub ping_interval: Duration,
    /// How long to wait for the pong after a ping.
    #[serde(with = "serde_str")]
    pub pong_timeout: Duration,
    /// How long a new connection may take to send `connect` (closed with 3502 after).
    #[serde(with = "serde_str")]
    pub connect_timeout: Duration,
    /// How long after its token expired a connection may still send `refresh` before it
    /// is closed with 3005.
    #[serde(with = "serde_str")]
    pub expired_close_delay: Duration,
    /// How long after its token expired a subscription may still get `sub_refresh` before
    /// it ends (unsubscribe 2501; a server-side one closes the connection with 3006).
    #[serde(with = "serde_str")]
    pub expired_sub_close_delay: Duration,
    /// Maximum connections on this node (0: unlimited).
    pub connection_limit: u32,
    /// Maximum connections of one user (0: unlimited).
    pub user_connection_limit: u32,
    /// Maximum channels one connection may subscribe to.
    pub channel_limit: u32,
    /// Maximum bytes waiting in a connection's outbound queue before it is closed as slow (3008).
    pub queue_max_size: usize,
    /// Maximum size of one incoming WebSocket message in bytes (closed with 3501 above).
    pub max_message_size: usize,
    /// Maximum commands in one incoming frame.
    pub max_commands_per_frame: usize,
    /// Commands per second a connection may send on average (0: unlimited).
    pub command_rate_limit: u32,
    /// Burst of commands allowed above the rate.
    pub command_rate_burst: u32,
    /// Rejected commands (111) in a row after which the connection is closed (3013).
    pub command_rate_disconnect_after: u32,
    /// How often a node refreshes the presence and user registrations of its connections.
    #[serde(with = "serde_str")]
    pub presence_update_interval: Duration,
    /// How long a presence or user registration lives without refresh (a crashed node's
    /// entries vanish after it).
    #[serde(with = "serde_str")]
    pub presence_ttl: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: TokenConfig::default(),
            proxy: ClientProxyConfig::default(),
            insecure: false,
            allowed_origins: Vec::new(),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
            expired_close_delay: Duration::from_secs(25),
            expired_sub_close_delay: Duration::from_secs(25),
            connection_limit: 0,
            user_connection_limit: 0,
            channel_limit: 128,
            queue_max_size: 1 << 20,
            max_message_size: 65536,
            max_commands_per_frame: 1000,
            command_rate_limit: 100,
            command_rate_burst: 500,
            command_rate_disconnect_after: 100,
            presence_update_interval: Duration::from_secs(25),
            presence_ttl: Duration::from_secs(60),
        }
    }
}

/// Options of a channel namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelOptions {
    /// Keep presence of subscribers.
    pub presence: bool,
    /// Announce joins and leaves to subscribers that ask for them.
    pub join_leave: bool,
    /// Push joins and leaves to every subscriber.
    pub force_push_join_leave: bool,
    /// Publications kept in history (0: no history).
    pub history_size: usize,
    /// How long history is kept after the last publication.
    #[serde(with = "serde_str")]
    pub history_ttl: Duration,
    /// Make every subscription recoverable.
    pub force_recovery: bool,
    /// Authenticated clients may subscribe without a subscription token.
    pub allow_subscribe_for_client: bool,
    /// Anonymous clients may subscribe without a subscription token.
    pub allow_subscribe_for_anonymous: bool,
    /// Subscribers may publish.
    pub allow_publish_for_subscriber: bool,
    /// Any authenticated client may publish.
    pub allow_publish_for_client: bool,
    /// Anonymous clients may publish.
    pub allow_publish_for_anonymous: bool,
    /// Subscribers may read presence.
    pub allow_presence_for_subscriber: bool,
    /// Any authenticated client may read presence.
    pub allow_presence_for_client: bool,
    /// Anonymous clients may read presence.
    pub allow_presence_for_anonymous: bool,
    /// Subscribers may read history.
    pub allow_history_for_subscriber: bool,
    /// Any authenticated client may read history.
    pub allow_history_for_client: bool,
    /// Anonymous clients may read history.
    pub allow_history_for_anonymous: bool,
    /// Channels like `dialog#42,43` may be subscribed by the listed users without a token.
    pub allow_user_limited_channels: bool,
    /// Subscriptions may be wildcard patterns over the namespace's channels (tokens
    /// separated by `.`; `*` one token, `>` the rest), e.g. `sensors:building1.*.temp`.
    pub allow_wildcard_subscriptions: bool,
    /// Subscriptions without a token are decided by the subscribe proxy.
    pub subscribe_proxy_enabled: bool,
    /// Which subscribe proxy (empty or `default`: `channel.proxy.subscribe`).
    pub subscribe_proxy_name: String,
    /// Client publications go through the publish proxy (which may replace the data).
    pub publish_proxy_enabled: bool,
    /// Which publish proxy (empty or `default`: `channel.proxy.publish`).
    pub publish_proxy_name: String,
    /// Expiring subscriptions are extended by the sub_refresh proxy (server-side).
    pub sub_refresh_proxy_enabled: bool,
    /// Which sub_refresh proxy (empty or `default`: `channel.proxy.sub_refresh`).
    pub sub_refresh_proxy_name: String,
    /// Subscriptions without a token get their publications from a backend stream opened
    /// for that one client (gRPC `SubscribeUnidirectional`), instead of the channel.
    pub subscribe_stream_proxy_enabled: bool,
    /// Which stream proxy (empty or `default`: `channel.proxy.subscribe_stream`).
    pub subscribe_stream_proxy_name: String,
    /// Streams are bidirectional: the client's publications go into the stream
    /// (`SubscribeBidirectional`).
    pub subscribe_stream_proxy_bidirectional: bool,
    /// What a publication, join or leave does when it would overflow a connection's
    /// queue: close the connection (3008, the default) or drop pushes.
    pub slow_consumer_policy: SlowConsumerPolicy,
}

impl ChannelOptions {
    /// Whether channels of this namespace keep history.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }

    fn validate(&self, path: &str) -> Result<(), String> {
        if self.history_size > 0 && self.history_ttl.is_zero() {
            return Err(format!(
                "{path}.history_ttl must be set when history_size is set"
            ));
        }
        if self.history_size == 0 && !self.history_ttl.is_zero() {
            return Err(format!(
                "{path}.history_size must be set when history_ttl is set"
            ));
        }
        if self.force_recovery && !self.history_enabled() {
            return Err(format!(
                "{path}.force_recovery needs history_size and history_ttl"
            ));
        }
        if self.subscribe_stream_proxy_enabled && self.subscribe_proxy_enabled {
            return Err(format!(
                "{path}: subscribe_stream_proxy_enabled and subscribe_proxy_enabled exclude each other"
            ));
        }
        if self.force_push_join_leave && !self.join_leave {
            return Err(format!("{path}.force_push_join_leave needs join_leave"));
        }
        Ok(())
    }
}

/// A named channel namespace: channels `name:...` use its options.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Namespace {
    /// Namespace name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// Options.
    #[serde(flatten)]
    pub options: ChannelOptions,
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let name = match map.remove("name") {
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(D::Error::custom("namespace name must be a string")),
            None => return Err(D::Error::custom("namespace without name")),
        };
        let options = ChannelOptions::deserialize(serde_json::Value::Object(map))
            .map_err(|e| D::Error::custom(format!("namespace {name:?}: {e}")))?;
        Ok(Namespace { name, options })
    }
}

/// `channel.*`: namespaces and channel name rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// The proxies namespaces refer to as `default`.
    pub proxy: ChannelProxyConfig,
    /// Options of channels without a namespace.
    pub without_namespace: ChannelOptions,
    /// Named namespaces.
    pub namespaces: Vec<Namespace>,
    /// Maximum channel name length in bytes.
    pub max_length: usize,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            proxy: ChannelProxyConfig::default(),
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            max_length: 255,
        }
    }
}

impl ChannelConfig {
    /// Checks the namespace definitions; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        self.without_namespace
            .validate("channel.without_namespace")?;
        let mut seen = std::collections::HashSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            let path = format!("channel.namespaces[{i}]");
            if ns.name.is_empty()
                || !ns
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(format!(
                    "{path}.name {:?} is not a valid namespace name",
                    ns.name
                ));
            }
            if !seen.insert(ns.name.as_str()) {
                return Err(format!("{path}.name {:?} is defined twice", ns.name));
            }
            ns.options.validate(&path)?;
        }
        if self.max_length == 0 {
            return Err("channel.max_length must be positive".into());
        }
        Ok(())
    }
}

impl ClientConfig {
    /// Checks values that serde cannot; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.ping_interval.is_zero() {
            return Err("client.ping_interval must be positive".into());
        }
        if self.pong_timeout.is_zero() || self.pong_timeout >= self.ping_interval {
            return Err(
                "client.pong_timeout must be positive and shorter than client.ping_interval".into(),
            );
        }
        if self.max_message_size < 128 {
            return Err("client.max_message_size must be at least 128".into());
        }
        if self.queue_max_size < self.max_message_size {
            return Err("client.queue_max_size must be at least client.max_message_size".into());
        }
        if self.channel_limit == 0 {
            return Err("client.channel_limit must be positive".into());
        }
        if self.max_commands_per_frame == 0 {
            return Err("client.max_commands_per_frame must be positive".into());
        }
        if self.presence_update_interval.is_zero()
            || self.presence_ttl <= self.presence_update_interval
        {
            return Err(
                "client.presence_ttl must be longer than client.presence_update_interval".into(),
            );
        }
        Ok(())
    }
}
