//! Client protocol against a real node: every command and push.

use ferrocast_tests::node::now;
use ferrocast_tests::{Client, NodeProcess, base_config, token};
use serde_json::json;
use std::time::Duration;

async fn node() -> NodeProcess {
    NodeProcess::start(base_config()).await
}

/// Offsets of the publications in a history result.
fn offsets_of(history: &serde_json::Value) -> Vec<u64> {
    history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

#[tokio::test]
async fn connect_result_announces_ping_and_client() {
    let n = node().await;
    let (c, result) = Client::connect(&n.ws_url(), &user_token("42")).await;
    assert!(result["client"].as_str().unwrap().len() >= 32);
    assert_eq!(result["ping"], 25);
    assert_eq!(result["pong"], true);
    assert_eq!(result["expires"], true);
    assert!(result["ttl"].as_u64().unwrap() > 3500);
    assert!(result["version"].is_string());
    c.close().await;
}

#[tokio::test]
async fn invalid_token_closes_3500_and_expired_token_answers_109() {
    let n = node().await;
    let mut c = Client::open(&n.ws_url()).await;
    c.send_text(json!({"id": 1, "connect": {"token": "not-a-jwt"}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3500);

    let mut c = Client::open(&n.ws_url()).await;
    let expired = token(json!({"sub": "1", "exp": now() - 10}));
    let r = c.command("connect", json!({"token": expired})).await;
    assert_eq!(r["error"]["code"], 109);

    let mut c = Client::open(&n.ws_url()).await;
    let other = ferrocast_tests::node::token_with("other-key", json!({"sub": "1"}));
    c.send_text(json!({"id": 1, "connect": {"token": other}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3500);

    // No token while insecure mode is off.
    let mut c = Client::open(&n.ws_url()).await;
    c.send_text(json!({"id": 1, "connect": {}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3500);
}

#[tokio::test]
async fn insecure_mode_accepts_anonymous_connections() {
    let mut cfg = base_config();
    cfg["client"]["insecure"] = json!(true);
    let n = NodeProcess::start(cfg).await;
    let mut c = Client::open(&n.ws_url()).await;
    let r = c.command("connect", json!({})).await;
    assert!(r["connect"]["client"].is_string(), "{r}");
    // Insecure mode skips channel permission checks.
    let r = c
        .command("subscribe", json!({"channel": "private:x"}))
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    assert!(n.log_text().contains("client.insecure is on"));
}

#[tokio::test]
async fn subscribe_publish_unsubscribe() {
    let n = node().await;
    let (mut a, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let (mut b, _) = Client::connect(&n.ws_url(), &user_token("2")).await;
    for c in [&mut a, &mut b] {
        let r = c.command("subscribe", json!({"channel": "news"})).await;
        assert!(r.get("subscribe").is_some(), "{r}");
    }
    let r = a
        .command(
            "publish",
            json!({"channel": "news", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(r["publish"], json!({}));
    for c in [&mut a, &mut b] {
        let p = c.push().await;
        assert_eq!(p["channel"], "news");
        assert_eq!(p["pub"]["data"], json!({"text": "hi"}));
        assert_eq!(p["pub"]["info"]["user"], "1");
    }
    let r = b.command("unsubscribe", json!({"channel": "news"})).await;
    assert_eq!(r["unsubscribe"], json!({}));
    n.api_ok("publish", json!({"channel": "news", "data": 2}))
        .await;
    assert_eq!(a.push().await["pub"]["data"], 2);
    assert!(b.try_push(Duration::from_millis(300)).await.is_none());
    // Subscribing twice is refused.
    let r = a.command("subscribe", json!({"channel": "news"})).await;
    assert_eq!(r["error"]["code"], 105);
}

#[tokio::test]
async fn permissions_and_namespaces() {
    let n = node().await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("7")).await;
    let r = c
        .command("subscribe", json!({"channel": "private:x"}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = c.command("subscribe", json!({"channel": "nope:x"})).await;
    assert_eq!(r["error"]["code"], 102, "{r}");
    let r = c.command("subscribe", json!({"channel": ""})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = c
        .command("subscribe", json!({"channel": "a\u{0007}b"}))
        .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = c
        .command("subscribe", json!({"channel": "x".repeat(300)}))
        .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    // Publish without being subscribed (allow_publish_for_subscriber only).
    let r = c
        .command("publish", json!({"channel": "news", "data": 1}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    // No publish permission at all in "feed".
    c.command("subscribe", json!({"channel": "feed:a"})).await;
    let r = c
        .command("publish", json!({"channel": "feed:a", "data": 1}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    // Presence not enabled for channels without namespace.
    let r = c.command("presence", json!({"channel": "news"})).await;
    assert_eq!(r["error"]["code"], 108, "{r}");
    let r = c.command("history", json!({"channel": "news"})).await;
    assert_eq!(r["error"]["code"], 108, "{r}");
    // Presence in chat needs a subscription.
    let r = c.command("presence", json!({"channel": "chat:1"})).await;
    assert_eq!(r["error"]["code"], 103, "{r}");
}

#[tokio::test]
async fn user_limited_channels_and_subscription_tokens() {
    let n = node().await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("42")).await;
    let r = c
        .command("subscribe", json!({"channel": "dialog:x#42,43"}))
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    let r = c
        .command("subscribe", json!({"channel": "dialog:x#41,43"}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");

    // A subscription token opens a private channel.
    let sub = token(
        json!({"sub": "42", "channel": "private:p", "exp": now() + 60, "info": {"role": "a"}}),
    );
    let r = c
        .command("subscribe", json!({"channel": "private:p", "token": sub}))
        .await;
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    // A token for another channel is refused.
    let sub = token(json!({"sub": "42", "channel": "private:other"}));
    let r = c
        .command("subscribe", json!({"channel": "private:q", "token": sub}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    // A token for another user is refused.
    let sub = token(json!({"sub": "41", "channel": "private:q"}));
    let r = c
        .command("subscribe", json!({"channel": "private:q", "token": sub}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    // sub_refresh extends it.
    let sub = token(json!({"sub": "42", "channel": "private:p", "exp": now() + 600}));
    let r = c
        .command("sub_refresh", json!({"channel": "private:p", "token": sub}))
        .await;
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    assert!(r["sub_refresh"]["ttl"].as_u64().unwrap() > 500);
    // A badly signed subscription token closes the connection.
    let bad =
        ferrocast_tests::node::token_with("nope", json!({"sub": "42", "channel": "private:z"}));
    c.send_text(json!({"id": 99, "subscribe": {"channel": "private:z", "token": bad}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3500);
}

#[tokio::test]
async fn presence_join_leave_and_stats() {
    let n = node().await;
    let (mut a, ra) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let r = a
        .command(
            "subscribe",
            json!({"channel": "chat:room", "join_leave": true}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    let (mut b, rb) = Client::connect(&n.ws_url(), &user_token("2")).await;
    b.command("subscribe", json!({"channel": "chat:room"}))
        .await;
    let join = a.push().await;
    assert_eq!(join["join"]["info"]["user"], "1", "own join first");
    let join = a.push().await;
    assert_eq!(join["channel"], "chat:room");
    assert_eq!(join["join"]["info"]["user"], "2");
    assert_eq!(join["join"]["info"]["client"], rb["client"]);
    let p = a.command("presence", json!({"channel": "chat:room"})).await;
    let presence = p["presence"]["presence"].as_object().unwrap();
    assert_eq!(presence.len(), 2);
    assert_eq!(presence[ra["client"].as_str().unwrap()]["user"], "1");
    let s = a
        .command("presence_stats", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(
        s["presence_stats"],
        json!({"num_clients": 2, "num_users": 2})
    );
    let api = n
        .api_ok("presence_stats", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(api, json!({"num_clients": 2, "num_users": 2}));
    b.close().await;
    let leave = a.push().await;
    assert_eq!(leave["leave"]["info"]["user"], "2");
    let s = a
        .command("presence_stats", json!({"channel": "chat:room"}))
        .await;
    assert_eq!(s["presence_stats"]["num_clients"], 1);
}

#[tokio::test]
async fn history_limit_since_reverse() {
    let n = node().await;
    for i in 1..=5 {
        let r = n
            .api_ok("publish", json!({"channel": "chat:h", "data": {"i": i}}))
            .await;
        assert_eq!(r["offset"], i);
    }
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    c.command("subscribe", json!({"channel": "chat:h"})).await;
    let h = c
        .command("history", json!({"channel": "chat:h", "limit": -1}))
        .await["history"]
        .clone();
    assert_eq!(h["publications"].as_array().unwrap().len(), 5);
    assert_eq!(h["offset"], 5);
    let epoch = h["epoch"].as_str().unwrap().to_string();
    let h = c
        .command("history", json!({"channel": "chat:h", "limit": 2}))
        .await["history"]
        .clone();
    let offsets = offsets_of(&h);
    assert_eq!(offsets, vec![1, 2]);
    let h = c
        .command(
            "history",
            json!({"channel": "chat:h", "limit": 2, "reverse": true}),
        )
        .await["history"]
        .clone();
    let offsets = offsets_of(&h);
    assert_eq!(offsets, vec![5, 4]);
    let h = c
        .command(
            "history",
            json!({"channel": "chat:h", "limit": -1, "since": {"offset": 3, "epoch": epoch}}),
        )
        .await["history"]
        .clone();
    let offsets = offsets_of(&h);
    assert_eq!(offsets, vec![4, 5]);
    let r = c
        .command(
            "history",
            json!({"channel": "chat:h", "limit": -1, "since": {"offset": 3, "epoch": "wrong"}}),
        )
        .await;
    assert_eq!(r["error"]["code"], 112, "{r}");
    // limit 0: position only.
    let h = c.command("history", json!({"channel": "chat:h"})).await["history"].clone();
    assert!(h.get("publications").is_none() || h["publications"].as_array().unwrap().is_empty());
    assert_eq!(h["offset"], 5);
}

#[tokio::test]
async fn history_size_is_respected() {
    let n = node().await;
    for i in 1..=5 {
        n.api_ok("publish", json!({"channel": "feed:s", "data": i}))
            .await;
    }
    let h = n
        .api_ok("history", json!({"channel": "feed:s", "limit": -1}))
        .await;
    let offsets = offsets_of(&h);
    assert_eq!(offsets, vec![3, 4, 5]);
}

#[tokio::test]
async fn recovery_after_reconnect() {
    let n = node().await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let r = c
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recoverable": true}),
        )
        .await;
    let s = &r["subscribe"];
    assert_eq!(s["recoverable"], true, "{r}");
    let epoch = s["epoch"].as_str().unwrap().to_string();
    n.api_ok("publish", json!({"channel": "chat:r", "data": 1}))
        .await;
    let p = c.push().await;
    let offset = p["pub"]["offset"].as_u64().unwrap();
    c.close().await;
    for i in 2..=4 {
        n.api_ok("publish", json!({"channel": "chat:r", "data": i}))
            .await;
    }
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let r = c
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": offset, "epoch": epoch}),
        )
        .await;
    let s = &r["subscribe"];
    assert_eq!(s["recovered"], true, "{r}");
    assert_eq!(s["was_recovering"], true);
    let data: Vec<i64> = s["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].as_i64().unwrap())
        .collect();
    assert_eq!(data, vec![2, 3, 4]);
    assert_eq!(s["offset"], 4);
    // Live publications continue after the recovered ones.
    n.api_ok("publish", json!({"channel": "chat:r", "data": 5}))
        .await;
    assert_eq!(c.push().await["pub"]["offset"], 5);

    // A position that history no longer holds: recovered false.
    for i in 0..20 {
        n.api_ok("publish", json!({"channel": "chat:r", "data": i}))
            .await;
    }
    let (mut d, _) = Client::connect(&n.ws_url(), &user_token("2")).await;
    let r = d
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": 1, "epoch": epoch}),
        )
        .await;
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");
    assert_eq!(r["subscribe"]["was_recovering"], true);
    // Wrong epoch: recovered false.
    let (mut e, _) = Client::connect(&n.ws_url(), &user_token("3")).await;
    let r = e
        .command(
            "subscribe",
            json!({"channel": "chat:r", "recover": true, "offset": 25, "epoch": "other"}),
        )
        .await;
    assert!(r["subscribe"].get("recovered").is_none(), "{r}");
}

#[tokio::test]
async fn ping_rpc_send_refresh() {
    let n = node().await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("5")).await;
    assert_eq!(c.command("ping", json!({})).await["ping"], json!({}));
    let r = c.command("rpc", json!({"method": "x", "data": {}})).await;
    assert_eq!(r["error"]["code"], 104);
    c.send_text(json!({"send": {"data": {"a": 1}}}).to_string())
        .await;
    let t = token(json!({"sub": "5", "exp": now() + 7200}));
    let r = c.command("refresh", json!({"token": t})).await;
    assert_eq!(r["refresh"]["expires"], true, "{r}");
    assert!(r["refresh"]["ttl"].as_u64().unwrap() > 7000);
    let expired = token(json!({"sub": "5", "exp": now() - 5}));
    let r = c.command("refresh", json!({"token": expired})).await;
    assert_eq!(r["error"]["code"], 109);
    // A token for another user closes the connection.
    let other = token(json!({"sub": "6"}));
    c.send_text(json!({"id": 50, "refresh": {"token": other}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3500);
}

/// A node whose expired connections and subscriptions get `grace` to refresh.
async fn node_with_grace(grace: &str) -> NodeProcess {
    let mut cfg = base_config();
    cfg["client"]["expired_close_delay"] = json!(grace);
    cfg["client"]["expired_sub_close_delay"] = json!(grace);
    NodeProcess::start(cfg).await
}

#[tokio::test]
async fn connection_expires_without_refresh_after_the_grace() {
    let n = node_with_grace("2s").await;
    let t = token(json!({"sub": "9", "exp": now() + 1}));
    let (mut c, r) = Client::connect(&n.ws_url(), &t).await;
    assert_eq!(r["expires"], true);
    let connected = std::time::Instant::now();
    // Past its expiry, within the grace: still served.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(c.command("ping", json!({})).await["ping"], json!({}));
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (3005, "connection expired"));
    assert!(
        connected.elapsed() >= Duration::from_secs(2),
        "closed before the grace ended"
    );
}

#[tokio::test]
async fn a_refresh_within_the_grace_keeps_the_connection() {
    let n = node_with_grace("3s").await;
    let (mut c, _) =
        Client::connect(&n.ws_url(), &token(json!({"sub": "9", "exp": now() + 1}))).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let r = c
        .command(
            "refresh",
            json!({"token": token(json!({"sub": "9", "exp": now() + 60}))}),
        )
        .await;
    assert_eq!(r["refresh"]["expires"], true, "{r}");
    // Well past the first expiry and its grace: still open.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(c.command("ping", json!({})).await["ping"], json!({}));
}

#[tokio::test]
async fn an_expired_subscription_ends_with_2501_after_the_grace() {
    let n = node_with_grace("1s").await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("42")).await;
    let sub = |exp: i64| token(json!({"sub": "42", "channel": "private:p", "exp": exp}));
    let r = c
        .command(
            "subscribe",
            json!({"channel": "private:p", "token": sub(now() + 1)}),
        )
        .await;
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    let r = c
        .command("subscribe", json!({"channel": "private:q", "token": token(json!({"sub": "42", "channel": "private:q", "exp": now() + 1}))}))
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    // private:q is refreshed in its grace, private:p is not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = c
        .command("sub_refresh", json!({"channel": "private:q", "token": token(json!({"sub": "42", "channel": "private:q", "exp": now() + 60}))}))
        .await;
    assert_eq!(r["sub_refresh"]["expires"], true, "{r}");
    let p = c.push().await;
    assert_eq!(
        (p["channel"].as_str(), p["unsubscribe"]["code"].as_u64()),
        (Some("private:p"), Some(2501)),
        "{p}"
    );
    // The connection and the refreshed subscription stay.
    assert!(c.try_push(Duration::from_millis(1500)).await.is_none());
    let r = c
        .command(
            "subscribe",
            json!({"channel": "private:p", "token": sub(now() + 60)}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
}

#[tokio::test]
async fn several_commands_in_one_frame_get_one_batched_frame() {
    let n = node().await;
    let mut c = Client::open(&n.ws_url()).await;
    let frame = format!(
        "{}\n{}\n{}",
        json!({"id": 1, "connect": {"token": user_token("1")}}),
        json!({"id": 2, "subscribe": {"channel": "news"}}),
        json!({"id": 3, "ping": {}}),
    );
    c.send_text(frame).await;
    let r1 = c.reply(1).await;
    assert!(r1.get("connect").is_some());
    let r2 = c.reply(2).await;
    assert!(r2.get("subscribe").is_some());
    let r3 = c.reply(3).await;
    assert!(r3.get("ping").is_some());
}

#[tokio::test]
async fn server_side_subscriptions_from_token_channels() {
    let n = node().await;
    let t = token(json!({"sub": "8", "channels": ["news", "chat:srv"]}));
    let (mut c, r) = Client::connect(&n.ws_url(), &t).await;
    let subs = r["subs"].as_object().unwrap();
    assert!(
        subs.contains_key("news") && subs.contains_key("chat:srv"),
        "{r}"
    );
    assert_eq!(subs["chat:srv"]["recoverable"], true);
    n.api_ok("publish", json!({"channel": "news", "data": "x"}))
        .await;
    let p = c.push().await;
    assert_eq!(
        (p["channel"].as_str(), p["pub"]["data"].as_str()),
        (Some("news"), Some("x"))
    );
}

#[tokio::test]
async fn server_heartbeat_and_no_pong() {
    let mut cfg = base_config();
    cfg["client"]["ping_interval"] = json!("1s");
    cfg["client"]["pong_timeout"] = json!("500ms");
    let n = NodeProcess::start(cfg).await;
    let (mut c, r) = Client::connect(&n.ws_url(), &user_token("1")).await;
    assert_eq!(r["ping"], 1);
    // Answering pings keeps the connection.
    let _ = c.try_push(Duration::from_millis(2500)).await;
    assert!(c.pings >= 2, "pings seen: {}", c.pings);
    assert_eq!(c.command("ping", json!({})).await["ping"], json!({}));
    // Not answering closes with 3012.
    c.auto_pong = false;
    let (code, _) = c.closed().await;
    assert_eq!(code, 3012);
}

#[tokio::test]
async fn websocket_pings_get_pongs_between_replies_and_pushes() {
    let n = node().await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("p")).await;
    assert_eq!(c.ws_ping(b"before").await.as_deref(), Some(&b"before"[..]));
    let r = c.command("subscribe", json!({"channel": "news"})).await;
    assert!(r.get("subscribe").is_some(), "{r}");
    n.api_ok("publish", json!({"channel": "news", "data": {"n": 1}}))
        .await;
    // The pong is sent by the same writer as replies and pushes; nothing is lost or
    // reordered around it.
    assert_eq!(c.ws_ping(b"after").await.as_deref(), Some(&b"after"[..]));
    assert_eq!(c.push().await["pub"]["data"]["n"], 1);
    let r = c
        .command("publish", json!({"channel": "news", "data": {"n": 2}}))
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    assert_eq!(c.push().await["pub"]["data"]["n"], 2);
}

#[tokio::test]
async fn sdks_refresh_short_lived_tokens_without_reconnecting() {
    use ferrocast_tests::compat::{Sdk, run_script};
    // Lifetimes of 2 s over 8 s with Centrifugo's default grace: the SDKs refresh at the
    // ttl, which is the instant the token expires.
    let n = node().await;
    let runs = [
        (Sdk::Js, "token_refresh_js.mjs"),
        (Sdk::Python, "token_refresh_python.py"),
    ]
    .into_iter()
    .flat_map(|(sdk, script)| ["json", "protobuf"].map(|p| (sdk, script, p)))
    .map(|(sdk, script, protocol)| {
        let env = [
            ("COMPAT_WS_URL", n.ws_url()),
            ("COMPAT_SECRET", ferrocast_tests::node::SECRET.to_string()),
            ("COMPAT_PROTOCOL", protocol.to_string()),
            ("COMPAT_CHANNEL", format!("private:refresh-{protocol}")),
            ("COMPAT_TTL", "2".to_string()),
            ("COMPAT_RUN", "7".to_string()),
        ];
        let n = &n;
        async move { run_script(sdk, script, &env, &[n]).await }
    });
    // Side by side: each runs for its 7 s.
    futures_util::future::join_all(runs).await;
}
