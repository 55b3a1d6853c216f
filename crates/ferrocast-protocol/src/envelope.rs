//! What nodes exchange through Redis: publications, joins and leaves on a channel's
//! pub/sub channel, publications in history streams, and cluster control messages.
//! Everything is MessagePack (`rmp-serde`).
//!
//! A pub/sub message is a MessagePack stream: the stream offset (uint), the epoch (str),
//! then the [`Envelope`]. The publish script writes the first two, so a message carries
//! the offset Redis assigned to it in the same atomic step.

use crate::raw::Payload;
use crate::types::{ClientInfo, Publication};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a Redis message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Bad MessagePack framing.
    #[error("bad envelope header: {0}")]
    Header(String),
    /// Bad MessagePack body.
    #[error("bad envelope body: {0}")]
    Body(#[from] rmp_serde::decode::Error),
}

/// [`ClientInfo`] as stored in Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireClientInfo {
    /// User id.
    pub user: String,
    /// Client id.
    pub client: String,
    /// Connection info (payload bytes).
    pub conn_info: Option<serde_bytes::ByteBuf>,
    /// Channel info (payload bytes).
    pub chan_info: Option<serde_bytes::ByteBuf>,
}

/// [`Publication`] as stored in Redis (the offset travels outside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WirePublication {
    /// Payload bytes (JSON or binary).
    pub data: serde_bytes::ByteBuf,
    /// Publisher.
    pub info: Option<WireClientInfo>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Unix milliseconds.
    pub time: i64,
    /// W3C `traceparent` of the publish, when traced.
    pub trace: Option<String>,
}

/// What travels on a channel's pub/sub channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Envelope {
    /// A publication.
    Pub(WirePublication),
    /// A client joined.
    Join(WireClientInfo),
    /// A client left.
    Leave(WireClientInfo),
    /// A publication of `channel` on its namespace's wildcard feed (the feed's pub/sub
    /// channel carries the publications of every channel of the namespace).
    Feed {
        /// The concrete channel.
        channel: String,
        /// The publication.
        publication: WirePublication,
    },
}

fn payload(b: serde_bytes::ByteBuf) -> Payload {
    Payload::from_bytes(Bytes::from(b.into_vec()))
}

impl WireClientInfo {
    /// From a protocol [`ClientInfo`].
    pub fn from_info(i: &ClientInfo) -> Self {
        WireClientInfo {
            user: i.user.clone(),
            client: i.client.clone(),
            conn_info: i
                .conn_info
                .as_ref()
                .map(|r| serde_bytes::ByteBuf::from(r.as_bytes().to_vec())),
            chan_info: i
                .chan_info
                .as_ref()
                .map(|r| serde_bytes::ByteBuf::from(r.as_bytes().to_vec())),
        }
    }

    /// Into a protocol [`ClientInfo`] (the info parts are opaque payloads).
    pub fn into_info(self) -> ClientInfo {
        ClientInfo {
            user: self.user,
            client: self.client,
            conn_info: self.conn_info.map(payload),
            chan_info: self.chan_info.map(payload),
        }
    }
}

impl WirePublication {
    /// From a protocol [`Publication`].
    pub fn from_publication(p: &Publication, trace: Option<String>) -> Self {
        WirePublication {
            data: serde_bytes::ByteBuf::from(p.data.as_bytes().to_vec()),
            info: p.info.as_ref().map(WireClientInfo::from_info),
            tags: p.tags.clone(),
            time: p.time,
            trace,
        }
    }

    /// Into a protocol [`Publication`] at `offset` (the data is an opaque payload: JSON
    /// or binary, as it was published).
    pub fn into_publication(self, offset: u64) -> Publication {
        Publication {
            data: payload(self.data),
            info: self.info.map(WireClientInfo::into_info),
            offset,
            tags: self.tags,
            time: self.time,
            channel: None,
        }
    }
}

/// Deepest nesting accepted in a MessagePack body: ours is at most a few levels deep, and a
/// limit keeps a hostile message from exhausting the stack.
pub const MAX_DEPTH: usize = 32;

/// Decodes a MessagePack body with the nesting limit.
pub fn decode_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

/// Encodes a body with `rmp-serde`.
pub fn encode_body<T: Serialize>(body: &T) -> Vec<u8> {
    rmp_serde::to_vec(body).unwrap_or_default()
}

/// Encodes a complete pub/sub message (offset, epoch, envelope).
pub fn encode_message(offset: u64, epoch: &str, envelope: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_uint(&mut out, offset);
    let _ = rmp::encode::write_str(&mut out, epoch);
    out.extend_from_slice(&encode_body(envelope));
    out
}

/// Decodes a pub/sub message into (offset, epoch, envelope).
pub fn decode_message(bytes: &[u8]) -> Result<(u64, String, Envelope), EnvelopeError> {
    let mut rd = bytes;
    let offset: u64 =
        rmp::decode::read_int(&mut rd).map_err(|e| EnvelopeError::Header(e.to_string()))?;
    let len = rmp::decode::read_str_len(&mut rd)
        .map_err(|e| EnvelopeError::Header(e.to_string()))? as usize;
    if len > rd.len() || len > 256 {
        return Err(EnvelopeError::Header("epoch length out of range".into()));
    }
    let epoch = std::str::from_utf8(&rd[..len])
        .map_err(|_| EnvelopeError::Header("epoch is not UTF-8".into()))?
        .to_string();
    let envelope = decode_body(&rd[len..])?;
    Ok((offset, epoch, envelope))
}

/// One node's announcement on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id of the node process.
    pub uid: String,
    /// Node name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Connections.
    pub num_clients: u64,
    /// Distinct users.
    pub num_users: u64,
    /// Channels with local subscribers.
    pub num_channels: u64,
    /// Subscriptions.
    pub num_subs: u64,
    /// Seconds since start.
    pub uptime: u64,
}

/// One channel's statistics on one node, or merged over the cluster (the
/// `channel_stats` API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStat {
    /// The channel.
    pub channel: String,
    /// Subscribers (summed over nodes).
    pub num_clients: u64,
    /// Publications that reached the channel's subscribers on a node since it has had
    /// subscribers there (the largest count of any node: every node sees each one).
    pub publications: u64,
    /// Publications per second over the last sample (largest of any node).
    pub publications_per_sec: f64,
    /// Pushes queued to its subscribers (summed over nodes).
    pub deliveries: u64,
    /// Deliveries per second over the last sample (summed).
    pub deliveries_per_sec: f64,
    /// Pushes not delivered: to connections closing or closed as slow, or dropped by a
    /// slow-consumer policy (summed).
    pub drops: u64,
}

impl ChannelStat {
    /// Adds another node's view of the same channel.
    pub fn merge(&mut self, other: &ChannelStat) {
        self.num_clients += other.num_clients;
        self.publications = self.publications.max(other.publications);
        self.publications_per_sec = self.publications_per_sec.max(other.publications_per_sec);
        self.deliveries += other.deliveries;
        self.deliveries_per_sec += other.deliveries_per_sec;
        self.drops += other.drops;
    }
}

/// A cluster-wide command or announcement on the control channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// A node is alive.
    Node(NodeInfo),
    /// A node stops (graceful shutdown): forget it at once.
    NodeLeft {
        /// Its unique id.
        uid: String,
    },
    /// Disconnect a user's connections (or one client when `client` is set).
    Disconnect {
        /// User id (may be empty when `client` is set).
        user: String,
        /// Client id (empty: all of the user's).
        client: String,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Subscribe a user's connections to a channel.
    Subscribe {
        /// User id.
        user: String,
        /// Client id (empty: all of the user's).
        client: String,
        /// Channel.
        channel: String,
    },
    /// Unsubscribe a user's connections from a channel.
    Unsubscribe {
        /// User id.
        user: String,
        /// Client id (empty: all of the user's).
        client: String,
        /// Channel.
        channel: String,
    },
    /// Refresh or expire a user's connections.
    Refresh {
        /// User id.
        user: String,
        /// Client id (empty: all of the user's).
        client: String,
        /// Close as expired now.
        expired: bool,
        /// New expiry (Unix seconds, 0: never).
        expire_at: i64,
    },
    /// Every other node: report your channels matching `pattern` (`channels` API).
    ChannelsRequest {
        /// Survey id.
        id: String,
        /// Node that asks (it does not answer itself).
        from: String,
        /// Glob pattern (empty: all).
        pattern: String,
    },
    /// A node's answer to a [`ControlMessage::ChannelsRequest`].
    ChannelsReply {
        /// Survey id.
        id: String,
        /// Channel name and local subscriber count.
        channels: Vec<(String, u64)>,
    },
    /// Every other node: your channels matching `pattern`, with their statistics.
    ChannelStatsRequest {
        /// Survey id.
        id: String,
        /// Node that asks (it does not answer itself).
        from: String,
        /// Glob pattern (empty: all).
        pattern: String,
    },
    /// A node's answer to a [`ControlMessage::ChannelStatsRequest`].
    ChannelStatsReply {
        /// Survey id.
        id: String,
        /// The node's channels.
        channels: Vec<ChannelStat>,
    },
    /// Every other node: report the health of the connections addressed (the
    /// `connection_health` API).
    HealthRequest {
        /// Survey id.
        id: String,
        /// Node that asks (it does not answer itself).
        from: String,
        /// User id (empty: only `client`).
        user: String,
        /// Client id (empty: all of the user's).
        client: String,
    },
    /// A node's answer to a [`ControlMessage::HealthRequest`].
    HealthReply {
        /// Survey id.
        id: String,
        /// The addressed connections this node holds.
        connections: Vec<ConnectionHealth>,
    },
}

/// How one connection keeps up with what it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionHealth {
    /// Client id.
    pub client: String,
    /// User id (empty for anonymous).
    pub user: String,
    /// Name of the node holding the connection.
    pub node: String,
    /// Bytes waiting in its outbound queue.
    pub queue_bytes: u64,
    /// The queue's bound (`client.queue_max_size`).
    pub queue_max: u64,
    /// Pushes dropped by slow-consumer drop policies since it connected.
    pub dropped: u64,
    /// Channels it is subscribed to on that node.
    pub subscriptions: Vec<String>,
}

impl ControlMessage {
    /// Encodes for the control channel.
    pub fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }

    /// Decodes from the control channel.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(decode_body(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        let p = Publication {
            data: Payload::json(Bytes::from_static(br#"{"a":1}"#)).unwrap(),
            info: Some(ClientInfo {
                user: "u".into(),
                client: "c".into(),
                conn_info: Some(Payload::json(Bytes::from_static(b"[1]")).unwrap()),
                chan_info: None,
            }),
            offset: 0,
            tags: None,
            time: 5,
            channel: None,
        };
        let env = Envelope::Pub(WirePublication::from_publication(&p, None));
        let bytes = encode_message(42, "abcd", &env);
        let (offset, epoch, back) = decode_message(&bytes).unwrap();
        assert_eq!((offset, epoch.as_str()), (42, "abcd"));
        let Envelope::Pub(wp) = back else { panic!() };
        let q = wp.into_publication(42);
        assert_eq!(q.data, p.data);
        assert_eq!(q.info, p.info);
        assert_eq!(q.offset, 42);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_message(b"").is_err());
        assert!(decode_message(&[0xff, 0xff]).is_err());
        assert!(decode_message(&[0x01, 0xdb, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut ok = encode_message(
            1,
            "e",
            &Envelope::Leave(WireClientInfo {
                user: "u".into(),
                client: "c".into(),
                conn_info: None,
                chan_info: None,
            }),
        );
        ok.truncate(ok.len() - 1);
        assert!(decode_message(&ok).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut bytes = vec![0x01, 0xa1, b'e'];
        bytes.extend(std::iter::repeat_n(0x91u8, 100_000));
        bytes.push(0xc0);
        assert!(decode_message(&bytes).is_err());
        assert!(ControlMessage::decode(&bytes[3..]).is_err());
    }

    #[test]
    fn control_round_trip() {
        let m = ControlMessage::Disconnect {
            user: "1".into(),
            client: String::new(),
            code: 3503,
            reason: "bye".into(),
        };
        assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        let m = ControlMessage::HealthReply {
            id: "s".into(),
            connections: vec![ConnectionHealth {
                client: "c".into(),
                user: "u".into(),
                node: "n".into(),
                queue_bytes: 10,
                queue_max: 100,
                dropped: 3,
                subscriptions: vec!["a".into()],
            }],
        };
        assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
    }
}
