//! Slow-consumer policies (`slow_consumer_policy` per namespace). A client with a tiny
//! socket receive buffer stops reading while the server API publishes a known sequence,
//! then reads again; each test asserts the policy's exact effect on what arrives. On
//! channels with history any drop ends in unsubscribe 2500, and after resubscribing with
//! recover every publication arrived exactly once.

use ferrocast_tests::compat::{Sdk, run_script};
use ferrocast_tests::node::{API_KEY, SECRET, now};
use ferrocast_tests::{Client, NodeProcess, base_config, token};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, Instant};

/// `client.queue_max_size` of the test node.
const QUEUE: u64 = 65536;
/// Padding of each publication: every frame has the same length, about 8 KB.
const PAD: usize = 8000;
/// Publications per server API batch.
const BATCH: u64 = 8;
/// Publications made once the client reads again: they all arrive.
const TAIL: u64 = 5;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

fn config() -> Value {
    let mut cfg = base_config();
    cfg["client"]["queue_max_size"] = json!(QUEUE);
    // A stuck client must not be closed for a missing pong while the test runs.
    cfg["client"]["ping_interval"] = json!("120s");
    cfg["client"]["pong_timeout"] = json!("60s");
    let namespaces = cfg["channel"]["namespaces"].as_array_mut().unwrap();
    for (name, policy) in [
        ("sclose", "close"),
        ("sblock", "block"),
        ("snewest", "drop_newest"),
        ("soldest", "drop_oldest"),
        ("sall", "drop_all"),
    ] {
        namespaces.push(json!({
            "name": name,
            "allow_subscribe_for_client": true,
            "slow_consumer_policy": policy,
        }));
    }
    for (name, policy) in [
        ("hnewest", "drop_newest"),
        ("holdest", "drop_oldest"),
        ("hall", "drop_all"),
    ] {
        namespaces.push(json!({
            "name": name,
            "history_size": 5000,
            "history_ttl": "600s",
            "force_recovery": true,
            "allow_subscribe_for_client": true,
            "slow_consumer_policy": policy,
        }));
    }
    cfg
}

/// Publication `seq`: a fixed-width number and the padding, so every frame of a channel
/// without history has the same length.
fn data(seq: u64) -> Value {
    json!({"n": format!("{seq:06}"), "p": "x".repeat(PAD)})
}

fn seq_of(push: &Value) -> u64 {
    push["pub"]["data"]["n"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a publication of the test: {push}"))
}

async fn publish(n: &NodeProcess, channel: &str, seqs: Range<u64>) {
    let seqs: Vec<u64> = seqs.collect();
    for chunk in seqs.chunks(BATCH as usize) {
        let commands: Vec<Value> = chunk
            .iter()
            .map(|&s| json!({"publish": {"channel": channel, "data": data(s)}}))
            .collect();
        let r = n.api_ok("batch", json!({"commands": commands})).await;
        assert!(!r.to_string().contains("\"error\""), "{r}");
    }
}

/// A client subscribed to `channel` that is about to stop reading: its id and subscribe
/// result.
async fn stuck(n: &NodeProcess, user: &str, channel: &str) -> (Client, String, Value) {
    let mut c = Client::open_with_recv_buffer(&n.ws_url(), 4096).await;
    let r = c
        .command("connect", json!({"token": user_token(user)}))
        .await;
    let id = r["connect"]["client"]
        .as_str()
        .expect("client id")
        .to_string();
    let s = c.command("subscribe", json!({"channel": channel})).await;
    assert!(s.get("subscribe").is_some(), "{s}");
    (c, id, s["subscribe"].clone())
}

/// The `connection_health` of one client (`None` once it is gone).
async fn health(n: &NodeProcess, client: &str) -> Option<Value> {
    let r = n
        .api_ok("connection_health", json!({"client": client}))
        .await;
    r["connections"]
        .as_array()
        .expect("connections")
        .first()
        .cloned()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Publishes into `channel` from `next` on until the stuck client `id` has dropped pushes
/// and its queue stays still (its writer is blocked on the full socket). Returns the
/// next number and the client's health then.
async fn fill(n: &NodeProcess, channel: &str, id: &str, mut next: u64) -> (u64, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        publish(n, channel, next..next + BATCH).await;
        next += BATCH;
        let h = health(n, id).await.expect("still connected");
        // A burst can overflow the queue of a reader too: only a queue that stays full
        // tells that its writer is blocked.
        if num(&h, "dropped") > 0 && num(&h, "queue_bytes") > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if health(n, id).await.as_ref() == Some(&h) {
                return (next, h);
            }
        }
        assert!(Instant::now() < deadline, "nothing was ever dropped: {h}");
    }
}

/// The publications of the test read until nothing comes for a moment.
async fn drain(c: &mut Client) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Some(p) = c.try_push(Duration::from_millis(300)).await {
        seqs.push(seq_of(&p));
    }
    seqs
}

/// Reads `count` publications.
async fn read(c: &mut Client, count: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        seqs.push(seq_of(&c.push().await));
    }
    seqs
}

/// A counter of `/metrics` with the label `namespace="ns"` (0 when absent).
async fn drops_metric(n: &NodeProcess, ns: &str) -> u64 {
    let (_, text) = n.get("/metrics").await;
    let label = format!("namespace=\"{ns}\"");
    text.lines()
        .find(|l| l.starts_with("ferrocast_slow_consumer_drops_total{") && l.contains(&label))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Drop {
    Newest,
    Oldest,
    All,
}

/// What a full queue of `m` same-size frames, `q0` of them queued earlier, does with `s`
/// more pushes while nothing is written: the pushes (by index) left queued, how many of
/// the earlier frames are left, and how many frames were dropped.
fn model(policy: Drop, m: usize, q0: usize, s: u64) -> (Vec<u64>, usize, u64) {
    let mut q: VecDeque<Option<u64>> = (0..q0).map(|_| None).collect();
    let mut dropped = 0;
    for i in 0..s {
        if q.len() < m {
            q.push_back(Some(i));
            continue;
        }
        match policy {
            Drop::Newest => dropped += 1,
            Drop::Oldest => {
                q.pop_front();
                dropped += 1;
                q.push_back(Some(i));
            }
            Drop::All => {
                dropped += q.len() as u64;
                q.clear();
                q.push_back(Some(i));
            }
        }
    }
    let kept = q.iter().flatten().copied().collect();
    (kept, q.iter().filter(|e| e.is_none()).count(), dropped)
}

/// One drop policy on a channel without history: the client stops reading, its queue
/// fills (phase 1: until drops begin and its writer is blocked), then a known run of
/// publications (phase 2) meets the full queue. What arrives of phase 2 and how many
/// pushes were dropped are exactly what the policy says; a command sent meanwhile is
/// answered (replies are never dropped) and everything published after the client reads
/// again arrives.
async fn drop_policy_leaves_exactly(ns: &str, policy: Drop) {
    let n = NodeProcess::start(config()).await;
    let channel = format!("{ns}:x");
    let user = format!("u-{ns}");
    let (mut c, id, _) = stuck(&n, &user, &channel).await;
    // A probe while still reading: the length of one frame (each is a message of its own:
    // two would exceed the writer's 16 KiB batch).
    publish(&n, &channel, 0..1).await;
    assert_eq!(seq_of(&c.push().await), 0);
    let len = c.last_message_len as u64;
    let m = (QUEUE / len) as usize;
    assert!(
        m > 1 && QUEUE - m as u64 * len >= 64,
        "room for a reply beside {m} frames of {len}"
    );

    // The client stops reading.
    let (next, h1) = fill(&n, &channel, &id, 1).await;
    let (q1, d1) = (num(&h1, "queue_bytes"), num(&h1, "dropped"));
    assert_eq!(q1 % len, 0, "{h1}");
    let q0 = (q1 / len) as usize;
    match policy {
        Drop::Newest | Drop::Oldest => assert_eq!(q0, m, "a full queue: {h1}"),
        Drop::All => assert!((1..=m).contains(&q0), "{h1}"),
    }
    let by_user = n.api_ok("connection_health", json!({"user": user})).await;
    assert_eq!(by_user["connections"], json!([h1]));
    assert_eq!(num(&h1, "queue_max"), QUEUE);
    assert_eq!(h1["subscriptions"], json!([channel]));

    let s = 3 * m as u64 + 2;
    publish(&n, &channel, next..next + s).await;
    let (kept, earlier_left, dropped) = model(policy, m, q0, s);
    let h2 = health(&n, &id).await.expect("connected");
    assert_eq!(num(&h2, "dropped"), d1 + dropped, "{h2}");
    assert_eq!(
        num(&h2, "queue_bytes"),
        (kept.len() + earlier_left) as u64 * len
    );
    // A command while stuck: its reply waits behind the queue and is never dropped.
    let ping = c.id();
    c.send_text(json!({"id": ping, "ping": {}}).to_string())
        .await;

    // The client reads again.
    assert!(c.reply(ping).await.get("error").is_none());
    let got = drain(&mut c).await;
    let (phase1, phase2): (Vec<u64>, Vec<u64>) = got.iter().partition(|&&s| s < next);
    assert!(
        phase1.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {phase1:?}"
    );
    let expected_phase1 = (next - 1) - d1 - q0 as u64 + earlier_left as u64;
    assert_eq!(phase1.len() as u64, expected_phase1, "{phase1:?}");
    let expected: Vec<u64> = kept.iter().map(|i| next + i).collect();
    assert_eq!(phase2, expected, "{policy:?}: what is left of phase 2");
    let end = next + s;
    publish(&n, &channel, end..end + TAIL).await;
    assert_eq!(
        read(&mut c, TAIL).await,
        (end..end + TAIL).collect::<Vec<_>>()
    );

    let h3 = health(&n, &id).await.expect("connected");
    assert_eq!(
        (num(&h3, "dropped"), num(&h3, "queue_bytes")),
        (d1 + dropped, 0)
    );
    assert_eq!(drops_metric(&n, ns).await, d1 + dropped);
    let stats = n.api_ok("channel_stats", json!({"pattern": channel})).await;
    assert_eq!(
        stats["channels"][&channel]["drops"],
        d1 + dropped,
        "{stats}"
    );
    println!(
        "{ns}: frame {len} B, queue {m} frames; phase 1: {} published, {phase1_n} received, {d1} dropped; \
         phase 2: {s} published, {} received; {} dropped in all",
        next - 1,
        phase2.len(),
        d1 + dropped,
        phase1_n = phase1.len(),
    );
}

#[tokio::test]
async fn drop_newest_drops_what_does_not_fit_and_keeps_the_queue() {
    drop_policy_leaves_exactly("snewest", Drop::Newest).await;
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_queue_full() {
    drop_policy_leaves_exactly("soldest", Drop::Oldest).await;
}

#[tokio::test]
async fn drop_all_clears_the_queue_when_it_is_full() {
    drop_policy_leaves_exactly("sall", Drop::All).await;
}

/// `close` (the default) and `block`, which acts as it: the stuck client is closed with
/// 3008 and, before the close, got an unbroken prefix of the sequence; nothing is
/// counted as dropped. `block` is named in a startup log line.
#[tokio::test]
async fn close_and_block_close_the_slow_connection_with_3008() {
    let n = NodeProcess::start(config()).await;
    let logs = n.log_text();
    assert!(
        logs.contains("slow_consumer_policy \\\"block\\\" acts as \\\"close\\\"")
            && logs.contains("(\\\"sblock\\\")"),
        "{logs}"
    );
    for (i, ns) in ["sclose", "sblock"].into_iter().enumerate() {
        let channel = format!("{ns}:x");
        let (mut c, id, _) = stuck(&n, &format!("u-{ns}"), &channel).await;
        let mut next = 1;
        let deadline = Instant::now() + Duration::from_secs(90);
        while health(&n, &id).await.is_some() {
            assert!(Instant::now() < deadline, "{ns}: never closed");
            publish(&n, &channel, next..next + BATCH).await;
            next += BATCH;
        }
        let mut got = Vec::new();
        let close = loop {
            match c.next_push_or_close(Duration::from_secs(10)).await {
                Ok(Some(p)) => got.push(seq_of(&p)),
                Ok(None) => panic!("{ns}: neither a push nor the close"),
                Err(close) => break close,
            }
        };
        assert_eq!(close, (3008, "slow".to_string()), "{ns}");
        let a = got.len() as u64;
        assert!(a > 0 && a < next - 1, "{ns}: {a} of {}", next - 1);
        assert_eq!(got, (1..=a).collect::<Vec<_>>(), "{ns}: an unbroken prefix");
        let (_, metrics) = n.get("/metrics").await;
        let closes = format!("ferrocast_slow_consumer_closes_total {}", i + 1);
        assert!(metrics.contains(&closes), "{metrics}");
        assert_eq!(drops_metric(&n, ns).await, 0);
        println!("{ns}: closed 3008 after {a} of {} publications", next - 1);
    }
}

/// Every drop policy on a channel with history and `force_recovery`: the first dropped
/// publication ends the subscription with unsubscribe 2500 after an unbroken run of
/// offsets; resubscribing with recover from the last one brings everything missed, so
/// every publication arrives exactly once, in order.
#[tokio::test]
async fn history_channels_recover_every_dropped_publication() {
    let n = NodeProcess::start(config()).await;
    for ns in ["hnewest", "holdest", "hall"] {
        let channel = format!("{ns}:x");
        let (mut c, id, sub) = stuck(&n, &format!("u-{ns}"), &channel).await;
        assert_eq!(sub["recoverable"], true, "{sub}");
        let epoch = sub["epoch"].as_str().expect("epoch").to_string();
        // Until a publication was dropped and the session has ended the subscription.
        let mut next = 1;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            publish(&n, &channel, next..next + BATCH).await;
            next += BATCH;
            let h = health(&n, &id).await.expect("connected");
            if num(&h, "dropped") > 0 && h["subscriptions"] == json!([]) {
                break;
            }
            assert!(Instant::now() < deadline, "{ns}: nothing dropped: {h}");
        }
        // Published while it is unsubscribed: recovered from history later.
        publish(&n, &channel, next..next + BATCH).await;
        let last = next + BATCH - 1;

        let mut got = Vec::new();
        let unsubscribe = loop {
            let p = c.push().await;
            if p.get("unsubscribe").is_some() {
                break p;
            }
            assert_eq!(p["pub"]["offset"], json!(seq_of(&p)), "{p}");
            got.push(seq_of(&p));
        };
        assert_eq!(unsubscribe["channel"], json!(channel));
        assert_eq!(unsubscribe["unsubscribe"]["code"], 2500, "{unsubscribe}");
        let a = got.len() as u64;
        assert_eq!(
            got,
            (1..=a).collect::<Vec<_>>(),
            "{ns}: unbroken before 2500"
        );
        let r = c
            .command(
                "subscribe",
                json!({"channel": channel, "recover": true, "offset": a, "epoch": epoch}),
            )
            .await;
        let s = &r["subscribe"];
        assert_eq!(
            (s["recovered"].clone(), s["was_recovering"].clone()),
            (json!(true), json!(true)),
            "{r}"
        );
        got.extend(
            s["publications"]
                .as_array()
                .expect("publications")
                .iter()
                .map(|p| {
                    assert_eq!(
                        p["offset"].as_u64(),
                        p["data"]["n"].as_str().and_then(|n| n.parse().ok())
                    );
                    p["offset"].as_u64().unwrap_or(0)
                }),
        );
        publish(&n, &channel, last + 1..last + 1 + TAIL).await;
        got.extend(read(&mut c, TAIL).await);
        assert_eq!(
            got,
            (1..=last + TAIL).collect::<Vec<_>>(),
            "{ns}: each exactly once"
        );
        let dropped = num(&health(&n, &id).await.expect("connected"), "dropped");
        assert!(dropped > 0);
        assert_eq!(drops_metric(&n, ns).await, dropped);
        println!(
            "{ns}: {a} delivered before 2500, {} recovered, {dropped} dropped; all {} once",
            last - a,
            last + TAIL
        );
    }
}

/// The same with a real SDK: centrifuge-python's event loop is blocked while the
/// publications are made, it gets unsubscribe 2500, resubscribes with recover by itself,
/// and has every publication exactly once.
#[tokio::test]
async fn centrifuge_python_recovers_every_dropped_publication() {
    let n = NodeProcess::start(config()).await;
    let env = [
        ("COMPAT_WS_URL", n.ws_url()),
        ("COMPAT_API_URL", format!("http://{}/api", n.addr)),
        ("COMPAT_API_KEY", API_KEY.to_string()),
        ("COMPAT_HMAC_SECRET", SECRET.to_string()),
        ("COMPAT_CHANNEL", "holdest:sdk".to_string()),
    ];
    run_script(Sdk::Python, "python_slow_consumer.py", &env, &[&n]).await;
    assert!(drops_metric(&n, "holdest").await > 0);
}
