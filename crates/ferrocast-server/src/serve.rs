//! `ferrocast serve`: the listener, the accept loop and graceful drain on SIGTERM.

use crate::config::{Config, EngineType};
use crate::http::{AppState, Surface, handle};
use crate::observability::Metrics;
use crate::ratelimit::PerIpLimiter;
use anyhow::Context;
use ferrocast_engine::Engine;
use ferrocast_engine::memory::MemoryEngine;
use ferrocast_engine::redis::{RedisEngine, RedisEngineConfig};
use ferrocast_node::{Node, NodeOptions};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Builds the engine the configuration asks for.
async fn build_engine(cfg: &Config) -> anyhow::Result<Arc<dyn Engine>> {
    match cfg.engine.kind {
        EngineType::Memory => {
            let engine = Arc::new(MemoryEngine::new());
            let sweeper = engine.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(10));
                loop {
                    t.tick().await;
                    sweeper.sweep();
                }
            });
            Ok(engine)
        }
        EngineType::Redis => {
            let r = &cfg.engine.redis;
            let engine = RedisEngine::new(RedisEngineConfig {
                addresses: r.address.clone(),
                prefix: r.prefix.clone(),
                pubsub_connections: r.pubsub_connections,
                history_meta_ttl: r.history_meta_ttl,
                node_info_ttl: r.node_info_ttl,
                cluster: r.cluster,
            })?;
            Ok(Arc::new(engine))
        }
    }
}

/// Runs the broker until SIGTERM or SIGINT, then drains and returns.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    if cfg.client.insecure {
        tracing::warn!(
            "client.insecure is on: connections without tokens are accepted and channel permissions are not checked. Never use this in production"
        );
    }
    if cfg.http_api.insecure {
        tracing::warn!("http_api.insecure is on: the server API accepts calls without a key");
    } else if cfg.http_api.key.is_empty() {
        tracing::warn!("http_api.key is empty: every server API call will be refused");
    }
    if cfg.client.token.hmac_secret_key.is_empty() && !cfg.client.insecure {
        tracing::warn!(
            "client.token.hmac_secret_key is empty: HS256 connection tokens cannot be verified"
        );
    }
    let metrics = Metrics::install();
    let engine = build_engine(&cfg).await?;
    let node = Node::start(
        NodeOptions {
            name: cfg.node.name.clone(),
            client: cfg.client.clone(),
            channel: cfg.channel.clone(),
            rpc: cfg.rpc.clone(),
            proxies: cfg.proxies.clone(),
        },
        engine,
    )
    .await?;
    // The backend command stream (Redis engine): consumed while the node runs, handed
    // over when it drains.
    let ingest = tokio::spawn(ferrocast_node::ingest::run(node.clone()));
    let addr = format!("{}:{}", cfg.http_server.address, cfg.http_server.port);
    let listener = listen(&addr, cfg.http_server.listen_backlog)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let internal = match cfg.http_server.internal_port {
        Some(port) => {
            let host = cfg
                .http_server
                .internal_address
                .clone()
                .unwrap_or_else(|| cfg.http_server.address.clone());
            let addr = format!("{host}:{port}");
            let l = listen(&addr, cfg.http_server.listen_backlog)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            tracing::info!(address = %l.local_addr()?, "listening internal");
            Some(l)
        }
        None => None,
    };
    let grpc_listener = if cfg.grpc_api.enabled {
        let host = if cfg.grpc_api.address.is_empty() {
            &cfg.http_server.address
        } else {
            &cfg.grpc_api.address
        };
        let addr = format!("{host}:{}", cfg.grpc_api.port);
        let l = listen(&addr, cfg.http_server.listen_backlog)
            .await
            .with_context(|| format!("cannot listen on {addr} (grpc_api)"))?;
        tracing::info!(address = %l.local_addr()?, "listening grpc_api");
        if cfg.grpc_api.key.is_empty() {
            tracing::warn!(
                "grpc_api.key is empty: the gRPC server API accepts calls without a key"
            );
        }
        Some(l)
    } else {
        None
    };
    tracing::info!(address = %local, node = %node.name(), engine = ?cfg.engine.kind, "listening");

    let state = Arc::new(AppState {
        node: node.clone(),
        api: cfg.http_api.clone(),
        metrics,
        sockets: TaskTracker::new(),
    });
    let stop_accepting = CancellationToken::new();
    let http_conns = TaskTracker::new();
    let limiter = Arc::new(PerIpLimiter::new(
        cfg.http_server.connection_rate_per_ip,
        cfg.http_server.connection_burst_per_ip,
    ));
    let public_surface = if internal.is_some() {
        Surface::Public
    } else {
        Surface::All
    };
    let listeners = Listeners {
        state: state.clone(),
        stop: stop_accepting.clone(),
        conns: http_conns.clone(),
        handshake_timeout: cfg.http_server.handshake_timeout,
    };
    let accept = tokio::spawn(listeners.clone().accept_loop(
        listener,
        public_surface,
        Some(limiter),
    ));
    let accept_internal =
        internal.map(|l| tokio::spawn(listeners.accept_loop(l, Surface::Internal, None)));
    let grpc_api = grpc_listener.map(|l| {
        let serve = crate::grpc_api::serve(
            node.clone(),
            cfg.grpc_api.clone(),
            l,
            stop_accepting.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the gRPC server API stopped");
            }
        })
    });

    wait_for_signal().await;
    tracing::info!("shutdown signal received");
    // Readiness turns false and new WebSocket upgrades are refused at once; the listener
    // stays open for probes while existing clients are disconnected over the window.
    node.drain(cfg.shutdown.drain_window).await;
    if tokio::time::timeout(Duration::from_secs(2), ingest)
        .await
        .is_err()
    {
        tracing::warn!("the command stream consumer did not stop in time");
    }
    state.sockets.close();
    if tokio::time::timeout(Duration::from_secs(5), state.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    stop_accepting.cancel();
    let _ = accept.await;
    if let Some(a) = accept_internal {
        let _ = a.await;
    }
    if let Some(g) = grpc_api {
        let _ = tokio::time::timeout(Duration::from_secs(2), g).await;
    }
    http_conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), http_conns.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), node.leave()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds `addr` (host:port, names resolved) with the given accept backlog.
async fn listen(addr: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address")))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What every accept loop shares.
#[derive(Clone)]
struct Listeners {
    state: Arc<AppState>,
    stop: CancellationToken,
    conns: TaskTracker,
    handshake_timeout: Duration,
}

impl Listeners {
    async fn accept_loop(
        self,
        listener: TcpListener,
        surface: Surface,
        limiter: Option<Arc<PerIpLimiter>>,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = self.stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Some(l) = &limiter
                && !l.allow(peer.ip())
            {
                ferrocast_node::metrics::connection_refused("ip_rate");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let state = self.state.clone();
            let stop = self.stop.clone();
            let handshake_timeout = self.handshake_timeout;
            self.conns.spawn(async move {
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(state, surface, req).await) }
                });
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(handshake_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(peer = %peer, error = %e, "http connection ended with error");
                        }
                    }
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    }
}
