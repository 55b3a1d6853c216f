//! Fault tests: Presence after node and Redis failures.
//!
//! Against real `redis-server` processes and real ferrocast nodes. Traffic is
//! sequence-numbered (`{"seq": n}`) on channels of the `live:` namespace (history 5000,
//! force_recovery) and every published number is accounted for at every subscriber:
//! missing, duplicated and out of order. Each test prints its figures (`--nocapture`).
//! Everything listens on 127.0.0.1 and every process killed is one the test started.

use ferrocast_tests::faults::*;
use ferrocast_tests::node::cluster_config;
use ferrocast_tests::{Client, NodeProcess, RedisProcess};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

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
