//! Shared pieces of the fault tests (`tests/tests/faults_*.rs`): starting nodes, a
//! sequence-numbered publisher, collecting and accounting what subscribers received.

#![allow(missing_docs)]

use crate::node::now;
use crate::recovering::{Received, account, publish_seq};
use crate::{NodeProcess, RecoveringSubscriber, token};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

pub fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

/// Starts one node named `name` and waits until it is ready.
pub async fn start_node(cfg: &Value, name: &str) -> NodeProcess {
    let mut c = cfg.clone();
    c["node"] = json!({ "name": name });
    let n = NodeProcess::start(c).await;
    n.wait_ready(200).await;
    n
}

pub async fn start_nodes(cfg: &Value, names: &[&str]) -> Vec<NodeProcess> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start_node(cfg, name).await);
    }
    nodes
}

pub fn rotated(urls: &[String], k: usize) -> Vec<String> {
    let mut u = urls.to_vec();
    u.rotate_left(k % urls.len());
    u
}

pub async fn wait_all_subscribed(subs: &[RecoveringSubscriber]) {
    for (i, s) in subs.iter().enumerate() {
        assert!(
            s.wait_subscribed(Duration::from_secs(10)).await,
            "subscriber {i} never subscribed: {:?}",
            s.received()
        );
    }
}

/// Publishes `{"seq": n}` for n = 0, 1, ... through `addrs` with [`publish_seq`]
/// (idempotency keys, retries on the next node) until `limit` or [`Publisher::finish`] stops it.
pub struct Publisher {
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<u32>,
}

impl Publisher {
    pub fn start(addrs: Vec<SocketAddr>, channel: &str, limit: u64, pause: Duration) -> Publisher {
        let published = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, channel) = (published.clone(), stop.clone(), channel.to_string());
        let task = tokio::spawn(async move {
            let mut retries = 0;
            let mut seq = 0;
            while seq < limit && !s.load(Ordering::Acquire) {
                retries += publish_seq(&addrs, &channel, seq).await;
                seq += 1;
                p.store(seq, Ordering::Release);
                tokio::time::sleep(pause).await;
            }
            retries
        });
        Publisher {
            published,
            stop,
            task,
        }
    }

    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    pub async fn wait_published(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.published() < n {
            assert!(
                Instant::now() < deadline,
                "publisher stuck at {}",
                self.published()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops (if not at its limit yet); returns (published, retries).
    pub async fn finish(self, stop: bool) -> (u64, u32) {
        if stop {
            self.stop.store(true, Ordering::Release);
        }
        let published = self.published.clone();
        let retries = self.task.await.expect("publisher panicked");
        (published.load(Ordering::Acquire), retries)
    }
}

/// Waits until every subscriber got `n` publications (or 20 s passed), stops them all.
pub async fn collect(subs: Vec<RecoveringSubscriber>, n: u64) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for s in &subs {
        s.wait_for(
            n as usize,
            deadline.saturating_duration_since(Instant::now()),
        )
        .await;
    }
    let mut out = Vec::new();
    for s in subs {
        out.push(s.stop().await);
    }
    out
}

/// Prints the totals, and one line per subscriber (with more than 10 subscribers, only
/// those that lost, duplicated or reordered something). Duplicates and out-of-order
/// counts are those of [`account`]; a redelivery counts as both.
pub fn report(test: &str, rs: &[Received], n: u64) {
    let mut tot = (0, 0, 0, 0);
    let (mut reconnects, mut resubscribes, mut unrecovered) = (0, 0, 0);
    for (i, r) in rs.iter().enumerate() {
        let (m, d, o) = account(&r.seqs, n);
        if rs.len() <= 10 || m + d + o > 0 {
            println!(
                "[{test}] subscriber {i}: delivered {} lost {m} duplicated {d} out-of-order {o} reconnects {} resubscribes {} unrecovered {} closes {:?}",
                r.seqs.len(),
                r.reconnects,
                r.resubscribes,
                r.unrecovered,
                r.closes
            );
        }
        tot.0 += r.seqs.len() as u64;
        tot.1 += m;
        tot.2 += d;
        tot.3 += o;
        reconnects += r.reconnects;
        resubscribes += r.resubscribes;
        unrecovered += r.unrecovered;
    }
    println!(
        "[{test}] published {n} x {} subscribers: delivered {} lost {} duplicated {} out-of-order {} reconnects {reconnects} resubscribes {resubscribes} unrecovered {unrecovered}",
        rs.len(),
        tot.0,
        tot.1,
        tot.2,
        tot.3
    );
}

/// Known broker bug, pinned by
/// `a_recovered_publication_is_not_delivered_again_when_its_pubsub_message_is_late`: right
/// after a recovery, a publication already returned in the subscribe reply can be
/// pushed a second time. Until it is fixed the fault tests accept exactly that (a
/// sequence number already seen, delivered again) and count it; a missing number or a
/// new number out of order still fails. Set to false once the bug is fixed.
pub const TOLERATE_REDELIVERY_AFTER_RECOVERY: bool = false;

/// (first deliveries in order, redeliveries): `seqs` without every number at or below
/// the highest seen so far, and how many were dropped that way.
pub fn first_deliveries(seqs: &[u64]) -> (Vec<u64>, u64) {
    let mut out = Vec::with_capacity(seqs.len());
    let mut redelivered = 0;
    for &s in seqs {
        if out.last().is_some_and(|m| s <= *m) {
            redelivered += 1;
        } else {
            out.push(s);
        }
    }
    (out, redelivered)
}

/// Every subscriber got every number of `0..n` exactly in order (modulo the known
/// redelivery bug) and was never told `recovered: false`.
pub fn assert_complete(rs: &[Received], n: u64) {
    for (i, r) in rs.iter().enumerate() {
        let (firsts, redelivered) = first_deliveries(&r.seqs);
        let (missing, _, _) = account(&r.seqs, n);
        assert_eq!(
            missing, 0,
            "subscriber {i} lost {missing} publications: {r:?}"
        );
        assert!(
            firsts.iter().copied().eq(0..n),
            "subscriber {i}: publications out of order: {r:?}"
        );
        if !TOLERATE_REDELIVERY_AFTER_RECOVERY {
            assert_eq!(redelivered, 0, "subscriber {i}: duplicates: {r:?}");
        }
        assert_eq!(r.unrecovered, 0, "subscriber {i} was told recovered:false");
    }
}

/// Sequence numbers stored more than once in the channel's history (publisher retries
/// must be deduplicated by their idempotency keys).
pub async fn history_duplicates(node: &NodeProcess, channel: &str) -> (usize, usize) {
    let h = node
        .api_ok("history", json!({"channel": channel, "limit": -1}))
        .await;
    let pubs = h["publications"].as_array().cloned().unwrap_or_default();
    let distinct: HashSet<u64> = pubs
        .iter()
        .filter_map(|p| p["data"]["seq"].as_u64())
        .collect();
    (pubs.len(), pubs.len() - distinct.len())
}

pub fn ms(d: Duration) -> u128 {
    d.as_millis()
}
