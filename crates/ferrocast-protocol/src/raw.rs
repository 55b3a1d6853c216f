//! [`RawJson`]: a JSON value carried as its original bytes, never re-encoded.

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value kept as the exact bytes the producer sent.
///
/// Publication payloads and client info travel through the broker untouched: they are
/// validated once when they enter and embedded verbatim into every frame that carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct RawJson(Bytes);

impl RawJson {
    /// Wraps bytes that are already known to be one valid JSON value.
    pub fn from_validated(bytes: Bytes) -> Self {
        RawJson(bytes)
    }

    /// Validates `bytes` as a single JSON value.
    pub fn parse(bytes: Bytes) -> Result<Self, serde_json::Error> {
        let _: &RawValue = serde_json::from_slice(&bytes)?;
        Ok(RawJson(bytes))
    }

    /// The encoded JSON text.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The JSON text as `&str`.
    pub fn as_str(&self) -> &str {
        // Constructed only from validated JSON, which is UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("null")
    }

    /// Length of the encoded JSON in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the value is empty (never for validated JSON).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for RawJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue =
            serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw: Box<RawValue> = Box::deserialize(deserializer).map_err(D::Error::custom)?;
        let text: Box<str> = raw.into();
        Ok(RawJson(Bytes::from(text.into_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_bytes_verbatim() {
        let v: RawJson = serde_json::from_str(r#"{"a": 1,  "b":[1,2]}"#).unwrap();
        assert_eq!(v.as_str(), r#"{"a": 1,  "b":[1,2]}"#);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a": 1,  "b":[1,2]}"#
        );
    }

    #[test]
    fn rejects_invalid() {
        assert!(RawJson::parse(Bytes::from_static(b"{nope")).is_err());
        assert!(RawJson::parse(Bytes::from_static(b"1 2")).is_err());
    }
}
