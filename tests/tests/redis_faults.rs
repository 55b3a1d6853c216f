//! Redis failures under traffic: nodes go unready, API calls fail fast with 108,
//! everything reconnects by itself and subscribers of channels with history lose nothing.

use ferrocast_tests::node::{cluster_config, now};
use ferrocast_tests::recovering::{account, publish_seq};
use ferrocast_tests::{Backplane, NodeProcess, RecoveringSubscriber, RedisProcess, token};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn redis_restart_mid_stream_loses_nothing() {
    restart_mid_stream_loses_nothing(Backplane::standalone_persistent().await).await;
}

#[tokio::test]
async fn redis_cluster_member_restart_mid_stream_loses_nothing() {
    restart_mid_stream_loses_nothing(Backplane::cluster_persistent().await).await;
}

/// Kills the Redis serving the channel (on a cluster: the member owning its slot) in the
/// middle of a stream of publications, and restarts it with its data.
async fn restart_mid_stream_loses_nothing(mut bp: Backplane) {
    let cfg = bp.node_config("fc");
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
    let redis = bp.member_for("fc:hist:{live:x}").await;
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
    bp.wait_serving().await;
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
        if let Some(k) = r.seqs.windows(2).position(|w| w[1] <= w[0]) {
            let lo = k.saturating_sub(5);
            println!(
                "subscriber {i}: order broken at {k}: {:?}",
                &r.seqs[lo..(k + 6).min(r.seqs.len())]
            );
        }
        assert!(done, "subscriber {i} did not get everything: {r:?}");
        assert_eq!(
            (missing, duplicated, out_of_order),
            (0, 0, 0),
            "subscriber {i}"
        );
        assert_eq!(r.unrecovered, 0);
    }
}

#[tokio::test]
async fn an_offset_gap_makes_subscribers_recover_instead_of_skipping() {
    use ferrocast_protocol::envelope::{Envelope, WirePublication, encode_message};
    let redis = RedisProcess::start().await;
    let node = NodeProcess::start(cluster_config(&[redis.url()], "fc")).await;
    node.wait_ready(200).await;
    let sub = RecoveringSubscriber::start(
        vec![node.ws_url()],
        token(json!({"sub": "g", "exp": now() + 600})),
        "live:g".into(),
    );
    assert!(sub.wait_subscribed(Duration::from_secs(10)).await);
    for seq in 0..3 {
        publish_seq(&[node.addr], "live:g", seq).await;
    }
    assert!(sub.wait_for(3, Duration::from_secs(10)).await);
    // Publications 4..5 are written to history but their pub/sub messages never reach the
    // node (as if lost in flight); then a message with a later offset arrives.
    let mut conn = redis.connection().await;
    let epoch: String = redis::cmd("HGET")
        .arg("fc:meta:{live:g}")
        .arg("e")
        .query_async(&mut conn)
        .await
        .unwrap();
    for (offset, seq) in [(4u64, 3u64), (5, 4), (6, 5)] {
        let p = ferrocast_protocol::Publication {
            data: ferrocast_protocol::Payload::json(json!({"seq": seq}).to_string()).unwrap(),
            info: None,
            offset,
            tags: None,
            time: 0,
            channel: None,
        };
        let env = Envelope::Pub(WirePublication::from_publication(&p, None));
        let body = ferrocast_protocol::envelope::encode_body(&env);
        let _: String = redis::cmd("XADD")
            .arg("fc:hist:{live:g}")
            .arg(format!("{offset}-1"))
            .arg("d")
            .arg(body)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: i64 = redis::cmd("HSET")
            .arg("fc:meta:{live:g}")
            .arg("s")
            .arg(offset)
            .query_async(&mut conn)
            .await
            .unwrap();
        if offset == 6 {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("fc:ch:{live:g}")
                .arg(encode_message(offset, &epoch, &env))
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    assert!(
        sub.wait_for(6, Duration::from_secs(10)).await,
        "{:?}",
        sub.received()
    );
    let r = sub.stop().await;
    assert_eq!(account(&r.seqs, 6), (0, 0, 0), "{r:?}");
    assert_eq!(
        r.resubscribes, 1,
        "the gap must trigger exactly one recovery: {r:?}"
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_logged_with_its_cause() {
    let mut redis = RedisProcess::start().await;
    let node =
        NodeProcess::start(ferrocast_tests::node::cluster_config(&[redis.url()], "why")).await;
    node.wait_ready(200).await;
    redis.kill().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logs = node.log_text();
        if logs
            .lines()
            .any(|l| l.contains("redis unreachable") && l.contains("connection refused"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 'redis unreachable' with its cause:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    node.wait_ready(503).await;
}
