//! Server API requests as typed commands, decoded once from their JSON body (same
//! field names as Centrifugo's server API), and the method names that select them.

use crate::node::PublishParams;
use ferrocast_protocol::{ErrorCode, Payload, ProtocolError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Declares every method once: its name, its [`ApiMethod`] and [`ApiCommand`] variant and
/// its request type.
macro_rules! api_methods {
    ($($(#[$doc:meta])* $name:literal => $variant:ident($request:ty),)*) => {
        /// A server API method.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ApiMethod {
            $($(#[$doc])* $variant,)*
        }

        impl ApiMethod {
            /// Every method.
            pub const ALL: &[ApiMethod] = &[$(ApiMethod::$variant,)*];

            /// The method called `name` (as in `POST /api/<name>`).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(ApiMethod::$variant),)*
                    _ => None,
                }
            }

            /// The method's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(ApiMethod::$variant => $name,)*
                }
            }
        }

        /// A decoded server API command: the method with its request.
        #[derive(Debug)]
        pub enum ApiCommand {
            $($(#[$doc])* $variant($request),)*
        }

        impl ApiCommand {
            /// Decodes the JSON `body` of a call of `method` (an empty body is `{}`).
            pub fn decode(method: ApiMethod, body: &[u8]) -> Result<Self, ProtocolError> {
                Ok(match method {
                    $(ApiMethod::$variant => ApiCommand::$variant(parse(body)?),)*
                })
            }

            /// The command's method.
            pub fn method(&self) -> ApiMethod {
                match self {
                    $(ApiCommand::$variant(_) => ApiMethod::$variant,)*
                }
            }
        }
    };
}

api_methods! {
    /// Publish into one channel.
    "publish" => Publish(PublishRequest),
    /// Publish the same data into several channels.
    "broadcast" => Broadcast(BroadcastRequest),
    /// Subscribe a user's connections to a channel.
    "subscribe" => Subscribe(UserChannelRequest),
    /// Unsubscribe a user's connections from a channel.
    "unsubscribe" => Unsubscribe(UserChannelRequest),
    /// Disconnect a user's connections (or one of them).
    "disconnect" => Disconnect(DisconnectRequest),
    /// Change when a user's connections expire.
    "refresh" => Refresh(RefreshRequest),
    /// Clients present in a channel.
    "presence" => Presence(ChannelRequest),
    /// Presence counts of a channel.
    "presence_stats" => PresenceStats(ChannelRequest),
    /// A channel's history.
    "history" => History(HistoryRequest),
    /// Remove a channel's history.
    "history_remove" => HistoryRemove(ChannelRequest),
    /// Channels with subscribers on any node.
    "channels" => Channels(ChannelsRequest),
    /// Every live node.
    "info" => Info(InfoRequest),
    /// Several commands in one call.
    "batch" => Batch(BatchRequest),
    /// Whether users are connected anywhere (ferrocast extension).
    "user_status" => UserStatus(UsersRequest),
    /// Statistics of channels with subscribers on any node (ferrocast extension).
    "channel_stats" => ChannelStats(ChannelsRequest),
    /// How a user's connections (or one client) keep up: queue and drops (ferrocast
    /// extension).
    "connection_health" => ConnectionHealth(ConnectionHealthRequest),
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ProtocolError> {
    let body = if body.iter().all(|b| b.is_ascii_whitespace()) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ProtocolError::with_message(ErrorCode::BadRequest, format!("bad request: {e}"))
    })
}

/// `publish`.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishRequest {
    /// The channel.
    #[serde(default)]
    pub channel: String,
    /// The payload (this or `b64data` required).
    pub data: Option<Payload>,
    /// A binary payload in base64 (standard alphabet); takes precedence over `data`.
    #[serde(default)]
    pub b64data: Option<String>,
    /// Tags delivered with the publication.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Applied once within the idempotency window.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Do not store the publication in history.
    #[serde(default)]
    pub skip_history: bool,
}

impl PublishRequest {
    /// What the node publishes: the channel and the parameters (107 for a `b64data` that
    /// is not base64).
    pub fn params(self) -> Result<(String, PublishParams), ProtocolError> {
        let params = PublishParams {
            data: payload(self.data, self.b64data.as_deref())?,
            info: None,
            tags: self.tags,
            idempotency_key: self.idempotency_key,
            skip_history: self.skip_history,
        };
        Ok((self.channel, params))
    }
}

/// The payload of a request: `b64data` decoded when given (as Centrifugo does), else
/// `data`.
pub fn payload(
    data: Option<Payload>,
    b64data: Option<&str>,
) -> Result<Option<Payload>, ProtocolError> {
    use base64::Engine as _;
    match b64data.filter(|b| !b.is_empty()) {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map(|bytes| Some(Payload::from_bytes(bytes)))
            .map_err(|_| {
                ProtocolError::with_message(ErrorCode::BadRequest, "b64data is not base64")
            }),
        None => Ok(data),
    }
}

/// `broadcast`.
#[derive(Debug, Clone, Deserialize)]
pub struct BroadcastRequest {
    /// The channels.
    #[serde(default)]
    pub channels: Vec<String>,
    /// The payload (this or `b64data` required).
    pub data: Option<Payload>,
    /// A binary payload in base64 (standard alphabet); takes precedence over `data`.
    #[serde(default)]
    pub b64data: Option<String>,
    /// Tags delivered with each publication.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    /// Applied once per channel within the idempotency window.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Do not store the publications in history.
    #[serde(default)]
    pub skip_history: bool,
}

/// `subscribe` and `unsubscribe`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserChannelRequest {
    /// The user (required).
    #[serde(default)]
    pub user: String,
    /// The channel.
    #[serde(default)]
    pub channel: String,
    /// Only this connection of the user.
    #[serde(default)]
    pub client: String,
}

/// The close code and reason of a `disconnect`.
#[derive(Debug, Clone, Deserialize)]
pub struct DisconnectSpec {
    /// Close code (3000..=4999).
    pub code: u16,
    /// Close reason.
    #[serde(default)]
    pub reason: String,
}

/// `disconnect`.
#[derive(Debug, Clone, Deserialize)]
pub struct DisconnectRequest {
    /// The user (this or `client` required).
    #[serde(default)]
    pub user: String,
    /// Only this connection.
    #[serde(default)]
    pub client: String,
    /// Code and reason (default: 3503 force disconnect).
    #[serde(default)]
    pub disconnect: Option<DisconnectSpec>,
}

/// `refresh`.
#[derive(Debug, Clone, Deserialize)]
pub struct RefreshRequest {
    /// The user (required).
    #[serde(default)]
    pub user: String,
    /// Only this connection.
    #[serde(default)]
    pub client: String,
    /// Expire the connections now.
    #[serde(default)]
    pub expired: bool,
    /// New expiry time (Unix seconds, 0: never).
    #[serde(default)]
    pub expire_at: i64,
}

/// `presence`, `presence_stats` and `history_remove`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelRequest {
    /// The channel.
    #[serde(default)]
    pub channel: String,
}

/// `history`: the same request as the client protocol's.
pub use ferrocast_protocol::HistoryRequest;

/// `channels`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelsRequest {
    /// Only channels matching this pattern (`*` as wildcard).
    #[serde(default)]
    pub pattern: String,
}

/// `info` (no fields).
#[derive(Debug, Clone, Deserialize)]
pub struct InfoRequest {}

/// `user_status`.
#[derive(Debug, Clone, Deserialize)]
pub struct UsersRequest {
    /// The users (at most 1000).
    #[serde(default)]
    pub users: Vec<String>,
}

/// `connection_health`: `user`, `client`, or both (that client of the user).
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionHealthRequest {
    /// All of this user's connections.
    #[serde(default)]
    pub user: String,
    /// Only this connection.
    #[serde(default)]
    pub client: String,
}

/// `batch`.
#[derive(Debug, Deserialize)]
pub struct BatchRequest {
    /// The commands, each `{"<method>": {...}}`.
    #[serde(default)]
    pub commands: Vec<BatchEntry>,
}

/// One command of a batch, decoded on its own: a malformed entry gets its own error
/// reply and does not fail the others.
#[derive(Debug)]
pub struct BatchEntry {
    /// The entry's method name, as the reply is keyed.
    pub method: String,
    /// The decoded command, or why it could not be decoded.
    pub command: Result<ApiCommand, ProtocolError>,
}

impl<'de> Deserialize<'de> for BatchEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map: BTreeMap<String, Box<RawValue>> = BTreeMap::deserialize(deserializer)?;
        let mut entries = map.into_iter();
        let entry = match (entries.next(), entries.next()) {
            (Some((method, body)), None) if method != "batch" => {
                let command = ApiMethod::from_name(&method)
                    .ok_or_else(|| ProtocolError::new(ErrorCode::MethodNotFound))
                    .and_then(|m| ApiCommand::decode(m, body.get().as_bytes()));
                BatchEntry { method, command }
            }
            _ => BatchEntry {
                method: String::new(),
                command: Err(ProtocolError::with_message(
                    ErrorCode::BadRequest,
                    "each batch command must hold exactly one method",
                )),
            },
        };
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in ApiMethod::ALL {
            assert_eq!(ApiMethod::from_name(m.name()), Some(*m));
        }
        assert_eq!(ApiMethod::from_name("nope"), None);
    }

    #[test]
    fn decodes_once_with_defaults() {
        let c = ApiCommand::decode(ApiMethod::Publish, br#"{"channel":"a","data":{"x":1}}"#);
        let Ok(ApiCommand::Publish(p)) = c else {
            panic!("not a publish: {c:?}");
        };
        assert_eq!(p.channel, "a");
        assert_eq!(
            p.data.map(|d| d.into_bytes()).as_deref(),
            Some(br#"{"x":1}"#.as_slice())
        );
        assert!(matches!(
            ApiCommand::decode(ApiMethod::Info, b"  "),
            Ok(ApiCommand::Info(_))
        ));
        let e = ApiCommand::decode(ApiMethod::History, b"{").unwrap_err();
        assert_eq!(e.code, 107);
    }

    #[test]
    fn batch_entries_fail_alone() {
        let b: BatchRequest = serde_json::from_str(
            r#"{"commands":[{"publish":{"channel":"a","data":1}},{"nope":{}},{"a":{},"b":{}},{"batch":{}},{"history":{"limit":"x"}}]}"#,
        )
        .unwrap();
        let codes: Vec<Option<u32>> = b
            .commands
            .iter()
            .map(|e| e.command.as_ref().err().map(|e| e.code))
            .collect();
        assert_eq!(codes, [None, Some(104), Some(107), Some(107), Some(107)]);
    }
}
