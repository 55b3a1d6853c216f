//! The two encodings of the client protocol behind one value, [`Protocol`]: how a
//! connection's frames decode into commands and how replies, pushes and pings encode.
//!
//! - JSON: text frames, commands and replies separated by `\n`; payloads embedded as
//!   JSON values (a payload that is not JSON cannot be sent: [`EncodeError::NotJson`]).
//! - Protobuf: binary frames of `uvarint(len) ‖ message` records; payloads as bytes.
//!
//! A push that many connections receive is encoded at most once per protocol
//! ([`PushFrames`]), and the same bytes are shared by every connection of that protocol.

use crate::command::{Command, DecodeError, decode_frame};
use crate::protobuf::{self, convert};
use crate::reply::{EncodeError, PushBody, Reply, encode_push_json};
use bytes::Bytes;
use std::cell::OnceCell;

/// The encoding a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// JSON (the default).
    #[default]
    Json,
    /// Protobuf (WebSocket subprotocol `centrifuge-protobuf`).
    Protobuf,
}

/// Why a client frame could not be decoded; the connection is closed with 3501.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A malformed JSON frame.
    #[error(transparent)]
    Json(#[from] DecodeError),
    /// A malformed Protobuf frame.
    #[error(transparent)]
    Protobuf(#[from] protobuf::ProtobufDecodeError),
}

impl Protocol {
    /// Every protocol.
    pub const ALL: [Protocol; 2] = [Protocol::Json, Protocol::Protobuf];

    /// `json` or `protobuf` (as in metrics and in the proxy requests' `protocol`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::Protobuf => "protobuf",
        }
    }

    /// Decodes a client frame into its commands (at most `max_commands`).
    pub fn decode_commands(
        self,
        frame: &Bytes,
        max_commands: usize,
    ) -> Result<Vec<Command>, FrameError> {
        match self {
            Protocol::Json => Ok(decode_frame(frame, max_commands)?),
            Protocol::Protobuf => Ok(protobuf::decode_commands_shared(frame, max_commands)?
                .into_iter()
                .map(convert::command_from_wire)
                .collect()),
        }
    }

    /// Appends a reply to a frame being built (after a `\n` in JSON when the frame is
    /// not empty; as one record in Protobuf). On error `out` is left as it was.
    pub fn append_reply(self, out: &mut Vec<u8>, reply: &Reply) -> Result<(), EncodeError> {
        match self {
            Protocol::Json => {
                let start = out.len();
                if start > 0 {
                    out.push(b'\n');
                }
                if serde_json::to_writer(&mut *out, reply).is_err() {
                    out.truncate(start);
                    return Err(EncodeError::NotJson);
                }
                Ok(())
            }
            Protocol::Protobuf => {
                protobuf::encode_reply_into(out, &convert::reply(reply));
                Ok(())
            }
        }
    }

    /// Encodes a push as a frame of its own.
    pub fn encode_push(self, channel: &str, body: &PushBody<'_>) -> Result<Bytes, EncodeError> {
        match self {
            Protocol::Json => encode_push_json(channel, body),
            Protocol::Protobuf => Ok(protobuf::encode_push_record(&convert::push(channel, body))),
        }
    }

    /// The server's heartbeat ping: `{}` in JSON, an empty Reply record in Protobuf.
    pub fn ping(self) -> Bytes {
        match self {
            Protocol::Json => Bytes::from_static(b"{}"),
            Protocol::Protobuf => protobuf::ping_record(),
        }
    }
}

/// One push, encoded for a protocol the first time a connection of that protocol needs
/// it, then shared.
pub struct PushFrames<'a> {
    channel: &'a str,
    body: &'a PushBody<'a>,
    frames: [OnceCell<Result<Bytes, EncodeError>>; 2],
}

impl<'a> PushFrames<'a> {
    /// Nothing encoded yet.
    pub fn new(channel: &'a str, body: &'a PushBody<'a>) -> Self {
        PushFrames {
            channel,
            body,
            frames: [OnceCell::new(), OnceCell::new()],
        }
    }

    /// The push encoded for `protocol`.
    pub fn get(&self, protocol: Protocol) -> Result<&Bytes, EncodeError> {
        self.frames[protocol as usize]
            .get_or_init(|| protocol.encode_push(self.channel, self.body))
            .as_ref()
            .map_err(|e| *e)
    }

    /// The protocols the push was encoded for (each once).
    pub fn encoded(&self) -> impl Iterator<Item = Protocol> + '_ {
        Protocol::ALL
            .into_iter()
            .filter(|p| self.frames[*p as usize].get().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::Payload;
    use crate::reply::ReplyResult;
    use crate::types::Publication;

    fn publication(data: &'static [u8]) -> Publication {
        Publication {
            data: Payload::from_bytes(Bytes::from_static(data)),
            info: None,
            offset: 3,
            tags: None,
            time: 0,
            channel: None,
        }
    }

    #[test]
    fn a_push_is_encoded_once_per_protocol() {
        let p = publication(b"{\"a\":1}");
        let body = PushBody::Pub(&p);
        let frames = PushFrames::new("ch", &body);
        assert_eq!(frames.encoded().count(), 0);
        let j1 = frames.get(Protocol::Json).unwrap().clone();
        let j2 = frames.get(Protocol::Json).unwrap().clone();
        assert_eq!(j1.as_ptr(), j2.as_ptr(), "the same bytes are shared");
        assert_eq!(
            &j1[..],
            br#"{"push":{"channel":"ch","pub":{"data":{"a":1},"offset":3}}}"#
        );
        assert_eq!(frames.encoded().collect::<Vec<_>>(), [Protocol::Json]);
        let pb = frames.get(Protocol::Protobuf).unwrap();
        let replies = protobuf::decode_replies(pb).unwrap();
        let push = replies[0].push.as_ref().unwrap();
        assert_eq!(push.channel, "ch");
        assert_eq!(&push.r#pub.as_ref().unwrap().data[..], b"{\"a\":1}");
        assert_eq!(frames.encoded().count(), 2);
    }

    #[test]
    fn binary_payloads_reach_protobuf_only() {
        let p = publication(b"\x00\x01binary");
        let body = PushBody::Pub(&p);
        let frames = PushFrames::new("ch", &body);
        assert_eq!(frames.get(Protocol::Json), Err(EncodeError::NotJson));
        assert!(frames.get(Protocol::Protobuf).is_ok());
        let mut out = b"{}".to_vec();
        let reply = Reply {
            id: 1,
            result: ReplyResult::Rpc(Some(p.data.clone())),
        };
        assert_eq!(
            Protocol::Json.append_reply(&mut out, &reply),
            Err(EncodeError::NotJson)
        );
        assert_eq!(out, b"{}", "a failed reply leaves the frame as it was");
    }

    #[test]
    fn replies_are_separated_or_framed() {
        let ping = Reply {
            id: 2,
            result: ReplyResult::Ping,
        };
        let mut json = Vec::new();
        Protocol::Json.append_reply(&mut json, &ping).unwrap();
        Protocol::Json.append_reply(&mut json, &ping).unwrap();
        assert_eq!(json, b"{\"id\":2,\"ping\":{}}\n{\"id\":2,\"ping\":{}}");
        let mut pb = Vec::new();
        Protocol::Protobuf.append_reply(&mut pb, &ping).unwrap();
        Protocol::Protobuf.append_reply(&mut pb, &ping).unwrap();
        let replies = protobuf::decode_replies(&pb).unwrap();
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[1].id, 2);
        assert!(replies[1].ping.is_some());
        assert_eq!(&Protocol::Protobuf.ping()[..], [0u8]);
    }
}
