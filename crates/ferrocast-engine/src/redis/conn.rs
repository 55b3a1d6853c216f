//! Connections to one Redis instance (or one Redis Cluster): a multiplexed command
//! connection that reconnects by itself, a health check, and a timeout on every command
//! so callers never hang.

use crate::EngineError;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use parking_lot::RwLock;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Client, Cmd, IntoConnectionInfo, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a command may take before the caller gets [`EngineError::Unavailable`].
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds a client with TCP_NODELAY on (off by default in redis 1.x).
pub fn client(address: &str) -> Result<Client, EngineError> {
    let info = address
        .into_connection_info()
        .map_err(|e| EngineError::Internal(format!("invalid Redis address {address:?}: {e}")))?
        .set_tcp_settings(TcpSettings::default().set_nodelay(true));
    Client::open(info).map_err(|e| EngineError::Internal(format!("invalid Redis address: {e}")))
}

/// A Redis Cluster client builder over the seed `addresses` (TCP_NODELAY on, bounded
/// connect and response times).
pub fn cluster_builder(addresses: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(addresses.to_vec())
        .tcp_settings(TcpSettings::default().set_nodelay(true))
        .connection_timeout(Duration::from_secs(1))
        .response_timeout(COMMAND_TIMEOUT)
        .retries(3)
}

/// Builds the client of `builder` and connects to the cluster (the future owns the client,
/// so it is `Send` whatever the caller borrows).
pub fn connect_cluster(
    builder: ClusterClientBuilder,
) -> BoxFuture<'static, RedisResult<ClusterConnection>> {
    async move { builder.build()?.get_async_connection().await }.boxed()
}

/// What a [`Conn`] connects to.
#[derive(Clone)]
pub enum Target {
    /// One standalone Redis.
    Single(Client),
    /// A Redis Cluster, by its seed addresses.
    Cluster(Vec<String>),
}

/// A command connection: standalone or cluster (commands are routed by key slot).
#[derive(Clone)]
pub enum Handle {
    /// To one Redis, reconnecting by itself.
    Single(ConnectionManager),
    /// To one Redis, a dedicated connection the owner replaces when it fails.
    Direct(MultiplexedConnection),
    /// To a Redis Cluster.
    Cluster(ClusterConnection),
}

impl Handle {
    /// Whether commands go to a Redis Cluster (multi-key operations must stay in one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Handle::Cluster(_))
    }
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Direct(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Direct(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

/// Maps a Redis error.
pub fn unavailable(e: redis::RedisError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

/// The command connection of one Redis instance or of one Redis Cluster.
pub struct Conn {
    /// Address, for logs.
    pub address: String,
    target: Target,
    handle: RwLock<Option<Handle>>,
    healthy: AtomicBool,
}

/// Failed health checks in a row after which a cluster connection is rebuilt from the seeds.
const CLUSTER_REBUILD_AFTER: u32 = 5;

impl Conn {
    /// A connection to one Redis, not established yet (see [`Conn::maintain`]).
    pub fn new(address: &str) -> Result<Arc<Conn>, EngineError> {
        Ok(Arc::new(Conn {
            address: address.to_string(),
            target: Target::Single(client(address)?),
            handle: RwLock::new(None),
            healthy: AtomicBool::new(false),
        }))
    }

    /// A connection to the Redis Cluster reachable through the seed `addresses`.
    pub fn cluster(addresses: &[String]) -> Result<Arc<Conn>, EngineError> {
        cluster_builder(addresses)
            .build()
            .map_err(|e| EngineError::Internal(format!("invalid Redis Cluster address: {e}")))?;
        Ok(Arc::new(Conn {
            address: format!("cluster {}", addresses.join(",")),
            target: Target::Cluster(addresses.to_vec()),
            handle: RwLock::new(None),
            healthy: AtomicBool::new(false),
        }))
    }

    /// What this connects to (for dedicated connections).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the last health check passed.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// A handle to the command connection, or `Unavailable`.
    pub fn get(&self) -> Result<Handle, EngineError> {
        if !self.is_healthy() {
            return Err(EngineError::Unavailable(format!(
                "redis {} is down",
                self.address
            )));
        }
        self.handle.read().clone().ok_or_else(|| {
            EngineError::Unavailable(format!("redis {} not connected", self.address))
        })
    }

    /// Runs a command future with the command timeout.
    pub async fn run<T>(
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, EngineError> {
        match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(EngineError::Unavailable("redis command timed out".into())),
        }
    }

    async fn connect(&self) -> redis::RedisResult<Handle> {
        match &self.target {
            Target::Single(client) => {
                let cfg = ConnectionManagerConfig::new()
                    .set_number_of_retries(usize::MAX)
                    .set_max_delay(Duration::from_secs(1))
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(COMMAND_TIMEOUT));
                ConnectionManager::new_with_config(client.clone(), cfg)
                    .await
                    .map(Handle::Single)
            }
            Target::Cluster(addresses) => connect_cluster(cluster_builder(addresses))
                .await
                .map(Handle::Cluster),
        }
    }

    /// Why this connection's Redis (the first seed of a cluster) cannot be reached.
    async fn why_unreachable(&self) -> String {
        match &self.target {
            Target::Single(_) => super::diagnose::why_unreachable(&self.address).await,
            Target::Cluster(seeds) => match seeds.first() {
                Some(seed) => super::diagnose::why_unreachable(seed).await,
                None => "no seed address".into(),
            },
        }
    }

    /// Connects (retrying with backoff) and then checks health every second, forever.
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            if self.handle.read().is_none() {
                match tokio::time::timeout(Duration::from_secs(3), self.connect()).await {
                    Ok(Ok(h)) => {
                        *self.handle.write() = Some(h);
                        backoff = Duration::from_millis(100);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(redis = %self.address, error = %e, "redis connect failed");
                    }
                    Err(_) => {
                        let cause = self.why_unreachable().await;
                        tracing::warn!(redis = %self.address, cause = %cause, "redis unreachable");
                    }
                }
            }
            let handle = self.handle.read().clone();
            let ok = match handle {
                // On a cluster, PING goes to every node: healthy means all are reachable.
                Some(mut h) => {
                    let cmd = redis::cmd("PING");
                    let ping = cmd.query_async::<Value>(&mut h);
                    matches!(
                        tokio::time::timeout(Duration::from_secs(1), ping).await,
                        Ok(Ok(_))
                    )
                }
                None => false,
            };
            failures = if ok { 0 } else { failures + 1 };
            if failures >= CLUSTER_REBUILD_AFTER && matches!(self.target, Target::Cluster(_)) {
                // The cluster may have moved to addresses the old connection no longer knows.
                *self.handle.write() = None;
                failures = 0;
            }
            let was = self.healthy.swap(ok, Ordering::AcqRel);
            if was != ok {
                if ok {
                    tracing::info!(redis = %self.address, "redis reachable");
                } else {
                    let cause = self.why_unreachable().await;
                    tracing::warn!(redis = %self.address, cause = %cause, "redis unreachable");
                }
            }
            if ok {
                tokio::time::sleep(Duration::from_secs(1)).await;
            } else {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
