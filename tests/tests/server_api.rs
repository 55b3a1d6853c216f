//! The server HTTP API against a real node: every method, auth and bad bodies.

use ferrocast_tests::node::{API_KEY, now};
use ferrocast_tests::{Client, NodeProcess, base_config, http_request, token};
use serde_json::{Value, json};
use std::time::Duration;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

async fn post(n: &NodeProcess, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, body) = http_request(n.addr, "POST", path, headers, body.as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn api_key_is_required_and_checked() {
    let n = NodeProcess::start(base_config()).await;
    let body = r#"{"channel":"news","data":1}"#;
    let (s, v) = post(&n, "/api/publish", &[], body).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (401, Some(101)));
    let (s, _) = post(&n, "/api/publish", &[("X-API-Key", "wrong")], body).await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &n,
        "/api/publish",
        &[("X-API-Key", &API_KEY[..API_KEY.len() - 1])],
        body,
    )
    .await;
    assert_eq!(s, 401);
    let (s, v) = post(
        &n,
        "/api/publish",
        &[("Authorization", &format!("apikey {API_KEY}"))],
        body,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("result").is_some());
    // The key never shows up in logs.
    assert!(!n.log_text().contains(API_KEY));
}

#[tokio::test]
async fn without_key_the_api_refuses_everything_unless_insecure() {
    let mut cfg = base_config();
    cfg["http_api"]["key"] = json!("");
    let n = NodeProcess::start(cfg.clone()).await;
    let (s, _) = post(&n, "/api/info", &[], "{}").await;
    assert_eq!(s, 401);
    let (s, _) = post(&n, "/api/info", &[("X-API-Key", "")], "{}").await;
    assert_eq!(s, 401);
    cfg["http_api"]["insecure"] = json!(true);
    let n = NodeProcess::start(cfg).await;
    let (s, v) = post(&n, "/api/info", &[], "{}").await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn bad_bodies_and_unknown_methods() {
    let mut cfg = base_config();
    cfg["http_api"]["max_body_size"] = json!(1024);
    let n = NodeProcess::start(cfg).await;
    let key = [("X-API-Key", API_KEY)];
    let (s, v) = post(&n, "/api/publish", &key, "{not json").await;
    assert_eq!((s, v["error"]["code"].as_u64()), (200, Some(107)), "{v}");
    let (s, v) = post(&n, "/api/publish", &key, r#"{"channel": 5}"#).await;
    assert_eq!((s, v["error"]["code"].as_u64()), (200, Some(107)), "{v}");
    let (_, v) = post(&n, "/api/publish", &key, r#"{"channel": "news"}"#).await;
    assert_eq!(v["error"]["code"], 107, "{v}");
    let (_, v) = post(
        &n,
        "/api/publish",
        &key,
        r#"{"channel": "nope:x", "data": 1}"#,
    )
    .await;
    assert_eq!(v["error"]["code"], 102, "{v}");
    let big = format!(r#"{{"channel":"news","data":"{}"}}"#, "x".repeat(4096));
    let (s, v) = post(&n, "/api/publish", &key, &big).await;
    assert_eq!(s, 413, "{v}");
    let (s, v) = post(&n, "/api/nope", &key, "{}").await;
    assert_eq!((s, v["error"]["code"].as_u64()), (404, Some(104)), "{v}");
    // The node still serves.
    n.api_ok("publish", json!({"channel": "news", "data": 1}))
        .await;
}

#[tokio::test]
async fn publish_broadcast_history_remove_channels_info() {
    let n = NodeProcess::start(base_config()).await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    c.command("subscribe", json!({"channel": "chat:a"})).await;
    c.command("subscribe", json!({"channel": "news"})).await;

    let r = n
        .api_ok(
            "publish",
            json!({"channel": "chat:a", "data": {"x": 1}, "tags": {"k": "v"}}),
        )
        .await;
    assert_eq!(r["offset"], 1);
    assert!(r["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let p = c.push().await;
    assert_eq!(p["pub"]["data"], json!({"x": 1}));
    assert_eq!(p["pub"]["tags"], json!({"k": "v"}));

    let r = n
        .api_ok(
            "broadcast",
            json!({"channels": ["chat:a", "news", "nope:x"], "data": 7}),
        )
        .await;
    let responses = r["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    assert_eq!(responses[0]["result"]["offset"], 2);
    assert_eq!(responses[2]["error"]["code"], 102);
    let a = c.push().await;
    let b = c.push().await;
    let mut chans = vec![
        a["channel"].as_str().unwrap().to_string(),
        b["channel"].as_str().unwrap().to_string(),
    ];
    chans.sort();
    assert_eq!(chans, vec!["chat:a", "news"]);

    // Idempotent publish.
    let r1 = n
        .api_ok(
            "publish",
            json!({"channel": "chat:a", "data": 9, "idempotency_key": "k1"}),
        )
        .await;
    let r2 = n
        .api_ok(
            "publish",
            json!({"channel": "chat:a", "data": 9, "idempotency_key": "k1"}),
        )
        .await;
    assert_eq!(r1, r2);
    c.push().await;
    assert!(c.try_push(Duration::from_millis(200)).await.is_none());

    // skip_history.
    n.api_ok(
        "publish",
        json!({"channel": "chat:a", "data": 10, "skip_history": true}),
    )
    .await;
    let h = n
        .api_ok("history", json!({"channel": "chat:a", "limit": -1}))
        .await;
    assert_eq!(h["publications"].as_array().unwrap().len(), 3);
    assert_eq!(h["offset"], 3);
    n.api_ok("history_remove", json!({"channel": "chat:a"}))
        .await;
    let h = n
        .api_ok("history", json!({"channel": "chat:a", "limit": -1}))
        .await;
    assert!(h["publications"].as_array().unwrap().is_empty());
    assert_eq!(h["offset"], 3);
    let v = n.api("history", json!({"channel": "news"})).await;
    assert_eq!(v["error"]["code"], 108);

    let ch = n.api_ok("channels", json!({})).await;
    assert_eq!(ch["channels"]["chat:a"]["num_clients"], 1);
    assert_eq!(ch["channels"]["news"]["num_clients"], 1);
    let ch = n.api_ok("channels", json!({"pattern": "chat:*"})).await;
    assert_eq!(ch["channels"].as_object().unwrap().len(), 1);

    let info = n.api_ok("info", json!({})).await;
    let node = &info["nodes"][0];
    assert_eq!(node["num_clients"], 1);
    assert_eq!(node["num_users"], 1);
    assert_eq!(node["num_channels"], 2);
    assert_eq!(node["num_subs"], 2);
    assert!(node["uid"].is_string() && node["version"].is_string());
}

#[tokio::test]
async fn presence_via_api() {
    let n = NodeProcess::start(base_config()).await;
    let (mut c, r) = Client::connect(&n.ws_url(), &user_token("1")).await;
    c.command("subscribe", json!({"channel": "chat:p"})).await;
    let p = n.api_ok("presence", json!({"channel": "chat:p"})).await;
    let client = r["client"].as_str().unwrap();
    assert_eq!(p["presence"][client]["user"], "1");
    let v = n.api("presence", json!({"channel": "news"})).await;
    assert_eq!(v["error"]["code"], 108);
}

#[tokio::test]
async fn user_subscribe_unsubscribe_disconnect_refresh() {
    let n = NodeProcess::start(base_config()).await;
    let (mut a1, _) = Client::connect(&n.ws_url(), &user_token("u")).await;
    let (mut a2, _) = Client::connect(&n.ws_url(), &user_token("u")).await;
    let (mut other, _) = Client::connect(&n.ws_url(), &user_token("v")).await;

    n.api_ok("subscribe", json!({"user": "u", "channel": "chat:s"}))
        .await;
    for c in [&mut a1, &mut a2] {
        let p = c.push().await;
        assert_eq!(p["channel"], "chat:s");
        assert!(p.get("subscribe").is_some(), "{p}");
    }
    n.api_ok("publish", json!({"channel": "chat:s", "data": "hello"}))
        .await;
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.push().await["pub"]["data"], "hello");
    }
    assert!(other.try_push(Duration::from_millis(200)).await.is_none());

    n.api_ok("unsubscribe", json!({"user": "u", "channel": "chat:s"}))
        .await;
    for c in [&mut a1, &mut a2] {
        let p = c.push().await;
        assert_eq!(p["unsubscribe"]["code"], 2000, "{p}");
    }

    n.api_ok("refresh", json!({"user": "u", "expire_at": now() + 100}))
        .await;
    for c in [&mut a1, &mut a2] {
        let p = c.push().await;
        assert_eq!(p["refresh"]["expires"], true, "{p}");
    }

    n.api_ok(
        "disconnect",
        json!({"user": "u", "disconnect": {"code": 4501, "reason": "bye"}}),
    )
    .await;
    for c in [&mut a1, &mut a2] {
        assert_eq!(c.closed().await, (4501, "bye".to_string()));
    }
    n.api_ok("disconnect", json!({"user": "v"})).await;
    assert_eq!(other.closed().await.0, 3503);
    let v = n
        .api(
            "disconnect",
            json!({"user": "v", "disconnect": {"code": 1000}}),
        )
        .await;
    assert_eq!(v["error"]["code"], 107);
}

#[tokio::test]
async fn batch_runs_each_command() {
    let n = NodeProcess::start(base_config()).await;
    let r = n
        .api_ok(
            "batch",
            json!({"commands": [
                {"publish": {"channel": "chat:b", "data": 1}},
                {"publish": {"channel": "nope:x", "data": 1}},
                {"history": {"channel": "chat:b", "limit": -1}},
                {"bogus": {}},
            ]}),
        )
        .await;
    // Centrifugo's BatchResponse: `replies` at the top level, no `result` wrapper.
    assert_eq!(r.as_object().map(|o| o.len()), Some(1), "{r}");
    let replies = r["replies"].as_array().unwrap();
    assert_eq!(replies[0]["publish"]["offset"], 1);
    assert_eq!(replies[1]["error"]["code"], 102);
    assert_eq!(
        replies[2]["history"]["publications"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(replies[3]["error"]["code"], 104);
}
