//! Record framing: `uvarint(len) ‖ message`, one or more records per WebSocket message.

use super::wire;
use bytes::Bytes;
use prost::Message as _;
use std::ops::Range;

/// The server ping: one empty Reply record (a zero length prefix and no bytes).
pub const PING_RECORD: &[u8] = &[0x00];

/// The longest unsigned varint: 10 bytes carry 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// Key of `Reply.push` (field 4, wire type 2 = length-delimited).
const REPLY_PUSH_KEY: u8 = (4 << 3) | 2;

/// Why a Protobuf frame could not be decoded.
///
/// Every variant is a malformed frame from the peer; the server answers all of them the way
/// Centrifugo does, by closing the connection with 3501 (bad request). `offset` is the
/// position in the frame of the record that failed, for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtobufDecodeError {
    /// The frame holds no bytes, hence no record.
    #[error("empty frame: a binary message must hold at least one record")]
    EmptyFrame,
    /// The frame ends inside a record's length prefix.
    #[error("record at byte {offset}: the frame ends inside the length prefix")]
    TruncatedLength {
        /// Position of the record in the frame.
        offset: usize,
    },
    /// A length prefix is longer than 10 bytes or its value does not fit 64 bits.
    #[error(
        "record at byte {offset}: the length prefix is not a valid varint (over 10 bytes or 64 bits)"
    )]
    VarintOverflow {
        /// Position of the record in the frame.
        offset: usize,
    },
    /// A length prefix announces more bytes than the frame has left.
    #[error(
        "record at byte {offset}: length {len} runs past the end of the frame ({available} bytes left)"
    )]
    LengthPastEnd {
        /// Position of the record in the frame.
        offset: usize,
        /// The announced length.
        len: u64,
        /// Bytes left in the frame after the prefix.
        available: usize,
    },
    /// A record's bytes are not a valid encoding of the expected message.
    #[error("record at byte {offset}: undecodable {message}: {source}")]
    InvalidMessage {
        /// Position of the record in the frame.
        offset: usize,
        /// The expected message type (`Command` or `Reply`).
        message: &'static str,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },
    /// The frame holds more records than the caller allows.
    #[error("too many commands in one frame (limit {limit})")]
    TooManyCommands {
        /// The limit that was passed in.
        limit: usize,
    },
}

/// Reads an unsigned varint from the start of `buf`, as Go's `binary.Uvarint` does: at
/// most 10 bytes, the 10th no greater than 1. Returns the value and the prefix length.
///
/// Errors carry offset 0; the caller fills in the record position.
fn read_uvarint(buf: &[u8]) -> Result<(u64, usize), ProtobufDecodeError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(ProtobufDecodeError::VarintOverflow { offset: 0 });
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    // With 10 bytes or more the loop has returned at the 10th; fewer, all with the
    // continuation bit, means the frame ended inside the prefix.
    Err(ProtobufDecodeError::TruncatedLength { offset: 0 })
}

/// Appends `value` as an unsigned varint.
fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes of `value` as an unsigned varint.
fn uvarint_len(value: u64) -> usize {
    prost::encoding::encoded_len_varint(value)
}

/// Iterator over the records of a frame, yielding each record's message bytes (without the
/// length prefix). Made by [`records`].
///
/// It stops after the first error. An empty frame yields nothing; [`decode_commands`]
/// turns that into [`ProtobufDecodeError::EmptyFrame`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    frame: &'a [u8],
    pos: usize,
}

/// Splits a frame into its records, without decoding them.
pub fn records(frame: &[u8]) -> Records<'_> {
    Records { frame, pos: 0 }
}

impl Records<'_> {
    /// The position in the frame of the next record (the frame length once done).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The byte range of the next record's message, or the error that stops the frame.
    fn next_range(&mut self) -> Option<Result<(usize, Range<usize>), ProtobufDecodeError>> {
        let offset = self.pos;
        let rest = self.frame.get(offset..)?;
        if rest.is_empty() {
            return None;
        }
        let result = match read_uvarint(rest) {
            Err(ProtobufDecodeError::VarintOverflow { .. }) => {
                Err(ProtobufDecodeError::VarintOverflow { offset })
            }
            Err(_) => Err(ProtobufDecodeError::TruncatedLength { offset }),
            Ok((len, prefix)) => {
                let available = rest.len() - prefix;
                match usize::try_from(len) {
                    Ok(n) if n <= available => {
                        let start = offset + prefix;
                        Ok((offset, start..start + n))
                    }
                    _ => Err(ProtobufDecodeError::LengthPastEnd {
                        offset,
                        len,
                        available,
                    }),
                }
            }
        };
        match &result {
            Ok((_, range)) => self.pos = range.end,
            // Fuse: nothing after a broken prefix can be trusted.
            Err(_) => self.pos = self.frame.len(),
        }
        Some(result)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], ProtobufDecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let frame = self.frame;
        self.next_range()
            .map(|r| r.map(|(_, range)| &frame[range.start..range.end]))
    }
}

/// Decodes every record of `frame` with `decode`, enforcing `max` records (`None`: no
/// limit) and rejecting an empty frame.
fn decode_all<T>(
    frame: &[u8],
    max: Option<usize>,
    message: &'static str,
    mut decode: impl FnMut(Range<usize>) -> Result<T, prost::DecodeError>,
) -> Result<Vec<T>, ProtobufDecodeError> {
    if frame.is_empty() {
        return Err(ProtobufDecodeError::EmptyFrame);
    }
    let mut out = Vec::new();
    let mut it = records(frame);
    while let Some(next) = it.next_range() {
        let (offset, range) = next?;
        if let Some(limit) = max
            && out.len() >= limit
        {
            return Err(ProtobufDecodeError::TooManyCommands { limit });
        }
        let item = decode(range).map_err(|source| ProtobufDecodeError::InvalidMessage {
            offset,
            message,
            source,
        })?;
        out.push(item);
    }
    Ok(out)
}

/// Decodes a client frame (one binary WebSocket message) into its commands, refusing
/// frames with more than `max_commands` records.
///
/// A zero-length record is an empty Command (`id` 0, no request): the answer to a ping.
/// Payload fields are copied out of `frame`; [`decode_commands_shared`] avoids the copy.
pub fn decode_commands(
    frame: &[u8],
    max_commands: usize,
) -> Result<Vec<wire::Command>, ProtobufDecodeError> {
    decode_all(frame, Some(max_commands), "Command", |range| {
        wire::Command::decode(&frame[range])
    })
}

/// Like [`decode_commands`], but the `bytes` fields of the commands (publish data, connect
/// data, ...) are slices of `frame` instead of copies: they keep the frame's buffer alive
/// for as long as they live.
pub fn decode_commands_shared(
    frame: &Bytes,
    max_commands: usize,
) -> Result<Vec<wire::Command>, ProtobufDecodeError> {
    decode_all(frame, Some(max_commands), "Command", |range| {
        wire::Command::decode(frame.slice(range))
    })
}

/// Decodes a server frame into its replies (pings, pushes and command replies): the
/// client side of the framing, for load generators and tests.
pub fn decode_replies(frame: &[u8]) -> Result<Vec<wire::Reply>, ProtobufDecodeError> {
    decode_all(frame, None, "Reply", |range| {
        wire::Reply::decode(&frame[range])
    })
}

/// Appends one record `uvarint(len) ‖ message` to `out`.
fn encode_record_into(out: &mut Vec<u8>, message: &impl prost::Message) {
    let len = message.encoded_len();
    out.reserve(uvarint_len(len as u64) + len);
    put_uvarint(out, len as u64);
    // A Vec grows on demand, so prost cannot run out of room here; with room reserved
    // above, `encode` has nothing left to report.
    let encoded = message.encode(out);
    debug_assert!(encoded.is_ok(), "encoding into a Vec cannot fail");
}

/// Appends one Reply record (`uvarint(len) ‖ Reply`) to `out`. Several records may share
/// one binary WebSocket message; an empty `Reply` gives the ping, `[0x00]`.
pub fn encode_reply_into(out: &mut Vec<u8>, reply: &wire::Reply) {
    encode_record_into(out, reply);
}

/// Encodes one Reply record into its own buffer.
pub fn encode_reply(reply: &wire::Reply) -> Bytes {
    let mut out = Vec::new();
    encode_reply_into(&mut out, reply);
    Bytes::from(out)
}

/// Appends one Command record (`uvarint(len) ‖ Command`) to `out`: the client side of the
/// framing. An empty `Command` gives the pong, `[0x00]`.
pub fn encode_command_into(out: &mut Vec<u8>, command: &wire::Command) {
    encode_record_into(out, command);
}

/// Appends the record of `Reply { push }` to `out` without building the Reply: the bytes
/// equal `encode_reply_into(out, &Reply { push: Some(push.clone()), ..Default::default() })`.
pub fn encode_push_record_into(out: &mut Vec<u8>, push: &wire::Push) {
    let push_len = push.encoded_len();
    let reply_len = 1 + uvarint_len(push_len as u64) + push_len;
    out.reserve(uvarint_len(reply_len as u64) + reply_len);
    put_uvarint(out, reply_len as u64);
    out.push(REPLY_PUSH_KEY);
    put_uvarint(out, push_len as u64);
    let encoded = push.encode(out);
    debug_assert!(encoded.is_ok(), "encoding into a Vec cannot fail");
}

/// Encodes a push once as a complete Reply record, for the fan-out path: the returned bytes
/// are shared by every subscriber (cloning `Bytes` copies no data) and may be sent alone as
/// a binary message or concatenated with other records into one.
pub fn encode_push_record(push: &wire::Push) -> Bytes {
    let mut out = Vec::new();
    encode_push_record_into(&mut out, push);
    Bytes::from(out)
}

/// The server ping record ([`PING_RECORD`]) as shareable bytes.
pub fn ping_record() -> Bytes {
    Bytes::from_static(PING_RECORD)
}

/// Which request a decoded [`wire::Command`] carries.
///
/// The names ([`CommandMethod::name`]) are those of the JSON decoder's
/// [`crate::command::Method`], so metrics and logs read the same for both variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandMethod {
    /// `connect`.
    Connect,
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `publish`.
    Publish,
    /// `presence`.
    Presence,
    /// `presence_stats`.
    PresenceStats,
    /// `history`.
    History,
    /// `ping`.
    Ping,
    /// `send`.
    Send,
    /// `rpc`.
    Rpc,
    /// `refresh`.
    Refresh,
    /// `sub_refresh`.
    SubRefresh,
    /// No request at all: with `id` 0, the answer to a server ping.
    Empty,
    /// More than one request field is set.
    Ambiguous,
}

impl CommandMethod {
    /// The request set in `command`.
    pub fn of(command: &wire::Command) -> Self {
        let set = [
            (command.connect.is_some(), CommandMethod::Connect),
            (command.subscribe.is_some(), CommandMethod::Subscribe),
            (command.unsubscribe.is_some(), CommandMethod::Unsubscribe),
            (command.publish.is_some(), CommandMethod::Publish),
            (command.presence.is_some(), CommandMethod::Presence),
            (
                command.presence_stats.is_some(),
                CommandMethod::PresenceStats,
            ),
            (command.history.is_some(), CommandMethod::History),
            (command.ping.is_some(), CommandMethod::Ping),
            (command.send.is_some(), CommandMethod::Send),
            (command.rpc.is_some(), CommandMethod::Rpc),
            (command.refresh.is_some(), CommandMethod::Refresh),
            (command.sub_refresh.is_some(), CommandMethod::SubRefresh),
        ];
        let mut found = set.iter().filter(|(is_set, _)| *is_set).map(|(_, m)| *m);
        match (found.next(), found.next()) {
            (None, _) => CommandMethod::Empty,
            (Some(m), None) => m,
            (Some(_), Some(_)) => CommandMethod::Ambiguous,
        }
    }

    /// The method name as used in replies, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            CommandMethod::Connect => "connect",
            CommandMethod::Subscribe => "subscribe",
            CommandMethod::Unsubscribe => "unsubscribe",
            CommandMethod::Publish => "publish",
            CommandMethod::Presence => "presence",
            CommandMethod::PresenceStats => "presence_stats",
            CommandMethod::History => "history",
            CommandMethod::Ping => "ping",
            CommandMethod::Send => "send",
            CommandMethod::Rpc => "rpc",
            CommandMethod::Refresh => "refresh",
            CommandMethod::SubRefresh => "sub_refresh",
            CommandMethod::Empty => "empty",
            CommandMethod::Ambiguous => "ambiguous",
        }
    }
}
