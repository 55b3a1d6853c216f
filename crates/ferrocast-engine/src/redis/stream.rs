//! The backend command stream: `XADD <prefix>:api * method <m> payload <json>`.
//!
//! Consumed through the consumer group `ferrocast` by the node holding a short lease, so
//! entries are applied in stream order. A new lease holder first takes over the entries
//! still pending for any consumer (a node that died mid-batch), then reads new ones.

use super::conn::{Conn, Handle, Target, cluster_builder, connect_cluster, unavailable};
use super::keys::Keys;
use super::scripts;
use crate::{CommandStream, EngineError, StreamCommand};
use async_trait::async_trait;
use redis::{Script, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

const GROUP: &str = "ferrocast";
const DEAD_LETTER_MAXLEN: usize = 100_000;

/// The command stream on one Redis instance.
pub struct RedisCommandStream {
    conn: Arc<Conn>,
    keys: Keys,
    lease: Script,
    lease_release: Script,
    reader: Mutex<ReaderState>,
}

#[derive(Default)]
struct ReaderState {
    conn: Option<Handle>,
    group_ready: bool,
    /// The consumer whose takeover of pending entries is complete.
    caught_up_for: Option<String>,
}

fn parse_entries(v: Value) -> Vec<StreamCommand> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let Value::Array(mut parts) = e else { continue };
        if parts.len() != 2 {
            continue;
        }
        let fields = parts.pop();
        let Ok(id) = redis::from_redis_value::<String>(parts.pop().unwrap_or(Value::Nil)) else {
            continue;
        };
        let mut cmd = StreamCommand {
            id,
            method: None,
            payload: None,
            traceparent: None,
        };
        if let Some(Value::Array(fields)) = fields {
            let mut it = fields.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k: Vec<u8> = redis::from_redis_value(k).unwrap_or_default();
                let v: Vec<u8> = redis::from_redis_value(v).unwrap_or_default();
                match k.as_slice() {
                    b"method" => cmd.method = String::from_utf8(v).ok(),
                    b"payload" => cmd.payload = Some(v),
                    b"traceparent" => cmd.traceparent = String::from_utf8(v).ok(),
                    _ => {}
                }
            }
        }
        out.push(cmd);
    }
    out
}

/// Entries of the first stream of an XREADGROUP reply.
fn first_stream_entries(v: Value) -> Vec<StreamCommand> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .next()
            .map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    parse_entries(kv.pop().unwrap_or(Value::Nil))
                }
                _ => Vec::new(),
            })
            .unwrap_or_default(),
        Value::Map(streams) => streams
            .into_iter()
            .next()
            .map(|(_, v)| parse_entries(v))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

impl RedisCommandStream {
    /// The stream on `conn`'s Redis.
    pub fn new(conn: Arc<Conn>, keys: Keys) -> Self {
        RedisCommandStream {
            conn,
            keys,
            lease: Script::new(scripts::LEASE),
            lease_release: Script::new(scripts::LEASE_RELEASE),
            reader: Mutex::new(ReaderState::default()),
        }
    }

    /// The reader's own connection: a blocking XREADGROUP must not stall the commands
    /// of the shared one.
    async fn reader_conn(&self, st: &mut ReaderState) -> Result<Handle, EngineError> {
        if let Some(c) = &st.conn {
            return Ok(c.clone());
        }
        let connect = async {
            match self.conn.target() {
                Target::Single(client) => {
                    let cfg = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(None);
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await
                        .map(Handle::Direct)
                }
                Target::Cluster(addresses) => connect_cluster(
                    cluster_builder(addresses).response_timeout(Duration::from_secs(5)),
                )
                .await
                .map(Handle::Cluster),
            }
        };
        let c = tokio::time::timeout(Duration::from_secs(3), connect)
            .await
            .map_err(|_| EngineError::Unavailable("redis connect timed out".into()))?
            .map_err(unavailable)?;
        st.conn = Some(c.clone());
        Ok(c)
    }
}

#[async_trait]
impl CommandStream for RedisCommandStream {
    async fn acquire_lease(&self, consumer: &str, ttl: Duration) -> Result<bool, EngineError> {
        let mut conn = self.conn.get()?;
        let mut inv = self.lease.prepare_invoke();
        inv.key(self.keys.api_lease())
            .arg(consumer)
            .arg(ttl.as_millis() as u64);
        let held: i64 = Conn::run(inv.invoke_async(&mut conn)).await?;
        Ok(held == 1)
    }

    async fn release_lease(&self, consumer: &str) -> Result<(), EngineError> {
        let mut conn = self.conn.get()?;
        let mut inv = self.lease_release.prepare_invoke();
        inv.key(self.keys.api_lease()).arg(consumer);
        Conn::run(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    async fn read(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamCommand>, EngineError> {
        let mut st = self.reader.lock().await;
        let res = self.read_locked(&mut st, consumer, count, block).await;
        if res.is_err() {
            st.conn = None;
            st.caught_up_for = None;
        }
        res
    }

    async fn ack(&self, ids: &[String]) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.get()?;
        Conn::run(
            redis::cmd("XACK")
                .arg(self.keys.api_stream())
                .arg(GROUP)
                .arg(ids)
                .query_async::<i64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn dead_letter(&self, entry: &StreamCommand, error: &str) -> Result<(), EngineError> {
        let mut conn = self.conn.get()?;
        let mut add = redis::cmd("XADD");
        add.arg(self.keys.api_dead())
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_MAXLEN)
            .arg("*")
            .arg("id")
            .arg(&entry.id)
            .arg("method")
            .arg(entry.method.as_deref().unwrap_or(""))
            .arg("payload")
            .arg(entry.payload.as_deref().unwrap_or(b""))
            .arg("error")
            .arg(error);
        let mut ack = redis::cmd("XACK");
        ack.arg(self.keys.api_stream()).arg(GROUP).arg(&entry.id);
        if conn.is_cluster() {
            // The two streams live in different slots of a Redis Cluster: no transaction.
            // An entry whose XACK fails after its XADD is dead-lettered twice, never lost.
            Conn::run(add.query_async::<Value>(&mut conn)).await?;
            Conn::run(ack.query_async::<i64>(&mut conn)).await?;
            return Ok(());
        }
        let mut p = redis::pipe();
        p.atomic()
            .add_command(add)
            .ignore()
            .add_command(ack)
            .ignore();
        Conn::run(p.query_async::<()>(&mut conn)).await
    }
}

impl RedisCommandStream {
    async fn read_locked(
        &self,
        st: &mut ReaderState,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamCommand>, EngineError> {
        let stream = self.keys.api_stream();
        let mut conn = self.reader_conn(st).await?;
        if !st.group_ready {
            let create = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .clone();
            match tokio::time::timeout(Duration::from_secs(2), create.query_async::<()>(&mut conn))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) if e.code() == Some("BUSYGROUP") => {}
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => return Err(EngineError::Unavailable("redis command timed out".into())),
            }
            st.group_ready = true;
        }
        if st.caught_up_for.as_deref() != Some(consumer) {
            // Our own pending entries first (delivered earlier, never acknowledged).
            let own: Value = Conn::run(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg("0")
                    .query_async(&mut conn),
            )
            .await?;
            let own = first_stream_entries(own);
            if !own.is_empty() {
                return Ok(own);
            }
            // Then whatever other consumers left pending: the lease says they are gone.
            let claimed: Value = Conn::run(
                redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(0)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut conn),
            )
            .await?;
            if let Value::Array(mut parts) = claimed
                && parts.len() >= 2
            {
                let entries = parse_entries(parts.remove(1));
                if !entries.is_empty() {
                    return Ok(entries);
                }
            }
            st.caught_up_for = Some(consumer.to_string());
        }
        let fresh: Value = match tokio::time::timeout(
            block + Duration::from_secs(2),
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut conn),
        )
        .await
        {
            Ok(r) => r.map_err(|e| {
                if e.to_string().contains("NOGROUP") {
                    st.group_ready = false;
                }
                unavailable(e)
            })?,
            Err(_) => return Err(EngineError::Unavailable("stream read timed out".into())),
        };
        Ok(first_stream_entries(fresh))
    }
}
