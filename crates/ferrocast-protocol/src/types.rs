//! Messages of the protocol: requests, results and the shared data types.

use crate::raw::Payload;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

fn is_false(v: &bool) -> bool {
    !*v
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// Who a connection is: user, client id and optional connection/channel info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClientInfo {
    /// User id; empty for anonymous connections.
    #[serde(default)]
    pub user: String,
    /// Client (connection) id.
    #[serde(default)]
    pub client: String,
    /// Connection info from the connection token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_info: Option<Payload>,
    /// Channel info from the subscription token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chan_info: Option<Payload>,
}

/// A message published into a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// Payload.
    pub data: Payload,
    /// Publisher, when a client published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    /// Offset in the channel stream (0 for channels without history).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Optional tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Publication time, Unix milliseconds.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub time: i64,
    /// The concrete channel, when the publication reaches a wildcard subscription (the
    /// push names the pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

/// A position in a channel stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StreamPosition {
    /// Offset of the last publication.
    #[serde(default)]
    pub offset: u64,
    /// Epoch of the stream: changes when the stream is lost and restarted.
    #[serde(default)]
    pub epoch: String,
}

/// `connect` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectRequest {
    /// Connection JWT.
    #[serde(default)]
    pub token: String,
    /// Custom data.
    #[serde(default)]
    pub data: Option<Payload>,
    /// Subscriptions to restore on (re)connect.
    #[serde(default)]
    pub subs: HashMap<String, SubscribeRequest>,
    /// Client name.
    #[serde(default)]
    pub name: String,
    /// Client version.
    #[serde(default)]
    pub version: String,
}

/// `connect` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectResult {
    /// Client id.
    pub client: String,
    /// Server version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Whether the connection expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// Custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// Server-side subscriptions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    /// Server ping interval in seconds.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    /// Whether the client must answer pings.
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    /// Session id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Node name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
}

/// `subscribe` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubscribeRequest {
    /// Channel.
    #[serde(default)]
    pub channel: String,
    /// Subscription JWT.
    #[serde(default)]
    pub token: String,
    /// Recover missed publications from `offset`/`epoch`.
    #[serde(default)]
    pub recover: bool,
    /// Epoch of the position to recover from.
    #[serde(default)]
    pub epoch: String,
    /// Offset of the last publication the client saw.
    #[serde(default)]
    pub offset: u64,
    /// Custom data.
    #[serde(default)]
    pub data: Option<Payload>,
    /// Ask for a positioned subscription.
    #[serde(default)]
    pub positioned: bool,
    /// Ask for a recoverable subscription.
    #[serde(default)]
    pub recoverable: bool,
    /// Ask for join/leave pushes.
    #[serde(default)]
    pub join_leave: bool,
}

/// `subscribe` result (also the body of the `subscribe` push without `publications`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscribeResult {
    /// Whether the subscription expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    /// Whether the subscription can be recovered.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// Stream epoch.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    /// Missed publications.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    /// Whether all missed publications were recovered.
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// Stream top offset.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    /// Whether the subscription is positioned.
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// Custom data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// Whether the client asked to recover.
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

/// `unsubscribe` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UnsubscribeRequest {
    /// Channel.
    #[serde(default)]
    pub channel: String,
}

/// `publish` request.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishRequest {
    /// Channel.
    #[serde(default)]
    pub channel: String,
    /// Payload.
    pub data: Option<Payload>,
}

/// A request naming only a channel (`presence`, `presence_stats`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChannelRequest {
    /// Channel.
    #[serde(default)]
    pub channel: String,
}

/// `presence` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PresenceResult {
    /// Client id → info.
    pub presence: BTreeMap<String, ClientInfo>,
}

/// `presence_stats` result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceStatsResult {
    /// Number of connections.
    pub num_clients: u32,
    /// Number of distinct users.
    pub num_users: u32,
}

/// `history` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HistoryRequest {
    /// Channel.
    #[serde(default)]
    pub channel: String,
    /// Maximum number of publications; 0 returns only the position, -1 all.
    #[serde(default)]
    pub limit: i32,
    /// Return publications after this position.
    #[serde(default)]
    pub since: Option<StreamPosition>,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

/// `history` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryResult {
    /// Publications.
    pub publications: Vec<Publication>,
    /// Stream epoch.
    pub epoch: String,
    /// Stream top offset.
    pub offset: u64,
}

/// `rpc` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RpcRequest {
    /// Method name.
    #[serde(default)]
    pub method: String,
    /// Payload.
    #[serde(default)]
    pub data: Option<Payload>,
}

/// `send` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SendRequest {
    /// Payload.
    #[serde(default)]
    pub data: Option<Payload>,
}

/// `refresh` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RefreshRequest {
    /// New connection token.
    #[serde(default)]
    pub token: String,
}

/// `refresh` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshResult {
    /// Client id.
    pub client: String,
    /// Server version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Whether the connection expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// `sub_refresh` request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubRefreshRequest {
    /// Channel.
    #[serde(default)]
    pub channel: String,
    /// New subscription token.
    #[serde(default)]
    pub token: String,
}

/// `sub_refresh` result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubRefreshResult {
    /// Whether the subscription expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// An empty result (`unsubscribe`, `publish`, `ping`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmptyResult {}
