//! Faults under load, against real `redis-server` processes and real ferrocast nodes:
//! a node killed with SIGKILL, a rolling restart, Redis restarted without persistence,
//! network trouble between one node and Redis (through [`Proxy`]), a slow consumer among
//! many clients, and presence after node and Redis failures.
//!
//! Traffic is sequence-numbered (`{"seq": n}`) on channels of the `live:` namespace
//! (history 5000, force_recovery) and every published number is accounted for at every
//! subscriber: missing, duplicated and out of order. Each test prints its figures
//! (`cargo test -p ferrocast-tests --test faults -- --nocapture`). Everything listens on
//! 127.0.0.1 and every process killed is one the test started.

use ferrocast_tests::node::{cluster_config, http_request_opt, now};
use ferrocast_tests::proxy::Proxy;
use ferrocast_tests::recovering::{Received, account, publish_seq};
use ferrocast_tests::{Client, NodeProcess, RecoveringSubscriber, RedisProcess, token};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

/// Starts one node named `name` and waits until it is ready.
async fn start_node(cfg: &Value, name: &str) -> NodeProcess {
    let mut c = cfg.clone();
    c["node"] = json!({ "name": name });
    let n = NodeProcess::start(c).await;
    n.wait_ready(200).await;
    n
}

async fn start_nodes(cfg: &Value, names: &[&str]) -> Vec<NodeProcess> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(start_node(cfg, name).await);
    }
    nodes
}

fn rotated(urls: &[String], k: usize) -> Vec<String> {
    let mut u = urls.to_vec();
    u.rotate_left(k % urls.len());
    u
}

async fn wait_all_subscribed(subs: &[RecoveringSubscriber]) {
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
struct Publisher {
    published: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<u32>,
}

impl Publisher {
    fn start(addrs: Vec<SocketAddr>, channel: &str, limit: u64, pause: Duration) -> Publisher {
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

    fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    async fn wait_published(&self, n: u64) {
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
    async fn finish(self, stop: bool) -> (u64, u32) {
        if stop {
            self.stop.store(true, Ordering::Release);
        }
        let published = self.published.clone();
        let retries = self.task.await.expect("publisher panicked");
        (published.load(Ordering::Acquire), retries)
    }
}

/// Waits until every subscriber got `n` publications (or 20 s passed), stops them all.
async fn collect(subs: Vec<RecoveringSubscriber>, n: u64) -> Vec<Received> {
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
fn report(test: &str, rs: &[Received], n: u64) {
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
const TOLERATE_REDELIVERY_AFTER_RECOVERY: bool = false;

/// (first deliveries in order, redeliveries): `seqs` without every number at or below
/// the highest seen so far, and how many were dropped that way.
fn first_deliveries(seqs: &[u64]) -> (Vec<u64>, u64) {
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
fn assert_complete(rs: &[Received], n: u64) {
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
async fn history_duplicates(node: &NodeProcess, channel: &str) -> (usize, usize) {
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

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// 1. kill -9 of a node under load.

#[tokio::test]
async fn kill_9_of_a_node_under_load_loses_nothing() {
    const T: &str = "kill9";
    const CH: &str = "live:kill9";
    const N: u64 = 1000;
    let redis = RedisProcess::start().await;
    let cfg = cluster_config(&[redis.url()], "fc");
    let mut nodes = start_nodes(&cfg, &["node-0", "node-1", "node-2"]).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    // Subscriber i starts on node i % 3 and knows all three nodes.
    let subs: Vec<RecoveringSubscriber> = (0..6)
        .map(|i| {
            RecoveringSubscriber::start(rotated(&urls, i), user_token(&format!("k{i}")), CH.into())
        })
        .collect();
    wait_all_subscribed(&subs).await;
    let publisher = Publisher::start(
        vec![nodes[0].addr, nodes[1].addr],
        CH,
        N,
        Duration::from_millis(2),
    );
    publisher.wait_published(N / 2).await;
    let victims = [2usize, 5];
    let before: Vec<u32> = victims
        .iter()
        .map(|&i| subs[i].received().subscriptions)
        .collect();
    let at_kill = publisher.published();
    let killed = Instant::now();
    nodes[2].kill9().await;
    // Reconnect time, measured from outside: kill → the victim's next successful
    // subscribe reply (with the recovered publications).
    let mut back: Vec<Option<Duration>> = vec![None; victims.len()];
    while back.iter().any(Option::is_none) && killed.elapsed() < Duration::from_secs(15) {
        for (k, &i) in victims.iter().enumerate() {
            if back[k].is_none() && subs[i].received().subscriptions > before[k] {
                back[k] = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (published, retries) = publisher.finish(false).await;
    assert_eq!(published, N);
    let rs = collect(subs, N).await;
    report(T, &rs, N);
    println!(
        "[{T}] killed node-2 after {at_kill} publications; reconnect times (kill → subscribed again with recovery) {:?} ms; publisher retries {retries}",
        back.iter().map(|b| b.map(ms)).collect::<Vec<_>>()
    );
    assert!(
        back.iter().all(Option::is_some),
        "subscribers of the killed node did not come back within 15 s"
    );
    let (stored, twice) = history_duplicates(&nodes[0], CH).await;
    assert_eq!((stored as u64, twice), (N, 0), "history of the channel");
    assert_complete(&rs, N);
    for (i, r) in rs.iter().enumerate() {
        if victims.contains(&i) {
            assert!(r.reconnects >= 1, "victim {i} never reconnected: {r:?}");
        } else {
            assert_eq!(
                (r.reconnects, r.resubscribes),
                (0, 0),
                "subscriber {i} of a surviving node was disturbed: {r:?}"
            );
        }
    }
}

// 2. Rolling restart.

/// Close events seen from outside: (time since start, subscriber, close code).
type Closes = Vec<(Duration, usize, u16)>;

/// Polls the subscribers every 10 ms and timestamps every new close and reconnect.
fn watch_subscribers(
    subs: Arc<Vec<RecoveringSubscriber>>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(Closes, Vec<Duration>)> {
    tokio::spawn(async move {
        let mut closes = Vec::new();
        let mut reconnects = Vec::new();
        let mut seen: Vec<(usize, u32)> = vec![(0, 0); subs.len()];
        while !stop.load(Ordering::Acquire) {
            for (i, s) in subs.iter().enumerate() {
                let r = s.received();
                let t = start.elapsed();
                for c in &r.closes[seen[i].0..] {
                    closes.push((t, i, *c));
                }
                for _ in seen[i].1..r.reconnects {
                    reconnects.push(t);
                }
                seen[i] = (r.closes.len(), r.reconnects);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (closes, reconnects)
    })
}

/// Counts per 100 ms bucket from `from`.
fn buckets(times: impl Iterator<Item = Duration>, from: Duration) -> BTreeMap<u128, usize> {
    let mut b = BTreeMap::new();
    for t in times {
        *b.entry(ms(t.saturating_sub(from)) / 100).or_insert(0) += 1;
    }
    b
}

#[tokio::test]
async fn rolling_restart_under_load_loses_nothing_and_spreads_reconnects() {
    const T: &str = "rolling";
    const CH: &str = "live:rolling";
    const SUBS: usize = 60;
    let redis = RedisProcess::start().await;
    let mut cfg = cluster_config(&[redis.url()], "fc");
    cfg["shutdown"] = json!({"drain_window": "2s"});
    // The replacements run before the old nodes stop (their ports are only known once
    // they listen), so every subscriber knows the whole superset: its own old node
    // first, then the five others in an order of its own, like a load balancer would
    // spread them.
    let mut old = start_nodes(&cfg, &["old-0", "old-1", "old-2"]).await;
    let new = start_nodes(&cfg, &["new-0", "new-1", "new-2"]).await;
    let all: Vec<String> = old.iter().chain(&new).map(|n| n.ws_url()).collect();
    let subs: Vec<RecoveringSubscriber> = (0..SUBS)
        .map(|i| {
            let first = all[i % 3].clone();
            let rest: Vec<String> = all.iter().filter(|u| **u != first).cloned().collect();
            let mut urls = vec![first];
            urls.extend(rotated(&rest, i / 3));
            RecoveringSubscriber::start(urls, user_token(&format!("r{i}")), CH.into())
        })
        .collect();
    wait_all_subscribed(&subs).await;
    // The backend publishes through the nodes that stay (a load balancer would route
    // around the stopped ones; publish_seq would retry on the next node anyway).
    let addrs: Vec<SocketAddr> = new.iter().map(|n| n.addr).collect();
    let publisher = Publisher::start(addrs, CH, u64::MAX, Duration::from_millis(2));
    publisher.wait_published(100).await;
    let subs = Arc::new(subs);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_subscribers(subs.clone(), start, stop.clone());
    let mut windows = Vec::new();
    for node in old.iter_mut() {
        let before = node.log_text();
        let from = start.elapsed();
        node.sigterm();
        let status = node.wait_exit(Duration::from_secs(15)).await;
        let to = start.elapsed();
        assert!(status.success(), "drained node exited with {status}");
        let drained = node
            .log_text()
            .lines()
            .skip(before.lines().count())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "draining")
            .and_then(|v| v["connections"].as_u64())
            .unwrap_or(0);
        windows.push((from, to, drained));
        // Let the moved clients settle before the next node goes.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    publisher.wait_published(publisher.published() + 100).await;
    let (n, retries) = publisher.finish(true).await;
    stop.store(true, Ordering::Release);
    let (closes, reconnects) = watcher.await.unwrap();
    let subs = Arc::try_unwrap(subs).unwrap_or_else(|_| panic!("watcher still holds subscribers"));
    let rs = collect(subs, n).await;
    report(T, &rs, n);
    let (stored, twice) = history_duplicates(&new[0], CH).await;
    println!(
        "[{T}] publisher retries {retries}; history holds {stored} publications, {twice} of them duplicates"
    );
    assert_eq!(
        (stored as u64, twice),
        (n, 0),
        "publisher retries were not deduplicated"
    );
    let peak = buckets(reconnects.iter().copied(), Duration::ZERO)
        .values()
        .max()
        .copied()
        .unwrap_or(0);
    println!(
        "[{T}] reconnect attempts {} in total, peak {peak} per 100 ms bucket",
        reconnects.len()
    );
    assert_complete(&rs, n);
    assert!(
        closes.iter().all(|(_, _, c)| *c == 3001),
        "closes other than 3001: {closes:?}"
    );
    for (k, (from, to, drained)) in windows.iter().enumerate() {
        let mine: Vec<Duration> = closes
            .iter()
            // The watcher polls every 10 ms: a close just before the exit is seen after it.
            .filter(|(t, _, _)| *t >= *from && *t <= *to + Duration::from_millis(300))
            .map(|(t, _, _)| *t)
            .collect();
        let b = buckets(mine.iter().copied(), *from);
        let max = b.values().max().copied().unwrap_or(0);
        let spread = match (mine.first(), mine.last()) {
            (Some(a), Some(z)) => *z - *a,
            _ => Duration::ZERO,
        };
        println!(
            "[{T}] old-{k}: draining {drained} connections, SIGTERM → exit {} ms; {} clients closed 3001 over {} ms; peak {max} per 100 ms bucket; buckets {b:?}",
            ms(*to - *from),
            mine.len(),
            ms(spread)
        );
        assert!(
            mine.len() >= 15,
            "old-{k} closed only {} clients",
            mine.len()
        );
        // 2 s drain window: ~20 buckets. Uniformly random moments put at most a handful
        // of clients in one bucket; all (or half) of them in one would be a thundering herd.
        assert!(
            max * 2 <= mine.len(),
            "old-{k}: {max} of {} closes within one 100 ms bucket: {b:?}",
            mine.len()
        );
        assert!(
            spread >= Duration::from_secs(1),
            "old-{k}: closes spread over only {} ms",
            ms(spread)
        );
    }
    drop(new);
}

// 3. Redis restart without persistence.

/// Timestamps, per subscriber, every change of its `unrecovered` count as the range
/// of `seqs.len()` values around it: a gap at index p is "explained" by an
/// unrecovered subscription if some recorded (before, after) has before <= p <= after.
fn watch_unrecovered(
    subs: Arc<Vec<RecoveringSubscriber>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Vec<(usize, usize)>>> {
    tokio::spawn(async move {
        let mut marks = vec![Vec::new(); subs.len()];
        let mut last: Vec<(u32, usize)> = subs
            .iter()
            .map(|s| {
                let r = s.received();
                (r.unrecovered, r.seqs.len())
            })
            .collect();
        while !stop.load(Ordering::Acquire) {
            for (i, s) in subs.iter().enumerate() {
                let r = s.received();
                if r.unrecovered != last[i].0 {
                    marks[i].push((last[i].1, r.seqs.len()));
                }
                last[i] = (r.unrecovered, r.seqs.len());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        marks
    })
}

/// Indexes p of `seqs` where seqs[p] is a first delivery (see [`first_deliveries`]) that
/// is not the successor of the highest number before it (or p = 0 and seqs[0] != 0).
fn gaps(seqs: &[u64]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut max: Option<u64> = None;
    for (p, &s) in seqs.iter().enumerate() {
        if max.is_some_and(|m| s <= m) {
            continue;
        }
        if s != max.map_or(0, |m| m + 1) {
            out.push(p);
        }
        max = Some(s);
    }
    out
}

#[tokio::test]
async fn redis_restart_without_persistence_never_leaves_a_silent_gap() {
    const T: &str = "redis-volatile";
    const CH: &str = "live:volatile";
    const N: u64 = 1000;
    let mut redis = RedisProcess::start().await;
    let cfg = cluster_config(&[redis.url()], "fc");
    let nodes = start_nodes(&cfg, &["node-0", "node-1", "node-2"]).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    let subs: Vec<RecoveringSubscriber> = (0..6)
        .map(|i| {
            RecoveringSubscriber::start(rotated(&urls, i), user_token(&format!("v{i}")), CH.into())
        })
        .collect();
    wait_all_subscribed(&subs).await;
    let subs = Arc::new(subs);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_unrecovered(subs.clone(), stop.clone());
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let publisher = Publisher::start(addrs, CH, N, Duration::from_millis(2));
    publisher.wait_published(N / 3).await;
    let at_kill = publisher.published();
    let t0 = Instant::now();
    redis.kill().await;
    for n in &nodes {
        n.wait_ready(503).await;
    }
    let unready = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    let restarted = t0.elapsed();
    let at_restart = publisher.published();
    for n in &nodes {
        n.wait_ready(200).await;
    }
    let ready = t0.elapsed();
    let (published, retries) = publisher.finish(false).await;
    assert_eq!(published, N);
    // Everyone must get to the last publication.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !subs.iter().all(|s| s.received().seqs.contains(&(N - 1))) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Release);
    let marks = watcher.await.unwrap();
    let subs = Arc::try_unwrap(subs).unwrap_or_else(|_| panic!("watcher still holds subscribers"));
    let mut rs = Vec::new();
    for s in subs {
        rs.push(s.stop().await);
    }
    report(T, &rs, N);
    println!(
        "[{T}] Redis killed after {at_kill} publications; all nodes unready after {} ms; restarted at {} ms (publications {at_restart}); all ready after {} ms; publisher retries {retries}",
        ms(unready),
        ms(restarted),
        ms(ready)
    );
    let mut told = 0;
    for (i, r) in rs.iter().enumerate() {
        let (missing, _, _) = account(&r.seqs, N);
        let (firsts, redelivered) = first_deliveries(&r.seqs);
        let g = gaps(&r.seqs);
        println!(
            "[{T}] subscriber {i}: gaps at {:?} (seqs {:?}), unrecovered marks {:?}",
            g,
            g.iter()
                .map(|&p| (p.checked_sub(1).map(|q| r.seqs[q]), r.seqs[p]))
                .collect::<Vec<_>>(),
            marks[i]
        );
        if !TOLERATE_REDELIVERY_AFTER_RECOVERY {
            assert_eq!(redelivered, 0, "subscriber {i}: duplicates");
        }
        assert_eq!(
            firsts.last(),
            Some(&(N - 1)),
            "subscriber {i} did not get to the end"
        );
        if missing == 0 {
            continue;
        }
        told += 1;
        assert!(
            r.unrecovered > 0,
            "subscriber {i} lost {missing} publications silently: {r:?}"
        );
        for p in &g {
            assert!(
                marks[i].iter().any(|(a, b)| a <= p && p <= b),
                "subscriber {i}: the gap at index {p} is not where it was told recovered:false ({:?})",
                marks[i]
            );
        }
    }
    println!(
        "[{T}] {told} of {} subscribers lost publications and were told recovered:false",
        rs.len()
    );
}

// 4. Network trouble between one node and Redis.

struct ProxiedCluster {
    redis: RedisProcess,
    proxy: Proxy,
    /// node-0 and node-2 talk to Redis directly, node-1 through the proxy.
    nodes: Vec<NodeProcess>,
}

async fn proxied_cluster() -> ProxiedCluster {
    let redis = RedisProcess::start().await;
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port))).await;
    let direct = cluster_config(&[redis.url()], "fc");
    let through = cluster_config(&[proxy.redis_url()], "fc");
    let nodes = vec![
        start_node(&direct, "node-0").await,
        start_node(&through, "node-1").await,
        start_node(&direct, "node-2").await,
    ];
    assert!(proxy.accepted() > 0, "node-1 does not use the proxy");
    ProxiedCluster {
        redis,
        proxy,
        nodes,
    }
}

/// Subscribers connected only to node-1 (behind the proxy) and one on node-0.
fn proxied_subscribers(c: &ProxiedCluster, ch: &str) -> Vec<RecoveringSubscriber> {
    let mut subs: Vec<RecoveringSubscriber> = (0..4)
        .map(|i| {
            RecoveringSubscriber::start(
                vec![c.nodes[1].ws_url()],
                user_token(&format!("p{i}")),
                ch.into(),
            )
        })
        .collect();
    subs.push(RecoveringSubscriber::start(
        vec![c.nodes[0].ws_url()],
        user_token("direct"),
        ch.into(),
    ));
    subs
}

/// `/ready` status of a node, 0 when it does not answer.
async fn ready_status(addr: SocketAddr) -> u16 {
    http_request_opt(addr, "GET", "/ready", &[], b"")
        .await
        .map_or(0, |(s, _)| s)
}

/// Polls `/ready` until it answers `status`; returns how long that took.
async fn until_ready_is(addr: SocketAddr, status: u16, within: Duration) -> Duration {
    let t = Instant::now();
    while ready_status(addr).await != status {
        assert!(
            t.elapsed() < within,
            "{addr} did not answer /ready {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test]
async fn link_cut_between_a_node_and_redis_loses_nothing() {
    const T: &str = "link-cut";
    const CH: &str = "live:cut";
    const N: u64 = 800;
    let c = proxied_cluster().await;
    let subs = proxied_subscribers(&c, CH);
    wait_all_subscribed(&subs).await;
    let publisher = Publisher::start(
        vec![c.nodes[0].addr, c.nodes[2].addr],
        CH,
        N,
        Duration::from_millis(2),
    );
    publisher.wait_published(200).await;
    let t0 = Instant::now();
    c.proxy.cut();
    let unready = until_ready_is(c.nodes[1].addr, 503, Duration::from_secs(5)).await;
    let at_cut = publisher.published();
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(t0.elapsed())).await;
    let api = c.nodes[1]
        .api("publish", json!({"channel": "live:other", "data": {}}))
        .await;
    assert_eq!(api["error"]["code"], 108, "{api}");
    c.proxy.heal();
    let healed = t0.elapsed();
    let ready = until_ready_is(c.nodes[1].addr, 200, Duration::from_secs(10)).await;
    let (published, retries) = publisher.finish(false).await;
    assert_eq!(published, N);
    let rs = collect(subs, N).await;
    report(T, &rs, N);
    println!(
        "[{T}] cut after {at_cut} publications: node-1 unready after {} ms, link healed at {} ms, ready again {} ms after heal; connections refused while cut {}; publisher retries {retries}",
        ms(unready),
        ms(healed),
        ms(ready),
        c.proxy.refused()
    );
    assert_complete(&rs, N);
    assert!(
        rs[..4].iter().all(|r| r.resubscribes + r.reconnects >= 1),
        "node-1's subscribers were never sent to recover: {rs:?}"
    );
    drop(c.redis);
}

#[tokio::test]
async fn link_stall_between_a_node_and_redis_is_noticed_and_loses_nothing() {
    const T: &str = "link-stall";
    const CH: &str = "live:stall";
    const N: u64 = 1000;
    let c = proxied_cluster().await;
    let subs = proxied_subscribers(&c, CH);
    wait_all_subscribed(&subs).await;
    let publisher = Publisher::start(
        vec![c.nodes[0].addr, c.nodes[2].addr],
        CH,
        N,
        Duration::from_millis(2),
    );
    publisher.wait_published(200).await;
    let t0 = Instant::now();
    c.proxy.stall();
    // An API call made at once has to wait for its command timeout: it must still fail
    // with 108 within ~2 s rather than hang.
    let api_call = {
        let addr = c.nodes[1].addr;
        tokio::spawn(async move {
            let t = Instant::now();
            let body = json!({"channel": "live:other", "data": {}}).to_string();
            let r = ferrocast_tests::http_request(
                addr,
                "POST",
                "/api/publish",
                &[("X-API-Key", ferrocast_tests::node::API_KEY)],
                body.as_bytes(),
            )
            .await;
            (t.elapsed(), r)
        })
    };
    // Nothing is closed: only the pub/sub ping (every 1 s, 2 s timeout) and the health
    // check can notice.
    let unready = until_ready_is(c.nodes[1].addr, 503, Duration::from_secs(8)).await;
    let at_stall = publisher.published();
    let (api_took, (_, api)) = api_call.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(t0.elapsed())).await;
    c.proxy.heal();
    let healed = t0.elapsed();
    let ready = until_ready_is(c.nodes[1].addr, 200, Duration::from_secs(10)).await;
    let (published, retries) = publisher.finish(false).await;
    assert_eq!(published, N);
    let rs = collect(subs, N).await;
    report(T, &rs, N);
    println!(
        "[{T}] stalled after {at_stall} publications: node-1 unready {} ms after the stall began, an API publish sent at the stall answered in {} ms ({api}), healed at {} ms, ready again {} ms after heal; publisher retries {retries}",
        ms(unready),
        ms(api_took),
        ms(healed),
        ms(ready)
    );
    assert_complete(&rs, N);
    assert!(
        unready < Duration::from_secs(4),
        "a stalled Redis link took {} ms to notice",
        ms(unready)
    );
    assert!(api.contains("\"code\":108"), "{api}");
    assert!(
        api_took < Duration::from_secs(3),
        "an API call hung {} ms on a stalled link",
        ms(api_took)
    );
    drop(c.redis);
}

#[tokio::test]
async fn slow_link_between_a_node_and_redis_keeps_traffic_complete_and_ordered() {
    const T: &str = "link-slow";
    const CH: &str = "live:slow";
    const N: u64 = 800;
    let c = proxied_cluster().await;
    let subs = proxied_subscribers(&c, CH);
    wait_all_subscribed(&subs).await;
    let publisher = Publisher::start(
        vec![c.nodes[0].addr, c.nodes[2].addr],
        CH,
        N,
        Duration::from_millis(2),
    );
    publisher.wait_published(100).await;
    c.proxy.set_delay(Duration::from_millis(20));
    let mut unready = 0;
    let mut probes = 0;
    while publisher.published() < N {
        probes += 1;
        if ready_status(c.nodes[1].addr).await != 200 {
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (published, retries) = publisher.finish(false).await;
    assert_eq!(published, N);
    let rs = collect(subs, N).await;
    c.proxy.set_delay(Duration::ZERO);
    report(T, &rs, N);
    println!(
        "[{T}] 20 ms per chunk on node-1's Redis link: /ready not 200 in {unready} of {probes} probes; {} bytes through the proxy; publisher retries {retries}",
        c.proxy.bytes()
    );
    assert_complete(&rs, N);
    assert_eq!(unready, 0, "a slow (not broken) link made node-1 unready");
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(r.reconnects, 0, "subscriber {i} reconnected: {r:?}");
    }
    drop(c.redis);
}

/// A channel that had no publication since this node subscribed to it: if the node's
/// pub/sub connection is lost while others publish, its subscribers must still learn
/// about the publications made meanwhile (recovery or `recovered: false`), never skip
/// them silently.
#[tokio::test]
async fn quiet_channel_subscribers_learn_about_publications_missed_during_a_link_cut() {
    const T: &str = "quiet-cut";
    const CH: &str = "live:quiet";
    let c = proxied_cluster().await;
    let sub = RecoveringSubscriber::start(vec![c.nodes[1].ws_url()], user_token("q"), CH.into());
    assert!(sub.wait_subscribed(Duration::from_secs(10)).await);
    c.proxy.cut();
    until_ready_is(c.nodes[1].addr, 503, Duration::from_secs(5)).await;
    for seq in 0..3 {
        publish_seq(&[c.nodes[0].addr], CH, seq).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.proxy.heal();
    until_ready_is(c.nodes[1].addr, 200, Duration::from_secs(10)).await;
    // Let the node resubscribe its pub/sub channels before publishing again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for seq in 3..6 {
        publish_seq(&[c.nodes[0].addr], CH, seq).await;
    }
    sub.wait_for(6, Duration::from_secs(5)).await;
    let r = sub.stop().await;
    report(T, std::slice::from_ref(&r), 6);
    for l in c.nodes[1]
        .log_text()
        .lines()
        .filter(|l| l.contains("redis"))
    {
        println!("[{T}] node-1: {l}");
    }
    let (missing, _, _) = account(&r.seqs, 6);
    assert!(
        missing == 0 || r.unrecovered > 0,
        "{missing} publications skipped silently: got {:?}, resubscribes {}, unrecovered {}",
        r.seqs,
        r.resubscribes,
        r.unrecovered
    );
    assert_eq!(account(&r.seqs, 6), (0, 0, 0), "{r:?}");
    drop(c.redis);
}

/// Two clients subscribe to a channel on a node that does not follow it yet: the first
/// makes the node SUBSCRIBE in Redis; the second, arriving while that SUBSCRIBE is on
/// its way, must not read its stream position before the node receives the channel's
/// publications (or must be told to recover). The proxy holds node-1's SUBSCRIBE for
/// the channel while three publications are made.
#[tokio::test]
async fn a_subscriber_joining_while_the_node_subscribes_the_channel_misses_nothing() {
    const T: &str = "subscribe-race";
    const CH: &str = "live:race";
    let c = proxied_cluster().await;
    c.proxy.hold_upstream(format!("fc:ch:{{{CH}}}").as_bytes());
    let (mut a, _) = Client::connect(&c.nodes[1].ws_url(), &user_token("a")).await;
    let id = a.id();
    a.send_text(json!({"id": id, "subscribe": {"channel": CH}}).to_string())
        .await;
    let t = Instant::now();
    while c.proxy.held() == 0 {
        assert!(t.elapsed() < Duration::from_secs(2), "SUBSCRIBE never sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A second subscriber arrives while the node's SUBSCRIBE is still pending: it must
    // wait for it too, so that its position is not read before the node follows the channel.
    let (mut b, _) = Client::connect(&c.nodes[1].ws_url(), &user_token("b")).await;
    let idb = b.id();
    b.send_text(json!({"id": idb, "subscribe": {"channel": CH}}).to_string())
        .await;
    for seq in 0..3 {
        publish_seq(&[c.nodes[0].addr], CH, seq).await;
    }
    c.proxy.release();
    let ra = a.reply(id).await;
    assert!(ra.get("subscribe").is_some(), "{ra}");
    let rb = b.reply(idb).await;
    assert!(rb.get("subscribe").is_some(), "{rb}");
    for seq in 3..6 {
        publish_seq(&[c.nodes[0].addr], CH, seq).await;
    }
    // Each subscriber must get every publication after the position its reply gave, in
    // order, or be told to recover: never a silent hole.
    for (name, client, reply) in [("a", &mut a, &ra), ("b", &mut b, &rb)] {
        let from = reply["subscribe"]["offset"].as_u64().unwrap_or(0);
        let mut offsets = Vec::new();
        let mut told = false;
        while let Some(p) = client.try_push(Duration::from_secs(2)).await {
            if let Some(o) = p["pub"]["offset"].as_u64() {
                offsets.push(o);
            } else if p["unsubscribe"]["code"] == 2500 {
                told = true;
                break;
            }
            if offsets.last() == Some(&6) {
                break;
            }
        }
        println!(
            "[{T}] {name}: reply {}; then offsets {offsets:?}; told to recover: {told}",
            reply["subscribe"]
        );
        assert!(
            told || offsets == ((from + 1)..=6).collect::<Vec<u64>>(),
            "{name}: publications skipped silently: reply {} then offsets {offsets:?}",
            reply["subscribe"]
        );
    }
    drop(c.redis);
}

// 5. Slow consumer among many clients.

/// pid of the child process of this test that listens on `port` (from /proc, so only
/// processes this test started are considered).
fn child_listening_on(port: u16) -> u32 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let inode = tcp
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let p = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (p == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
        })
        .expect("listening socket");
    let me = std::process::id();
    let want = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                return pid;
            }
        }
    }
    panic!("no child process of this test listens on port {port}");
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A client with a tiny socket receive buffer that stops reading after subscribing, so
/// the server's queue for it fills quickly.
async fn stuck_client(addr: SocketAddr, channels: &[&str]) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/connection/websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    let mut cmds = vec![json!({"id": 1, "connect": {"token": user_token("stuck")}})];
    for (i, ch) in channels.iter().enumerate() {
        cmds.push(json!({"id": i + 2, "subscribe": {"channel": ch}}));
    }
    for c in cmds {
        ws.send(c.to_string().into()).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("reply")
                .expect("open")
                .expect("frame");
            let text = m.into_text().unwrap_or_default();
            if text.contains(&format!("\"id\":{}", c["id"])) {
                assert!(!text.contains("\"error\""), "{text}");
                break;
            }
        }
    }
    ws
}

/// Reads what is left and returns the close code.
async fn close_code(ws: &mut RawWs) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                return f.map(|f| u16::from(f.code));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Value of a counter or gauge without labels in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn slow_consumer_among_many_is_the_only_one_closed() {
    const T: &str = "slow-consumer";
    const CH: &str = "news";
    const BALLAST: &str = "ballast";
    const CLIENTS: usize = 1000;
    const QUEUE: u64 = 256 * 1024;
    const M: u64 = 300;
    const AHEAD: u64 = 100;
    let redis = RedisProcess::start().await;
    let mut cfg = cluster_config(&[redis.url()], "fc");
    cfg["client"]["queue_max_size"] = json!(QUEUE);
    let nodes = start_nodes(&cfg, &["node-0", "node-1"]).await;
    let node = &nodes[0];
    let pid = child_listening_on(node.addr.port());
    let url = node.ws_url();
    let t0 = Instant::now();
    // Connect in 8 concurrent batches.
    let mut conns = Vec::new();
    for b in 0..8 {
        let url = url.clone();
        conns.push(tokio::spawn(async move {
            let mut v = Vec::new();
            for i in 0..CLIENTS / 8 {
                let (mut c, _) = Client::connect(&url, &user_token(&format!("c{b}-{i}"))).await;
                let r = c.command("subscribe", json!({ "channel": CH })).await;
                assert!(r.get("subscribe").is_some(), "{r}");
                v.push(c);
            }
            v
        }));
    }
    let mut clients = Vec::new();
    for c in conns {
        clients.extend(c.await.unwrap());
    }
    let connected = t0.elapsed();
    // The stuck client follows the same stream and, to fill its queue without pushing
    // megabytes through the other 1000 (the kernel socket buffers alone take ~2 MB before
    // the server's queue grows), also a ballast channel nobody else follows.
    let mut stuck = stuck_client(node.addr, &[CH, BALLAST]).await;
    let baseline = vm_rss_kib(pid);
    // Every reader in its own task; progress[i] = publications client i has read.
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let progress = progress.clone();
        readers.push(tokio::spawn(async move {
            let mut next = 0;
            while next < M {
                match c.next_push_or_close(Duration::from_secs(30)).await {
                    Ok(Some(p)) => {
                        let seq = p["pub"]["data"]["seq"].as_u64();
                        if seq != Some(next) {
                            return Err(format!("client {i}: expected seq {next}, got {p}"));
                        }
                        next += 1;
                        progress[i].store(next, Ordering::Release);
                    }
                    Ok(None) => return Err(format!("client {i}: nothing for 30 s at {next}")),
                    Err(code) => return Err(format!("client {i}: closed {code:?} at {next}")),
                }
            }
            c.close().await;
            Ok(())
        }));
    }
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Acquire) {
                peak.fetch_max(vm_rss_kib(pid), Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The fast stream, 20 publications per batch call through the other node. The
    // publisher stays at most AHEAD publications ahead of the slowest reading client, so
    // their queues stay far below QUEUE whatever the machine load.
    let publish_started = Instant::now();
    let fast = {
        let (progress, api) = (progress.clone(), nodes[1].addr);
        tokio::spawn(async move {
            let payload = "x".repeat(100);
            let min_progress = || {
                progress
                    .iter()
                    .map(|p| p.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(0)
            };
            for batch in 0..M / 20 {
                let waiting = Instant::now();
                while batch * 20 > min_progress() + AHEAD {
                    assert!(
                        waiting.elapsed() < Duration::from_secs(30),
                        "a reading client is stuck at {}",
                        min_progress()
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let commands: Vec<Value> = (0..20)
                    .map(|i| json!({"publish": {"channel": CH, "data": {"seq": batch * 20 + i, "p": payload}}}))
                    .collect();
                let body = json!({ "commands": commands }).to_string();
                let (status, text) = ferrocast_tests::http_request(
                    api,
                    "POST",
                    "/api/batch",
                    &[("X-API-Key", ferrocast_tests::node::API_KEY)],
                    body.as_bytes(),
                )
                .await;
                assert!(status == 200 && !text.contains("\"error\""), "{text}");
            }
        })
    };
    // Ballast for the stuck client, 32 KiB a publication, until it is closed as slow, once
    // the stream is well under way.
    while progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .min()
        .unwrap_or(0)
        < M / 4
    {
        assert!(
            publish_started.elapsed() < Duration::from_secs(30),
            "the stream does not flow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ballast = "b".repeat(32 * 1024);
    let mut ballast_sent = 0u64;
    let mut slow_closes = 0.0;
    while ballast_sent < 20 * 1024 * 1024 {
        let commands: Vec<Value> = (0..8)
            .map(|_| json!({"publish": {"channel": BALLAST, "data": {"b": ballast}}}))
            .collect();
        nodes[1]
            .api_ok("batch", json!({ "commands": commands }))
            .await;
        ballast_sent += 8 * 32 * 1024;
        let (_, metrics) = node.get("/metrics").await;
        slow_closes = metric(&metrics, "ferrocast_slow_consumer_closes_total").unwrap_or(0.0);
        if slow_closes > 0.0 {
            break;
        }
    }
    let closed_after = publish_started.elapsed();
    let at_close = progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    fast.await.unwrap();
    let mut failures = Vec::new();
    for r in readers {
        if let Err(e) = r.await.unwrap() {
            failures.push(e);
        }
    }
    let publishing = publish_started.elapsed();
    sampling.store(false, Ordering::Release);
    sampler.await.unwrap();
    let code = close_code(&mut stuck).await;
    let (_, metrics) = node.get("/metrics").await;
    let slow_closes_end = metric(&metrics, "ferrocast_slow_consumer_closes_total");
    let peak = peak.load(Ordering::Acquire);
    let bound = baseline + (QUEUE / 1024) * (CLIENTS as u64 + 1) + 64 * 1024;
    println!(
        "[{T}] {CLIENTS} clients connected and subscribed in {} ms; stuck client closed as slow after {} KiB of ballast, {} ms into the stream (every reader at >= {at_close} of {M}), close code {code:?}; stream of {M} publications done in {} ms: {} clients got all {M} in order ({} failures: {:?}); slow_consumer_closes_total {slow_closes_end:?}; node RSS baseline {baseline} KiB, peak {peak} KiB (+{} KiB), bound {bound} KiB (queue_max_size {} KiB x {} clients + 64 MiB)",
        ms(connected),
        ballast_sent / 1024,
        ms(closed_after),
        ms(publishing),
        CLIENTS - failures.len(),
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        peak - baseline,
        QUEUE / 1024,
        CLIENTS + 1
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        slow_closes, 1.0,
        "the stuck client was never closed as slow"
    );
    assert_eq!(code, Some(3008), "the stuck client was not closed as slow");
    assert_eq!(slow_closes_end, Some(1.0), "{metrics}");
    assert!(
        peak <= bound,
        "node RSS peaked at {peak} KiB, bound {bound} KiB"
    );
}

// 6. Presence after faults.

/// Client ids present in `channel`, asked through `node`.
async fn present(node: &NodeProcess, channel: &str) -> Option<HashSet<String>> {
    let v = node.api("presence", json!({ "channel": channel })).await;
    v["result"]["presence"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
}

/// Users online according to `user_status`, among `users`.
async fn online(node: &NodeProcess, users: &[String]) -> Option<HashSet<String>> {
    let v = node.api("user_status", json!({ "users": users })).await;
    let st = v["result"]["statuses"].as_array()?;
    Some(
        st.iter()
            .filter(|s| s["online"] == json!(true))
            .filter_map(|s| s["user"].as_str().map(str::to_string))
            .collect(),
    )
}

struct PresenceClient {
    client: Client,
    id: String,
    user: String,
    node: usize,
}

async fn presence_clients(nodes: &[NodeProcess], per_node: usize, ch: &str) -> Vec<PresenceClient> {
    let mut out = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for j in 0..per_node {
            let user = format!("u{n}-{j}");
            let (mut c, r) = Client::connect(&node.ws_url(), &user_token(&user)).await;
            let s = c.command("subscribe", json!({ "channel": ch })).await;
            assert!(s.get("subscribe").is_some(), "{s}");
            out.push(PresenceClient {
                client: c,
                id: r["client"].as_str().unwrap().to_string(),
                user,
                node: n,
            });
        }
    }
    out
}

#[tokio::test]
async fn presence_of_a_killed_node_expires_within_the_ttl() {
    const T: &str = "presence-kill";
    const CH: &str = "chat:presence";
    let redis = RedisProcess::start().await;
    let cfg = cluster_config(&[redis.url()], "fc");
    let ttl = Duration::from_secs(3);
    let mut nodes = start_nodes(&cfg, &["node-0", "node-1", "node-2"]).await;
    let clients = presence_clients(&nodes, 5, CH).await;
    // One user connected to node-0 and node-2 stays online through node-0.
    let (mut s0, r0) = Client::connect(&nodes[0].ws_url(), &user_token("shared")).await;
    s0.command("subscribe", json!({ "channel": CH })).await;
    let (mut s2, r2) = Client::connect(&nodes[2].ws_url(), &user_token("shared")).await;
    s2.command("subscribe", json!({ "channel": CH })).await;
    let mut users: Vec<String> = clients.iter().map(|c| c.user.clone()).collect();
    users.push("shared".into());
    let all: HashSet<String> = clients
        .iter()
        .map(|c| c.id.clone())
        .chain([
            r0["client"].as_str().unwrap().to_string(),
            r2["client"].as_str().unwrap().to_string(),
        ])
        .collect();
    assert_eq!(present(&nodes[1], CH).await, Some(all.clone()));
    assert_eq!(online(&nodes[1], &users).await.map(|s| s.len()), Some(16));
    // Let a presence refresh happen so the expiry is as late as it can be.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let survivors: HashSet<String> = clients
        .iter()
        .filter(|c| c.node != 2)
        .map(|c| c.id.clone())
        .chain([r0["client"].as_str().unwrap().to_string()])
        .collect();
    let online_after: HashSet<String> = clients
        .iter()
        .filter(|c| c.node != 2)
        .map(|c| c.user.clone())
        .chain(["shared".to_string()])
        .collect();
    let t0 = Instant::now();
    nodes[2].kill9().await;
    let mut presence_gone = None;
    let mut users_gone = None;
    let mut flaps = 0;
    while (presence_gone.is_none() || users_gone.is_none())
        && t0.elapsed() < Duration::from_secs(10)
    {
        let p = present(&nodes[0], CH).await.expect("presence");
        if !survivors.is_subset(&p) {
            flaps += 1;
        }
        if presence_gone.is_none() && p == survivors {
            presence_gone = Some(t0.elapsed());
        }
        let o = online(&nodes[1], &users).await.expect("user_status");
        if !online_after.is_subset(&o) {
            flaps += 1;
        }
        if users_gone.is_none() && o == online_after {
            users_gone = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing comes back later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p_late = present(&nodes[1], CH).await;
    let o_late = online(&nodes[0], &users).await;
    let stats = nodes[0]
        .api_ok("presence_stats", json!({ "channel": CH }))
        .await;
    println!(
        "[{T}] node-2 (6 clients, 6 users of which one also on node-0) killed: presence gone after {:?} ms, user_status offline after {:?} ms (presence_ttl {} ms); survivors missing in {flaps} probes; presence_stats afterwards {stats}",
        presence_gone.map(ms),
        users_gone.map(ms),
        ms(ttl)
    );
    let limit = ttl + Duration::from_secs(1);
    assert!(
        presence_gone.is_some_and(|d| d <= limit),
        "presence of killed node not gone within {limit:?}"
    );
    assert!(
        users_gone.is_some_and(|d| d <= limit),
        "users of killed node still online after {limit:?}"
    );
    assert_eq!(
        flaps, 0,
        "surviving clients vanished from presence / user_status"
    );
    assert_eq!(p_late, Some(survivors.clone()), "ghost presence");
    assert_eq!(o_late, Some(online_after), "ghost users");
    assert_eq!(
        stats,
        json!({"num_clients": survivors.len(), "num_users": survivors.len()})
    );
    drop((clients, s0));
}

/// Redis restarted while clients are connected; some clients leave while Redis is
/// down (their removal cannot reach Redis). Afterwards presence and user_status list
/// exactly the clients still connected.
async fn presence_after_redis_restart(persistent: bool) {
    let t = if persistent {
        "presence-redis-aof"
    } else {
        "presence-redis-volatile"
    };
    const CH: &str = "chat:presence";
    let mut redis = if persistent {
        RedisProcess::start_persistent().await
    } else {
        RedisProcess::start().await
    };
    let cfg = cluster_config(&[redis.url()], "fc");
    let nodes = start_nodes(&cfg, &["node-0", "node-1", "node-2"]).await;
    let clients = presence_clients(&nodes, 4, CH).await;
    let users: Vec<String> = clients.iter().map(|c| c.user.clone()).collect();
    assert_eq!(present(&nodes[0], CH).await.map(|p| p.len()), Some(12));
    assert_eq!(online(&nodes[0], &users).await.map(|p| p.len()), Some(12));
    // The first client of each node leaves during the outage.
    let mut leavers = Vec::new();
    let mut stayers = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        if i % 4 == 0 {
            leavers.push(c);
        } else {
            stayers.push(c);
        }
    }
    let want: HashSet<String> = stayers.iter().map(|c| c.id.clone()).collect();
    let want_users: HashSet<String> = stayers.iter().map(|c| c.user.clone()).collect();
    let t0 = Instant::now();
    redis.kill().await;
    for n in &nodes {
        n.wait_ready(503).await;
    }
    let left = leavers.len();
    for c in leavers {
        c.client.close().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart().await;
    let restarted = t0.elapsed();
    for n in &nodes {
        n.wait_ready(200).await;
    }
    let ready = t0.elapsed();
    let mut right = None;
    let mut ghosts_seen = 0;
    let mut last = (None, None);
    while right.is_none() && t0.elapsed() < restarted + Duration::from_secs(10) {
        let p = present(&nodes[1], CH).await;
        let o = online(&nodes[2], &users).await;
        if let (Some(p), Some(o)) = (&p, &o)
            && (!p.is_subset(&want) || !o.is_subset(&want_users))
        {
            ghosts_seen += 1;
        }
        if p.as_ref() == Some(&want) && o.as_ref() == Some(&want_users) {
            right = Some(t0.elapsed());
        }
        last = (p, o);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And it stays right.
    let mut wrong_later = 0;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if present(&nodes[0], CH).await.as_ref() != Some(&want)
            || online(&nodes[1], &users).await.as_ref() != Some(&want_users)
        {
            wrong_later += 1;
        }
    }
    println!(
        "[{t}] Redis killed at 0 ms, restarted at {} ms, nodes ready at {} ms; presence and user_status exact ({} clients stayed, {left} left during the outage) at {:?} ms; probes showing leavers (ghosts) before that {ghosts_seen}; wrong afterwards {wrong_later} of 15",
        ms(restarted),
        ms(ready),
        want.len(),
        right.map(ms)
    );
    assert!(
        right.is_some(),
        "presence / user_status never became exact: {last:?}, want {want:?} / {want_users:?}"
    );
    // Leavers were last refreshed before the kill: gone within the TTL from then at the
    // latest. Stayers are written again at the first refresh after the nodes are ready.
    let (ttl, interval) = (Duration::from_secs(3), Duration::from_secs(1));
    let limit = ttl.max(ready + interval) + Duration::from_secs(1);
    assert!(
        right.is_some_and(|r| r <= limit),
        "presence / user_status exact only after {:?} ms (limit {} ms)",
        right.map(ms),
        ms(limit)
    );
    assert_eq!(wrong_later, 0, "presence / user_status changed afterwards");
    drop(stayers);
}

#[tokio::test]
async fn presence_after_redis_restart_without_persistence_has_no_ghosts() {
    presence_after_redis_restart(false).await;
}

#[tokio::test]
async fn presence_after_redis_restart_with_persistence_has_no_ghosts() {
    presence_after_redis_restart(true).await;
}

// Broker bugs found by the tests above, pinned by minimal reproductions.

/// Writes publication `{"seq": seq}` at `offset` to the history stream and meta of
/// `channel` exactly as the publish script would, without its pub/sub message.
async fn write_history_only(
    conn: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    offset: u64,
    seq: u64,
) -> ferrocast_protocol::envelope::Envelope {
    use ferrocast_protocol::envelope::{Envelope, WirePublication, encode_body};
    let p = ferrocast_protocol::Publication {
        data: ferrocast_protocol::RawJson::parse(json!({ "seq": seq }).to_string().into()).unwrap(),
        info: None,
        offset,
        tags: None,
        time: 0,
    };
    let env = Envelope::Pub(WirePublication::from_publication(&p, None));
    let _: String = redis::cmd("XADD")
        .arg(format!("fc:hist:{{{channel}}}"))
        .arg(format!("{offset}-1"))
        .arg("d")
        .arg(encode_body(&env))
        .query_async(conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("HSET")
        .arg(format!("fc:meta:{{{channel}}}"))
        .arg("s")
        .arg(offset)
        .query_async(conn)
        .await
        .unwrap();
    env
}

/// The publish script appends to history and publishes in one step, but a node reads
/// history (command connection) and receives publications (pub/sub connection) over
/// two connections, so a publication can be in history when a recovering subscribe
/// reads it while its pub/sub message is still on its way to the node. Here the
/// message is held back until the subscribe reply was sent: it must not reach the
/// recovered client a second time. Seen in `rolling_restart_...` and
/// `kill_9_...` as a sequence number delivered twice right after a reconnect.
#[tokio::test]
async fn a_recovered_publication_is_not_delivered_again_when_its_pubsub_message_is_late() {
    use ferrocast_protocol::envelope::encode_message;
    const CH: &str = "live:late";
    let redis = RedisProcess::start().await;
    let node = start_node(&cluster_config(&[redis.url()], "fc"), "node-0").await;
    // Keeps the node subscribed to the channel.
    let (mut keeper, _) = Client::connect(&node.ws_url(), &user_token("keeper")).await;
    let r = keeper.command("subscribe", json!({ "channel": CH })).await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    publish_seq(&[node.addr], CH, 0).await;
    let o0 = keeper.push().await["pub"]["offset"].as_u64().unwrap();
    // seq 1 is in history; its pub/sub message is "in flight".
    let mut conn = redis.connection().await;
    let env = write_history_only(&mut conn, CH, o0 + 1, 1).await;
    // A client that saw seq 0 recovers on this node and gets seq 1 in the reply.
    let (mut c, _) = Client::connect(&node.ws_url(), &user_token("late")).await;
    let r = c
        .command(
            "subscribe",
            json!({"channel": CH, "recover": true, "offset": o0, "epoch": epoch}),
        )
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let recovered: Vec<u64> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(recovered, vec![1], "{r}");
    // The pub/sub message arrives now.
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("fc:ch:{{{CH}}}"))
        .arg(encode_message(o0 + 1, &epoch, &env))
        .query_async(&mut conn)
        .await
        .unwrap();
    let k = keeper.push().await;
    assert_eq!(k["pub"]["data"]["seq"], 1, "{k}");
    let again = c.try_push(Duration::from_secs(1)).await;
    println!("[late-pubsub] recovered {recovered:?} in the reply; then pushed: {again:?}");
    assert!(
        again.is_none(),
        "seq 1 was delivered twice (recovered in the subscribe reply, then pushed): {again:?}"
    );
}
