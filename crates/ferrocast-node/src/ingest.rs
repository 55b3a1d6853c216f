//! The backend command stream consumer: applies `XADD <prefix>:api * method M payload P`
//! entries through the same operations as the HTTP API.
//!
//! Only the node holding the stream lease consumes. Publishes to different channels are
//! applied side by side, those of one channel together in stream order with one engine
//! call (one Redis transaction, one round trip), so publications of a channel keep stream
//! order; every other method is applied on its own,
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

/// What applying an entry needs, worked out once from its payload: for `publish` and
/// `broadcast` the body with the entry id as idempotency key, and for `publish` the
/// channel. Publishes to different channels may be applied side by side (per-channel
/// order is what the stream guarantees); anything else (broadcast, user commands,
/// malformed entries) has no lane and is applied on its own.
#[derive(Default)]
struct Prepared {
    body: Option<Vec<u8>>,
    lane: Option<String>,
}

fn prepare(entry: &StreamCommand) -> Prepared {
    let (Some(method), Some(payload)) = (entry.method.as_deref(), entry.payload.as_deref()) else {
        return Prepared::default();
    };
    if method != "publish" && method != "broadcast" {
        return Prepared::default();
    }
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Prepared::default();
    };
    let Some(obj) = v.as_object_mut() else {
        return Prepared::default();
    };
    let lane = (method == "publish")
        .then(|| {
            obj.get("channel")
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .flatten();
    if !obj.contains_key("idempotency_key") {
        obj.insert(
            "idempotency_key".into(),
            format!("stream-{}", entry.id).into(),
        );
    }
    Prepared {
        body: serde_json::to_vec(&v).ok(),
        lane,
    }
}

async fn apply(node: &Node, entry: &StreamCommand, prepared: &Prepared) -> Outcome {
    let Some(method) = entry.method.as_deref() else {
        return Outcome::Dead("missing or non-UTF-8 `method` field".into());
    };
    let Some(payload) = entry.payload.as_deref() else {
        return Outcome::Dead("missing `payload` field".into());
    };
    if !api::METHODS.contains(&method) {
        return Outcome::Dead(format!("unknown method {method:?}"));
    }
    let body = prepared.body.as_deref().unwrap_or(payload);
    let span = telemetry::ingest_span(&entry.id, method, entry.traceparent.as_deref());
    match api::call(node, method, body).instrument(span).await {
        Ok(_) => Outcome::Applied,
        Err(e) if e.temporary => Outcome::Retry(e.to_string()),
        Err(e) => Outcome::Dead(e.to_string()),
    }
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
    let mut prepared: Vec<Prepared> = Vec::new();
    for entry in backlog.iter() {
        let p = prepare(entry);
        let alone = p.lane.is_none();
        if alone && !prepared.is_empty() {
            break;
        }
        prepared.push(p);
        if alone {
            break;
        }
    }
    let wave: Vec<StreamCommand> = backlog.drain(..prepared.len()).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for (i, p) in prepared.iter().enumerate() {
        match p.lane.as_deref() {
            Some(lane) => {
                let g = *group_of.entry(lane).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push(i);
            }
            None => groups.push(vec![i]),
        }
    }
    let runs = groups.into_iter().map(|indexes| {
        let (wave, prepared) = (&wave, &prepared);
        async move {
            if indexes.len() > 1 {
                // Only publishes to one channel share a group.
                return apply_run(node, wave, prepared, &indexes).await;
            }
            let mut done = Vec::with_capacity(indexes.len());
            for i in indexes {
                let outcome = apply(node, &wave[i], &prepared[i]).await;
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

/// Applies a run of publishes to one channel (`indexes`, in stream order) with one engine
/// call ([`Node::publish_many`]: one Redis transaction), which keeps their order and takes
/// one round trip instead of one per entry. Entries whose request is malformed are applied
/// alone (they fail, nothing to order). Outcomes stop at the first temporary failure; the
/// entries after it stay in the backlog (retried with their idempotency keys).
async fn apply_run(
    node: &Node,
    wave: &[StreamCommand],
    prepared: &[Prepared],
    indexes: &[usize],
) -> Vec<(usize, Outcome)> {
    let mut done = Vec::with_capacity(indexes.len());
    let mut items = Vec::with_capacity(indexes.len());
    let mut batched = Vec::with_capacity(indexes.len());
    let mut channel = None;
    for &i in indexes {
        let entry = &wave[i];
        let body = prepared[i].body.as_deref().or(entry.payload.as_deref());
        match body.map(api::publish_request) {
            Some(Ok((ch, params))) if entry.method.as_deref() == Some("publish") => {
                channel.get_or_insert(ch);
                let span =
                    telemetry::ingest_span(&entry.id, "publish", entry.traceparent.as_deref());
                items.push((params, span));
                batched.push(i);
            }
            _ => done.push((i, apply(node, entry, &prepared[i]).await)),
        }
    }
    let Some(channel) = channel else {
        return done;
    };
    match node.publish_many(&channel, items).await {
        Ok(results) => {
            for (i, result) in batched.into_iter().zip(results) {
                let Some(result) = result else { break };
                api::count_call("publish", result.as_ref().map(|_| ()));
                let outcome = match result {
                    Ok(_) => Outcome::Applied,
                    Err(e) if e.temporary => Outcome::Retry(e.to_string()),
                    Err(e) => Outcome::Dead(e.to_string()),
                };
                let stop = matches!(outcome, Outcome::Retry(_));
                done.push((i, outcome));
                if stop {
                    break;
                }
            }
        }
        Err(e) => {
            for _ in &batched {
                api::count_call("publish", Err(&e));
            }
            // As if applied one by one: the first entry failed, the rest were not tried.
            let outcome = if e.temporary {
                Outcome::Retry(e.to_string())
            } else {
                Outcome::Dead(e.to_string())
            };
            done.push((batched[0], outcome));
        }
    }
    done
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
