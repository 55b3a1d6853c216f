//! Fault tests: A node killed with SIGKILL and a rolling restart under load.
//!
//! Against real `redis-server` processes and real ferrocast nodes. Traffic is
//! sequence-numbered (`{"seq": n}`) on channels of the `live:` namespace (history 5000,
//! force_recovery) and every published number is accounted for at every subscriber:
//! missing, duplicated and out of order. Each test prints its figures (`--nocapture`).
//! Everything listens on 127.0.0.1 and every process killed is one the test started.

use ferrocast_tests::faults::*;
use ferrocast_tests::node::cluster_config;
use ferrocast_tests::{RecoveringSubscriber, RedisProcess};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

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
