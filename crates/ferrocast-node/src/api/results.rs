//! Server API results, serialized with the shapes of Centrifugo's server API.

use ferrocast_protocol::envelope::{ConnectionHealth, NodeInfo};
use ferrocast_protocol::{ClientInfo, ProtocolError, Publication, StreamPosition};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// The result of any method.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ApiResult {
    /// `publish`.
    Publish(PublishResult),
    /// `broadcast`.
    Broadcast(BroadcastResult),
    /// `subscribe`, `unsubscribe`, `disconnect`, `refresh`, `history_remove`.
    Empty(EmptyResult),
    /// `presence`.
    Presence(PresenceResult),
    /// `presence_stats`.
    PresenceStats(PresenceStatsResult),
    /// `history`.
    History(HistoryResult),
    /// `channels`.
    Channels(ChannelsResult),
    /// `info`.
    Info(InfoResult),
    /// `batch`.
    Batch(BatchResult),
    /// `user_status`.
    UserStatus(UserStatusResult),
    /// `channel_stats`.
    ChannelStats(ChannelStatsResult),
    /// `connection_health`.
    ConnectionHealth(ConnectionHealthResult),
}

/// No fields: `{}`.
#[derive(Debug, Serialize)]
pub struct EmptyResult {}

/// Where a publication went in its channel's stream (fields absent without history).
#[derive(Debug, Serialize)]
pub struct PublishResult {
    /// Offset in the stream.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Epoch of the stream.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl From<StreamPosition> for PublishResult {
    fn from(p: StreamPosition) -> Self {
        PublishResult {
            offset: p.offset,
            epoch: p.epoch,
        }
    }
}

/// One channel's outcome in a `broadcast`: `{"result": …}` or `{"error": …}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastResponse {
    /// Published.
    Result(PublishResult),
    /// Not published.
    Error(ProtocolError),
}

impl From<Result<PublishResult, ProtocolError>> for BroadcastResponse {
    fn from(r: Result<PublishResult, ProtocolError>) -> Self {
        match r {
            Ok(p) => BroadcastResponse::Result(p),
            Err(e) => BroadcastResponse::Error(e),
        }
    }
}

/// `broadcast`: one response per channel, in request order.
#[derive(Debug, Serialize)]
pub struct BroadcastResult {
    /// The responses.
    pub responses: Vec<BroadcastResponse>,
}

/// `presence`.
#[derive(Debug, Serialize)]
pub struct PresenceResult {
    /// Client id → client info.
    pub presence: BTreeMap<String, ClientInfo>,
}

/// `presence_stats`.
#[derive(Debug, Serialize)]
pub struct PresenceStatsResult {
    /// Connections present.
    pub num_clients: u32,
    /// Distinct users present.
    pub num_users: u32,
}

/// `history`.
#[derive(Debug, Serialize)]
pub struct HistoryResult {
    /// The publications.
    pub publications: Vec<Publication>,
    /// Top offset of the stream.
    pub offset: u64,
    /// Epoch of the stream.
    pub epoch: String,
}

/// Subscribers of one channel.
#[derive(Debug, Serialize)]
pub struct ChannelInfo {
    /// Subscriber count over every node.
    pub num_clients: u64,
}

/// `channels`.
#[derive(Debug, Serialize)]
pub struct ChannelsResult {
    /// Channel name → subscribers.
    pub channels: BTreeMap<String, ChannelInfo>,
}

/// One channel in `channel_stats`, over every node.
#[derive(Debug, Serialize)]
pub struct ChannelStatsEntry {
    /// Subscribers.
    pub num_clients: u64,
    /// Publications that reached its subscribers (since the channel had subscribers).
    pub publications: u64,
    /// Publications per second (last 5 s sample).
    pub publications_per_sec: f64,
    /// Pushes queued to its subscribers.
    pub deliveries: u64,
    /// Deliveries per second (last 5 s sample).
    pub deliveries_per_sec: f64,
    /// Pushes not delivered (slow or closing connections, slow-consumer policies).
    pub drops: u64,
}

impl From<ferrocast_protocol::envelope::ChannelStat> for ChannelStatsEntry {
    fn from(s: ferrocast_protocol::envelope::ChannelStat) -> Self {
        ChannelStatsEntry {
            num_clients: s.num_clients,
            publications: s.publications,
            publications_per_sec: s.publications_per_sec,
            deliveries: s.deliveries,
            deliveries_per_sec: s.deliveries_per_sec,
            drops: s.drops,
        }
    }
}

/// `channel_stats`.
#[derive(Debug, Serialize)]
pub struct ChannelStatsResult {
    /// Channel name → statistics.
    pub channels: BTreeMap<String, ChannelStatsEntry>,
}

/// `info`.
#[derive(Debug, Serialize)]
pub struct InfoResult {
    /// Every live node, sorted by name.
    pub nodes: Vec<NodeInfo>,
}

/// One user's status in `user_status`.
#[derive(Debug, Serialize)]
pub struct UserStatus {
    /// The user.
    pub user: String,
    /// Whether it has a connection anywhere in the cluster.
    pub online: bool,
}

/// `user_status`: one status per requested user, in request order.
#[derive(Debug, Serialize)]
pub struct UserStatusResult {
    /// The statuses.
    pub statuses: Vec<UserStatus>,
}

/// `connection_health`: the connections addressed, wherever they are, sorted by node
/// and client id.
#[derive(Debug, Serialize)]
pub struct ConnectionHealthResult {
    /// Each connection's queue, drops and subscriptions.
    pub connections: Vec<ConnectionHealth>,
}

/// One command's reply in a `batch`: `{"<method>": result}` or `{"error": …}`.
#[derive(Debug)]
pub struct BatchReply {
    method: String,
    result: Result<ApiResult, ProtocolError>,
}

impl BatchReply {
    /// The reply of a command of `method`.
    pub fn new(method: String, result: Result<ApiResult, ProtocolError>) -> Self {
        BatchReply { method, result }
    }

    /// The command's outcome.
    pub fn into_result(self) -> Result<ApiResult, ProtocolError> {
        self.result
    }
}

impl Serialize for BatchReply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match &self.result {
            Ok(result) => map.serialize_entry(&self.method, result)?,
            Err(e) => map.serialize_entry("error", e)?,
        }
        map.end()
    }
}

/// `batch`: one reply per command, in request order.
#[derive(Debug, Serialize)]
pub struct BatchResult {
    /// The replies.
    pub replies: Vec<BatchReply>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_protocol::ErrorCode;
    use serde_json::json;

    #[test]
    fn shapes_match_the_centrifugo_api() {
        let p = |offset, epoch: &str| {
            PublishResult::from(StreamPosition {
                offset,
                epoch: epoch.into(),
            })
        };
        let v = |r: &ApiResult| serde_json::to_value(r).unwrap();
        assert_eq!(v(&ApiResult::Publish(p(0, ""))), json!({}));
        assert_eq!(
            v(&ApiResult::Publish(p(3, "e"))),
            json!({"offset": 3, "epoch": "e"})
        );
        let err = ProtocolError::new(ErrorCode::UnknownChannel);
        let b = BroadcastResult {
            responses: vec![Ok(p(1, "e")).into(), Err(err.clone()).into()],
        };
        assert_eq!(
            v(&ApiResult::Broadcast(b)),
            json!({"responses": [{"result": {"offset": 1, "epoch": "e"}}, {"error": err}]})
        );
        let batch = BatchResult {
            replies: vec![
                BatchReply::new("publish".into(), Ok(ApiResult::Publish(p(0, "")))),
                BatchReply::new("history".into(), Err(err.clone())),
            ],
        };
        assert_eq!(
            v(&ApiResult::Batch(batch)),
            json!({"replies": [{"publish": {}}, {"error": err}]})
        );
        let h = HistoryResult {
            publications: vec![],
            offset: 0,
            epoch: String::new(),
        };
        assert_eq!(
            v(&ApiResult::History(h)),
            json!({"publications": [], "offset": 0, "epoch": ""})
        );
    }
}
