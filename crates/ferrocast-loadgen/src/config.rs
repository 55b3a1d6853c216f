//! The validated run configuration: targets, protocol, publish path, channels and limits,
//! shared read-only by every thread.

use clap::ValueEnum;
use std::net::SocketAddr;
use std::time::Duration;

/// The wire protocol of the subscribers (and of `--publish client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Centrifugo client protocol v2, JSON or Protobuf (ferrocast, Centrifugo).
    Centrifugo,
    /// NATS text protocol over WebSocket (nats-server `websocket {}` listener).
    Nats,
}

/// The encoding of the Centrifugo client protocol (subscribers and `--publish client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// Text frames of `\n`-separated JSON objects.
    Json,
    /// Subprotocol `centrifuge-protobuf`: binary frames of length-prefixed records.
    Protobuf,
}

/// How publications reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishPath {
    /// POST /api/publish with X-API-Key (pipelined keep-alive HTTP/1.1).
    Http,
    /// A dedicated publisher connection sending `publish` commands (NATS: `PUB`).
    Client,
    /// XADD to the backend command stream (`--redis-addr`, `--redis-stream`).
    Redis,
}

/// How subscriber connections are spread over channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMode {
    /// Every connection on one channel.
    Shared,
    /// Connection i on channel i % K.
    Many(usize),
    /// One channel per connection.
    Personal,
}

/// How connections authenticate in their `connect` command (Centrifugo protocol).
#[derive(Debug, Clone)]
pub enum Auth {
    /// No token and no data (`--insecure`: the broker runs with `client.insecure`; also
    /// NATS, which has no `connect` command).
    Insecure,
    /// An HS256 connection token per connection (`--token-secret`), `sub` = `bench-<i>`;
    /// index `connections` is the `--publish client` publisher's.
    Tokens(Vec<String>),
    /// No token, connect `data` for the broker's connect proxy (`--connect-data`): JSON
    /// text in which `{i}` stands for the connection index.
    ConnectData(String),
}

impl Auth {
    /// The label of this mode in the output (`insecure`, `token`, `proxy`).
    pub fn label(&self) -> &'static str {
        match self {
            Auth::Insecure => "insecure",
            Auth::Tokens(_) => "token",
            Auth::ConnectData(_) => "proxy",
        }
    }
}

/// What connection `i` sends in its `connect` command besides its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Connection token (empty: none).
    pub token: String,
    /// Connect `data`, JSON text (`None`: none).
    pub data: Option<String>,
}

/// Signs `n` HS256 connection tokens with `secret`, `sub` = `bench-<i>`, no expiry.
pub fn sign_tokens(secret: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let header = jsonwebtoken::Header::default();
    (0..n)
        .map(|i| {
            let claims = serde_json::json!({ "sub": format!("bench-{i}") });
            jsonwebtoken::encode(&header, &claims, &key)
                .map_err(|e| anyhow::anyhow!("signing a token: {e}"))
        })
        .collect()
}

/// Connect data for connection `i`: `template` with `{i}` replaced by `i`.
pub fn connect_data(template: &str, i: usize) -> String {
    template.replace("{i}", &i.to_string())
}

/// One WebSocket endpoint.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `ws://` URL, as given.
    pub url: String,
    /// Its resolved (loopback) address.
    pub addr: SocketAddr,
}

/// The validated run configuration shared by all threads.
pub struct Config {
    /// WebSocket endpoints; connection i uses `targets[i % len]`, the publisher the first.
    pub targets: Vec<Target>,
    /// Wire protocol of the connections.
    pub protocol: Protocol,
    /// Encoding of the Centrifugo protocol (JSON with `--protocol nats`, unused there).
    pub encoding: Encoding,
    /// Publish path.
    pub publish: PublishPath,
    /// Channel (NATS: subject) names, indexed by channel number.
    pub channels: Vec<String>,
    /// How connections are spread over `channels`.
    pub mode: ChannelMode,
    /// The wildcard pattern every subscriber subscribes to instead of its channel
    /// (`--subscribe-pattern`); each then expects every publication.
    pub subscribe_pattern: Option<String>,
    /// Subscriber connections.
    pub connections: usize,
    /// New connections per second (0: all at once).
    pub connect_rate: f64,
    /// Time allowed for one connection's setup.
    pub connect_timeout: Duration,
    /// Bytes of each JSON payload.
    pub payload_size: usize,
    /// Address of the server API (`--publish http`).
    pub api_addr: SocketAddr,
    /// Path of the publish endpoint (`.../publish`).
    pub api_path: String,
    /// `X-API-Key` value.
    pub api_key: String,
    /// Outstanding pipelined API requests or XADD commands.
    pub http_inflight: usize,
    /// Redis holding the backend command stream (`--publish redis`).
    pub redis_addr: SocketAddr,
    /// The backend command stream key.
    pub redis_stream: String,
    /// How connections authenticate.
    pub auth: Auth,
}

impl Config {
    /// Channel number of subscriber connection `i`.
    pub fn channel_of(&self, i: usize) -> u32 {
        match self.mode {
            ChannelMode::Shared => 0,
            ChannelMode::Many(k) => (i % k) as u32,
            ChannelMode::Personal => i as u32,
        }
    }

    /// What connection `i` (`connections` for the publisher) sends in `connect`.
    pub fn creds(&self, i: usize) -> Creds {
        match &self.auth {
            Auth::Insecure => Creds::default(),
            Auth::Tokens(t) => Creds {
                token: t.get(i).cloned().unwrap_or_default(),
                data: None,
            },
            Auth::ConnectData(d) => Creds {
                token: String::new(),
                data: Some(connect_data(d, i)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_data_numbers_each_connection() {
        assert_eq!(connect_data(r#"{"user":"u{i}"}"#, 7), r#"{"user":"u7"}"#);
        assert_eq!(connect_data(r#"{"a":1}"#, 7), r#"{"a":1}"#);
    }

    #[test]
    fn tokens_carry_the_connection_index() {
        let t = sign_tokens("s", 2).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        let c = jsonwebtoken::decode::<serde_json::Value>(
            &t[1],
            &jsonwebtoken::DecodingKey::from_secret(b"s"),
            &v,
        )
        .unwrap();
        assert_eq!(c.claims["sub"], "bench-1");
    }
}
