//! Client protocol of ferrocast: the Centrifugo client protocol v2 (JSON variant, and the
//! Protobuf variant's wire layer in [`protobuf`]).
//!
//! Pure types and codecs, no I/O: commands decoded from client frames, replies and
//! pushes encoded for the wire, error and disconnect codes. The fan-out path encodes a
//! push once ([`encode_push`]) and shares the resulting bytes with every subscriber.

pub mod codes;
pub mod command;
pub mod envelope;
pub mod protobuf;
pub mod raw;
pub mod reply;
pub mod types;

pub use codes::{Disconnect, ErrorCode, ProtocolError};
pub use command::{Command, DecodeError, Method, decode_frame};
pub use raw::RawJson;
pub use reply::{PushBody, Reply, ReplyResult, encode_push};
pub use types::*;
