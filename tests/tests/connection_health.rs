//! The `connection_health` server API (a ferrocast extension): the queue and drops of a
//! user's connections or of one client, answered by whichever node holds them.

use ferrocast_tests::node::now;
use ferrocast_tests::{Backplane, Client, NodeProcess, base_config, token};
use serde_json::{Value, json};
use std::time::Duration;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

async fn connect(n: &NodeProcess, user: &str, channels: &[&str]) -> (Client, String) {
    let (mut c, r) = Client::connect(&n.ws_url(), &user_token(user)).await;
    for ch in channels {
        let s = c.command("subscribe", json!({"channel": ch})).await;
        assert!(s.get("subscribe").is_some(), "{s}");
    }
    (c, r["client"].as_str().expect("client id").to_string())
}

fn clients(result: &Value) -> Vec<(String, String)> {
    result["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .map(|c| {
            (
                c["node"].as_str().unwrap_or_default().to_string(),
                c["client"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_node_reports_its_connections() {
    let mut cfg = base_config();
    cfg["node"] = json!({"name": "solo"});
    let n = NodeProcess::start(cfg).await;
    let (_a, a) = connect(&n, "7", &["news", "chat:1"]).await;
    let (_b, b) = connect(&n, "7", &[]).await;
    let r = n.api_ok("connection_health", json!({"client": a})).await;
    assert_eq!(
        r,
        json!({"connections": [{
            "client": a, "user": "7", "node": "solo", "queue_bytes": 0,
            "queue_max": 1048576, "dropped": 0, "subscriptions": ["chat:1", "news"],
        }]})
    );
    let mut both = vec![
        ("solo".to_string(), a.clone()),
        ("solo".to_string(), b.clone()),
    ];
    both.sort();
    let r = n.api_ok("connection_health", json!({"user": "7"})).await;
    assert_eq!(clients(&r), both);
    let r = n
        .api_ok("connection_health", json!({"user": "7", "client": b}))
        .await;
    assert_eq!(clients(&r), [("solo".to_string(), b.clone())]);
    for nobody in [
        json!({"user": "8"}),
        json!({"client": "nope"}),
        json!({"user": "8", "client": a}),
    ] {
        let r = n.api_ok("connection_health", nobody).await;
        assert_eq!(r, json!({"connections": []}));
    }
    let e = n.api("connection_health", json!({})).await;
    assert_eq!(e["error"]["code"], 107, "{e}");
}

#[tokio::test]
async fn every_node_answers_for_its_connections() {
    let bp = Backplane::standalone().await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut cfg = bp.node_config("health");
        cfg["node"] = json!({"name": format!("node-{i}")});
        nodes.push(NodeProcess::start(cfg).await);
    }
    for n in &nodes {
        n.wait_ready(200).await;
    }
    // Every node must know the others before it can ask them.
    for _ in 0..100 {
        let info = nodes[0].api_ok("info", json!({})).await;
        if info["nodes"].as_array().map(Vec::len) == Some(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_a, a) = connect(&nodes[1], "42", &["news"]).await;
    let (_b, b) = connect(&nodes[2], "42", &[]).await;
    let (_c, c) = connect(&nodes[2], "43", &[]).await;
    for asked in &nodes {
        let r = asked
            .api_ok("connection_health", json!({"user": "42"}))
            .await;
        assert_eq!(
            clients(&r),
            [
                ("node-1".to_string(), a.clone()),
                ("node-2".to_string(), b.clone())
            ],
            "{r}"
        );
        assert_eq!(r["connections"][0]["subscriptions"], json!(["news"]));
        let r = asked
            .api_ok("connection_health", json!({"client": c}))
            .await;
        assert_eq!(clients(&r), [("node-2".to_string(), c.clone())], "{r}");
    }
}
