//! Fault tests: Network trouble between one node and Redis (through a test proxy), and the races it exposed.
//!
//! Against real `redis-server` processes and real ferrocast nodes. Traffic is
//! sequence-numbered (`{"seq": n}`) on channels of the `live:` namespace (history 5000,
//! force_recovery) and every published number is accounted for at every subscriber:
//! missing, duplicated and out of order. Each test prints its figures (`--nocapture`).
//! Everything listens on 127.0.0.1 and every process killed is one the test started.

use ferrocast_tests::faults::*;
use ferrocast_tests::node::{cluster_config, http_request_opt};
use ferrocast_tests::proxy::Proxy;
use ferrocast_tests::recovering::{account, publish_seq};
use ferrocast_tests::{Client, NodeProcess, RecoveringSubscriber, RedisProcess};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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
        data: ferrocast_protocol::Payload::json(json!({ "seq": seq }).to_string()).unwrap(),
        info: None,
        offset,
        tags: None,
        time: 0,
        channel: None,
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
