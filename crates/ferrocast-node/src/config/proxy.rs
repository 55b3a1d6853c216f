//! Proxy configuration in Centrifugo v6 layout: `client.proxy.connect|refresh`,
//! `channel.proxy.subscribe|publish|sub_refresh`, `rpc.proxy`, `rpc.namespaces[]`, and the
//! named `proxies[]` that namespaces refer to by `*_proxy_name`.

use crate::duration::serde_str;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The proxy name that means "the one under `channel.proxy` / `rpc.proxy`".
pub const DEFAULT_PROXY: &str = "default";

/// A protocol error an HTTP status is turned into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformError {
    /// Error code.
    pub code: u32,
    /// Error message.
    pub message: String,
    /// Whether the client may retry.
    pub temporary: bool,
}

/// A disconnect an HTTP status is turned into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformDisconnect {
    /// Close code.
    pub code: u32,
    /// Close reason.
    pub reason: String,
}

/// `status_to_code_transforms[]`: what an HTTP status means for the client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusToCodeTransform {
    /// The HTTP status.
    pub status_code: u16,
    /// An error reply (when its code is set).
    pub to_error: TransformError,
    /// A disconnect (when its code is set).
    pub to_disconnect: TransformDisconnect,
}

/// `tls` of a proxy (only `enabled = false` is accepted: backends are called over plain
/// HTTP inside the cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyTls {
    /// Use TLS.
    pub enabled: bool,
}

/// `http` options of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyHttp {
    /// TLS (not supported yet).
    pub tls: ProxyTls,
    /// Headers added to every call (the allow-listed client headers win).
    pub static_headers: BTreeMap<String, String>,
    /// HTTP statuses turned into an error or a disconnect instead of error 100.
    pub status_to_code_transforms: Vec<StatusToCodeTransform>,
}

/// `grpc` options of a proxy (`grpc://` endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyGrpc {
    /// TLS.
    pub tls: ProxyTls,
    /// Per-call credentials key.
    pub credentials_key: String,
    /// Per-call credentials value.
    pub credentials_value: String,
    /// gzip compression (not supported yet).
    pub compression: bool,
    /// Metadata added to every call.
    pub static_metadata: BTreeMap<String, String>,
}

/// One backend endpoint of the proxy hooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// `http://host:port/path` of the hook, or `grpc://host:port` of a `CentrifugoProxy`
    /// gRPC service.
    pub endpoint: String,
    /// Time for a whole call.
    #[serde(with = "serde_str")]
    pub timeout: Duration,
    /// Headers of the client's WebSocket upgrade request sent on to the backend.
    pub http_headers: Vec<String>,
    /// gRPC metadata keys sent on (no effect: clients connect over WebSocket, whose
    /// headers `http_headers` lists; those also go to gRPC backends, as metadata).
    pub grpc_metadata: Vec<String>,
    /// Headers of the connect command's `headers` sent on (not supported yet).
    pub emulated_headers: Vec<String>,
    /// Payloads as base64 (`b64data`) instead of embedded JSON.
    pub binary_encoding: bool,
    /// Send the connection's `meta` (from the connect result) with every other hook.
    pub include_connection_meta: bool,
    /// HTTP options.
    pub http: ProxyHttp,
    /// gRPC options.
    pub grpc: ProxyGrpc,
    /// Calls in flight at most to this endpoint; more wait for a slot within the timeout
    /// (ferrocast).
    pub max_in_flight: usize,
    /// Largest answer accepted, in bytes (ferrocast).
    pub max_response_size: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            grpc_metadata: Vec::new(),
            emulated_headers: Vec::new(),
            binary_encoding: false,
            include_connection_meta: false,
            http: ProxyHttp::default(),
            grpc: ProxyGrpc::default(),
            max_in_flight: 512,
            max_response_size: 1 << 20,
        }
    }
}

impl ProxyConfig {
    /// Checks the endpoint and limits; the error names `path`.
    pub fn validate(&self, path: &str) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err(format!("{path}.endpoint is required"));
        }
        if !self.endpoint.starts_with("http://") && !self.endpoint.starts_with("grpc://") {
            return Err(format!(
                "{path}.endpoint {:?} must be an http:// URL or grpc://host:port",
                self.endpoint
            ));
        }
        if self.grpc.compression {
            return Err(format!("{path}.grpc.compression is not supported yet"));
        }
        if self.http.tls.enabled || self.grpc.tls.enabled {
            return Err(format!("{path}: TLS to the backend is not supported yet"));
        }
        if !self.emulated_headers.is_empty() {
            return Err(format!("{path}.emulated_headers is not supported yet"));
        }
        if self.timeout.is_zero() {
            return Err(format!("{path}.timeout must be positive"));
        }
        if self.max_in_flight == 0 {
            return Err(format!("{path}.max_in_flight must be positive"));
        }
        for (i, t) in self.http.status_to_code_transforms.iter().enumerate() {
            if t.to_error.code == 0 && t.to_disconnect.code == 0 {
                return Err(format!(
                    "{path}.http.status_to_code_transforms[{i}] needs to_error.code or to_disconnect.code"
                ));
            }
        }
        Ok(())
    }
}

/// A proxy with a name, in `proxies[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NamedProxyConfig {
    /// The name namespaces refer to.
    pub name: String,
    /// The endpoint.
    #[serde(flatten)]
    pub proxy: ProxyConfig,
}

/// A proxy that is off unless `enabled` (`client.proxy.connect`, `client.proxy.refresh`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SwitchableProxyConfig {
    /// Use the proxy.
    pub enabled: bool,
    /// The endpoint.
    #[serde(flatten)]
    pub proxy: ProxyConfig,
}

/// Takes `key` out of a map and reads the rest as a [`ProxyConfig`] (serde's `flatten`
/// cannot refuse unknown keys).
fn split_proxy<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
    key: &str,
) -> Result<(T, ProxyConfig), D::Error> {
    use serde::de::Error;
    let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    let extra = match map.remove(key) {
        Some(v) => T::deserialize(v).map_err(|e| D::Error::custom(format!("{key}: {e}")))?,
        None => T::default(),
    };
    let proxy =
        ProxyConfig::deserialize(serde_json::Value::Object(map)).map_err(D::Error::custom)?;
    Ok((extra, proxy))
}

impl<'de> Deserialize<'de> for NamedProxyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (name, proxy) = split_proxy::<D, String>(d, "name")?;
        Ok(NamedProxyConfig { name, proxy })
    }
}

impl<'de> Deserialize<'de> for SwitchableProxyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (enabled, proxy) = split_proxy::<D, bool>(d, "enabled")?;
        Ok(SwitchableProxyConfig { enabled, proxy })
    }
}

/// `client.proxy.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientProxyConfig {
    /// Connections without a token ask the backend who they are.
    pub connect: SwitchableProxyConfig,
    /// Expiring connections ask the backend to be extended (server-side refresh).
    pub refresh: SwitchableProxyConfig,
}

/// `channel.proxy.*`: the proxies namespaces refer to as `default`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelProxyConfig {
    /// Subscribe hook.
    pub subscribe: ProxyConfig,
    /// Publish hook.
    pub publish: ProxyConfig,
    /// Subscription refresh hook.
    pub sub_refresh: ProxyConfig,
    /// Subscription streams (a `grpc://` endpoint).
    pub subscribe_stream: ProxyConfig,
}

/// Options of an RPC namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcOptions {
    /// Calls go to the backend.
    pub proxy_enabled: bool,
    /// Which proxy (`default`: `rpc.proxy`).
    pub proxy_name: String,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            proxy_enabled: false,
            proxy_name: DEFAULT_PROXY.into(),
        }
    }
}

/// An RPC namespace: methods `name:...` use its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpcNamespace {
    /// Namespace name.
    pub name: String,
    /// Options.
    #[serde(flatten)]
    pub options: RpcOptions,
}

impl<'de> Deserialize<'de> for RpcNamespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let name = match map.remove("name") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(D::Error::custom("rpc namespace without a name")),
        };
        let options = RpcOptions::deserialize(serde_json::Value::Object(map))
            .map_err(|e| D::Error::custom(format!("rpc namespace {name:?}: {e}")))?;
        Ok(RpcNamespace { name, options })
    }
}

/// `rpc.*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// The proxy RPC namespaces refer to as `default`.
    pub proxy: ProxyConfig,
    /// Options of methods without a namespace.
    pub without_namespace: RpcOptions,
    /// RPC namespaces.
    pub namespaces: Vec<RpcNamespace>,
}
