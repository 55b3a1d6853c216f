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
}
