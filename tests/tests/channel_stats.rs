//! Per-channel statistics (`channel_stats`, a ferrocast extension of the server API),
//! merged over two nodes on Redis: subscribers summed, publications counted once,
//! deliveries summed, rates sampled.

use ferrocast_tests::{Backplane, Client, NodeProcess, token};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn channel_stats_are_merged_over_the_cluster() {
    let bp = Backplane::standalone().await;
    let cfg = bp.node_config("stats");
    let a = NodeProcess::start(cfg.clone()).await;
    let b = NodeProcess::start(cfg).await;
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    // Both nodes know each other: each asks the ones it knows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for n in [&a, &b] {
        while n.api_ok("info", json!({})).await["nodes"]
            .as_array()
            .map(Vec::len)
            != Some(2)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the nodes did not meet"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut subs = Vec::new();
    for (node, user) in [(&a, "u1"), (&b, "u2"), (&b, "u3")] {
        let (mut c, _) = Client::connect(&node.ws_url(), &token(json!({"sub": user}))).await;
        let r = c
            .command("subscribe", json!({"channel": "chat:stats"}))
            .await;
        assert!(r.get("subscribe").is_some(), "{r}");
        subs.push(c);
    }
    for i in 0..20 {
        a.api_ok(
            "publish",
            json!({"channel": "chat:stats", "data": {"i": i}}),
        )
        .await;
    }
    for c in &mut subs {
        for _ in 0..20 {
            c.push().await;
        }
    }
    // Counts are there at once; rates after the next sample (every 5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        let r = b
            .api_ok("channel_stats", json!({"pattern": "chat:*"}))
            .await;
        let s = &r["channels"]["chat:stats"];
        assert_eq!(s["num_clients"], 3, "{r}");
        assert_eq!(s["publications"], 20, "{r}");
        assert_eq!(s["deliveries"], 60, "{r}");
        assert_eq!(s["drops"], 0, "{r}");
        let rate = s["deliveries_per_sec"].as_f64().unwrap_or(0.0);
        if rate > 0.0 {
            assert!(
                s["publications_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
                "{r}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rate sampled: {r}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The pattern filters; `channels` keeps Centrifugo's shape.
    let r = a
        .api_ok("channel_stats", json!({"pattern": "nope:*"}))
        .await;
    assert_eq!(r["channels"], json!({}));
    let r = a.api_ok("channels", json!({})).await;
    assert_eq!(
        r["channels"]["chat:stats"],
        json!({"num_clients": 3}),
        "{r}"
    );
}
