//! Connections to one Redis instance: a multiplexed command connection that reconnects
//! by itself, a health check, and a timeout on every command so callers never hang.

use crate::EngineError;
use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{Client, IntoConnectionInfo};
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

/// Maps a Redis error.
pub fn unavailable(e: redis::RedisError) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

/// The command connection of one Redis instance.
pub struct Conn {
    /// Address, for logs.
    pub address: String,
    client: Client,
    manager: RwLock<Option<ConnectionManager>>,
    healthy: AtomicBool,
}

impl Conn {
    /// A connection that is not established yet (see [`Conn::maintain`]).
    pub fn new(address: &str) -> Result<Arc<Conn>, EngineError> {
        Ok(Arc::new(Conn {
            address: address.to_string(),
            client: client(address)?,
            manager: RwLock::new(None),
            healthy: AtomicBool::new(false),
        }))
    }

    /// The Redis client (for dedicated connections).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the last health check passed.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// A handle to the command connection, or `Unavailable`.
    pub fn get(&self) -> Result<ConnectionManager, EngineError> {
        if !self.is_healthy() {
            return Err(EngineError::Unavailable(format!(
                "redis {} is down",
                self.address
            )));
        }
        self.manager.read().clone().ok_or_else(|| {
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

    /// Connects (retrying with backoff) and then checks health every second, forever.
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.manager.read().is_none() {
                let cfg = ConnectionManagerConfig::new()
                    .set_number_of_retries(usize::MAX)
                    .set_max_delay(Duration::from_secs(1))
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(COMMAND_TIMEOUT));
                match tokio::time::timeout(
                    Duration::from_secs(3),
                    ConnectionManager::new_with_config(self.client.clone(), cfg),
                )
                .await
                {
                    Ok(Ok(m)) => {
                        *self.manager.write() = Some(m);
                        backoff = Duration::from_millis(100);
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(redis = %self.address, error = %e, "redis connect failed");
                    }
                    Err(_) => tracing::warn!(redis = %self.address, "redis connect timed out"),
                }
            }
            let manager = self.manager.read().clone();
            let ok = match manager {
                Some(mut m) => {
                    let cmd = redis::cmd("PING");
                    let ping = cmd.query_async::<String>(&mut m);
                    matches!(
                        tokio::time::timeout(Duration::from_secs(1), ping).await,
                        Ok(Ok(_))
                    )
                }
                None => false,
            };
            let was = self.healthy.swap(ok, Ordering::AcqRel);
            if was != ok {
                if ok {
                    tracing::info!(redis = %self.address, "redis reachable");
                } else {
                    tracing::warn!(redis = %self.address, "redis unreachable");
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
