//! The backend command stream consumer: applies `XADD <prefix>:api * method M payload P`
//! entries through the same operations as the HTTP API.
//!
//! Only the node holding the stream lease consumes. Publishes to different channels are
//! applied side by side, those of one channel one after the other in stream order, so
//! publications of a channel keep stream order; every other method is applied on its own,
//! after everything before it in the stream. An entry is acknowledged only after it
//! took effect (the entries of one read together, in one XACK, before the next read); a
//! temporary failure (engine unavailable) keeps it and retries in order;
//! an entry that can never work (malformed, unknown method, bad request) goes to the
//! dead-letter stream with its error. Publishes get the entry id as idempotency key, so
//! an entry applied twice (a node died before acknowledging) publishes once.

use crate::api;
use crate::node::Node;
use crate::telemetry;
use ferrocast_engine::{CommandStream, StreamCommand};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Lifetime of the consumer lease; a dead consumer is replaced within it.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
const LEASE_RENEW: Duration = Duration::from_millis(1500);
const READ_COUNT: usize = 100;
const READ_BLOCK: Duration = Duration::from_secs(1);

enum Outcome {
    Applied,
    Retry(String),
    Dead(String),
}

/// Starts the consumer when the engine has a command stream.
pub fn spawn(node: &Arc<Node>) {
    if let Some(stream) = node.engine.command_stream() {
        tokio::spawn(run(Arc::downgrade(node), stream));
    }
}

fn with_idempotency_key(method: &str, payload: &[u8], id: &str) -> Option<Vec<u8>> {
    if method != "publish" && method != "broadcast" {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let obj = v.as_object_mut()?;
    if !obj.contains_key("idempotency_key") {
        obj.insert("idempotency_key".into(), format!("stream-{id}").into());
    }
    serde_json::to_vec(&v).ok()
}

async fn apply(node: &Node, entry: &StreamCommand) -> Outcome {
    let Some(method) = entry.method.as_deref() else {
        return Outcome::Dead("missing or non-UTF-8 `method` field".into());
    };
    let Some(payload) = entry.payload.as_deref() else {
        return Outcome::Dead("missing `payload` field".into());
    };
    if !api::METHODS.contains(&method) {
        return Outcome::Dead(format!("unknown method {method:?}"));
    }
    let rewritten = with_idempotency_key(method, payload, &entry.id);
    let body = rewritten.as_deref().unwrap_or(payload);
    let span = telemetry::ingest_span(&entry.id, method, entry.traceparent.as_deref());
    match api::call(node, method, body).instrument(span).await {
        Ok(_) => Outcome::Applied,
        Err(e) if e.temporary => Outcome::Retry(e.to_string()),
        Err(e) => Outcome::Dead(e.to_string()),
    }
}

/// The channel a `publish` entry writes to. Entries of different channels may be applied
/// side by side (per-channel order is what the stream guarantees); anything else
/// (broadcast, user commands, malformed entries) is applied on its own.
fn lane(entry: &StreamCommand) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Target {
        channel: String,
    }
    if entry.method.as_deref() != Some("publish") {
        return None;
    }
    serde_json::from_slice::<Target>(entry.payload.as_deref()?)
        .ok()
        .map(|t| t.channel)
}

/// Applies the next wave of the backlog: the leading run of `publish` entries (one task
/// per channel, each applying its entries in stream order and stopping at the first
/// temporary failure), or the first entry alone. Applied entries join `unacked`, dead
/// ones go to the dead-letter stream, the rest stay in the backlog in stream order.
/// Returns the error of a temporary failure, if any.
async fn apply_wave(
    node: &Node,
    stream: &dyn CommandStream,
    backlog: &mut VecDeque<StreamCommand>,
    unacked: &mut Vec<String>,
) -> Option<String> {
    let mut lanes: Vec<String> = Vec::new();
    while lanes.len() < backlog.len() {
        match lane(&backlog[lanes.len()]) {
            Some(l) => lanes.push(l),
            None => break,
        }
    }
    let wave: Vec<StreamCommand> = backlog.drain(..lanes.len().max(1)).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for (i, l) in lanes.iter().enumerate() {
        let g = *group_of.entry(l.as_str()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    if groups.is_empty() {
        groups.push(vec![0]);
    }
    let runs = groups.into_iter().map(|indexes| {
        let wave = &wave;
        async move {
            let mut done = Vec::with_capacity(indexes.len());
            for i in indexes {
                let outcome = apply(node, &wave[i]).await;
                let stop = matches!(outcome, Outcome::Retry(_));
                done.push((i, outcome));
                if stop {
                    break;
                }
            }
            done
        }
    });
    let mut outcomes: Vec<Option<Outcome>> = (0..wave.len()).map(|_| None).collect();
    let finished = futures_util::future::join_all(runs).await;
    for (i, outcome) in finished.into_iter().flatten() {
        outcomes[i] = Some(outcome);
    }
    let mut retry = None;
    let mut keep = Vec::new();
    for (entry, outcome) in wave.into_iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Applied) => unacked.push(entry.id),
            Some(Outcome::Dead(error)) => {
                tracing::warn!(id = %entry.id, error = %error, "command stream entry moved to dead letters");
                if stream.dead_letter(&entry, &error).await.is_err() {
                    keep.push(entry);
                }
            }
            Some(Outcome::Retry(error)) => {
                retry.get_or_insert(error);
                keep.push(entry);
            }
            None => keep.push(entry),
        }
    }
    for entry in keep.into_iter().rev() {
        backlog.push_front(entry);
    }
    retry
}

async fn run(node: Weak<Node>, stream: Arc<dyn CommandStream>) {
    let consumer = match node.upgrade() {
        Some(n) => n.id.clone(),
        None => return,
    };
    let mut leader = false;
    let mut renewed_at: Option<Instant> = None;
    let mut backlog: VecDeque<StreamCommand> = VecDeque::new();
    let mut unacked: Vec<String> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(node) = node.upgrade() else { return };
        if node.is_draining() {
            // Hand the stream over now instead of letting the lease run out.
            if leader {
                if let Err(e) = stream.release_lease(&consumer).await {
                    tracing::debug!(error = %e, "lease release failed");
                }
                tracing::info!("stopped consuming the backend command stream (draining)");
            }
            return;
        }
        if renewed_at.is_none_or(|t| t.elapsed() >= LEASE_RENEW) {
            match stream.acquire_lease(&consumer, LEASE_TTL).await {
                Ok(held) => {
                    if held && !leader {
                        tracing::info!("consuming the backend command stream");
                    }
                    if !held {
                        backlog.clear();
                        unacked.clear();
                    }
                    leader = held;
                    renewed_at = Some(Instant::now());
                }
                Err(_) => {
                    leader = false;
                    renewed_at = None;
                    drop(node);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if !leader {
            drop(node);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Entries applied since the last read, acknowledged in one command.
        if !unacked.is_empty() && stream.ack(&unacked).await.is_ok() {
            unacked.clear();
        }
        if backlog.is_empty() {
            match stream.read(&consumer, READ_COUNT, READ_BLOCK).await {
                Ok(entries) => {
                    backoff = Duration::from_millis(100);
                    backlog.extend(entries);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "command stream read failed");
                    drop(node);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        while !backlog.is_empty() {
            if renewed_at.is_none_or(|t| t.elapsed() >= LEASE_RENEW) {
                break;
            }
            let retry = apply_wave(&node, stream.as_ref(), &mut backlog, &mut unacked).await;
            if let Some(error) = retry {
                tracing::debug!(error = %error, "command stream entries will be retried");
                drop(node);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                break;
            }
        }
    }
}
