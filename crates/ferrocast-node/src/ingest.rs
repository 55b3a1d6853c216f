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

use crate::api::{self, ApiCommand, ApiMethod};
use crate::node::Node;
use crate::telemetry;
use ferrocast_engine::{CommandStream, StreamCommand};
use ferrocast_protocol::ProtocolError;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
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

impl Outcome {
    fn of<T>(result: Result<T, ProtocolError>) -> Self {
        match result {
            Ok(_) => Outcome::Applied,
            Err(e) if e.temporary => Outcome::Retry(e.to_string()),
            Err(e) => Outcome::Dead(e.to_string()),
        }
    }
}

/// Consumes the command stream while the node runs, when the engine has one; returns
/// when the node drains (handing the stream over to another node).
pub async fn run(node: Arc<Node>) {
    if let Some(stream) = node.command_stream() {
        consume(node, stream).await;
    }
}

/// An entry decoded once: its command (publishes and broadcasts carry the entry id as
/// idempotency key unless they have one) and, for a publish, its channel. Publishes to
/// different channels may be applied side by side (per-channel order is what the stream
/// guarantees); anything else has no lane and is applied on its own. An entry that can
/// never be applied (malformed, unknown method, bad request) holds why.
struct Prepared {
    command: Result<ApiCommand, String>,
    lane: Option<String>,
}

fn prepare(entry: &StreamCommand) -> Prepared {
    let command = decode(entry);
    let lane = match &command {
        Ok(ApiCommand::Publish(r)) => Some(r.channel.clone()),
        _ => None,
    };
    Prepared { command, lane }
}

fn decode(entry: &StreamCommand) -> Result<ApiCommand, String> {
    let Some(name) = entry.method.as_deref() else {
        return Err("missing or non-UTF-8 `method` field".into());
    };
    let Some(payload) = entry.payload.as_deref() else {
        return Err("missing `payload` field".into());
    };
    let Some(method) = ApiMethod::from_name(name) else {
        return Err(format!("unknown method {name:?}"));
    };
    let mut command = ApiCommand::decode(method, payload).map_err(|e| {
        api::count_call(method, Err(&e));
        e.to_string()
    })?;
    let key = match &mut command {
        ApiCommand::Publish(r) => Some(&mut r.idempotency_key),
        ApiCommand::Broadcast(r) => Some(&mut r.idempotency_key),
        _ => None,
    };
    if let Some(key) = key {
        key.get_or_insert_with(|| format!("stream-{}", entry.id));
    }
    Ok(command)
}

/// Applies one entry on its own.
async fn apply(node: &Node, entry: &StreamCommand, command: Result<ApiCommand, String>) -> Outcome {
    let command = match command {
        Ok(c) => c,
        Err(why) => return Outcome::Dead(why),
    };
    let method = command.method();
    let span = telemetry::ingest_span(&entry.id, method.name(), entry.traceparent.as_deref());
    let res = api::execute(node, command).instrument(span).await;
    api::count_call(method, res.as_ref().map(|_| ()));
    Outcome::of(res)
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
    // Entries (index, command) grouped by lane, in stream order within each group.
    let mut groups: Vec<Vec<(usize, Result<ApiCommand, String>)>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (i, p) in prepared.into_iter().enumerate() {
        match p.lane {
            Some(lane) => {
                let g = *group_of.entry(lane).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[g].push((i, p.command));
            }
            None => groups.push(vec![(i, p.command)]),
        }
    }
    let runs = groups.into_iter().map(|group| {
        let wave = &wave;
        async move {
            if group.len() > 1 {
                // Only publishes to one channel share a group.
                return apply_run(node, wave, group).await;
            }
            let mut done = Vec::with_capacity(group.len());
            for (i, command) in group {
                done.push((i, apply(node, &wave[i], command).await));
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

/// Applies a run of publishes to one channel (in stream order) with one engine call
/// ([`Node::publish_many`]: one Redis transaction), which keeps their order and takes one
/// round trip instead of one per entry. Outcomes stop at the first temporary failure;
/// the entries after it stay in the backlog (retried with their idempotency keys).
async fn apply_run(
    node: &Node,
    wave: &[StreamCommand],
    group: Vec<(usize, Result<ApiCommand, String>)>,
) -> Vec<(usize, Outcome)> {
    let mut done = Vec::with_capacity(group.len());
    let mut items = Vec::with_capacity(group.len());
    let mut batched = Vec::with_capacity(group.len());
    let mut channel = None;
    for (i, command) in group {
        let entry = &wave[i];
        match command {
            Ok(ApiCommand::Publish(r)) => {
                let (ch, params) = match r.params() {
                    Ok(p) => p,
                    Err(e) => {
                        done.push((i, Outcome::Dead(e.to_string())));
                        continue;
                    }
                };
                channel.get_or_insert(ch);
                let span =
                    telemetry::ingest_span(&entry.id, "publish", entry.traceparent.as_deref());
                items.push((params, span));
                batched.push(i);
            }
            other => done.push((i, apply(node, entry, other).await)),
        }
    }
    let Some(channel) = channel else {
        return done;
    };
    match node.publish_many(&channel, items).await {
        Ok(results) => {
            for (i, result) in batched.into_iter().zip(results) {
                let Some(result) = result else { break };
                api::count_call(ApiMethod::Publish, result.as_ref().map(|_| ()));
                let outcome = Outcome::of(result);
                let stop = matches!(outcome, Outcome::Retry(_));
                done.push((i, outcome));
                if stop {
                    break;
                }
            }
        }
        Err(e) => {
            for _ in &batched {
                api::count_call(ApiMethod::Publish, Err(&e));
            }
            // As if applied one by one: the first entry failed, the rest were not tried.
            done.push((batched[0], Outcome::of::<()>(Err(e))));
        }
    }
    done
}

async fn consume(node: Arc<Node>, stream: Arc<dyn CommandStream>) {
    let consumer = node.id().to_string();
    let mut leader = false;
    let mut renewed_at: Option<Instant> = None;
    let mut backlog: VecDeque<StreamCommand> = VecDeque::new();
    let mut unacked: Vec<String> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
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
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if !leader {
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
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                break;
            }
        }
    }
}
