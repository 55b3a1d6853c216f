//! Cluster-wide user registry: which connections each user has (for the per-user
//! connection limit) and who is online.
//!
//! Standalone Redis: per-user zsets `<prefix>:user:{user}` (client → expiry) plus one
//! `<prefix>:online` zset (user → expiry), kept in step by scripts on the first instance.
//! Redis Cluster: the per-user zsets only (a script may not touch two slots); a user is
//! online while its zset holds an unexpired entry.

use super::conn::Conn;
use super::{Call, RedisEngine, in_order, secs};
use crate::EngineError;
use crate::clock::unix_secs_f64;
use futures_util::FutureExt;
use std::time::Duration;

impl RedisEngine {
    /// Registers a connection of `user` under `limit` (0: none); false when over it.
    pub(super) async fn register_user_connection(
        &self,
        user: &str,
        client: &str,
        ttl: Duration,
        limit: u32,
    ) -> Result<bool, EngineError> {
        let keys = &self.inner.keys;
        let mut conn = self.first().conn.get()?;
        let now = unix_secs_f64();
        let track_online = !self.inner.cfg.cluster;
        let mut inv = self.inner.scripts.user_add.prepare_invoke();
        inv.key(keys.user_connections(user));
        if track_online {
            inv.key(keys.online());
        }
        inv.arg(user)
            .arg(client)
            .arg(now)
            .arg(now + ttl.as_secs_f64())
            .arg(secs(ttl))
            .arg(limit)
            .arg(if track_online { "1" } else { "0" });
        let added: i64 = Conn::run(inv.invoke_async(&mut conn)).await?;
        Ok(added == 1)
    }

    /// Removes a connection of `user`.
    pub(super) async fn unregister_user_connection(
        &self,
        user: &str,
        client: &str,
    ) -> Result<(), EngineError> {
        let keys = &self.inner.keys;
        let mut conn = self.first().conn.get()?;
        let track_online = !self.inner.cfg.cluster;
        let mut inv = self.inner.scripts.user_remove.prepare_invoke();
        inv.key(keys.user_connections(user));
        if track_online {
            inv.key(keys.online());
        }
        inv.arg(user)
            .arg(client)
            .arg(unix_secs_f64())
            .arg(if track_online { "1" } else { "0" });
        Conn::run(inv.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Extends the registration of these (user, client) connections by `ttl`.
    pub(super) async fn extend_user_connections(
        &self,
        connections: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), EngineError> {
        if connections.is_empty() {
            return Ok(());
        }
        let keys = &self.inner.keys;
        let mut conn = self.first().conn.get()?;
        let expire_at = unix_secs_f64() + ttl.as_secs_f64();
        if self.inner.cfg.cluster {
            // One small pipeline per user key (one slot each), a few at a time.
            let calls: Vec<Call<()>> = connections
                .iter()
                .map(|(user, client)| {
                    let mut conn = conn.clone();
                    let mut p = redis::pipe();
                    let k = keys.user_connections(user);
                    p.zadd(&k, client, expire_at)
                        .ignore()
                        .expire(&k, secs(ttl) as i64)
                        .ignore();
                    async move { Conn::run(p.query_async::<()>(&mut conn)).await }.boxed()
                })
                .collect();
            return in_order(calls).await.into_iter().collect();
        }
        for chunk in connections.chunks(1000) {
            let mut p = redis::pipe();
            for (user, client) in chunk {
                let k = keys.user_connections(user);
                p.zadd(&k, client, expire_at)
                    .ignore()
                    .expire(&k, secs(ttl) as i64)
                    .ignore()
                    .zadd(keys.online(), user, expire_at)
                    .ignore();
            }
            Conn::run(p.query_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }

    /// For each user, whether it has a connection anywhere.
    pub(super) async fn users_online(&self, users: &[String]) -> Result<Vec<bool>, EngineError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.first().conn.get()?;
        if self.inner.cfg.cluster {
            // No cluster-wide online set: a user is online while its connections zset
            // holds an unexpired entry.
            let now = unix_secs_f64();
            let calls: Vec<Call<u64>> = users
                .iter()
                .map(|user| {
                    let mut conn = conn.clone();
                    let cmd = redis::cmd("ZCOUNT")
                        .arg(self.inner.keys.user_connections(user))
                        .arg(format!("({now}"))
                        .arg("+inf")
                        .clone();
                    async move { Conn::run(cmd.query_async::<u64>(&mut conn)).await }.boxed()
                })
                .collect();
            return in_order(calls)
                .await
                .into_iter()
                .map(|c| c.map(|n| n > 0))
                .collect();
        }
        let scores: Vec<Option<f64>> = Conn::run(
            redis::cmd("ZMSCORE")
                .arg(self.inner.keys.online())
                .arg(users)
                .query_async(&mut conn),
        )
        .await?;
        let now = unix_secs_f64();
        Ok(scores
            .into_iter()
            .map(|s| s.is_some_and(|t| t > now))
            .collect())
    }
}
