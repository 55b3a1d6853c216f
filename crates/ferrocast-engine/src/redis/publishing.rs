//! Publishing through the publish script: one publication (`EVALSHA`), a run of them as
//! one `MULTI`/`EXEC` transaction, and envelopes without a stream position.

use super::conn::{Conn, unavailable};
use super::{RedisEngine, new_epoch, scripts, secs};
use crate::{EngineError, PublishOptions};
use ferrocast_protocol::envelope::{Envelope, WirePublication, encode_body, encode_message};
use ferrocast_protocol::{Publication, StreamPosition};
use std::time::Duration;

impl RedisEngine {
    /// The command that publishes to a pub/sub channel: sharded on a Redis Cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.inner.cfg.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Keys and arguments of the publish script for one publication.
    fn publish_script_input(
        &self,
        channel: &str,
        publication: &Publication,
        opts: &PublishOptions,
    ) -> (Vec<String>, Vec<Vec<u8>>) {
        let keys = &self.inner.keys;
        let body = encode_body(&Envelope::Pub(WirePublication::from_publication(
            publication,
            opts.trace.clone(),
        )));
        let (idem_key, idem_ttl) = match &opts.idempotency_key {
            Some(k) => (
                keys.idempotency(channel, k),
                secs(if opts.idempotency_window.is_zero() {
                    Duration::from_secs(300)
                } else {
                    opts.idempotency_window
                }),
            ),
            None => (keys.idempotency(channel, ""), 0),
        };
        let text = |v: &dyn ToString| v.to_string().into_bytes();
        (
            vec![
                keys.history(channel),
                keys.meta(channel),
                idem_key,
                keys.pubsub(channel),
            ],
            vec![
                body,
                text(&opts.history_size),
                text(&secs(opts.history_ttl)),
                text(&secs(self.inner.cfg.history_meta_ttl.max(opts.history_ttl))),
                new_epoch().into_bytes(),
                text(&idem_ttl),
                if opts.uses_history() {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                },
                self.publish_command().as_bytes().to_vec(),
            ],
        )
    }

    /// Publishes an envelope that has no stream position (joins, leaves).
    pub(super) async fn publish_unstored(
        &self,
        channel: &str,
        envelope: &Envelope,
    ) -> Result<(), EngineError> {
        let msg = encode_message(0, "", envelope);
        let mut conn = self.shard(channel).conn.get()?;
        let key = self.inner.keys.pubsub(channel);
        let cmd = redis::cmd(self.publish_command()).arg(key).arg(msg).clone();
        Conn::run(cmd.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// One publication: the publish script, loaded on first use.
    pub(super) async fn publish_one(
        &self,
        channel: &str,
        publication: &Publication,
        opts: &PublishOptions,
    ) -> Result<StreamPosition, EngineError> {
        let mut conn = self.shard(channel).conn.get()?;
        let (keys, args) = self.publish_script_input(channel, publication, opts);
        let mut inv = self.inner.scripts.publish.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(a);
        }
        let (offset, epoch): (u64, String) = Conn::run(inv.invoke_async(&mut conn)).await?;
        Ok(StreamPosition { offset, epoch })
    }

    /// A run of publications to one channel as one transaction: in order, one round trip.
    pub(super) async fn publish_transaction(
        &self,
        channel: &str,
        items: &[(Publication, PublishOptions)],
    ) -> Result<Vec<Result<StreamPosition, EngineError>>, EngineError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.shard(channel).conn.get()?;
        let script = &self.inner.scripts.publish;
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        for (publication, opts) in items {
            let (keys, args) = self.publish_script_input(channel, publication, opts);
            pipe.cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
        }
        type Results = Vec<redis::RedisResult<(u64, String)>>;
        let mut results: Results = Conn::run(pipe.query_async(&mut conn)).await?;
        // After a Redis restart the script is gone: every EVALSHA failed alike and none
        // took effect; load it and send the transaction again.
        if results.iter().any(is_noscript) {
            Conn::run(
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(scripts::PUBLISH)
                    .query_async::<String>(&mut conn),
            )
            .await?;
            results = Conn::run(pipe.query_async(&mut conn)).await?;
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.map(|(offset, epoch)| StreamPosition { offset, epoch })
                    .map_err(unavailable)
            })
            .collect())
    }
}

fn is_noscript(r: &redis::RedisResult<(u64, String)>) -> bool {
    matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}
