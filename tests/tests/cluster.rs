//! A real cluster: redis-server processes owned by the test and three ferrocast nodes
//! on the Redis engine, driven by real WebSocket clients.

use ferrocast_tests::node::now;
use ferrocast_tests::recovering::account;
use ferrocast_tests::{Backplane, Client, NodeProcess, RedisProcess, token};
use serde_json::{Value, json};
use std::time::Duration;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

async fn cluster(bp: &Backplane, n: usize) -> Vec<NodeProcess> {
    cluster_with(bp, n, |_| {}).await
}

async fn cluster_with(bp: &Backplane, n: usize, f: impl Fn(&mut Value)) -> Vec<NodeProcess> {
    let mut cfg = bp.node_config("fc");
    f(&mut cfg);
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut c = cfg.clone();
        c["node"] = json!({"name": format!("node-{i}")});
        nodes.push(NodeProcess::start(c).await);
    }
    for node in &nodes {
        node.wait_ready(200).await;
    }
    nodes
}

async fn publications_reach_subscribers_on_every_node_in_order(bp: Backplane) {
    let nodes = cluster(&bp, 3).await;
    let mut readers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            let (mut c, _) =
                Client::connect(&node.ws_url(), &user_token(&format!("u{i}{j}"))).await;
            let r = c.command("subscribe", json!({"channel": "news"})).await;
            assert!(r.get("subscribe").is_some(), "{r}");
            readers.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                while seqs.len() < 10_000 {
                    let p = c.push().await;
                    seqs.push(p["pub"]["data"]["seq"].as_u64().unwrap());
                }
                seqs
            }));
        }
    }
    // Publish through different nodes, 100 per batch call, in order.
    for b in 0..100u64 {
        let commands: Vec<Value> = (0..100)
            .map(|i| json!({"publish": {"channel": "news", "data": {"seq": b * 100 + i}}}))
            .collect();
        nodes[0]
            .api_ok("batch", json!({"commands": commands}))
            .await;
    }
    for r in readers {
        let seqs = r.await.unwrap();
        assert_eq!(
            account(&seqs, 10_000),
            (0, 0, 0),
            "missing, duplicated, out of order"
        );
    }
}

async fn recovery_on_a_different_node(bp: Backplane) {
    let nodes = cluster(&bp, 2).await;
    let (mut c, _) = Client::connect(&nodes[0].ws_url(), &user_token("1")).await;
    let r = c
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recoverable": true}),
        )
        .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_string();
    nodes[1]
        .api_ok("publish", json!({"channel": "chat:r", "data": {"seq": 0}}))
        .await;
    let offset = c.push().await["pub"]["offset"].as_u64().unwrap();
    c.close().await;
    for i in 1..=3 {
        nodes[0]
            .api_ok("publish", json!({"channel": "chat:r", "data": {"seq": i}}))
            .await;
    }
    let (mut d, _) = Client::connect(&nodes[1].ws_url(), &user_token("1")).await;
    let r = d
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": offset, "epoch": epoch}),
        )
        .await;
    assert_eq!(r["subscribe"]["recovered"], true, "{r}");
    let seqs: Vec<u64> = r["subscribe"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // History via the API of any node agrees.
    let h = nodes[0]
        .api_ok("history", json!({"channel": "chat:r", "limit": -1}))
        .await;
    assert_eq!(h["publications"].as_array().unwrap().len(), 4);
    assert_eq!(h["epoch"], json!(epoch));
    // A trimmed position: recovered false (history_size 10).
    for i in 0..15 {
        nodes[1]
            .api_ok(
                "publish",
                json!({"channel": "chat:r", "data": {"seq": 100 + i}}),
            )
            .await;
    }
    let (mut e, _) = Client::connect(&nodes[0].ws_url(), &user_token("2")).await;
    let r = e
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": offset, "epoch": epoch}),
        )
        .await;
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");
    assert_eq!(r["subscribe"]["was_recovering"], true);
    // Idempotent publish across nodes.
    let a = nodes[0]
        .api_ok(
            "publish",
            json!({"channel": "chat:r", "data": 1, "idempotency_key": "x"}),
        )
        .await;
    let b = nodes[1]
        .api_ok(
            "publish",
            json!({"channel": "chat:r", "data": 1, "idempotency_key": "x"}),
        )
        .await;
    assert_eq!(a, b);
}

async fn presence_and_join_leave_across_nodes(bp: Backplane) {
    let mut nodes = cluster(&bp, 3).await;
    let (mut a, _) = Client::connect(&nodes[0].ws_url(), &user_token("a")).await;
    a.command(
        "subscribe",
        json!({"channel": "chat:p", "join_leave": true}),
    )
    .await;
    assert_eq!(a.push().await["join"]["info"]["user"], "a");
    let (mut b, rb) = Client::connect(&nodes[1].ws_url(), &user_token("b")).await;
    b.command("subscribe", json!({"channel": "chat:p"})).await;
    let join = a.push().await;
    assert_eq!(join["join"]["info"]["user"], "b");
    let (mut k, rk) = Client::connect(&nodes[2].ws_url(), &user_token("k")).await;
    k.command("subscribe", json!({"channel": "chat:p"})).await;
    assert_eq!(a.push().await["join"]["info"]["user"], "k");
    let s = nodes[2]
        .api_ok("presence_stats", json!({"channel": "chat:p"}))
        .await;
    assert_eq!(s, json!({"num_clients": 3, "num_users": 3}));
    let p = a.command("presence", json!({"channel": "chat:p"})).await;
    assert!(p["presence"]["presence"][rb["client"].as_str().unwrap()]["user"] == "b");
    b.close().await;
    assert_eq!(a.push().await["leave"]["info"]["user"], "b");
    let st = nodes[0]
        .api_ok("user_status", json!({"users": ["a", "b", "k", "nobody"]}))
        .await;
    let online: Vec<bool> = st["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["online"].as_bool().unwrap())
        .collect();
    assert_eq!(online, vec![true, false, true, false]);

    // kill -9 the node holding `k`: its presence and online status vanish within the TTL (3s).
    nodes[2].kill9().await;
    let kc = rk["client"].as_str().unwrap().to_string();
    let mut gone = false;
    for _ in 0..100 {
        let p = nodes[0]
            .api_ok("presence", json!({"channel": "chat:p"}))
            .await;
        if p["presence"].get(&kc).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "presence of a killed node's client did not expire");
    let mut offline = false;
    for _ in 0..100 {
        let st = nodes[0]
            .api_ok("user_status", json!({"users": ["k"]}))
            .await;
        if st["statuses"][0]["online"] == json!(false) {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(offline, "a killed node's user stayed online");
    // The killed node leaves `info` after node_info_ttl (4s).
    let mut left = false;
    for _ in 0..100 {
        let info = nodes[0].api_ok("info", json!({})).await;
        let names: Vec<&str> = info["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        if names == ["node-0", "node-1"] {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(left, "killed node still listed");
}

async fn info_lists_every_node_with_counts(bp: Backplane) {
    let nodes = cluster(&bp, 3).await;
    let (mut c, _) = Client::connect(&nodes[1].ws_url(), &user_token("x")).await;
    c.command("subscribe", json!({"channel": "news"})).await;
    let mut ok = false;
    for _ in 0..60 {
        let info = nodes[0].api_ok("info", json!({})).await;
        let list = info["nodes"].as_array().unwrap().clone();
        if list.len() == 3
            && list
                .iter()
                .any(|n| n["name"] == "node-1" && n["num_clients"] == 1 && n["num_subs"] == 1)
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "info did not list all nodes with counts");
}

async fn user_operations_act_on_every_node(bp: Backplane) {
    let nodes = cluster_with(&bp, 3, |c| c["client"]["user_connection_limit"] = json!(2)).await;
    let (mut a, _) = Client::connect(&nodes[1].ws_url(), &user_token("u")).await;
    let (mut b, _) = Client::connect(&nodes[2].ws_url(), &user_token("u")).await;
    // A third connection of the same user on another node exceeds the cluster-wide limit.
    let mut third = Client::open(&nodes[0].ws_url()).await;
    third
        .send_text(json!({"id": 1, "connect": {"token": user_token("u")}}).to_string())
        .await;
    assert_eq!(third.closed().await.0, 3504);

    nodes[0]
        .api_ok("subscribe", json!({"user": "u", "channel": "chat:s"}))
        .await;
    for c in [&mut a, &mut b] {
        assert!(c.push().await.get("subscribe").is_some());
    }
    nodes[0]
        .api_ok("publish", json!({"channel": "chat:s", "data": "x"}))
        .await;
    for c in [&mut a, &mut b] {
        assert_eq!(c.push().await["pub"]["data"], "x");
    }
    nodes[0]
        .api_ok("unsubscribe", json!({"user": "u", "channel": "chat:s"}))
        .await;
    for c in [&mut a, &mut b] {
        assert_eq!(c.push().await["unsubscribe"]["code"], 2000);
    }
    nodes[0]
        .api_ok(
            "disconnect",
            json!({"user": "u", "disconnect": {"code": 4000, "reason": "go"}}),
        )
        .await;
    for c in [&mut a, &mut b] {
        assert_eq!(c.closed().await, (4000, "go".to_string()));
    }
    // The limit frees up once they are gone.
    let mut ok = false;
    for _ in 0..50 {
        let mut c = Client::open(&nodes[0].ws_url()).await;
        if let Ok(r) = c
            .try_command("connect", json!({"token": user_token("u")}))
            .await
            && r.get("connect").is_some()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok);
}

/// Publishes into 20 channels through one node to subscribers on the other, then checks
/// every channel's keys: all 20 histories exist, each beside its meta (one slot or shard),
/// spread over at least two Redis processes.
async fn channels_are_spread_over_the_redis_instances(bp: Backplane) {
    let nodes = cluster(&bp, 2).await;
    let channels: Vec<String> = (0..20).map(|i| format!("chat:s{i}")).collect();
    let mut subs = Vec::new();
    for ch in &channels {
        let (mut c, _) = Client::connect(&nodes[1].ws_url(), &user_token("1")).await;
        c.command("subscribe", json!({"channel": ch})).await;
        subs.push(c);
    }
    for ch in &channels {
        nodes[0]
            .api_ok("publish", json!({"channel": ch, "data": {"ch": ch}}))
            .await;
    }
    for (c, ch) in subs.iter_mut().zip(&channels) {
        assert_eq!(c.push().await["pub"]["data"]["ch"], json!(ch));
    }
    let mut counts = Vec::new();
    for r in bp.instances() {
        let mut conn = r.connection().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("fc:hist:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        // A channel's keys share its slot (or shard): history and meta live together.
        for k in &keys {
            let meta = k.replacen("fc:hist:", "fc:meta:", 1);
            let exists: bool = redis::cmd("EXISTS")
                .arg(&meta)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(exists, "{meta} not beside {k}");
        }
        counts.push(keys.len());
    }
    assert_eq!(counts.iter().sum::<usize>(), 20, "{counts:?}");
    assert!(
        counts.iter().filter(|c| **c > 0).count() >= 2,
        "all channels on one instance: {counts:?}"
    );
}

#[tokio::test]
async fn channels_are_sharded_over_several_redis_instances() {
    let bp = Backplane::Standalone(vec![
        RedisProcess::start().await,
        RedisProcess::start().await,
    ]);
    channels_are_spread_over_the_redis_instances(bp).await;
}

async fn backend_command_stream_keeps_order_and_dead_letters_bad_entries(bp: Backplane) {
    let mut conn = bp.connection().await;
    // Written while no node runs: applied when one starts.
    conn.xadd_command(
        "fc",
        "publish",
        &json!({"channel": "chat:x0", "data": {"seq": 0}}).to_string(),
    )
    .await;
    let nodes = cluster(&bp, 3).await;
    let h = nodes[1]
        .api_ok("history", json!({"channel": "chat:x0", "limit": -1}))
        .await;
    let mut waited = h["publications"].as_array().unwrap().len();
    for _ in 0..100 {
        if waited == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let h = nodes[1]
            .api_ok("history", json!({"channel": "chat:x0", "limit": -1}))
            .await;
        waited = h["publications"].as_array().unwrap().len();
    }
    assert_eq!(
        waited, 1,
        "entry written before any node started was not applied"
    );

    let channels = ["chat:x0", "chat:x1", "chat:x2"];
    let mut readers = Vec::new();
    for (i, ch) in channels.iter().enumerate() {
        let (mut c, _) = Client::connect(&nodes[i].ws_url(), &user_token("1")).await;
        let r = c.command("subscribe", json!({"channel": ch})).await;
        assert!(r.get("subscribe").is_some());
        readers.push(c);
    }
    conn.xadd_command("fc", "publish", "{not json").await;
    conn.xadd_command("fc", "frobnicate", "{}").await;
    for n in 1..=1000u64 {
        let ch = channels[(n % 3) as usize];
        conn.xadd_command(
            "fc",
            "publish",
            &json!({"channel": ch, "data": {"seq": n}}).to_string(),
        )
        .await;
    }
    for (i, c) in readers.iter_mut().enumerate() {
        let expected: Vec<u64> = (1..=1000u64).filter(|n| (n % 3) as usize == i).collect();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            got.push(c.push().await["pub"]["data"]["seq"].as_u64().unwrap());
        }
        assert_eq!(got, expected, "channel {i} order");
    }
    let text = conn.dead_letters("fc").await;
    assert!(
        text.contains("frobnicate") && text.contains("not json"),
        "{text}"
    );
    assert!(
        text.contains("unknown method") && text.contains("bad request"),
        "{text}"
    );
    // Everything was acknowledged.
    let mut pending = 1;
    for _ in 0..50 {
        let p: redis::Value = redis::cmd("XPENDING")
            .arg("fc:api")
            .arg("ferrocast")
            .query_async(&mut conn)
            .await
            .unwrap();
        pending = match p {
            redis::Value::Array(v) => match v.first() {
                Some(redis::Value::Int(n)) => *n,
                _ => 1,
            },
            _ => 1,
        };
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 0, "entries left pending");
}

async fn command_stream_survives_the_death_of_its_consumer(bp: Backplane) {
    let mut nodes = cluster(&bp, 3).await;
    let mut conn = bp.connection().await;
    const N: u64 = 3000;
    // Find the lease holder through `info` (uid → node name).
    let mut holder = None;
    for _ in 0..100 {
        let lease: Option<String> = redis::cmd("GET")
            .arg("fc:api:lease")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(uid) = lease {
            let info = nodes[0].api_ok("info", json!({})).await;
            if let Some(n) = info["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["uid"] == json!(uid))
            {
                let name = n["name"].as_str().unwrap().to_string();
                holder = name
                    .strip_prefix("node-")
                    .and_then(|i| i.parse::<usize>().ok());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let holder = holder.expect("no node holds the command stream lease");
    let survivor = (holder + 1) % 3;
    let (mut c, _) = Client::connect(&nodes[survivor].ws_url(), &user_token("1")).await;
    c.command("subscribe", json!({"channel": "live:stream"}))
        .await;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.len() < N as usize {
            match c.try_push(Duration::from_secs(30)).await {
                Some(p) => seqs.push(p["pub"]["data"]["seq"].as_u64().unwrap()),
                None => break,
            }
        }
        seqs
    });
    for seq in 0..N {
        conn.xadd_command(
            "fc",
            "publish",
            &json!({"channel": "live:stream", "data": {"seq": seq}}).to_string(),
        )
        .await;
        if seq == N / 3 {
            nodes[holder].kill9().await;
        }
    }
    let seqs = reader.await.unwrap();
    assert_eq!(
        account(&seqs, N),
        (0, 0, 0),
        "missing, duplicated, out of order"
    );
}

async fn channels_api_counts_subscribers_on_every_node(bp: Backplane) {
    let nodes = cluster(&bp, 3).await;
    // Every asking node must know the others before it can ask them.
    for asked in [0, 2] {
        for _ in 0..100 {
            let info = nodes[asked].api_ok("info", json!({})).await;
            if info["nodes"].as_array().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut clients = Vec::new();
    for (node, channel) in [
        (0, "news"),
        (0, "news"),
        (1, "news"),
        (1, "chat:a"),
        (2, "chat:b"),
    ] {
        let (mut c, _) = Client::connect(&nodes[node].ws_url(), &user_token("c")).await;
        let r = c.command("subscribe", json!({"channel": channel})).await;
        assert!(r.get("subscribe").is_some(), "{r}");
        clients.push(c);
    }
    for asked in [0, 2] {
        let all = nodes[asked].api_ok("channels", json!({})).await;
        assert_eq!(
            all["channels"],
            json!({
                "news": {"num_clients": 3},
                "chat:a": {"num_clients": 1},
                "chat:b": {"num_clients": 1},
            }),
            "asked node-{asked}"
        );
    }
    let chat = nodes[1]
        .api_ok("channels", json!({"pattern": "chat:*"}))
        .await;
    assert_eq!(
        chat["channels"],
        json!({"chat:a": {"num_clients": 1}, "chat:b": {"num_clients": 1}})
    );
}

// Every case above runs on both backplanes.

#[tokio::test]
async fn publications_reach_subscribers_on_every_node_in_order_on_redis() {
    publications_reach_subscribers_on_every_node_in_order(Backplane::standalone().await).await;
}

#[tokio::test]
async fn publications_reach_subscribers_on_every_node_in_order_on_redis_cluster() {
    publications_reach_subscribers_on_every_node_in_order(Backplane::cluster().await).await;
}

#[tokio::test]
async fn recovery_on_a_different_node_on_redis() {
    recovery_on_a_different_node(Backplane::standalone().await).await;
}

#[tokio::test]
async fn recovery_on_a_different_node_on_redis_cluster() {
    recovery_on_a_different_node(Backplane::cluster().await).await;
}

#[tokio::test]
async fn presence_and_join_leave_across_nodes_on_redis() {
    presence_and_join_leave_across_nodes(Backplane::standalone().await).await;
}

#[tokio::test]
async fn presence_and_join_leave_across_nodes_on_redis_cluster() {
    presence_and_join_leave_across_nodes(Backplane::cluster().await).await;
}

#[tokio::test]
async fn info_lists_every_node_with_counts_on_redis() {
    info_lists_every_node_with_counts(Backplane::standalone().await).await;
}

#[tokio::test]
async fn info_lists_every_node_with_counts_on_redis_cluster() {
    info_lists_every_node_with_counts(Backplane::cluster().await).await;
}

#[tokio::test]
async fn user_operations_act_on_every_node_on_redis() {
    user_operations_act_on_every_node(Backplane::standalone().await).await;
}

#[tokio::test]
async fn user_operations_act_on_every_node_on_redis_cluster() {
    user_operations_act_on_every_node(Backplane::cluster().await).await;
}

#[tokio::test]
async fn backend_command_stream_keeps_order_and_dead_letters_bad_entries_on_redis() {
    backend_command_stream_keeps_order_and_dead_letters_bad_entries(Backplane::standalone().await)
        .await;
}

#[tokio::test]
async fn backend_command_stream_keeps_order_and_dead_letters_bad_entries_on_redis_cluster() {
    backend_command_stream_keeps_order_and_dead_letters_bad_entries(Backplane::cluster().await)
        .await;
}

#[tokio::test]
async fn command_stream_survives_the_death_of_its_consumer_on_redis() {
    command_stream_survives_the_death_of_its_consumer(Backplane::standalone().await).await;
}

#[tokio::test]
async fn command_stream_survives_the_death_of_its_consumer_on_redis_cluster() {
    command_stream_survives_the_death_of_its_consumer(Backplane::cluster().await).await;
}

#[tokio::test]
async fn channels_are_spread_over_the_slots_of_a_redis_cluster() {
    channels_are_spread_over_the_redis_instances(Backplane::cluster().await).await;
}

#[tokio::test]
async fn channels_api_counts_subscribers_on_every_node_on_redis() {
    channels_api_counts_subscribers_on_every_node(Backplane::standalone().await).await;
}

#[tokio::test]
async fn channels_api_counts_subscribers_on_every_node_on_redis_cluster() {
    channels_api_counts_subscribers_on_every_node(Backplane::cluster().await).await;
}

#[tokio::test]
async fn a_node_stopped_gracefully_leaves_the_cluster_at_once() {
    let bp = Backplane::standalone().await;
    // Announcements would keep a silent node for 30 s: only its goodbye removes it sooner.
    let mut nodes = cluster_with(&bp, 2, |cfg| {
        cfg["engine"]["redis"]["node_info_ttl"] = json!("30s");
        cfg["shutdown"] = json!({"drain_window": "0s"});
    })
    .await;
    let count = |info: &Value| info["nodes"].as_array().map(Vec::len);
    for _ in 0..100 {
        if count(&nodes[0].api_ok("info", json!({})).await) == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&nodes[0].api_ok("info", json!({})).await), Some(2));
    nodes[1].sigterm();
    let status = nodes[1].wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    let mut left = false;
    for _ in 0..20 {
        if count(&nodes[0].api_ok("info", json!({})).await) == Some(1) {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left, "the stopped node is still listed");
}
