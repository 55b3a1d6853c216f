//! Fault tests: Redis restarted without persistence under load.
//!
//! Against real `redis-server` processes and real ferrocast nodes. Traffic is
//! sequence-numbered (`{"seq": n}`) on channels of the `live:` namespace (history 5000,
//! force_recovery) and every published number is accounted for at every subscriber:
//! missing, duplicated and out of order. Each test prints its figures (`--nocapture`).
//! Everything listens on 127.0.0.1 and every process killed is one the test started.

use ferrocast_tests::faults::*;
use ferrocast_tests::node::cluster_config;
use ferrocast_tests::recovering::account;
use ferrocast_tests::{RecoveringSubscriber, RedisProcess};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

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
