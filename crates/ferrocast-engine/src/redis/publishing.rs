//! Publishing through the publish script: one publication (`EVALSHA`), a run of them as
//! one `MULTI`/`EXEC` transaction, and envelopes without a stream position.

use super::conn::{Conn, unavailable};
use super::{RedisEngine, new_epoch, scripts, secs};
use crate::feed_channel;
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
        let (offset, epoch, fresh): (u64, String, i64) =
            Conn::run(inv.invoke_async(&mut conn)).await?;
        let position = StreamPosition { offset, epoch };
        if let Some(namespace) = &opts.feed
            && fresh == 1
        {
            self.publish_feed(channel, namespace, &[(publication, opts, &position)])
                .await;
        }
        Ok(position)
    }

    /// Copies fresh publications of `channel` to its namespace's wildcard feed, for the
    /// nodes with wildcard subscriptions there. Best effort: the publications are in their
    /// channel already; a failure here is logged and costs only wildcard subscribers.
    async fn publish_feed(
        &self,
        channel: &str,
        namespace: &str,
        items: &[(&Publication, &PublishOptions, &StreamPosition)],
    ) {
        if items.is_empty() {
            return;
        }
        let feed = feed_channel(namespace);
        let key = self.inner.keys.pubsub(&feed);
        let mut pipe = redis::pipe();
        for (publication, opts, position) in items {
            let envelope = Envelope::Feed {
                channel: channel.to_string(),
                publication: WirePublication::from_publication(publication, opts.trace.clone()),
            };
            pipe.cmd(self.publish_command())
                .arg(&key)
                .arg(encode_message(position.offset, &position.epoch, &envelope))
                .ignore();
        }
        let sent = match self.shard(&feed).conn.get() {
            Ok(mut conn) => Conn::run(pipe.query_async::<()>(&mut conn)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(channel, namespace, error = %e, "wildcard feed publish failed");
        }
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
        type Results = Vec<redis::RedisResult<(u64, String, i64)>>;
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
        let mut fresh = Vec::new();
        let positions: Vec<Result<StreamPosition, EngineError>> = results
            .into_iter()
            .zip(items)
            .map(|(r, (publication, opts))| {
                r.map(|(offset, epoch, new)| {
                    let position = StreamPosition { offset, epoch };
                    if new == 1 && opts.feed.is_some() {
                        fresh.push((publication, opts, position.clone()));
                    }
                    position
                })
                .map_err(unavailable)
            })
            .collect();
        // One feed per namespace: the items of one channel share it.
        if let Some(namespace) = fresh.first().and_then(|(_, o, _)| o.feed.clone()) {
            let items: Vec<_> = fresh.iter().map(|(p, o, pos)| (*p, *o, pos)).collect();
            self.publish_feed(channel, &namespace, &items).await;
        }
        Ok(positions)
    }
}

fn is_noscript(r: &redis::RedisResult<(u64, String, i64)>) -> bool {
    matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
}
