//! [`Payload`]: application bytes (publication data, client info, command data) carried
//! through the broker untouched.
//!
//! A payload is opaque: Protobuf clients and the server API's `b64data` may send any
//! bytes. The JSON protocol embeds a payload verbatim as a JSON value, so it can only
//! carry payloads that are JSON; encoding any other payload for JSON fails (and the
//! connection is closed with 3506, as Centrifugo does). Payloads that arrive as JSON are
//! validated once when they enter, with the raw newlines between their tokens removed:
//! a newline separates messages in a JSON frame.

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Why a payload cannot go into a JSON message.
pub const NOT_JSON: &str = "payload is not JSON";

/// Application bytes, kept exactly as the producer sent them.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Payload(Bytes);

/// `bytes` without raw newlines (which valid JSON only has as whitespace between tokens).
fn without_newlines(bytes: Bytes) -> Bytes {
    if bytes.contains(&b'\n') {
        bytes.iter().copied().filter(|b| *b != b'\n').collect()
    } else {
        bytes
    }
}

impl Payload {
    /// Opaque bytes (from Protobuf, base64 or the Redis envelope), not checked.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        Payload(bytes.into())
    }

    /// Validates `bytes` as a single JSON value and keeps it without raw newlines.
    pub fn json(bytes: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let bytes = bytes.into();
        let _: &RawValue = serde_json::from_slice(&bytes)?;
        Ok(Payload(without_newlines(bytes)))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, owned.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The payload as JSON text to embed in a JSON message (raw newlines removed), or
    /// `None` when it is not one JSON value.
    pub fn as_json(&self) -> Option<Cow<'_, str>> {
        let raw: &RawValue = serde_json::from_slice(&self.0).ok()?;
        let text = raw.get();
        Some(if text.contains('\n') {
            Cow::Owned(text.replace('\n', ""))
        } else {
            Cow::Borrowed(text)
        })
    }

    /// Whether the payload is one JSON value.
    pub fn is_json(&self) -> bool {
        serde_json::from_slice::<&RawValue>(&self.0).is_ok()
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload(bytes)
    }
}

/// Serializes as the embedded JSON value; fails for a payload that is not JSON.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(text) = self.as_json() else {
            return Err(serde::ser::Error::custom(NOT_JSON));
        };
        let raw: &RawValue = serde_json::from_str(&text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Deserializes any JSON value, kept as its text without raw newlines.
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Box::deserialize(deserializer).map_err(D::Error::custom)?;
        let text: Box<str> = raw.into();
        Ok(Payload(without_newlines(Bytes::from(text.into_string()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_verbatim() {
        let v: Payload = serde_json::from_str(r#"{"a": 1,  "b":[1,2]}"#).unwrap();
        assert_eq!(&v.as_bytes()[..], br#"{"a": 1,  "b":[1,2]}"#);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a": 1,  "b":[1,2]}"#
        );
    }

    #[test]
    fn newlines_between_tokens_are_removed() {
        let v: Payload = serde_json::from_str("{\"a\":\n 1,\r\n\"s\":\"x\\ny\"}").unwrap();
        assert_eq!(&v.as_bytes()[..], b"{\"a\": 1,\r\"s\":\"x\\ny\"}");
        let p = Payload::from_bytes(Bytes::from_static(b"[1,\n2]"));
        assert_eq!(p.as_json().as_deref(), Some("[1,2]"));
        assert_eq!(serde_json::to_string(&p).unwrap(), "[1,2]");
    }

    #[test]
    fn opaque_bytes_are_not_json() {
        assert!(Payload::json(Bytes::from_static(b"{nope")).is_err());
        assert!(Payload::json(Bytes::from_static(b"1 2")).is_err());
        let p = Payload::from_bytes(Bytes::from_static(b"\x00\xffbinary"));
        assert!(!p.is_json() && p.as_json().is_none());
        assert!(serde_json::to_string(&p).is_err());
        assert!(Payload::from_bytes(Bytes::from_static(b"\"text\"")).is_json());
    }
}
