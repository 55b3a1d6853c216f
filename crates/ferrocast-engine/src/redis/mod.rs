//! The Redis engine: any number of stateless nodes sharing Redis form one broker.
//!
//! This is where Redis is touched. Channels are spread over the configured Redis
//! instances by consistent hashing; a channel's pub/sub channel, history stream, meta and
//! presence live on one instance. Control messages, user registrations and the backend
//! command stream live on the first instance.
//!
//! In Redis Cluster mode the addresses are seeds of one cluster: every key of a channel
//! carries the channel as hash tag (one slot), publications go through sharded pub/sub
//! (SPUBLISH/SSUBSCRIBE), and nothing touches keys of two slots in one command.

mod conn;
mod diagnose;
mod keys;
mod link;
mod publishing;
mod pubsub;
mod scripts;
mod stream;
mod users;

use crate::clock::unix_secs_f64;
use crate::{
    Broker, CommandStream, Controller, Engine, EngineError, EventHandler, HistoryFilter,
    HistoryResult, PresenceManager, PresenceStats, PublishOptions, new_epoch, stable_hash,
};
use async_trait::async_trait;
use conn::Conn;
use ferrocast_protocol::envelope::{
    ControlMessage, Envelope, NodeInfo, WireClientInfo, encode_body,
};
use ferrocast_protocol::{ClientInfo, Publication, StreamPosition};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
pub use keys::Keys;
use parking_lot::Mutex;
use pubsub::{Op, Worker};
use redis::{Script, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Settings of the Redis engine.
#[derive(Debug, Clone)]
pub struct RedisEngineConfig {
    /// Redis URLs (`redis://host:port/db`); channels are sharded over them.
    pub addresses: Vec<String>,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Pub/sub connections per Redis instance.
    pub pubsub_connections: usize,
    /// How long a channel's epoch and top offset outlive its last publication.
    pub history_meta_ttl: Duration,
    /// A node that has not announced itself for this long is dropped from `info`.
    pub node_info_ttl: Duration,
    /// The addresses are seed nodes of one Redis Cluster (sharded pub/sub, slots).
    pub cluster: bool,
}

impl Default for RedisEngineConfig {
    fn default() -> Self {
        RedisEngineConfig {
            addresses: vec!["redis://127.0.0.1:6379".into()],
            prefix: "ferrocast".into(),
            pubsub_connections: 2,
            history_meta_ttl: Duration::from_secs(30 * 24 * 3600),
            node_info_ttl: Duration::from_secs(10),
            cluster: false,
        }
    }
}

/// Commands in flight at once where a Redis Cluster needs one command per key.
const CLUSTER_CONCURRENCY: usize = 64;

/// One Redis call, owned so that it can run beside others.
type Call<T> = BoxFuture<'static, Result<T, EngineError>>;

/// Epoch and top offset of a channel's stream, as HMGET returns them.
type MetaRow = (Option<String>, Option<u64>);

/// Runs `calls` at most [`CLUSTER_CONCURRENCY`] at a time; results in call order.
async fn in_order<T>(calls: Vec<Call<T>>) -> Vec<Result<T, EngineError>> {
    futures_util::stream::iter(calls)
        .buffered(CLUSTER_CONCURRENCY)
        .collect()
        .await
}

struct Scripts {
    publish: Script,
    history: Script,
    presence_get: Script,
    user_add: Script,
    user_remove: Script,
}

struct Shard {
    conn: Arc<Conn>,
    workers: OnceLock<Vec<Worker>>,
}

pub(crate) struct Inner {
    keys: Keys,
    cfg: RedisEngineConfig,
    shards: Vec<Shard>,
    handler: OnceLock<Arc<dyn EventHandler>>,
    nodes: Mutex<HashMap<String, (NodeInfo, Instant)>>,
    scripts: Scripts,
    stream: Arc<stream::RedisCommandStream>,
}

impl Inner {
    /// Current (epoch, top offset) of the streams of `channels` on one shard (an empty
    /// epoch when a channel has no stream).
    async fn stream_positions(
        &self,
        shard: usize,
        channels: &[String],
    ) -> Result<Vec<(String, StreamPosition)>, EngineError> {
        let mut out = Vec::new();
        if channels.is_empty() {
            return Ok(out);
        }
        let mut conn = self.shards[shard].conn.get()?;
        if self.cfg.cluster {
            // Each channel's meta is in its own slot: one HMGET each, a few at a time.
            let calls: Vec<Call<MetaRow>> = channels
                .iter()
                .map(|c| {
                    let mut conn = conn.clone();
                    let cmd = redis::cmd("HMGET")
                        .arg(self.keys.meta(c))
                        .arg("e")
                        .arg("s")
                        .clone();
                    async move { Conn::run(cmd.query_async(&mut conn)).await }.boxed()
                })
                .collect();
            let rows = in_order(calls).await;
            for (c, row) in channels.iter().zip(rows) {
                let (epoch, top) = row?;
                out.push((
                    c.clone(),
                    StreamPosition {
                        offset: top.unwrap_or(0),
                        epoch: epoch.unwrap_or_default(),
                    },
                ));
            }
            return Ok(out);
        }
        for chunk in channels.chunks(500) {
            let mut p = redis::pipe();
            for c in chunk {
                p.cmd("HMGET").arg(self.keys.meta(c)).arg("e").arg("s");
            }
            let rows: Vec<(Option<String>, Option<u64>)> =
                Conn::run(p.query_async(&mut conn)).await?;
            for (c, (epoch, top)) in chunk.iter().zip(rows) {
                // No meta: the stream is gone (or never existed); positioned subscribers
                // of it must learn that.
                out.push((
                    c.clone(),
                    StreamPosition {
                        offset: top.unwrap_or(0),
                        epoch: epoch.unwrap_or_default(),
                    },
                ));
            }
        }
        Ok(out)
    }

    fn node_seen(&self, info: NodeInfo) {
        self.nodes
            .lock()
            .insert(info.uid.clone(), (info, Instant::now()));
    }

    /// A node said it stops: it leaves the registry now, not at its announcement's expiry.
    fn node_left(&self, uid: &str) {
        self.nodes.lock().remove(uid);
    }
}

/// The Redis engine.
pub struct RedisEngine {
    inner: Arc<Inner>,
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

impl RedisEngine {
    /// An engine for `cfg`; connections are made by [`Engine::start`].
    pub fn new(cfg: RedisEngineConfig) -> Result<Self, EngineError> {
        if cfg.addresses.is_empty() {
            return Err(EngineError::Internal("no Redis address configured".into()));
        }
        let mut shards = Vec::new();
        if cfg.cluster {
            // The cluster shards by slot itself: one logical shard.
            shards.push(Shard {
                conn: Conn::cluster(&cfg.addresses)?,
                workers: OnceLock::new(),
            });
        } else {
            for a in &cfg.addresses {
                shards.push(Shard {
                    conn: Conn::new(a)?,
                    workers: OnceLock::new(),
                });
            }
        }
        let keys = Keys::new(&cfg.prefix);
        let stream = Arc::new(stream::RedisCommandStream::new(
            shards[0].conn.clone(),
            keys.clone(),
        ));
        Ok(RedisEngine {
            inner: Arc::new(Inner {
                keys,
                cfg,
                shards,
                handler: OnceLock::new(),
                nodes: Mutex::new(HashMap::new()),
                scripts: Scripts {
                    publish: Script::new(scripts::PUBLISH),
                    history: Script::new(scripts::HISTORY),
                    presence_get: Script::new(scripts::PRESENCE_GET),
                    user_add: Script::new(scripts::USER_ADD),
                    user_remove: Script::new(scripts::USER_REMOVE),
                },
                stream,
            }),
        })
    }

    fn shard(&self, channel: &str) -> &Shard {
        let n = self.inner.shards.len();
        let i = keys::jump_hash(stable_hash(channel.as_bytes()), n);
        &self.inner.shards[i]
    }

    fn worker(&self, channel: &str) -> Result<&Worker, EngineError> {
        let workers = self
            .shard(channel)
            .workers
            .get()
            .ok_or_else(|| EngineError::Internal("engine not started".into()))?;
        let h = stable_hash(channel.as_bytes()) >> 32;
        Ok(&workers[(h as usize) % workers.len()])
    }

    fn first(&self) -> &Shard {
        &self.inner.shards[0]
    }
}

fn parse_entries(value: Value) -> Result<Vec<Publication>, EngineError> {
    let Value::Array(entries) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else {
            return Err(internal("bad stream entry"));
        };
        if parts.len() != 2 {
            return Err(internal("bad stream entry"));
        }
        let fields = parts.pop();
        let id: String =
            redis::from_redis_value(parts.pop().unwrap_or(Value::Nil)).map_err(internal)?;
        let offset: u64 = id
            .split('-')
            .next()
            .and_then(|o| o.parse().ok())
            .ok_or_else(|| internal("bad stream id"))?;
        let Some(Value::Array(fields)) = fields else {
            return Err(internal("bad stream fields"));
        };
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            let k: Vec<u8> = redis::from_redis_value(k).map_err(internal)?;
            if k == b"d" {
                let v: Vec<u8> = redis::from_redis_value(v).map_err(internal)?;
                match ferrocast_protocol::envelope::decode_body::<Envelope>(&v) {
                    Ok(Envelope::Pub(wp)) => out.push(wp.into_publication(offset)),
                    Ok(_) => return Err(internal("history entry is not a publication")),
                    Err(e) => return Err(internal(e)),
                }
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl Engine for RedisEngine {
    async fn start(&self, handler: Arc<dyn EventHandler>) -> Result<(), EngineError> {
        self.inner
            .handler
            .set(handler)
            .map_err(|_| EngineError::Internal("engine started twice".into()))?;
        let n = self.inner.cfg.pubsub_connections.max(1);
        for (i, shard) in self.inner.shards.iter().enumerate() {
            tokio::spawn(shard.conn.clone().maintain());
            let workers = (0..n)
                .map(|w| {
                    Worker::spawn(
                        shard.conn.target().clone(),
                        self.inner.keys.clone(),
                        Arc::downgrade(&self.inner),
                        i,
                        i == 0 && w == 0,
                    )
                })
                .collect();
            let _ = shard.workers.set(workers);
        }
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.inner.shards.iter().all(|s| {
            s.conn.is_healthy()
                && s.workers
                    .get()
                    .is_some_and(|w| w.iter().all(Worker::is_connected))
        })
    }

    fn command_stream(&self) -> Option<Arc<dyn CommandStream>> {
        Some(self.inner.stream.clone())
    }
}

#[async_trait]
impl Broker for RedisEngine {
    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, EngineError> {
        self.publish_one(channel, &publication, opts).await
    }

    async fn publish_many(
        &self,
        channel: &str,
        items: Vec<(Publication, PublishOptions)>,
    ) -> Result<Vec<Result<StreamPosition, EngineError>>, EngineError> {
        self.publish_transaction(channel, &items).await
    }

    async fn publish_join(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        let envelope = Envelope::Join(WireClientInfo::from_info(info));
        self.publish_unstored(channel, &envelope).await
    }

    async fn publish_leave(&self, channel: &str, info: &ClientInfo) -> Result<(), EngineError> {
        let envelope = Envelope::Leave(WireClientInfo::from_info(info));
        self.publish_unstored(channel, &envelope).await
    }

    async fn subscribe(&self, channel: &str) -> Result<(), EngineError> {
        self.worker(channel)?.request(channel, Op::Subscribe).await
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), EngineError> {
        self.worker(channel)?
            .request(channel, Op::Unsubscribe)
            .await
    }

    async fn history(
        &self,
        channel: &str,
        filter: HistoryFilter,
    ) -> Result<HistoryResult, EngineError> {
        let keys = &self.inner.keys;
        let mut conn = self.shard(channel).conn.get()?;
        let (use_since, since) = match &filter.since {
            Some(s) => ("1", s.offset),
            None => ("0", 0),
        };
        let mut inv = self.inner.scripts.history.prepare_invoke();
        inv.key(keys.history(channel))
            .key(keys.meta(channel))
            .arg(new_epoch())
            .arg(secs(self.inner.cfg.history_meta_ttl))
            .arg(since)
            .arg(filter.limit)
            .arg(if filter.reverse { "1" } else { "0" })
            .arg(use_since);
        let (epoch, top, entries): (String, u64, Value) =
            Conn::run(inv.invoke_async(&mut conn)).await?;
        if let Some(s) = &filter.since
            && s.epoch != epoch
        {
            return Err(EngineError::UnrecoverablePosition);
        }
        Ok(HistoryResult {
            publications: parse_entries(entries)?,
            position: StreamPosition { offset: top, epoch },
        })
    }

    async fn remove_history(&self, channel: &str) -> Result<(), EngineError> {
        let mut conn = self.shard(channel).conn.get()?;
        let key = self.inner.keys.history(channel);
        Conn::run(redis::cmd("DEL").arg(key).query_async::<i64>(&mut conn)).await?;
        Ok(())
    }
}

#[async_trait]
impl PresenceManager for RedisEngine {
    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), EngineError> {
        let keys = &self.inner.keys;
        let mut conn = self.shard(channel).conn.get()?;
        let (h, z) = (keys.presence(channel), keys.presence_expiry(channel));
        let expire_at = unix_secs_f64() + ttl.as_secs_f64();
        let mut p = redis::pipe();
        p.atomic()
            .hset(
                &h,
                &info.client,
                encode_body(&WireClientInfo::from_info(info)),
            )
            .ignore()
            .zadd(&z, &info.client, expire_at)
            .ignore()
            .expire(&h, secs(ttl) as i64)
            .ignore()
            .expire(&z, secs(ttl) as i64)
            .ignore();
        Conn::run(p.query_async::<()>(&mut conn)).await
    }

    async fn remove_presence(&self, channel: &str, client_id: &str) -> Result<(), EngineError> {
        let keys = &self.inner.keys;
        let mut conn = self.shard(channel).conn.get()?;
        let mut p = redis::pipe();
        p.hdel(keys.presence(channel), client_id)
            .ignore()
            .zrem(keys.presence_expiry(channel), client_id)
            .ignore();
        Conn::run(p.query_async::<()>(&mut conn)).await
    }

    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, EngineError> {
        let keys = &self.inner.keys;
        let mut conn = self.shard(channel).conn.get()?;
        let mut inv = self.inner.scripts.presence_get.prepare_invoke();
        inv.key(keys.presence(channel))
            .key(keys.presence_expiry(channel))
            .arg(unix_secs_f64());
        let flat: Vec<(String, Vec<u8>)> = Conn::run(inv.invoke_async(&mut conn)).await?;
        let mut out = HashMap::with_capacity(flat.len());
        for (client, bytes) in flat {
            match ferrocast_protocol::envelope::decode_body::<WireClientInfo>(&bytes)
                .map(WireClientInfo::into_info)
            {
                Ok(info) => {
                    out.insert(client, info);
                }
                _ => tracing::warn!(channel, "undecodable presence entry"),
            }
        }
        Ok(out)
    }

    async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, EngineError> {
        let p = self.presence(channel).await?;
        let users: HashSet<&str> = p.values().map(|i| i.user.as_str()).collect();
        Ok(PresenceStats {
            num_clients: p.len() as u32,
            num_users: users.len() as u32,
        })
    }

    async fn add_user_connection(
        &self,
        user: &str,
        client: &str,
        ttl: Duration,
        limit: u32,
    ) -> Result<bool, EngineError> {
        self.register_user_connection(user, client, ttl, limit)
            .await
    }

    async fn remove_user_connection(&self, user: &str, client: &str) -> Result<(), EngineError> {
        self.unregister_user_connection(user, client).await
    }

    async fn refresh_user_connections(
        &self,
        connections: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), EngineError> {
        self.extend_user_connections(connections, ttl).await
    }

    async fn user_status(&self, users: &[String]) -> Result<Vec<bool>, EngineError> {
        self.users_online(users).await
    }
}

#[async_trait]
impl Controller for RedisEngine {
    async fn publish_control(&self, message: &ControlMessage) -> Result<(), EngineError> {
        let mut conn = self.first().conn.get()?;
        let key = self.inner.keys.control();
        Conn::run(
            redis::cmd(self.publish_command())
                .arg(key)
                .arg(message.encode())
                .query_async::<i64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    fn nodes(&self) -> Vec<NodeInfo> {
        let ttl = self.inner.cfg.node_info_ttl;
        let mut nodes = self.inner.nodes.lock();
        nodes.retain(|_, (_, seen)| seen.elapsed() < ttl);
        let mut v: Vec<NodeInfo> = nodes.values().map(|(n, _)| n.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
