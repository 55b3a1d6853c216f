//! The proxy hooks' requests and results, with the JSON shapes of Centrifugo's HTTP proxy
//! (`proxy.proto` in its JSON encoding): payloads embedded as JSON values, or as base64
//! (`b64data`, `b64info`) when the proxy uses `binary_encoding` (a payload that is not JSON
//! always goes as base64: it could not be embedded).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferrocast_protocol::Payload;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Who calls: the fields every request carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Client (connection) id.
    pub client: String,
    /// Transport name (`websocket`).
    pub transport: String,
    /// `json` or `protobuf`.
    pub protocol: String,
    /// User id (empty for anonymous; not sent with `connect`).
    pub user: String,
    /// Connection meta from the connect result (sent with `include_connection_meta`).
    pub meta: Option<Payload>,
}

/// What the backend said.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply<T> {
    /// A result.
    Result(T),
    /// No result, no error, no disconnect: `{}` (for `connect`: no credentials).
    Empty,
    /// An error for the client (codes 400-1999 are the application's).
    Error(ErrorReply),
    /// Disconnect the client (codes 4000-4999 are the application's; 4500+ terminal).
    Disconnect(DisconnectReply),
}

/// An error returned by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorReply {
    /// Error code.
    pub code: u32,
    /// Message for the client.
    #[serde(default)]
    pub message: String,
    /// The client may retry.
    #[serde(default)]
    pub temporary: bool,
}

/// A disconnect ordered by the backend.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DisconnectReply {
    /// Close code.
    pub code: u32,
    /// Close reason.
    #[serde(default)]
    pub reason: String,
}

/// Why a backend answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad proxy response: {0}")]
pub struct BadResponse(pub String);

/// Writes the common fields and a payload (`data`/`b64data`), choosing the encoding.
struct Fields<'a> {
    caller: &'a Caller,
    with_user: bool,
    binary: bool,
}

impl Fields<'_> {
    fn encoding(&self) -> &'static str {
        if self.binary { "binary" } else { "json" }
    }

    fn begin<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        m.serialize_entry("client", &self.caller.client)?;
        m.serialize_entry("transport", &self.caller.transport)?;
        m.serialize_entry("protocol", &self.caller.protocol)?;
        m.serialize_entry("encoding", self.encoding())?;
        if self.with_user {
            m.serialize_entry("user", &self.caller.user)?;
            if let Some(meta) = &self.caller.meta {
                payload_entry(m, "meta", "b64meta", meta, false)?;
            }
        }
        Ok(())
    }
}

/// `key: <JSON>` or, for binary encoding or a payload that is not JSON, `b64key: "..."`.
fn payload_entry<M: SerializeMap>(
    m: &mut M,
    key: &str,
    b64key: &str,
    p: &Payload,
    binary: bool,
) -> Result<(), M::Error> {
    match (binary, p.as_json()) {
        (false, Some(text)) => match serde_json::from_str::<&RawValue>(&text) {
            Ok(raw) => m.serialize_entry(key, raw),
            Err(_) => m.serialize_entry(b64key, &B64.encode(p.as_bytes())),
        },
        _ => m.serialize_entry(b64key, &B64.encode(p.as_bytes())),
    }
}

macro_rules! request {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? } with_user: $with_user:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq)]
        pub struct $name {
            /// Who calls.
            pub caller: Caller,
            /// Send payloads as base64 (`binary_encoding`).
            pub binary: bool,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let f = Fields { caller: &self.caller, with_user: $with_user, binary: self.binary };
                let mut m = s.serialize_map(None)?;
                f.begin(&mut m)?;
                $(self.$field.write(&mut m, stringify!($field), self.binary)?;)*
                m.end()
            }
        }
    };
}

/// A request field that knows how to write itself (payloads pick their encoding, empty
/// values are left out).
trait Field {
    fn write<M: SerializeMap>(&self, m: &mut M, key: &str, binary: bool) -> Result<(), M::Error>;
}

impl Field for String {
    fn write<M: SerializeMap>(&self, m: &mut M, key: &str, _: bool) -> Result<(), M::Error> {
        if self.is_empty() {
            return Ok(());
        }
        m.serialize_entry(key, self)
    }
}

impl Field for Vec<String> {
    fn write<M: SerializeMap>(&self, m: &mut M, key: &str, _: bool) -> Result<(), M::Error> {
        if self.is_empty() {
            return Ok(());
        }
        m.serialize_entry(key, self)
    }
}

impl Field for Option<Payload> {
    fn write<M: SerializeMap>(&self, m: &mut M, key: &str, binary: bool) -> Result<(), M::Error> {
        match self {
            Some(p) => payload_entry(m, key, &format!("b64{key}"), p, binary),
            None => Ok(()),
        }
    }
}

request! {
    /// `connect`: a client connected without a token.
    ConnectRequest {
        /// Client name (from the connect command).
        name: String,
        /// Client version.
        version: String,
        /// Custom data of the connect command.
        data: Option<Payload>,
        /// Channels the client asks to be subscribed to (server-side subscriptions).
        channels: Vec<String>,
    }
    with_user: false
}

request! {
    /// `refresh`: the connection reached its expiry time.
    RefreshRequest {}
    with_user: true
}

request! {
    /// `subscribe`: a client subscribes to a channel of a namespace with
    /// `subscribe_proxy_enabled`.
    SubscribeRequest {
        /// The channel.
        channel: String,
        /// The subscription token the client sent, if any.
        token: String,
        /// Custom data of the subscribe command.
        data: Option<Payload>,
    }
    with_user: true
}

request! {
    /// `publish`: a client publishes into a channel of a namespace with
    /// `publish_proxy_enabled`.
    PublishRequest {
        /// The channel.
        channel: String,
        /// What the client publishes.
        data: Option<Payload>,
    }
    with_user: true
}

request! {
    /// `rpc`: a client calls a method of an RPC namespace with `proxy_enabled`.
    RpcRequest {
        /// The method (with its namespace prefix).
        method: String,
        /// Custom data of the call.
        data: Option<Payload>,
    }
    with_user: true
}

request! {
    /// `sub_refresh`: a subscription reached its expiry time.
    SubRefreshRequest {
        /// The channel.
        channel: String,
    }
    with_user: true
}

/// A JSON value or its base64 twin, as results carry them.
#[derive(Debug, Default, Deserialize)]
struct PayloadPair {
    #[serde(default)]
    json: Option<Box<RawValue>>,
    #[serde(default)]
    b64: Option<String>,
}

impl PayloadPair {
    fn new(json: Option<Box<RawValue>>, b64: Option<String>) -> Self {
        PayloadPair { json, b64 }
    }

    /// `b64` decoded when present (it wins, as in Centrifugo), else the JSON value.
    fn into_payload(self, what: &str) -> Result<Option<Payload>, BadResponse> {
        if let Some(b) = self.b64.filter(|b| !b.is_empty()) {
            return B64
                .decode(b)
                .map(|v| Some(Payload::from_bytes(v)))
                .map_err(|_| BadResponse(format!("b64{what} is not base64")));
        }
        Ok(self.json.and_then(|raw| {
            let text = raw.get();
            (text != "null").then(|| Payload::from_bytes(text.replace('\n', "")))
        }))
    }
}

/// A boolean that may override a namespace option (`{"value": true}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct BoolValue {
    /// The value.
    #[serde(default)]
    pub value: bool,
}

/// Namespace options a result may override for one subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SubscribeOverride {
    /// `presence`.
    pub presence: Option<BoolValue>,
    /// `join_leave`.
    pub join_leave: Option<BoolValue>,
    /// `force_recovery`.
    pub force_recovery: Option<BoolValue>,
    /// `force_positioning`.
    pub force_positioning: Option<BoolValue>,
    /// `force_push_join_leave`.
    pub force_push_join_leave: Option<BoolValue>,
}

/// A server-side subscription a connect result asks for, with its options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeOptions {
    /// Expiry of the subscription (Unix seconds, 0: none).
    pub expire_at: i64,
    /// Channel info (`chan_info` of the client).
    pub info: Option<Payload>,
    /// Data sent with the subscribe result.
    pub data: Option<Payload>,
    /// Overridden namespace options.
    pub r#override: SubscribeOverride,
}

/// The result of `connect`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectResult {
    /// The user the backend chose (empty: anonymous).
    pub user: String,
    /// When the connection expires (Unix seconds, 0: never).
    pub expire_at: i64,
    /// Connection info.
    pub info: Option<Payload>,
    /// Data sent to the client in the connect result.
    pub data: Option<Payload>,
    /// Server-side subscriptions with the namespace's options.
    pub channels: Vec<String>,
    /// Server-side subscriptions with their own options.
    pub subs: BTreeMap<String, SubscribeOptions>,
    /// Connection meta, sent back with later hooks (`include_connection_meta`).
    pub meta: Option<Payload>,
}

/// The result of `refresh`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshResult {
    /// Close the connection as expired.
    pub expired: bool,
    /// New expiry time (Unix seconds).
    pub expire_at: i64,
    /// New connection info.
    pub info: Option<Payload>,
    /// New connection meta.
    pub meta: Option<Payload>,
}

/// The result of `subscribe`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscribeResult {
    /// Expiry of the subscription (Unix seconds, 0: none).
    pub expire_at: i64,
    /// Channel info.
    pub info: Option<Payload>,
    /// Data sent with the subscribe result.
    pub data: Option<Payload>,
    /// Overridden namespace options.
    pub r#override: SubscribeOverride,
}

/// The result of `publish`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishResult {
    /// Data published instead of the client's (None: the client's).
    pub data: Option<Payload>,
    /// Do not keep the publication in history.
    pub skip_history: bool,
    /// Tags of the publication.
    pub tags: BTreeMap<String, String>,
    /// Idempotency key of the publication.
    pub idempotency_key: String,
}

/// The result of `rpc`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RpcResult {
    /// Data for the client.
    pub data: Option<Payload>,
}

/// The result of `sub_refresh`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubRefreshResult {
    /// End the subscription as expired.
    pub expired: bool,
    /// New expiry time (Unix seconds).
    pub expire_at: i64,
    /// New channel info.
    pub info: Option<Payload>,
}

#[derive(Deserialize)]
struct Envelope<R> {
    #[serde(default = "Option::default")]
    result: Option<R>,
    #[serde(default)]
    error: Option<ErrorReply>,
    #[serde(default)]
    disconnect: Option<DisconnectReply>,
}

/// A result type read from a backend answer.
pub trait FromResponse: Sized {
    /// Reads the `result` object.
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse>;
}

/// Reads a whole answer `{"result"|"error"|"disconnect": ...}`.
pub fn parse_reply<T: FromResponse>(body: &[u8]) -> Result<Reply<T>, BadResponse> {
    let env: Envelope<Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| BadResponse(e.to_string()))?;
    if let Some(d) = env.disconnect {
        return Ok(Reply::Disconnect(d));
    }
    if let Some(e) = env.error {
        return Ok(Reply::Error(e));
    }
    match env.result {
        Some(raw) if raw.get() != "null" => T::from_json(&raw).map(Reply::Result),
        _ => Ok(Reply::Empty),
    }
}

fn read<'a, W: Deserialize<'a>>(raw: &'a RawValue) -> Result<W, BadResponse> {
    serde_json::from_str(raw.get()).map_err(|e| BadResponse(e.to_string()))
}

#[derive(Deserialize)]
struct WireOptions {
    #[serde(default)]
    expire_at: i64,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    b64info: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    r#override: Option<SubscribeOverride>,
}

impl WireOptions {
    fn into_options(self) -> Result<SubscribeOptions, BadResponse> {
        Ok(SubscribeOptions {
            expire_at: self.expire_at,
            info: PayloadPair::new(self.info, self.b64info).into_payload("info")?,
            data: PayloadPair::new(self.data, self.b64data).into_payload("data")?,
            r#override: self.r#override.unwrap_or_default(),
        })
    }
}

impl FromResponse for ConnectResult {
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse> {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            user: String,
            #[serde(default)]
            expire_at: i64,
            #[serde(default)]
            info: Option<Box<RawValue>>,
            #[serde(default)]
            b64info: Option<String>,
            #[serde(default)]
            data: Option<Box<RawValue>>,
            #[serde(default)]
            b64data: Option<String>,
            #[serde(default)]
            channels: Vec<String>,
            #[serde(default)]
            subs: BTreeMap<String, WireOptions>,
            #[serde(default)]
            meta: Option<Box<RawValue>>,
        }
        let w: W = read(raw)?;
        let mut subs = BTreeMap::new();
        for (ch, o) in w.subs {
            subs.insert(ch, o.into_options()?);
        }
        Ok(ConnectResult {
            user: w.user,
            expire_at: w.expire_at,
            info: PayloadPair::new(w.info, w.b64info).into_payload("info")?,
            data: PayloadPair::new(w.data, w.b64data).into_payload("data")?,
            channels: w.channels,
            subs,
            meta: PayloadPair::new(w.meta, None).into_payload("meta")?,
        })
    }
}

impl FromResponse for RefreshResult {
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse> {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            expired: bool,
            #[serde(default)]
            expire_at: i64,
            #[serde(default)]
            info: Option<Box<RawValue>>,
            #[serde(default)]
            b64info: Option<String>,
            #[serde(default)]
            meta: Option<Box<RawValue>>,
        }
        let w: W = read(raw)?;
        Ok(RefreshResult {
            expired: w.expired,
            expire_at: w.expire_at,
            info: PayloadPair::new(w.info, w.b64info).into_payload("info")?,
            meta: PayloadPair::new(w.meta, None).into_payload("meta")?,
        })
    }
}

impl FromResponse for SubscribeResult {
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse> {
        let o: WireOptions = read(raw)?;
        let o = o.into_options()?;
        Ok(SubscribeResult {
            expire_at: o.expire_at,
            info: o.info,
            data: o.data,
            r#override: o.r#override,
        })
    }
}

impl FromResponse for PublishResult {
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse> {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            data: Option<Box<RawValue>>,
            #[serde(default)]
            b64data: Option<String>,
            #[serde(default)]
            skip_history: bool,
            #[serde(default)]
            tags: BTreeMap<String, String>,
            #[serde(default)]
            idempotency_key: String,
        }
        let w: W = read(raw)?;
        Ok(PublishResult {
            data: PayloadPair::new(w.data, w.b64data).into_payload("data")?,
            skip_history: w.skip_history,
            tags: w.tags,
            idempotency_key: w.idempotency_key,
        })
    }
}

impl FromResponse for RpcResult {
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse> {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            data: Option<Box<RawValue>>,
            #[serde(default)]
            b64data: Option<String>,
        }
        let w: W = read(raw)?;
        Ok(RpcResult {
            data: PayloadPair::new(w.data, w.b64data).into_payload("data")?,
        })
    }
}

impl FromResponse for SubRefreshResult {
    fn from_json(raw: &RawValue) -> Result<Self, BadResponse> {
        #[derive(Deserialize)]
        struct W {
            #[serde(default)]
            expired: bool,
            #[serde(default)]
            expire_at: i64,
            #[serde(default)]
            info: Option<Box<RawValue>>,
            #[serde(default)]
            b64info: Option<String>,
        }
        let w: W = read(raw)?;
        Ok(SubRefreshResult {
            expired: w.expired,
            expire_at: w.expire_at,
            info: PayloadPair::new(w.info, w.b64info).into_payload("info")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller() -> Caller {
        Caller {
            client: "c1".into(),
            transport: "websocket".into(),
            protocol: "json".into(),
            user: "42".into(),
            meta: Some(Payload::from_bytes(&b"{\"m\":1}"[..])),
        }
    }

    #[test]
    fn requests_have_centrifugo_shapes() {
        let connect = ConnectRequest {
            caller: caller(),
            name: "js".into(),
            data: Some(Payload::from_bytes(&b"{\"a\":1}"[..])),
            channels: vec!["news".into()],
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&connect).unwrap(),
            json!({"client": "c1", "transport": "websocket", "protocol": "json",
                   "encoding": "json", "name": "js", "data": {"a": 1}, "channels": ["news"]})
        );
        let rpc = RpcRequest {
            caller: caller(),
            binary: true,
            method: "ns:m".into(),
            data: Some(Payload::from_bytes(&b"\x00\x01"[..])),
        };
        assert_eq!(
            serde_json::to_value(&rpc).unwrap(),
            json!({"client": "c1", "transport": "websocket", "protocol": "json",
                   "encoding": "binary", "user": "42", "meta": {"m": 1},
                   "method": "ns:m", "b64data": "AAE="})
        );
        // Not JSON, without binary encoding: sent as base64 all the same.
        let publish = PublishRequest {
            caller: Caller::default(),
            channel: "c".into(),
            data: Some(Payload::from_bytes(&b"\xff"[..])),
            ..Default::default()
        };
        let v = serde_json::to_value(&publish).unwrap();
        assert_eq!(v["b64data"], "/w==");
        assert!(v.get("data").is_none());
    }

    #[test]
    fn replies_are_read_with_their_meaning() {
        let r: Reply<ConnectResult> = parse_reply(
            br#"{"result": {"user": "56", "expire_at": 99, "info": {"n": "x"}, "b64data": "AAE=",
                 "channels": ["a"], "subs": {"b": {"info": 1, "override": {"presence": {"value": false}}}},
                 "meta": {"k": [1,
2]}}}"#,
        )
        .unwrap();
        let Reply::Result(c) = r else { panic!("{r:?}") };
        assert_eq!((c.user.as_str(), c.expire_at), ("56", 99));
        assert_eq!(&c.info.unwrap().as_bytes()[..], br#"{"n": "x"}"#);
        assert_eq!(&c.data.unwrap().as_bytes()[..], [0, 1]);
        assert_eq!(
            c.subs["b"].r#override.presence,
            Some(BoolValue { value: false })
        );
        assert_eq!(&c.meta.unwrap().as_bytes()[..], br#"{"k": [1,2]}"#);
        assert_eq!(parse_reply::<ConnectResult>(b"{}").unwrap(), Reply::Empty);
        assert_eq!(
            parse_reply::<RpcResult>(br#"{"error": {"code": 1000, "message": "nope"}}"#).unwrap(),
            Reply::Error(ErrorReply {
                code: 1000,
                message: "nope".into(),
                temporary: false
            })
        );
        assert_eq!(
            parse_reply::<RpcResult>(br#"{"disconnect": {"code": 4501, "reason": "bye"}}"#)
                .unwrap(),
            Reply::Disconnect(DisconnectReply {
                code: 4501,
                reason: "bye".into()
            })
        );
        assert!(parse_reply::<RpcResult>(b"not json").is_err());
        assert!(parse_reply::<RpcResult>(br#"{"result": {"b64data": "%"}}"#).is_err());
        let p: Reply<PublishResult> =
            parse_reply(br#"{"result": {"data": {"x": 2}, "skip_history": true}}"#).unwrap();
        let Reply::Result(p) = p else { panic!() };
        assert!(p.skip_history);
        assert_eq!(&p.data.unwrap().as_bytes()[..], br#"{"x": 2}"#);
    }
}
