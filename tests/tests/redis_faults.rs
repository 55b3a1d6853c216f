//! Redis failures under traffic: nodes go unready, API calls fail fast with 108,
//! everything reconnects by itself and subscribers of channels with history lose nothing.

use ferrocast_tests::node::{cluster_config, now};
use ferrocast_tests::recovering::{account, publish_seq};
use ferrocast_tests::{NodeProcess, RecoveringSubscriber, RedisProcess, token};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn redis_restart_mid_stream_loses_nothing() {
    let mut redis = RedisProcess::start_persistent().await;
    let cfg = cluster_config(&[redis.url()], "fc");
    let mut nodes = Vec::new();
    for _ in 0..2 {
        nodes.push(NodeProcess::start(cfg.clone()).await);
    }
    for n in &nodes {
        n.wait_ready(200).await;
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.ws_url()).collect();
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let subs: Vec<RecoveringSubscriber> = (0..4)
        .map(|i| {
            let mut u = urls.clone();
            u.rotate_left(i % 2);
            RecoveringSubscriber::start(
                u,
                token(json!({"sub": format!("s{i}"), "exp": now() + 600})),
                "live:x".into(),
            )
        })
        .collect();
    for s in &subs {
        assert!(s.wait_subscribed(Duration::from_secs(10)).await);
    }
    publish_seq(&addrs, "live:x", 0).await;
    for s in &subs {
        assert!(
            s.wait_for(1, Duration::from_secs(10)).await,
            "subscriber never got seq 0"
        );
    }
    const N: u64 = 600;
    let publisher = tokio::spawn(async move {
        let mut retries = 0;
        for seq in 1..N {
            retries += publish_seq(&addrs, "live:x", seq).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        retries
    });
    while subs[0].received().seqs.len() < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    redis.kill().await;
    // Unready and failing fast while Redis is gone.
    nodes[0].wait_ready(503).await;
    let started = Instant::now();
    let v = nodes[0]
        .api(
            "publish",
            json!({"channel": "live:x", "data": {"seq": 999_999}}),
        )
        .await;
    assert_eq!(v["error"]["code"], 108, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "API call hung while Redis was down"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart().await;
    for n in &nodes {
        n.wait_ready(200).await;
    }
    let retries = publisher.await.unwrap();
    for (i, s) in subs.into_iter().enumerate() {
        let done = s.wait_for(N as usize, Duration::from_secs(30)).await;
        let r = s.stop().await;
        let (missing, duplicated, out_of_order) = account(&r.seqs, N);
        println!(
            "subscriber {i}: received {} missing {missing} duplicated {duplicated} out-of-order {out_of_order} reconnects {} resubscribes {} unrecovered {} (publisher retries {retries})",
            r.seqs.len(),
            r.reconnects,
            r.resubscribes,
            r.unrecovered
        );
        assert!(done, "subscriber {i} did not get everything: {r:?}");
        assert_eq!(
            (missing, duplicated, out_of_order),
            (0, 0, 0),
            "subscriber {i}"
        );
        assert_eq!(r.unrecovered, 0);
    }
}
