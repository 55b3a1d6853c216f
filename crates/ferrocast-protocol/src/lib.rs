//! Client protocol of ferrocast: the Centrifugo client protocol v2, in its JSON and
//! Protobuf encodings.
//!
//! Pure types and codecs, no I/O: commands decoded from client frames, replies and
//! pushes encoded for the wire ([`codec::Protocol`] picks the encoding of a connection),
//! error and disconnect codes, and the envelope nodes exchange through Redis. The
//! fan-out path encodes a push at most once per encoding ([`codec::PushFrames`]) and
//! shares the resulting bytes with every subscriber.

pub mod codec;
pub mod codes;
pub mod command;
pub mod envelope;
pub mod protobuf;
pub mod raw;
pub mod reply;
pub mod types;

pub use codec::{FrameError, Protocol, PushFrames};
pub use codes::{Disconnect, ErrorCode, ProtocolError};
pub use command::{Command, DecodeError, Method, decode_frame};
pub use raw::Payload;
pub use reply::{EncodeError, PushBody, Reply, ReplyResult, encode_push_json};
pub use types::*;
