//! The `ferrocast` configuration: file (TOML or JSON) < environment < command-line flags.
//!
//! Every key can be set from the environment as `FERROCAST_<SECTION>_<KEY>` in upper
//! case (`client.token.hmac_secret_key` → `FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY`).
//! Unknown keys, unknown `FERROCAST_` variables and invalid values are refused with a
//! message naming the key.

use ferrocast_node::config::{
    ChannelConfig, ClientConfig, NamedProxyConfig, NodeConfig, RpcConfig,
};
use ferrocast_node::duration::serde_str;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;
use std::time::Duration;

/// `http_server.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Address to listen on.
    pub address: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// How long a client may take to send the HTTP request head (slowloris guard).
    #[serde(with = "serde_str")]
    pub handshake_timeout: Duration,
    /// When set, the server API and `/metrics` are served only on this port (for a
    /// cluster-internal Service); the public port keeps WebSocket, `/health` and `/ready`.
    pub internal_port: Option<u16>,
    /// Address of the internal listener (default: `address`).
    pub internal_address: Option<String>,
    /// New TCP connections accepted per second from one IP address (0: no limit).
    pub connection_rate_per_ip: u32,
    /// Burst of connections from one IP address above the rate.
    pub connection_burst_per_ip: u32,
    /// Pending TCP connections the kernel queues before they are accepted (a reconnect
    /// storm after a deploy arrives all at once).
    pub listen_backlog: u32,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            address: "0.0.0.0".into(),
            port: 8000,
            handshake_timeout: Duration::from_secs(10),
            internal_port: None,
            internal_address: None,
            connection_rate_per_ip: 0,
            connection_burst_per_ip: 50,
            listen_backlog: 4096,
        }
    }
}

/// `http_api.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpApiConfig {
    /// API key expected in `X-API-Key` or `Authorization: apikey <key>`.
    pub key: String,
    /// Accept API calls without a key. Development only.
    pub insecure: bool,
    /// Largest accepted request body in bytes.
    pub max_body_size: usize,
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        HttpApiConfig {
            key: String::new(),
            insecure: false,
            max_body_size: 1 << 20,
        }
    }
}

/// Which engine connects this node to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineType {
    /// In-memory, single node.
    #[default]
    Memory,
    /// Redis: a cluster of nodes.
    Redis,
}

/// `engine.redis.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Redis addresses (`redis://host:port`); several shard channels between them.
    pub address: Vec<String>,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Pub/sub connections per Redis instance (channels are spread over them).
    pub pubsub_connections: usize,
    /// How long a channel's epoch and offset outlive its last publication.
    #[serde(with = "serde_str")]
    pub history_meta_ttl: Duration,
    /// A node silent for this long (it announces itself every 2s) leaves `info`.
    #[serde(with = "serde_str")]
    pub node_info_ttl: Duration,
    /// `address` lists seed nodes of one Redis Cluster (sharded pub/sub, hash slots)
    /// instead of standalone instances to shard over.
    pub cluster: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            address: vec!["redis://127.0.0.1:6379".into()],
            prefix: "ferrocast".into(),
            pubsub_connections: 2,
            history_meta_ttl: Duration::from_secs(30 * 24 * 3600),
            node_info_ttl: Duration::from_secs(10),
            cluster: false,
        }
    }
}

/// `engine.*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `memory` or `redis`.
    #[serde(rename = "type")]
    pub kind: EngineType,
    /// Redis settings.
    pub redis: RedisConfig,
}

/// `shutdown.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Window over which clients are disconnected on SIGTERM.
    #[serde(with = "serde_str")]
    pub drain_window: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_window: Duration::from_secs(5),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human readable text.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `log.*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level filter (`info`, `debug`, or a tracing filter such as `ferrocast=debug`).
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
    /// Colours in text logs: `auto` (only when stderr is a terminal), `always`, `never`.
    pub color: LogColor,
}

/// When text logs are coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogColor {
    /// When stderr is a terminal.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            color: LogColor::Auto,
        }
    }
}

/// `opentelemetry.*`: trace export over OTLP (gRPC).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenTelemetryConfig {
    /// Export spans (API calls, command stream entries, publishes, fan-outs).
    pub enabled: bool,
    /// OTLP gRPC endpoint of the collector.
    pub endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Fraction of new traces recorded (0.0 to 1.0); a caller's `traceparent` decision
    /// is always followed.
    pub sample_ratio: f64,
}

impl Default for OpenTelemetryConfig {
    fn default() -> Self {
        OpenTelemetryConfig {
            enabled: false,
            endpoint: "http://127.0.0.1:4317".into(),
            service_name: "ferrocast".into(),
            sample_ratio: 1.0,
        }
    }
}

/// `grpc_api.*`: the gRPC server API (Centrifugo's `CentrifugoApi` service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcApiConfig {
    /// Serve it.
    pub enabled: bool,
    /// Address to bind.
    pub address: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// API key, expected as the `authorization` metadata `apikey <key>` (empty: calls
    /// need no key, as in Centrifugo).
    pub key: String,
    /// `""`: errors in the response's `error` field; `"transport"`: as gRPC statuses.
    pub error_mode: String,
    /// Largest request accepted, in bytes (0: tonic's default of 4 MiB).
    pub max_receive_message_size: usize,
    /// TLS (not supported yet: only `enabled = false`).
    pub tls: ferrocast_node::config::ProxyTls,
    /// Server reflection (not supported yet: only `false`).
    pub reflection: bool,
}

impl Default for GrpcApiConfig {
    fn default() -> Self {
        GrpcApiConfig {
            enabled: false,
            address: String::new(),
            port: 10000,
            key: String::new(),
            error_mode: String::new(),
            max_receive_message_size: 0,
            tls: Default::default(),
            reflection: false,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listener.
    pub http_server: HttpServerConfig,
    /// Node identity.
    pub node: NodeConfig,
    /// Client connections.
    pub client: ClientConfig,
    /// Server HTTP API.
    pub http_api: HttpApiConfig,
    /// Server gRPC API.
    pub grpc_api: GrpcApiConfig,
    /// Channels and namespaces.
    pub channel: ChannelConfig,
    /// RPC namespaces and their proxy.
    pub rpc: RpcConfig,
    /// Named proxies that namespaces refer to.
    pub proxies: Vec<NamedProxyConfig>,
    /// Engine.
    pub engine: EngineConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Trace export.
    pub opentelemetry: OpenTelemetryConfig,
}

/// A configuration error naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML/JSON.
    #[error("cannot parse {path}: {message}")]
    Parse {
        /// File path.
        path: String,
        /// Parser message.
        message: String,
    },
    /// A key is unknown or has an invalid value.
    #[error("invalid configuration key {key}: {message}")]
    Key {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A `FERROCAST_` environment variable names no key.
    #[error("unknown environment variable {0}: it matches no configuration key")]
    UnknownEnv(String),
    /// A cross-key rule is broken.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Overrides from command-line flags.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--address`.
    pub address: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--name`.
    pub name: Option<String>,
    /// `--redis` (switches to the Redis engine).
    pub redis: Vec<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

/// Environment variables reserved for the process itself, not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["FERROCAST_CONFIG"];

/// Whether `name` is one of the variables Kubernetes injects for a Service (service
/// links), e.g. `FERROCAST_SERVICE_HOST` or `FERROCAST_INTERNAL_PORT_9000_TCP_ADDR` for a
/// Service named `ferrocast-internal`. They are not configuration and are ignored.
fn is_kubernetes_service_link(name: &str, value: &str) -> bool {
    let url_like = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|p| value.starts_with(p));
    let parts: Vec<&str> = name.split('_').collect();
    (1..parts.len()).any(|i| {
        let rest = &parts[i + 1..];
        match parts[i] {
            "SERVICE" => matches!(rest, ["HOST"] | ["PORT"] | ["PORT", _]),
            "PORT" => match rest {
                [] => url_like,
                [port, proto, tail @ ..] => {
                    port.chars().all(|c| c.is_ascii_digit())
                        && matches!(*proto, "TCP" | "UDP" | "SCTP")
                        && matches!(tail, [] | ["PROTO"] | ["PORT"] | ["ADDR"])
                }
                _ => false,
            },
            _ => false,
        }
    })
}

fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: p.clone(),
        source,
    })?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p,
            message: e.to_string(),
        })
    } else {
        let v: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: p.clone(),
            message: e.to_string(),
        })?;
        serde_json::to_value(v).map_err(|e| ConfigError::Parse {
            path: p,
            message: e.to_string(),
        })
    }
}

fn leaf_paths(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(&p, child, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        if i == parts.len() - 1 {
            map.insert(part.to_string(), value);
            return;
        }
        cur = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn env_value(key: &str, text: &str, default: &Value) -> Result<Value, ConfigError> {
    let err = |m: &str| ConfigError::Key {
        key: key.to_string(),
        message: m.to_string(),
    };
    Ok(match default {
        Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(err("expected true or false")),
        },
        Value::Number(_) => serde_json::from_str(text).map_err(|_| err("expected a number"))?,
        Value::Array(_) => {
            if text.trim_start().starts_with('[') {
                serde_json::from_str(text).map_err(|e| err(&format!("invalid JSON array: {e}")))?
            } else {
                Value::Array(
                    text.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::String(s.to_string()))
                        .collect(),
                )
            }
        }
        Value::Null => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
        }
        _ => Value::String(text.to_string()),
    })
}

impl Config {
    /// Loads defaults, then `file`, then `FERROCAST_*` variables from `env`, then flags.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let defaults = serde_json::to_value(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut merged = defaults.clone();
        if let Some(path) = file {
            let from_file = read_file(path)?;
            let mut leaves = Vec::new();
            leaf_paths("", &from_file, &mut leaves);
            for (path, v) in leaves {
                set_path(&mut merged, &path, v);
            }
        }
        let mut known = Vec::new();
        leaf_paths("", &defaults, &mut known);
        for (name, text) in env {
            let Some(rest) = name.strip_prefix("FERROCAST_") else {
                continue;
            };
            if NON_CONFIG_ENV.contains(&name.as_str()) {
                continue;
            }
            let found = known
                .iter()
                .find(|(path, _)| path.replace('.', "_").to_ascii_uppercase() == rest);
            let Some((path, default)) = found else {
                if is_kubernetes_service_link(&name, &text) {
                    continue;
                }
                return Err(ConfigError::UnknownEnv(name));
            };
            let v = env_value(path, &text, default)?;
            set_path(&mut merged, path, v);
        }
        let mut cfg: Config =
            serde_path_to_error::deserialize(merged).map_err(|e| ConfigError::Key {
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        if let Some(a) = &flags.address {
            cfg.http_server.address = a.clone();
        }
        if let Some(p) = flags.port {
            cfg.http_server.port = p;
        }
        if let Some(n) = &flags.name {
            cfg.node.name = n.clone();
        }
        if !flags.redis.is_empty() {
            cfg.engine.kind = EngineType::Redis;
            cfg.engine.redis.address = flags.redis.clone();
        }
        if let Some(f) = flags.log_format {
            cfg.log.format = f;
        }
        if let Some(l) = &flags.log_level {
            cfg.log.level = l.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks rules spanning several keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client.validate().map_err(ConfigError::Invalid)?;
        self.channel.validate().map_err(ConfigError::Invalid)?;
        if self.engine.kind == EngineType::Redis && self.engine.redis.address.is_empty() {
            return Err(ConfigError::Invalid(
                "engine.redis.address must list at least one Redis".into(),
            ));
        }
        if self
            .http_server
            .internal_port
            .is_some_and(|p| p != 0 && p == self.http_server.port)
        {
            return Err(ConfigError::Invalid(
                "http_server.internal_port must differ from http_server.port".into(),
            ));
        }
        if self.http_server.connection_rate_per_ip > 0
            && self.http_server.connection_burst_per_ip == 0
        {
            return Err(ConfigError::Invalid(
                "http_server.connection_burst_per_ip must be positive".into(),
            ));
        }
        if self.http_server.listen_backlog == 0 {
            return Err(ConfigError::Invalid(
                "http_server.listen_backlog must be positive".into(),
            ));
        }
        if self.http_api.max_body_size == 0 {
            return Err(ConfigError::Invalid(
                "http_api.max_body_size must be positive".into(),
            ));
        }
        let g = &self.grpc_api;
        if !matches!(g.error_mode.as_str(), "" | "transport") {
            return Err(ConfigError::Invalid(format!(
                "grpc_api.error_mode {:?} must be \"\" or \"transport\"",
                g.error_mode
            )));
        }
        if g.tls.enabled {
            return Err(ConfigError::Invalid(
                "grpc_api.tls is not supported yet (terminate TLS in front of the node)".into(),
            ));
        }
        if g.reflection {
            return Err(ConfigError::Invalid(
                "grpc_api.reflection is not supported yet".into(),
            ));
        }
        if g.enabled
            && g.port != 0
            && g.port == self.http_server.port
            && (g.address.is_empty() || g.address == self.http_server.address)
        {
            return Err(ConfigError::Invalid(
                "grpc_api.port must differ from http_server.port".into(),
            ));
        }
        let otel = &self.opentelemetry;
        if !(0.0..=1.0).contains(&otel.sample_ratio) {
            return Err(ConfigError::Invalid(
                "opentelemetry.sample_ratio must be between 0.0 and 1.0".into(),
            ));
        }
        if otel.enabled
            && !(otel.endpoint.starts_with("http://") || otel.endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(
                "opentelemetry.endpoint must be an http:// or https:// URL".into(),
            ));
        }
        ferrocast_node::auth::TokenVerifier::new(&self.client.token)
            .map_err(ConfigError::Invalid)?;
        ferrocast_node::proxy::Proxies::new(&self.client, &self.channel, &self.rpc, &self.proxies)
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

/// A commented configuration file with every key at its default value.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default_config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml_text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml_text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load(Some(&path), env, &Overrides::default())
    }

    #[test]
    fn default_file_matches_defaults() {
        let cfg = load_str(DEFAULT_CONFIG_TOML, &[]).unwrap();
        assert_eq!(
            serde_json::to_value(&cfg).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
    }

    #[test]
    fn proxy_settings_are_checked_with_the_key_named() {
        let check = |text: &str| {
            load_str(text, &[])
                .and_then(|c| c.validate().map(|_| c))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(
            check("[client.proxy.connect]\nenabled = true\nendpoint = \"http://b:3000/connect\"\n")
                .is_ok()
        );
        let e = check("[client.proxy.connect]\nenabled = true\n").unwrap_err();
        assert!(e.contains("client.proxy.connect.endpoint"), "{e}");
        assert!(
            check("[client.proxy.connect]\nenabled = true\nendpoint = \"grpc://b:1\"\n").is_ok()
        );
        let e =
            check("[client.proxy.connect]\nenabled = true\nendpoint = \"ws://b:1\"\n").unwrap_err();
        assert!(e.contains("grpc://host:port"), "{e}");
        let e = check("[client.proxy.connect]\nenabled = true\nendpoint = \"grpc://b:1\"\n[client.proxy.connect.grpc]\ncompression = true\n")
            .unwrap_err();
        assert!(e.contains("client.proxy.connect.grpc.compression"), "{e}");
        // Streams need a gRPC endpoint and exclude the subscribe proxy.
        let e = check("[channel.proxy.subscribe_stream]\nendpoint = \"http://b/s\"\n[[channel.namespaces]]\nname = \"a\"\nsubscribe_stream_proxy_enabled = true\n")
            .unwrap_err();
        assert!(e.contains("needs a grpc:// endpoint"), "{e}");
        assert!(check("[channel.proxy.subscribe_stream]\nendpoint = \"grpc://b:1\"\n[[channel.namespaces]]\nname = \"a\"\nsubscribe_stream_proxy_enabled = true\nsubscribe_stream_proxy_bidirectional = true\n").is_ok());
        let e = check("[channel.proxy.subscribe_stream]\nendpoint = \"grpc://b:1\"\n[channel.proxy.subscribe]\nendpoint = \"grpc://b:1\"\n[[channel.namespaces]]\nname = \"a\"\nsubscribe_stream_proxy_enabled = true\nsubscribe_proxy_enabled = true\n")
            .unwrap_err();
        assert!(e.contains("exclude each other"), "{e}");
        let e = check("[client.proxy.connect]\nenpoint = \"x\"\n").unwrap_err();
        assert!(e.contains("enpoint"), "{e}");
        let e = check("[[channel.namespaces]]\nname = \"a\"\nsubscribe_proxy_enabled = true\n")
            .unwrap_err();
        assert!(e.contains("channel.proxy.subscribe.endpoint"), "{e}");
        let e = check("[[channel.namespaces]]\nname = \"a\"\npublish_proxy_enabled = true\npublish_proxy_name = \"x\"\n").unwrap_err();
        assert!(e.contains("no proxy named \"x\""), "{e}");
        assert!(check("[[proxies]]\nname = \"x\"\nendpoint = \"http://b/p\"\n[[channel.namespaces]]\nname = \"a\"\npublish_proxy_enabled = true\npublish_proxy_name = \"x\"\n").is_ok());
        let e = check("[rpc.without_namespace]\nproxy_enabled = true\n").unwrap_err();
        assert!(e.contains("rpc.proxy.endpoint"), "{e}");
        let e =
            check("[[proxies]]\nname = \"x\"\nendpoint = \"http://b/p\"\nbogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn grpc_api_settings_are_checked() {
        let check = |text: &str| {
            load_str(text, &[])
                .and_then(|c| c.validate().map(|_| c))
                .map_err(|e| e.to_string())
        };
        let c = check("[grpc_api]\nenabled = true\nkey = \"k\"\n").unwrap();
        assert_eq!((c.grpc_api.port, c.grpc_api.key.as_str()), (10000, "k"));
        let e = check("[grpc_api]\nerror_mode = \"custom\"\n").unwrap_err();
        assert!(e.contains("grpc_api.error_mode"), "{e}");
        let e = check("[grpc_api]\ntls = { enabled = true }\n").unwrap_err();
        assert!(e.contains("grpc_api.tls"), "{e}");
        let e = check("[grpc_api]\nreflection = true\n").unwrap_err();
        assert!(e.contains("grpc_api.reflection"), "{e}");
        let e = check("[grpc_api]\nenabled = true\nport = 8000\n").unwrap_err();
        assert!(e.contains("grpc_api.port"), "{e}");
        let e = check("[grpc_api]\nprot = 1\n").unwrap_err();
        assert!(e.contains("prot"), "{e}");
        let c = load_str("", &[("FERROCAST_GRPC_API_KEY", "from-env")]).unwrap();
        assert_eq!(c.grpc_api.key, "from-env");
    }

    #[test]
    fn shipped_dev_config_is_valid() {
        let cfg = load_str(include_str!("../../../config/dev.toml"), &[]).unwrap();
        assert_eq!(cfg.channel.namespaces[0].name, "chat");
    }

    #[test]
    fn env_overrides_file() {
        let cfg = load_str(
            "[client]\ninsecure = false\n",
            &[
                ("FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY", "s3"),
                ("FERROCAST_CLIENT_INSECURE", "true"),
                ("FERROCAST_HTTP_SERVER_PORT", "9001"),
                (
                    "FERROCAST_CLIENT_ALLOWED_ORIGINS",
                    "https://a.example,https://b.example",
                ),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.client.token.hmac_secret_key, "s3");
        assert!(cfg.client.insecure);
        assert_eq!(cfg.http_server.port, 9001);
        assert_eq!(cfg.client.allowed_origins.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load_str("[client]\nbogus = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = load_str("[client]\nping_interval = \"abc\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("client.ping_interval"), "{e}");
        let e = load_str("", &[("FERROCAST_NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("FERROCAST_NOPE"), "{e}");
        let e = load_str(
            "[[channel.namespaces]]\nname = \"chat\"\nprezence = true\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("prezence"), "{e}");
        let e = load_str("[channel.without_namespace]\nhistory_size = 10\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("history_ttl"), "{e}");
        for text in [
            "[channel.without_namespace]\nslow_consumer_policy = \"wait\"\n",
            "[[channel.namespaces]]\nname = \"feed\"\nslow_consumer_policy = \"wait\"\n",
        ] {
            let e = load_str(text, &[]).unwrap_err().to_string();
            assert!(
                e.contains("slow_consumer_policy \"wait\" is not one of"),
                "{e}"
            );
        }
        let env = [(
            "FERROCAST_CHANNEL_WITHOUT_NAMESPACE_SLOW_CONSUMER_POLICY",
            "drop_all",
        )];
        let cfg = load_str("", &env).unwrap();
        assert_eq!(
            cfg.channel.without_namespace.slow_consumer_policy,
            ferrocast_node::config::SlowConsumerPolicy::DropAll
        );
    }

    #[test]
    fn kubernetes_service_links_are_ignored_not_refused() {
        let cfg = load_str(
            "",
            &[
                ("FERROCAST_SERVICE_HOST", "10.0.0.1"),
                ("FERROCAST_SERVICE_PORT", "8000"),
                ("FERROCAST_SERVICE_PORT_HTTP", "8000"),
                ("FERROCAST_PORT", "tcp://10.0.0.1:8000"),
                ("FERROCAST_PORT_8000_TCP", "tcp://10.0.0.1:8000"),
                ("FERROCAST_PORT_8000_TCP_ADDR", "10.0.0.1"),
                ("FERROCAST_INTERNAL_SERVICE_HOST", "10.0.0.2"),
                ("FERROCAST_INTERNAL_PORT_9000_TCP_PORT", "9000"),
                ("FERROCAST_HTTP_SERVER_PORT", "9001"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.http_server.port, 9001);
        let e = load_str("", &[("FERROCAST_CLIENT_PORT_X", "1")]).unwrap_err();
        assert!(e.to_string().contains("FERROCAST_CLIENT_PORT_X"));
        // A misspelt key ending in _PORT is still refused.
        let e = load_str("", &[("FERROCAST_HTTP_SERVER_INTRNAL_PORT", "9000")]).unwrap_err();
        assert!(e.to_string().contains("INTRNAL"));
    }

    #[test]
    fn json_files_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"channel":{"namespaces":[{"name":"chat","presence":true,"history_size":10,"history_ttl":"60s"}]}}"#,
        )
        .unwrap();
        let cfg = Config::load(Some(&path), Vec::new(), &Overrides::default()).unwrap();
        assert_eq!(cfg.channel.namespaces[0].options.history_size, 10);
    }
}
