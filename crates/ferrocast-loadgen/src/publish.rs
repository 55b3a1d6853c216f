//! The publish side: a paced loop driving one of the publish paths.
//!
//! Each path is a [`Publisher`] variant implementing `capacity`, `send`, `recv`
//! (cancel-safe), `after_recv` and `finish`, plus one arm in [`Publisher::connect`].
//! Accounting is the same for all: every message of a batch is counted as sent, and a
//! publisher adds to `failed[channel]` what the broker refused.

use crate::batch::Batch;
use crate::centrifugo::{ClientPublisher, JsonCodec, ProtobufCodec};
use crate::config::{Config, Encoding, Protocol, PublishPath};
use crate::http::{HttpPublisher, HttpWire};
use crate::nats::NatsPublisher;
use crate::redis::{RedisPublisher, RespWire};
use crate::replies::Replies;
use crate::stats::{Errors, count};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most messages sent per tick (so replies keep being read under overload).
const MAX_BATCH: u64 = 2_000;

/// The publisher of a run, one variant per publish path.
pub enum Publisher {
    /// `--publish http`.
    Http(HttpPublisher),
    /// `--publish client`, Centrifugo protocol, JSON.
    Client(ClientPublisher<JsonCodec>),
    /// `--publish client`, Centrifugo protocol, Protobuf.
    ClientProtobuf(ClientPublisher<ProtobufCodec>),
    /// `--publish client`, NATS protocol.
    Nats(NatsPublisher),
    /// `--publish redis`.
    Redis(RedisPublisher),
}

impl Publisher {
    /// Connects the publisher that `cfg`'s protocol and publish path call for.
    pub async fn connect(cfg: &Config, channels: Rc<Vec<String>>) -> anyhow::Result<Self> {
        let target = &cfg.targets[0];
        Ok(match (cfg.protocol, cfg.publish) {
            (Protocol::Nats, PublishPath::Client) => {
                Publisher::Nats(NatsPublisher::connect(target, channels, cfg.payload_size).await?)
            }
            (Protocol::Centrifugo, PublishPath::Client) => {
                // The publisher has the connection index after the subscribers'.
                let creds = cfg.creds(cfg.connections);
                match cfg.encoding {
                    Encoding::Json => Publisher::Client(
                        ClientPublisher::connect(target, &creds, channels, cfg.payload_size)
                            .await?,
                    ),
                    Encoding::Protobuf => Publisher::ClientProtobuf(
                        ClientPublisher::connect(target, &creds, channels, cfg.payload_size)
                            .await?,
                    ),
                }
            }
            (Protocol::Centrifugo, PublishPath::Http) => Publisher::Http(
                HttpPublisher::connect(
                    cfg.api_addr,
                    HttpWire {
                        host: cfg.api_addr.to_string(),
                        path: cfg.api_path.clone(),
                        api_key: cfg.api_key.clone(),
                    },
                    channels,
                    cfg.payload_size,
                    cfg.http_inflight,
                )
                .await?,
            ),
            (Protocol::Centrifugo, PublishPath::Redis) => Publisher::Redis(
                RedisPublisher::connect(
                    cfg.redis_addr,
                    RespWire {
                        key: cfg.redis_stream.clone(),
                    },
                    channels,
                    cfg.payload_size,
                    cfg.http_inflight,
                )
                .await?,
            ),
            (Protocol::Nats, PublishPath::Redis) => {
                anyhow::bail!("--protocol nats supports --publish client only")
            }
            (Protocol::Nats, PublishPath::Http) => {
                anyhow::bail!("--protocol nats supports --publish client only")
            }
        })
    }

    fn capacity(&self) -> usize {
        match self {
            Publisher::Http(p) => p.capacity(),
            Publisher::Client(p) => p.capacity(),
            Publisher::ClientProtobuf(p) => p.capacity(),
            Publisher::Nats(p) => p.capacity(),
            Publisher::Redis(p) => p.capacity(),
        }
    }

    async fn send(&mut self, batch: &Batch) -> anyhow::Result<()> {
        match self {
            Publisher::Http(p) => p.send(batch).await,
            Publisher::Client(p) => p.send(batch).await,
            Publisher::ClientProtobuf(p) => p.send(batch).await,
            Publisher::Nats(p) => p.send(batch).await,
            Publisher::Redis(p) => p.send(batch).await,
        }
    }

    async fn recv(&mut self) -> anyhow::Result<()> {
        match self {
            Publisher::Http(p) => p.recv().await,
            Publisher::Client(p) => p.recv().await,
            Publisher::ClientProtobuf(p) => p.recv().await,
            Publisher::Nats(p) => p.recv().await.map(|_| ()),
            Publisher::Redis(p) => p.recv().await,
        }
    }

    async fn after_recv(&mut self) -> anyhow::Result<()> {
        match self {
            Publisher::Http(p) => p.after_recv().await,
            Publisher::Client(p) => p.after_recv().await,
            Publisher::ClientProtobuf(p) => p.after_recv().await,
            Publisher::Nats(p) => p.after_recv().await,
            Publisher::Redis(p) => p.after_recv().await,
        }
    }

    async fn finish(&mut self, within: Duration) {
        match self {
            Publisher::Http(p) => p.finish(within).await,
            Publisher::Client(p) => p.finish(within).await,
            Publisher::ClientProtobuf(p) => p.finish(within).await,
            Publisher::Nats(p) => p.finish(within).await,
            Publisher::Redis(p) => p.finish(within).await,
        }
    }

    fn take_results(&mut self) -> (Vec<u64>, Errors) {
        let (f, e) = match self {
            Publisher::Http(p) => (&mut p.failed, &mut p.errors),
            Publisher::Client(p) => (&mut p.failed, &mut p.errors),
            Publisher::ClientProtobuf(p) => (&mut p.failed, &mut p.errors),
            Publisher::Nats(p) => (&mut p.failed, &mut p.errors),
            Publisher::Redis(p) => (&mut p.failed, &mut p.errors),
        };
        (std::mem::take(f), std::mem::take(e))
    }

    /// Messages sent whose answer is still awaited (for progress output).
    #[allow(dead_code)]
    fn pending(&self) -> usize {
        match self {
            Publisher::Http(p) => p.pending(),
            Publisher::Client(p) => p.pending(),
            Publisher::ClientProtobuf(p) => p.pending(),
            Publisher::Redis(p) => p.pending(),
            Publisher::Nats(_) => 0,
        }
    }
}

/// What the publish phase produced.
pub struct PublishOutcome {
    /// Messages accepted by the broker, per channel.
    pub published: Vec<u64>,
    /// Seconds from the first to the last send.
    pub publish_secs: f64,
    /// Errors of the publish loop and of the publisher.
    pub errors: Errors,
}

/// Publishes `rate * duration` messages, round-robin over the channels, paced on a 1 ms
/// tick, then waits (bounded by `finish_within`) for the outstanding answers. Sequence
/// numbers count per channel, or over all channels with `global_seq` (for subscribers of
/// a pattern, which receive every channel's publications on one subscription).
pub async fn run(
    p: &mut Publisher,
    rate: f64,
    duration: Duration,
    channels: usize,
    global_seq: bool,
    finish_within: Duration,
) -> PublishOutcome {
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let mut sent = vec![0u64; channels];
    let mut errors = Errors::new();
    let start = Instant::now();
    // Bounded: a publisher that cannot keep up gives up at twice the planned time + 10 s.
    let hard_stop = start + duration * 2 + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut k: u64 = 0;
    let mut batch: Batch = Vec::new();
    while k < total {
        if Instant::now() > hard_stop {
            count(&mut errors, "publish_aborted_behind_schedule", total - k);
            break;
        }
        tokio::select! {
            _ = tick.tick() => {
                let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
                let n = due
                    .saturating_sub(k)
                    .min(p.capacity() as u64)
                    .min(MAX_BATCH);
                if n == 0 {
                    continue;
                }
                batch.clear();
                for _ in 0..n {
                    let ch = (k % channels as u64) as usize;
                    sent[ch] += 1;
                    batch.push((ch as u32, if global_seq { k + 1 } else { sent[ch] }));
                    k += 1;
                }
                if let Err(e) = p.send(&batch).await {
                    count(&mut errors, "publish_send_failed", 1);
                    eprintln!("loadgen: publish send failed: {e:#}");
                    break;
                }
            }
            r = p.recv() => {
                let r = match r {
                    Ok(()) => p.after_recv().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    count(&mut errors, "publisher_failed", 1);
                    eprintln!("loadgen: publisher failed: {e:#}");
                    break;
                }
            }
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    p.finish(finish_within).await;
    let (failed, perr) = p.take_results();
    for (kind, n) in perr {
        count(&mut errors, kind, n);
    }
    let published = sent
        .iter()
        .zip(failed.iter())
        .map(|(s, f)| s.saturating_sub(*f))
        .collect();
    PublishOutcome {
        published,
        publish_secs,
        errors,
    }
}
