//! Replies and pushes, and their JSON encoding ([`crate::codec::Protocol`] picks the
//! encoding of a connection).

use crate::codes::ProtocolError;
use crate::raw::Payload;
use crate::types::*;
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Why a message cannot be encoded for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// It carries a payload that is not JSON, for a JSON connection (Centrifugo closes
    /// such a connection with 3506, inappropriate protocol).
    #[error("a payload is not JSON: a JSON connection cannot receive it")]
    NotJson,
}

/// The answer to one command.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Id of the command this answers.
    pub id: u32,
    /// Result or error.
    pub result: ReplyResult,
}

/// The body of a reply.
#[derive(Debug, Clone)]
pub enum ReplyResult {
    /// The command failed.
    Error(ProtocolError),
    /// `connect` succeeded.
    Connect(Box<ConnectResult>),
    /// `subscribe` succeeded.
    Subscribe(Box<SubscribeResult>),
    /// `unsubscribe` succeeded.
    Unsubscribe,
    /// `publish` succeeded.
    Publish,
    /// `presence` result.
    Presence(PresenceResult),
    /// `presence_stats` result.
    PresenceStats(PresenceStatsResult),
    /// `history` result.
    History(HistoryResult),
    /// `ping` answer.
    Ping,
    /// `rpc` result.
    Rpc(Option<Payload>),
    /// `refresh` result.
    Refresh(RefreshResult),
    /// `sub_refresh` result.
    SubRefresh(SubRefreshResult),
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if self.id > 0 {
            m.serialize_entry("id", &self.id)?;
        }
        let empty = EmptyResult {};
        match &self.result {
            ReplyResult::Error(e) => m.serialize_entry("error", e)?,
            ReplyResult::Connect(r) => m.serialize_entry("connect", r)?,
            ReplyResult::Subscribe(r) => m.serialize_entry("subscribe", r)?,
            ReplyResult::Unsubscribe => m.serialize_entry("unsubscribe", &empty)?,
            ReplyResult::Publish => m.serialize_entry("publish", &empty)?,
            ReplyResult::Presence(r) => m.serialize_entry("presence", r)?,
            ReplyResult::PresenceStats(r) => m.serialize_entry("presence_stats", r)?,
            ReplyResult::History(r) => m.serialize_entry("history", r)?,
            ReplyResult::Ping => m.serialize_entry("ping", &empty)?,
            ReplyResult::Rpc(data) => m.serialize_entry("rpc", &RpcResult { data })?,
            ReplyResult::Refresh(r) => m.serialize_entry("refresh", r)?,
            ReplyResult::SubRefresh(r) => m.serialize_entry("sub_refresh", r)?,
        }
        m.end()
    }
}

#[derive(Serialize)]
struct RpcResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: &'a Option<Payload>,
}

impl Reply {
    /// An error reply.
    pub fn error(id: u32, error: impl Into<ProtocolError>) -> Self {
        Reply {
            id,
            result: ReplyResult::Error(error.into()),
        }
    }
}

/// The body of a server push.
#[derive(Debug, Clone)]
pub enum PushBody<'a> {
    /// A publication.
    Pub(&'a Publication),
    /// A client joined the channel.
    Join(&'a ClientInfo),
    /// A client left the channel.
    Leave(&'a ClientInfo),
    /// The server unsubscribed the client.
    Unsubscribe {
        /// Unsubscribe code (2000 terminal, 2500 resubscribe).
        code: u32,
        /// Reason.
        reason: &'a str,
    },
    /// The server subscribed the client (server-side subscription).
    Subscribe(&'a SubscribeResult),
    /// An asynchronous message to the client.
    Message(&'a Payload),
    /// Connection refreshed by the server.
    Refresh {
        /// Whether the connection expires.
        expires: bool,
        /// Seconds until expiry.
        ttl: u32,
    },
}

#[derive(Serialize)]
struct PushEnvelope<'a> {
    push: PushInner<'a>,
}

struct PushInner<'a> {
    channel: &'a str,
    body: &'a PushBody<'a>,
}

#[derive(Serialize)]
struct InfoOnly<'a> {
    info: &'a ClientInfo,
}

#[derive(Serialize)]
struct UnsubscribeBody<'a> {
    code: u32,
    reason: &'a str,
}

#[derive(Serialize)]
struct MessageBody<'a> {
    data: &'a Payload,
}

impl Serialize for PushInner<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if !self.channel.is_empty() {
            m.serialize_entry("channel", self.channel)?;
        }
        match self.body {
            PushBody::Pub(p) => m.serialize_entry("pub", p)?,
            PushBody::Join(i) => m.serialize_entry("join", &InfoOnly { info: i })?,
            PushBody::Leave(i) => m.serialize_entry("leave", &InfoOnly { info: i })?,
            PushBody::Unsubscribe { code, reason } => m.serialize_entry(
                "unsubscribe",
                &UnsubscribeBody {
                    code: *code,
                    reason,
                },
            )?,
            PushBody::Subscribe(r) => m.serialize_entry("subscribe", r)?,
            PushBody::Message(d) => m.serialize_entry("message", &MessageBody { data: d })?,
            PushBody::Refresh { expires, ttl } => m.serialize_entry(
                "refresh",
                &SubRefreshResult {
                    expires: *expires,
                    ttl: *ttl,
                },
            )?,
        }
        m.end()
    }
}

/// Encodes a push in JSON; fails when it carries a payload that is not JSON.
pub fn encode_push_json(channel: &str, body: &PushBody<'_>) -> Result<Bytes, EncodeError> {
    let env = PushEnvelope {
        push: PushInner { channel, body },
    };
    serde_json::to_vec(&env)
        .map(Bytes::from)
        .map_err(|_| EncodeError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::ErrorCode;

    #[test]
    fn push_pub_shape() {
        let p = Publication {
            data: serde_json::from_str(r#"{"x":1}"#).unwrap(),
            info: None,
            offset: 7,
            tags: None,
            time: 0,
            channel: None,
        };
        let b = encode_push_json("news", &PushBody::Pub(&p)).unwrap();
        assert_eq!(
            &b[..],
            br#"{"push":{"channel":"news","pub":{"data":{"x":1},"offset":7}}}"#
        );
    }

    #[test]
    fn reply_shapes() {
        assert_eq!(
            serde_json::to_string(&Reply::error(3, ErrorCode::BadRequest)).unwrap(),
            r#"{"id":3,"error":{"code":107,"message":"bad request"}}"#
        );
        let publish = Reply {
            id: 4,
            result: ReplyResult::Publish,
        };
        assert_eq!(
            serde_json::to_string(&publish).unwrap(),
            r#"{"id":4,"publish":{}}"#
        );
    }
}
