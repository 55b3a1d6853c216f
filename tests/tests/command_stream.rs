//! The backend command stream with a backlog: entries written while no node runs are read
//! a hundred at a time, and each channel's run of publishes is applied as one Redis
//! transaction. Real redis-server processes (standalone and a 3-master Redis Cluster) and
//! real ferrocast nodes.

use ferrocast_tests::{Backplane, NodeProcess};
use serde_json::{Value, json};
use std::time::Duration;

/// The `seq` and the offset of every publication in the history of `channel`, once it
/// holds `n` publications (or what it holds after about 10 s).
async fn applied(node: &NodeProcess, channel: &str, n: usize) -> (Vec<u64>, Vec<u64>) {
    let mut pubs: Vec<Value> = Vec::new();
    for _ in 0..200 {
        let h = node
            .api_ok("history", json!({"channel": channel, "limit": -1}))
            .await;
        pubs = h["publications"].as_array().cloned().unwrap_or_default();
        if pubs.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let field = |name: &str| -> Vec<u64> {
        pubs.iter()
            .map(|p| p.pointer(name).and_then(Value::as_u64).unwrap())
            .collect()
    };
    (field("/data/seq"), field("/offset"))
}

/// The sequence numbers in `1..=last` published to channel `i` of three (round robin).
fn sent_to(i: usize, last: u64) -> Vec<u64> {
    (1..=last).filter(|n| (n % 3) as usize == i).collect()
}

async fn a_backlog_is_applied_in_stream_order_per_channel(bp: Backplane) {
    let mut conn = bp.connection().await;
    let channels = ["live:b0", "live:b1", "live:b2"];
    // 600 publishes over three channels, written before any node runs, with two bad
    // entries inside the runs of live:b1: one without data, one with malformed tags.
    for n in 1..=600u64 {
        let ch = channels[(n % 3) as usize];
        conn.xadd_command(
            "fc",
            "publish",
            &json!({"channel": ch, "data": {"seq": n}}).to_string(),
        )
        .await;
        if n == 250 {
            conn.xadd_command("fc", "publish", r#"{"channel":"live:b1"}"#)
                .await;
        }
        if n == 450 {
            conn.xadd_command(
                "fc",
                "publish",
                r#"{"channel":"live:b1","data":1,"tags":"x"}"#,
            )
            .await;
        }
    }
    let mut cfg = bp.node_config("fc");
    cfg["node"] = json!({"name": "node-0"});
    let node = NodeProcess::start(cfg).await;
    node.wait_ready(200).await;

    for (i, ch) in channels.iter().enumerate() {
        let (seqs, offsets) = applied(&node, ch, 200).await;
        assert_eq!(seqs, sent_to(i, 600), "{ch}: publications in stream order");
        assert_eq!(offsets, (1..=200u64).collect::<Vec<_>>(), "{ch}: offsets");
    }
    // Redis forgets its scripts (as after a restart without persistence of them); the next
    // backlog, written in one pipeline, is still applied once and in order.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut pipe = redis::pipe();
    for n in 601..=900u64 {
        let ch = channels[(n % 3) as usize];
        let payload = json!({"channel": ch, "data": {"seq": n}}).to_string();
        pipe.cmd("XADD")
            .arg("fc:api")
            .arg("*")
            .arg("method")
            .arg("publish")
            .arg("payload")
            .arg(payload)
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    for (i, ch) in channels.iter().enumerate() {
        let (seqs, _) = applied(&node, ch, 300).await;
        assert_eq!(seqs, sent_to(i, 900), "{ch}: after SCRIPT FLUSH");
    }

    let dead = conn.dead_letters("fc").await;
    assert!(
        dead.contains("data required") && dead.contains("bad request"),
        "both bad entries dead-lettered: {dead}"
    );
    assert_eq!(dead.matches("live:b1").count(), 2, "{dead}");
}

#[tokio::test]
async fn a_backlog_is_applied_in_stream_order_per_channel_on_redis() {
    a_backlog_is_applied_in_stream_order_per_channel(Backplane::standalone().await).await;
}

#[tokio::test]
async fn a_backlog_is_applied_in_stream_order_per_channel_on_redis_cluster() {
    a_backlog_is_applied_in_stream_order_per_channel(Backplane::cluster().await).await;
}
