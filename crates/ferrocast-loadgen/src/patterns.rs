//! `--background-patterns`: connections that hold many distinct wildcard subscriptions
//! which no publication of the run matches, so a workload measures what the broker's
//! pattern matching costs a publish as the number of subscribed patterns grows.
//!
//! Pattern `k` is `<channel k % n>.x<k>.*` over the run's channels: it shares its first
//! token with a published channel (the matcher walks into that branch) but needs two more
//! tokens, which the published channels do not have. The holders connect and subscribe
//! before the measured subscribers start, answer pings, and receive nothing (a delivery
//! counts as the error `background_pattern_delivery`).

use crate::centrifugo::{Codec, JsonCodec, handshake, pong};
use crate::config::{Config, Creds};
use crate::stats::{Errors, count};
use crate::ws::open_ws;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Subscribe commands sent per frame while a holder subscribes.
const SUBSCRIBES_PER_FRAME: usize = 200;

/// What the holders report once their subscriptions are in place.
#[derive(Debug, Clone, Default)]
pub struct Ready {
    /// Patterns subscribed without error.
    pub subscribed: usize,
    /// Seconds from the first connect to the last subscribe reply.
    pub setup_secs: f64,
    /// Setup errors by kind.
    pub errors: Errors,
}

/// Pattern number `k` over `channels`.
pub fn pattern(channels: &[String], k: usize) -> String {
    format!("{}.x{k}.*", channels[k % channels.len()])
}

/// Connects `ceil(total / per_conn)` holders (connection indexes from `first_index`),
/// subscribes `total` distinct patterns, sends [`Ready`] on `ready`, then keeps the
/// connections until `stop`; returns the errors seen after setup.
pub fn hold(
    cfg: Arc<Config>,
    total: usize,
    per_conn: usize,
    first_index: usize,
    ready: std::sync::mpsc::Sender<Ready>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Errors> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, async move {
        let per_conn = per_conn.max(1);
        let start = Instant::now();
        let mut setups = Vec::new();
        for (h, from) in (0..total).step_by(per_conn).enumerate() {
            let names: Vec<String> = (from..(from + per_conn).min(total))
                .map(|k| pattern(&cfg.channels, k))
                .collect();
            let cfg = cfg.clone();
            let creds = cfg.creds(first_index + h);
            setups.push(tokio::task::spawn_local(async move {
                let r = tokio::time::timeout(
                    cfg.connect_timeout,
                    subscribe_all(&cfg, h, &creds, &names),
                )
                .await
                .unwrap_or_else(|_| Err("background_setup_timeout".into()));
                (r, names.len())
            }));
        }
        let mut report = Ready::default();
        let mut conns = Vec::new();
        for s in setups {
            match s.await {
                Ok((Ok(ws), n)) => {
                    report.subscribed += n;
                    conns.push(ws);
                }
                Ok((Err(kind), _)) => count(&mut report.errors, kind, 1),
                Err(_) => count(&mut report.errors, "background_task_panicked", 1),
            }
        }
        report.setup_secs = (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
        let _ = ready.send(report);
        let mut tasks = Vec::new();
        for ws in conns {
            let stop = stop.clone();
            tasks.push(tokio::task::spawn_local(keep(ws, stop)));
        }
        let mut errors = Errors::new();
        for t in tasks {
            if let Ok(e) = t.await {
                for (k, n) in e {
                    count(&mut errors, k, n);
                }
            }
        }
        errors
    }))
}

/// Connects holder `h` and subscribes it to `names`, a frame of subscribes at a time.
async fn subscribe_all(
    cfg: &Config,
    h: usize,
    creds: &Creds,
    names: &[String],
) -> Result<crate::ws::Ws, String> {
    let target = &cfg.targets[h % cfg.targets.len()];
    let mut ws = open_ws(target, None).await?;
    let mut first = Vec::new();
    JsonCodec::connect(&mut first, 1, "ferrocast-loadgen-patterns", creds);
    handshake::<JsonCodec>(&mut ws, first, &[(1, "connect")]).await?;
    let mut id = 2u32;
    for chunk in names.chunks(SUBSCRIBES_PER_FRAME) {
        let mut frame = Vec::new();
        let mut want = Vec::with_capacity(chunk.len());
        for (j, name) in chunk.iter().enumerate() {
            if j > 0 {
                JsonCodec::separate(&mut frame);
            }
            JsonCodec::subscribe(&mut frame, id, name);
            want.push((id, "background_subscribe"));
            id += 1;
        }
        handshake::<JsonCodec>(&mut ws, frame, &want).await?;
    }
    Ok(ws)
}

/// Holds one connection until `stop`, answering pings; anything else it receives is an
/// error (no publication matches its patterns).
async fn keep(mut ws: crate::ws::Ws, mut stop: watch::Receiver<bool>) -> Errors {
    let mut errors = Errors::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let (mut pings, mut other) = (0, 0u64);
                    for line in t.as_bytes().split(|&b| b == b'\n') {
                        match line {
                            b"{}" => pings += 1,
                            b"" => {}
                            _ => other += 1,
                        }
                    }
                    if other > 0 {
                        count(&mut errors, "background_pattern_delivery", other);
                    }
                    if pings > 0 && pong::<JsonCodec>(&mut ws, pings).await.is_err() {
                        count(&mut errors, "background_write_error", 1);
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    count(&mut errors, "background_closed", 1);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    count(&mut errors, "background_read_error", 1);
                    break;
                }
            },
        }
    }
    // Bounded: the run is over either way.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_distinct_and_follow_the_channels() {
        let ch = vec!["w:c0".to_string(), "w:c1".to_string()];
        assert_eq!(pattern(&ch, 0), "w:c0.x0.*");
        assert_eq!(pattern(&ch, 3), "w:c1.x3.*");
        let all: std::collections::HashSet<_> = (0..100).map(|k| pattern(&ch, k)).collect();
        assert_eq!(all.len(), 100);
    }
}
