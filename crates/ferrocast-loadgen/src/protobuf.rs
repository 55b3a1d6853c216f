//! The Protobuf wire format, as much of it as the load generator needs for the Centrifugo
//! client protocol's Protobuf encoding (subprotocol `centrifuge-protobuf`).
//!
//! A WebSocket binary frame holds one or more records `uvarint(len) ‖ message`: `Command`s
//! from the client, `Reply`s from the server; an empty record is a ping (server) or a pong
//! (client). The few commands sent are encoded by hand (varints and length-delimited
//! fields); received records are walked with a small field reader over borrowed bytes,
//! without building messages or allocating. Field numbers are those of
//! `crates/ferrocast-protocol/proto/client.proto` (Centrifugo's).

/// `Command.id` (varint).
const COMMAND_ID: u32 = 1;
/// `Command.connect` (`ConnectRequest`).
const COMMAND_CONNECT: u32 = 4;
/// `Command.subscribe` (`SubscribeRequest`).
const COMMAND_SUBSCRIBE: u32 = 5;
/// `Command.publish` (`PublishRequest`).
const COMMAND_PUBLISH: u32 = 7;
/// `Command.rpc` (`RPCRequest`).
const COMMAND_RPC: u32 = 13;
/// `ConnectRequest.token` (string).
const CONNECT_TOKEN: u32 = 1;
/// `ConnectRequest.data` (bytes).
const CONNECT_DATA: u32 = 2;
/// `ConnectRequest.name` (string).
const CONNECT_NAME: u32 = 4;
/// `RPCRequest.data` (bytes).
const RPC_DATA: u32 = 1;
/// `RPCRequest.method` (string).
const RPC_METHOD: u32 = 2;
/// `SubscribeRequest.channel` (string).
const SUBSCRIBE_CHANNEL: u32 = 1;
/// `PublishRequest.channel` (string).
const PUBLISH_CHANNEL: u32 = 1;
/// `PublishRequest.data` (bytes).
const PUBLISH_DATA: u32 = 2;
/// `Reply.id` (varint).
const REPLY_ID: u32 = 1;
/// `Reply.error` (`Error`).
const REPLY_ERROR: u32 = 2;
/// `Reply.push` (`Push`).
const REPLY_PUSH: u32 = 4;
/// `Error.code` (varint).
const ERROR_CODE: u32 = 1;
/// `Push.channel` (string).
const PUSH_CHANNEL: u32 = 2;
/// `Push.pub` (`Publication`).
const PUSH_PUB: u32 = 4;
/// `Publication.data` (bytes).
const PUBLICATION_DATA: u32 = 4;

/// Wire type of varint fields.
const VARINT: u8 = 0;
/// Wire type of 64-bit fixed fields.
const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages).
const LEN: u8 = 2;
/// Wire type of 32-bit fixed fields.
const FIXED32: u8 = 5;

/// Why received bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// A varint cut short or longer than 10 bytes.
    Varint,
    /// A length (record or field) running past the end of its bytes.
    Length,
    /// Field number 0, or a wire type this reader does not know (groups included).
    Field,
}

impl WireError {
    /// The error kind counted in the load generator's output.
    pub fn kind(self) -> &'static str {
        match self {
            WireError::Varint => "pb_bad_varint",
            WireError::Length => "pb_bad_length",
            WireError::Field => "pb_bad_field",
        }
    }
}

// --- encoding -------------------------------------------------------------------------------

/// Bytes of `v` as a varint.
#[inline]
pub fn uvarint_len(v: u64) -> usize {
    // 7 bits per byte; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `v` as a varint.
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends the key of field `field` with wire type `wire`.
#[inline]
fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_uvarint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Bytes of a key of field `field`.
#[inline]
fn key_len(field: u32) -> usize {
    uvarint_len(u64::from(field) << 3)
}

/// Bytes of a length-delimited field `field` holding `len` bytes.
#[inline]
fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + uvarint_len(len as u64) + len
}

/// Appends the key and the length of a length-delimited field; its `len` bytes follow.
#[inline]
fn put_len_head(out: &mut Vec<u8>, field: u32, len: usize) {
    put_key(out, field, LEN);
    put_uvarint(out, len as u64);
}

/// Appends a length-delimited field holding `bytes`.
#[inline]
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_len_head(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends one record holding `Command { id, <method>: { <fields> } }`, a request whose
/// set fields are all strings or bytes (empty ones are left out, as Protobuf does).
fn put_command(out: &mut Vec<u8>, id: u32, method: u32, fields: &[(u32, &[u8])]) {
    let request: usize = fields
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(f, v)| len_field_len(*f, v.len()))
        .sum();
    let command = key_len(COMMAND_ID) + uvarint_len(u64::from(id)) + len_field_len(method, request);
    put_uvarint(out, command as u64);
    put_key(out, COMMAND_ID, VARINT);
    put_uvarint(out, u64::from(id));
    put_len_head(out, method, request);
    for (f, v) in fields {
        if !v.is_empty() {
            put_bytes(out, *f, v);
        }
    }
}

/// Appends the record of `Command { id, connect: { token, data, name } }` (an empty token
/// or data is left out).
pub fn put_connect(out: &mut Vec<u8>, id: u32, name: &str, token: &str, data: &[u8]) {
    put_command(
        out,
        id,
        COMMAND_CONNECT,
        &[
            (CONNECT_TOKEN, token.as_bytes()),
            (CONNECT_DATA, data),
            (CONNECT_NAME, name.as_bytes()),
        ],
    );
}

/// Appends the record of `Command { id, subscribe: { channel } }`.
pub fn put_subscribe(out: &mut Vec<u8>, id: u32, channel: &str) {
    put_command(
        out,
        id,
        COMMAND_SUBSCRIBE,
        &[(SUBSCRIBE_CHANNEL, channel.as_bytes())],
    );
}

/// Appends the record of `Command { id, publish: { channel, data } }`.
pub fn put_publish(out: &mut Vec<u8>, id: u32, channel: &str, data: &[u8]) {
    put_command(
        out,
        id,
        COMMAND_PUBLISH,
        &[(PUBLISH_CHANNEL, channel.as_bytes()), (PUBLISH_DATA, data)],
    );
}

/// Appends the record of `Command { id, rpc: { data, method } }`.
pub fn put_rpc(out: &mut Vec<u8>, id: u32, method: &str, data: &[u8]) {
    put_command(
        out,
        id,
        COMMAND_RPC,
        &[(RPC_DATA, data), (RPC_METHOD, method.as_bytes())],
    );
}

/// Appends `n` pong records (empty `Command`s).
pub fn put_pongs(out: &mut Vec<u8>, n: usize) {
    out.resize(out.len() + n, 0);
}

// --- decoding -------------------------------------------------------------------------------

/// Reads a varint at the start of `b`: (value, bytes used).
#[inline]
pub fn uvarint(b: &[u8]) -> Result<(u64, usize), WireError> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((v, i + 1));
        }
    }
    Err(WireError::Varint)
}

/// Iterates over the records of a frame: each item is one message's bytes (empty for a
/// ping or a pong). After an error the iterator ends.
pub fn records(frame: &[u8]) -> Records<'_> {
    Records { rest: frame }
}

/// The records of a frame, see [`records`].
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<&'a [u8], WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = take_len(self.rest);
        self.rest = match r {
            Ok((_, rest)) => rest,
            Err(_) => &[],
        };
        Some(r.map(|(msg, _)| msg))
    }
}

/// Splits `uvarint(len) ‖ len bytes ‖ rest` into (the len bytes, rest).
#[inline]
fn take_len(b: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let (len, n) = uvarint(b)?;
    let rest = &b[n..];
    if len > rest.len() as u64 {
        return Err(WireError::Length);
    }
    Ok(rest.split_at(len as usize))
}

/// A field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A varint.
    Varint(u64),
    /// A length-delimited value (string, bytes, embedded message).
    Bytes(&'a [u8]),
    /// A 32- or 64-bit fixed value (not used by the load generator, skipped).
    Fixed,
}

/// Iterates over the fields of one message as (field number, value). After an error the
/// iterator ends.
pub fn fields(msg: &[u8]) -> Fields<'_> {
    Fields { rest: msg }
}

/// The fields of a message, see [`fields`].
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    #[inline]
    fn field(&mut self) -> Result<(u32, Value<'a>), WireError> {
        let (key, n) = uvarint(self.rest)?;
        let b = &self.rest[n..];
        let field = u32::try_from(key >> 3).map_err(|_| WireError::Field)?;
        if field == 0 {
            return Err(WireError::Field);
        }
        let (value, rest) = match (key & 7) as u8 {
            VARINT => {
                let (v, n) = uvarint(b)?;
                (Value::Varint(v), &b[n..])
            }
            LEN => {
                let (v, rest) = take_len(b)?;
                (Value::Bytes(v), rest)
            }
            FIXED64 if b.len() >= 8 => (Value::Fixed, &b[8..]),
            FIXED32 if b.len() >= 4 => (Value::Fixed, &b[4..]),
            FIXED64 | FIXED32 => return Err(WireError::Length),
            _ => return Err(WireError::Field),
        };
        self.rest = rest;
        Ok((field, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.field();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// What the load generator reads of a `Reply` (the last occurrence of a field wins, as
/// Protobuf has it for scalars).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplyView<'a> {
    /// `id`: of the answered command, 0 for pushes.
    pub id: u64,
    /// `error.code`, when `error` is set.
    pub error: Option<u32>,
    /// The `push` message's bytes, when set.
    pub push: Option<&'a [u8]>,
}

/// Reads the fields of a `Reply` the load generator uses.
#[inline]
pub fn reply(msg: &[u8]) -> Result<ReplyView<'_>, WireError> {
    let mut r = ReplyView::default();
    for f in fields(msg) {
        match f? {
            (REPLY_ID, Value::Varint(v)) => r.id = v,
            (REPLY_ERROR, Value::Bytes(e)) => {
                let mut code = 0;
                for f in fields(e) {
                    if let (ERROR_CODE, Value::Varint(v)) = f? {
                        code = v as u32;
                    }
                }
                r.error = Some(code);
            }
            (REPLY_PUSH, Value::Bytes(p)) => r.push = Some(p),
            _ => {}
        }
    }
    Ok(r)
}

/// The channel of a `Push` and its publication's `data` (`None`: no publication, e.g. a
/// join or an unsubscribe push, or a publication without data).
#[inline]
pub fn push(msg: &[u8]) -> Result<(&[u8], Option<&[u8]>), WireError> {
    let (mut channel, mut data): (&[u8], Option<&[u8]>) = (&[], None);
    for f in fields(msg) {
        match f? {
            (PUSH_CHANNEL, Value::Bytes(c)) => channel = c,
            (PUSH_PUB, Value::Bytes(p)) => {
                for f in fields(p) {
                    if let (PUBLICATION_DATA, Value::Bytes(d)) = f? {
                        data = Some(d);
                    }
                }
            }
            _ => {}
        }
    }
    Ok((channel, data))
}

#[cfg(test)]
mod tests;
