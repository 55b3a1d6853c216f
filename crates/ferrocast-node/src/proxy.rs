//! The node's side of the proxy hooks: which backend endpoint each hook uses (per
//! namespace, by name), which headers of the client's upgrade request and which
//! connection meta go with a call, the trace context, and the metrics of every call.
//! Sessions decide what an answer means for their client.

use crate::config::{
    ChannelConfig, ClientConfig, DEFAULT_PROXY, NamedProxyConfig, ProxyConfig, RpcConfig,
    RpcOptions,
};
use crate::metrics as m;
use crate::telemetry;
use ferrocast_proxy::messages::Reply;
use ferrocast_proxy::{CallError, Proxy, ProxySettings, StatusTransform, Transformed};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// A proxy hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `connect`.
    Connect,
    /// `refresh`.
    Refresh,
    /// `subscribe`.
    Subscribe,
    /// `publish`.
    Publish,
    /// `sub_refresh`.
    SubRefresh,
    /// `rpc`.
    Rpc,
    /// A subscription stream (its opening call).
    SubscribeStream,
}

impl Hook {
    /// The hook's name (metrics, logs).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Refresh => "refresh",
            Hook::Subscribe => "subscribe",
            Hook::Publish => "publish",
            Hook::SubRefresh => "sub_refresh",
            Hook::Rpc => "rpc",
            Hook::SubscribeStream => "subscribe_stream",
        }
    }
}

/// One configured endpoint with what its calls carry.
pub struct HookProxy {
    /// The proxy's name (`default` or a name of `proxies[]`).
    pub name: String,
    /// The endpoint.
    pub proxy: Proxy,
    /// Headers of the upgrade request sent on (lower case).
    http_headers: Vec<String>,
    /// Send the connection meta.
    pub include_meta: bool,
}

impl HookProxy {
    fn new(name: &str, cfg: &ProxyConfig, path: &str) -> Result<Arc<HookProxy>, String> {
        cfg.validate(path)?;
        let transforms = cfg
            .http
            .status_to_code_transforms
            .iter()
            .map(|t| StatusTransform {
                status: t.status_code,
                to: if t.to_error.code > 0 {
                    Transformed::Error(ferrocast_proxy::messages::ErrorReply {
                        code: t.to_error.code,
                        message: t.to_error.message.clone(),
                        temporary: t.to_error.temporary,
                    })
                } else {
                    Transformed::Disconnect(ferrocast_proxy::messages::DisconnectReply {
                        code: t.to_disconnect.code,
                        reason: t.to_disconnect.reason.clone(),
                    })
                },
            })
            .collect();
        let settings = ProxySettings {
            endpoint: cfg.endpoint.clone(),
            timeout: cfg.timeout,
            static_headers: cfg
                .http
                .static_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            static_metadata: cfg
                .grpc
                .static_metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain((!cfg.grpc.credentials_key.is_empty()).then(|| {
                    (
                        cfg.grpc.credentials_key.clone(),
                        cfg.grpc.credentials_value.clone(),
                    )
                }))
                .collect(),
            status_transforms: transforms,
            binary_encoding: cfg.binary_encoding,
            max_in_flight: cfg.max_in_flight,
            max_response_size: cfg.max_response_size,
        };
        let proxy = Proxy::new(&settings).map_err(|e| format!("{path}: {e}"))?;
        Ok(Arc::new(HookProxy {
            name: name.to_string(),
            proxy,
            http_headers: cfg
                .http_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            include_meta: cfg.include_connection_meta,
        }))
    }

    /// The headers of a call: the allow-listed ones of the client's upgrade request and
    /// the W3C trace context of the current span, when traced.
    fn headers(&self, client_headers: &[(String, String)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = client_headers
            .iter()
            .filter(|(k, _)| self.http_headers.iter().any(|h| h == k))
            .cloned()
            .collect();
        if let Some(tp) = telemetry::current_traceparent() {
            out.push(("traceparent".into(), tp));
        }
        out
    }

    /// Runs one call of `hook` with metrics, logs and a span: `call` gets the headers.
    pub async fn call<T, F, Fut>(
        &self,
        hook: Hook,
        client_headers: &[(String, String)],
        call: F,
    ) -> Result<Reply<T>, CallError>
    where
        F: FnOnce(Vec<(String, String)>) -> Fut,
        Fut: Future<Output = Result<Reply<T>, CallError>>,
    {
        let span = telemetry::proxy_span(hook.name(), &self.name);
        let started = Instant::now();
        let headers = span.in_scope(|| self.headers(client_headers));
        let res = call(headers).instrument(span).await;
        let outcome = match &res {
            Ok(Reply::Result(_)) | Ok(Reply::Empty) => "ok",
            Ok(Reply::Error(_)) => "error",
            Ok(Reply::Disconnect(_)) => "disconnect",
            Err(CallError::Timeout(_)) => "timeout",
            Err(_) => "failed",
        };
        m::proxy_call(hook.name(), &self.name, outcome, started.elapsed());
        if let Err(e) = &res {
            tracing::warn!(hook = hook.name(), proxy = %self.name, error = %e, "proxy call failed");
        }
        res
    }
}

/// How an RPC method is served.
pub enum RpcRoute<'a> {
    /// No RPC namespace matches the method (104).
    NotFound,
    /// The namespace does not proxy its calls (108).
    Disabled,
    /// Through this proxy.
    Proxy(&'a HookProxy),
}

/// Every configured proxy of a node.
#[derive(Default)]
pub struct Proxies {
    connect: Option<Arc<HookProxy>>,
    refresh: Option<Arc<HookProxy>>,
    subscribe: HashMap<String, Arc<HookProxy>>,
    publish: HashMap<String, Arc<HookProxy>>,
    sub_refresh: HashMap<String, Arc<HookProxy>>,
    subscribe_stream: HashMap<String, Arc<HookProxy>>,
    rpc: HashMap<String, Arc<HookProxy>>,
    rpc_without_namespace: RpcOptions,
    rpc_namespaces: HashMap<String, RpcOptions>,
    header_names: Vec<String>,
}

fn normal(name: &str) -> &str {
    if name.is_empty() { DEFAULT_PROXY } else { name }
}

impl Proxies {
    /// The proxies the configuration enables; the error names the key at fault.
    pub fn new(
        client: &ClientConfig,
        channel: &ChannelConfig,
        rpc: &RpcConfig,
        named: &[NamedProxyConfig],
    ) -> Result<Proxies, String> {
        let mut p = Proxies::default();
        let mut by_name: HashMap<&str, (usize, &ProxyConfig)> = HashMap::new();
        for (i, n) in named.iter().enumerate() {
            if n.name.is_empty() || n.name == DEFAULT_PROXY {
                return Err(format!(
                    "proxies[{i}].name must be set and not {DEFAULT_PROXY:?}"
                ));
            }
            if by_name.insert(n.name.as_str(), (i, &n.proxy)).is_some() {
                return Err(format!("proxies[{i}].name {:?} is defined twice", n.name));
            }
        }
        // A named proxy is built once and shared by every hook that uses it.
        let mut built: HashMap<String, Arc<HookProxy>> = HashMap::new();
        let mut resolve = |name: &str, default: &ProxyConfig, default_path: &str, user: &str| {
            let name = normal(name);
            if let Some(h) = built.get(name) {
                return Ok(h.clone());
            }
            let h = if name == DEFAULT_PROXY {
                if default.endpoint.is_empty() {
                    return Err(format!("{user} needs {default_path}.endpoint"));
                }
                HookProxy::new(DEFAULT_PROXY, default, default_path)?
            } else {
                let Some((i, cfg)) = by_name.get(name) else {
                    return Err(format!("{user}: no proxy named {name:?} in proxies[]"));
                };
                HookProxy::new(name, cfg, &format!("proxies[{i}]"))?
            };
            // Defaults differ per hook, so only named proxies are shared.
            if name != DEFAULT_PROXY {
                built.insert(name.to_string(), h.clone());
            }
            Ok(h)
        };
        if client.proxy.connect.enabled {
            p.connect = Some(HookProxy::new(
                DEFAULT_PROXY,
                &client.proxy.connect.proxy,
                "client.proxy.connect",
            )?);
        }
        if client.proxy.refresh.enabled {
            p.refresh = Some(HookProxy::new(
                DEFAULT_PROXY,
                &client.proxy.refresh.proxy,
                "client.proxy.refresh",
            )?);
        }
        let namespaces = std::iter::once((
            "channel.without_namespace".to_string(),
            &channel.without_namespace,
        ))
        .chain(
            channel
                .namespaces
                .iter()
                .enumerate()
                .map(|(i, ns)| (format!("channel.namespaces[{i}]"), &ns.options)),
        );
        for (path, o) in namespaces {
            if o.subscribe_proxy_enabled {
                let name = normal(&o.subscribe_proxy_name);
                let h = resolve(
                    name,
                    &channel.proxy.subscribe,
                    "channel.proxy.subscribe",
                    &format!("{path}.subscribe_proxy_enabled"),
                )?;
                p.subscribe.insert(name.to_string(), h);
            }
            if o.publish_proxy_enabled {
                let name = normal(&o.publish_proxy_name);
                let h = resolve(
                    name,
                    &channel.proxy.publish,
                    "channel.proxy.publish",
                    &format!("{path}.publish_proxy_enabled"),
                )?;
                p.publish.insert(name.to_string(), h);
            }
            if o.subscribe_stream_proxy_enabled {
                let name = normal(&o.subscribe_stream_proxy_name);
                let h = resolve(
                    name,
                    &channel.proxy.subscribe_stream,
                    "channel.proxy.subscribe_stream",
                    &format!("{path}.subscribe_stream_proxy_enabled"),
                )?;
                if !h.proxy.is_grpc() {
                    return Err(format!(
                        "{path}.subscribe_stream_proxy_enabled needs a grpc:// endpoint (proxy {name:?})"
                    ));
                }
                p.subscribe_stream.insert(name.to_string(), h);
            }
            if o.sub_refresh_proxy_enabled {
                let name = normal(&o.sub_refresh_proxy_name);
                let h = resolve(
                    name,
                    &channel.proxy.sub_refresh,
                    "channel.proxy.sub_refresh",
                    &format!("{path}.sub_refresh_proxy_enabled"),
                )?;
                p.sub_refresh.insert(name.to_string(), h);
            }
        }
        let rpc_namespaces =
            std::iter::once(("rpc.without_namespace".to_string(), &rpc.without_namespace)).chain(
                rpc.namespaces
                    .iter()
                    .enumerate()
                    .map(|(i, ns)| (format!("rpc.namespaces[{i}]"), &ns.options)),
            );
        for (path, o) in rpc_namespaces {
            if o.proxy_enabled {
                let name = normal(&o.proxy_name);
                let h = resolve(
                    name,
                    &rpc.proxy,
                    "rpc.proxy",
                    &format!("{path}.proxy_enabled"),
                )?;
                p.rpc.insert(name.to_string(), h);
            }
        }
        p.rpc_without_namespace = rpc.without_namespace.clone();
        for (i, ns) in rpc.namespaces.iter().enumerate() {
            if ns.name.is_empty()
                || p.rpc_namespaces
                    .insert(ns.name.clone(), ns.options.clone())
                    .is_some()
            {
                return Err(format!(
                    "rpc.namespaces[{i}].name {:?} is empty or defined twice",
                    ns.name
                ));
            }
        }
        let mut names: Vec<String> = p
            .all()
            .flat_map(|h| h.http_headers.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        p.header_names = names;
        Ok(p)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<HookProxy>> {
        self.connect
            .iter()
            .chain(self.refresh.iter())
            .chain(self.subscribe.values())
            .chain(self.publish.values())
            .chain(self.sub_refresh.values())
            .chain(self.subscribe_stream.values())
            .chain(self.rpc.values())
    }

    /// Lower-case names of the upgrade request headers some proxy sends on: the
    /// transport keeps these (and only these) for the session.
    pub fn header_names(&self) -> &[String] {
        &self.header_names
    }

    /// The connect proxy, when enabled.
    pub fn connect(&self) -> Option<&HookProxy> {
        self.connect.as_deref()
    }

    /// The refresh proxy, when enabled (connections are then refreshed by the server).
    pub fn refresh(&self) -> Option<&HookProxy> {
        self.refresh.as_deref()
    }

    /// The subscribe proxy called `name`.
    pub fn subscribe(&self, name: &str) -> Option<&HookProxy> {
        self.subscribe.get(normal(name)).map(|h| &**h)
    }

    /// The publish proxy called `name`.
    pub fn publish(&self, name: &str) -> Option<&HookProxy> {
        self.publish.get(normal(name)).map(|h| &**h)
    }

    /// The sub_refresh proxy called `name`.
    pub fn sub_refresh(&self, name: &str) -> Option<&HookProxy> {
        self.sub_refresh.get(normal(name)).map(|h| &**h)
    }

    /// The subscription stream proxy called `name`.
    pub fn subscribe_stream(&self, name: &str) -> Option<&HookProxy> {
        self.subscribe_stream.get(normal(name)).map(|h| &**h)
    }

    /// How `method` is served: its namespace is the part before the first `:`.
    pub fn rpc(&self, method: &str) -> RpcRoute<'_> {
        let options = match method.split_once(':') {
            None => &self.rpc_without_namespace,
            Some((ns, _)) => match self.rpc_namespaces.get(ns) {
                Some(o) => o,
                None => return RpcRoute::NotFound,
            },
        };
        if !options.proxy_enabled {
            // No proxy anywhere: the method simply does not exist.
            return if self.rpc.is_empty() {
                RpcRoute::NotFound
            } else {
                RpcRoute::Disabled
            };
        }
        match self.rpc.get(normal(&options.proxy_name)) {
            Some(h) => RpcRoute::Proxy(h),
            None => RpcRoute::NotFound,
        }
    }
}
