//! Limits and bad input: each case gets its exact error or close code, and other
//! clients are not disturbed.

use ferrocast_tests::node::now;
use ferrocast_tests::{Client, NodeProcess, base_config, token};
use serde_json::{Value, json};
use std::time::Duration;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

/// A subscribed bystander that must keep receiving publications.
async fn bystander(n: &NodeProcess) -> Client {
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("bystander")).await;
    c.command("subscribe", json!({"channel": "news"})).await;
    c
}

async fn bystander_still_served(n: &NodeProcess, c: &mut Client) {
    let marker = json!({"still": "here"});
    n.api_ok("publish", json!({"channel": "news", "data": marker}))
        .await;
    loop {
        let p = c.push().await;
        if p["pub"]["data"] == marker {
            return;
        }
    }
}

async fn node_with(f: impl FnOnce(&mut Value)) -> NodeProcess {
    let mut cfg = base_config();
    f(&mut cfg);
    NodeProcess::start(cfg).await
}

#[tokio::test]
async fn node_connection_limit_closes_3504() {
    let n = node_with(|c| c["client"]["connection_limit"] = json!(2)).await;
    let (_a, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let (_b, _) = Client::connect(&n.ws_url(), &user_token("2")).await;
    let mut c = Client::open(&n.ws_url()).await;
    c.send_text(json!({"id": 1, "connect": {"token": user_token("3")}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3504);
}

#[tokio::test]
async fn user_connection_limit_closes_3504() {
    let n = node_with(|c| c["client"]["user_connection_limit"] = json!(1)).await;
    let (_a, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let mut c = Client::open(&n.ws_url()).await;
    c.send_text(json!({"id": 1, "connect": {"token": user_token("1")}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3504);
    let (_b, _) = Client::connect(&n.ws_url(), &user_token("2")).await;
}

#[tokio::test]
async fn channel_limit_106_and_3505() {
    let n = node_with(|c| c["client"]["channel_limit"] = json!(2)).await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    for ch in ["a", "b"] {
        assert!(
            c.command("subscribe", json!({"channel": ch}))
                .await
                .get("subscribe")
                .is_some()
        );
    }
    let r = c.command("subscribe", json!({"channel": "c"})).await;
    assert_eq!(r["error"]["code"], 106);
    let t = token(json!({"sub": "1", "channels": ["a", "b", "c"]}));
    let mut d = Client::open(&n.ws_url()).await;
    d.send_text(json!({"id": 1, "connect": {"token": t}}).to_string())
        .await;
    assert_eq!(d.closed().await.0, 3505);
}

#[tokio::test]
async fn oversized_frame_closes_3501() {
    let n = node_with(|c| c["client"]["max_message_size"] = json!(1024)).await;
    let mut by = bystander(&n).await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let big = json!({"id": 2, "publish": {"channel": "news", "data": "x".repeat(2000)}});
    c.send_text(big.to_string()).await;
    assert_eq!(c.closed().await.0, 3501);
    bystander_still_served(&n, &mut by).await;
}

#[tokio::test]
async fn malformed_input_closes_3501_without_disturbing_others() {
    let n = NodeProcess::start(base_config()).await;
    let mut by = bystander(&n).await;
    let cases: Vec<(&str, String)> = vec![
        ("malformed json", "{\"id\":1,".to_string()),
        ("wrong shape", "[1,2,3]".to_string()),
        (
            "id out of range",
            json!({"id": 99999999999u64, "ping": {}}).to_string(),
        ),
        ("negative id", json!({"id": -1, "ping": {}}).to_string()),
        (
            "missing id",
            json!({"subscribe": {"channel": "news"}}).to_string(),
        ),
        (
            "field of wrong type",
            json!({"id": 3, "subscribe": {"channel": 5}}).to_string(),
        ),
    ];
    for (name, frame) in cases {
        let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
        c.send_text(frame).await;
        assert_eq!(c.closed().await.0, 3501, "{name}");
    }
    // Binary frame on the JSON protocol.
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    c.send_binary(vec![1, 2, 3]).await;
    assert_eq!(c.closed().await.0, 3501, "binary");
    // A command before connect.
    let mut c = Client::open(&n.ws_url()).await;
    c.send_text(json!({"id": 1, "subscribe": {"channel": "news"}}).to_string())
        .await;
    assert_eq!(c.closed().await.0, 3501, "before connect");
    // Too many commands in one frame.
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    let frame: Vec<String> = (0..1001)
        .map(|i| json!({"id": i + 10, "ping": {}}).to_string())
        .collect();
    c.send_text(frame.join("\n")).await;
    assert_eq!(c.closed().await.0, 3501, "too many commands");
    bystander_still_served(&n, &mut by).await;
}

#[tokio::test]
async fn unknown_method_is_error_107_and_connection_stays() {
    let n = NodeProcess::start(base_config()).await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    c.send_text(json!({"id": 5, "frobnicate": {}}).to_string())
        .await;
    assert_eq!(c.reply(5).await["error"]["code"], 107);
    c.send_text(json!({"id": 6, "ping": {}, "presence": {"channel": "x"}}).to_string())
        .await;
    assert_eq!(c.reply(6).await["error"]["code"], 107);
    // Unknown extra fields are ignored.
    let r = c
        .command(
            "subscribe",
            json!({"channel": "news", "flag": 1, "tf": {"op": ""}, "delta": "fossil"}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    assert_eq!(c.command("ping", json!({})).await["ping"], json!({}));
}

#[tokio::test]
async fn command_rate_limit_111_then_3013() {
    let n = node_with(|c| {
        c["client"]["command_rate_limit"] = json!(1);
        c["client"]["command_rate_burst"] = json!(5);
        c["client"]["command_rate_disconnect_after"] = json!(20);
    })
    .await;
    let mut by = bystander(&n).await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    // connect used one token of the burst: 4 pings pass, the rest get 111.
    let frame: Vec<String> = (0..10)
        .map(|i| json!({"id": 100 + i, "ping": {}}).to_string())
        .collect();
    c.send_text(frame.join("\n")).await;
    let mut codes = Vec::new();
    for i in 0..10 {
        let r = c.reply(100 + i).await;
        codes.push(r["error"]["code"].as_u64().unwrap_or(0));
    }
    assert_eq!(codes, vec![0, 0, 0, 0, 111, 111, 111, 111, 111, 111]);
    let flood: Vec<String> = (0..30)
        .map(|i| json!({"id": 200 + i, "ping": {}}).to_string())
        .collect();
    c.send_text(flood.join("\n")).await;
    assert_eq!(c.closed().await.0, 3013);
    bystander_still_served(&n, &mut by).await;
}

#[tokio::test]
async fn origins_are_checked_on_upgrade() {
    let n = node_with(|c| c["client"]["allowed_origins"] = json!(["https://good.example"])).await;
    let err = Client::open_with_origin(&n.ws_url(), Some("https://evil.example"))
        .await
        .err()
        .expect("forbidden origin must be refused");
    assert!(err.to_string().contains("403"), "{err}");
    assert!(
        Client::open_with_origin(&n.ws_url(), Some("https://good.example"))
            .await
            .is_ok()
    );
    assert!(Client::open_with_origin(&n.ws_url(), None).await.is_ok());
    // Default (empty list): same host only.
    let n = node_with(|c| c["client"]["allowed_origins"] = json!([])).await;
    let err = Client::open_with_origin(&n.ws_url(), Some("https://evil.example")).await;
    assert!(err.is_err());
    let same = format!("http://{}", n.addr);
    assert!(
        Client::open_with_origin(&n.ws_url(), Some(&same))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn connect_timeout_closes_stale_3502() {
    let n = node_with(|c| c["client"]["connect_timeout"] = json!("500ms")).await;
    let mut c = Client::open(&n.ws_url()).await;
    assert_eq!(c.closed().await.0, 3502);
}

#[tokio::test]
async fn slow_consumer_is_closed_3008_and_others_get_everything() {
    let n = node_with(|c| {
        c["client"]["queue_max_size"] = json!(1048576);
        c["client"]["max_message_size"] = json!(65536);
        // The stuck client reads its close frame only at the end: keep its socket that long.
        c["client"]["ping_interval"] = json!("120s");
        c["client"]["pong_timeout"] = json!("60s");
    })
    .await;
    let (mut fast, _) = Client::connect(&n.ws_url(), &user_token("fast")).await;
    fast.command("subscribe", json!({"channel": "news"})).await;
    let (mut slow, _) = Client::connect(&n.ws_url(), &user_token("slow")).await;
    slow.command("subscribe", json!({"channel": "news"})).await;
    // `slow` stops reading now; `fast` reads in its own task. Publish ~24 MiB.
    let payload = "y".repeat(8 * 1024);
    let total: u64 = 3000;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < total {
            let p = fast.push().await;
            assert_eq!(p["pub"]["data"]["seq"], received, "order and completeness");
            received += 1;
            seen.store(received, std::sync::atomic::Ordering::Relaxed);
        }
        received
    });
    // The publisher stays at most two bursts ahead of the reading client, so its queue
    // stays far below the bound whatever the machine load; the stuck one overflows.
    for batch in 0..(total / 20) {
        while batch * 20 > progress.load(std::sync::atomic::Ordering::Relaxed) + 40 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let commands: Vec<Value> = (0..20)
            .map(|i| json!({"publish": {"channel": "news", "data": {"seq": batch * 20 + i, "p": payload}}}))
            .collect();
        n.api_ok("batch", json!({"commands": commands})).await;
    }
    assert_eq!(reader.await.unwrap(), total);
    let (code, reason) = slow.closed().await;
    assert_eq!((code, reason.as_str()), (3008, "slow"));
    let (_, metrics) = n.get("/metrics").await;
    assert!(
        metrics.contains("ferrocast_slow_consumer_closes_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn subscribing_to_ten_thousand_channels_is_capped_then_cut_off() {
    use ferrocast_tests::client::Event;
    let n = NodeProcess::start(base_config()).await;
    let mut by = bystander(&n).await;
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("greedy")).await;
    let (mut ok, mut limited, mut throttled) = (0, 0, 0);
    let mut close = None;
    'frames: for frame in 0..10u32 {
        let text: Vec<String> = (0..1000)
            .map(|i| {
                let id = 10 + frame * 1000 + i;
                json!({"id": id, "subscribe": {"channel": format!("ch{id}")}}).to_string()
            })
            .collect();
        c.send_text(text.join("\n")).await;
        let mut replies = 0;
        while replies < 1000 {
            match c.read_event(Duration::from_secs(10)).await {
                Some(Event::Json(r)) => {
                    replies += 1;
                    match r["error"]["code"].as_u64() {
                        None if r.get("subscribe").is_some() => ok += 1,
                        Some(106) => limited += 1,
                        Some(111) => throttled += 1,
                        _ => panic!("unexpected reply {r}"),
                    }
                }
                Some(Event::Closed(code, _)) => {
                    close = Some(code);
                    break 'frames;
                }
                None => panic!("no reply"),
            }
        }
    }
    // channel_limit 128, the rest of the 500-command burst gets 106, then 111 until
    // command_rate_disconnect_after (100) rejections in a row close the connection. The
    // bucket refills at 100/s while the frames are processed, so a slow (loaded) machine
    // lets a few more through as 106.
    println!("ok {ok}, 106: {limited}, 111: {throttled}, close {close:?}");
    assert_eq!(ok, 128);
    assert!((360..=480).contains(&limited), "{limited}");
    assert_eq!(throttled, 100);
    assert_eq!(close, Some(3013));
    bystander_still_served(&n, &mut by).await;
}

#[tokio::test]
async fn a_client_that_stopped_reading_has_its_socket_released() {
    let n = node_with(|c| {
        c["client"]["pong_timeout"] = json!("1s");
    })
    .await;
    let before = n.open_fds();
    let (mut stuck, _) = Client::connect(&n.ws_url(), &user_token("stuck")).await;
    stuck.command("subscribe", json!({"channel": "news"})).await;
    assert_eq!(n.open_fds(), before + 1);
    // It never reads again: the socket buffers fill first (the writer then blocks on the
    // socket), then its 1 MiB queue, and it is closed as slow. Its socket must not stay
    // open behind the blocked writer.
    let payload = "z".repeat(16 * 1024);
    let mut closed_as_slow = false;
    for _ in 0..2000 {
        let commands: Vec<Value> = (0..4)
            .map(|_| json!({"publish": {"channel": "news", "data": {"p": payload}}}))
            .collect();
        n.api_ok("batch", json!({"commands": commands})).await;
        let (_, metrics) = n.get("/metrics").await;
        if metrics.contains("ferrocast_slow_consumer_closes_total 1") {
            closed_as_slow = true;
            break;
        }
    }
    assert!(closed_as_slow, "the stuck client was never closed as slow");
    let mut released = false;
    for _ in 0..100 {
        if n.open_fds() == before {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(released, "the stuck client's socket is still open");
    drop(stuck);
}

/// Connects with `token`, then sends `n` pings one frame each without waiting for
/// answers, and keeps sending while it reads; returns the close code and reason the
/// client received, or `None` when the connection broke without one (a reset).
async fn flood_until_closed(
    url: &str,
    token: &str,
    n: usize,
    during: impl std::future::Future<Output = ()>,
) -> Option<(u16, String)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::Text(
        json!({"id": 1, "connect": {"token": token}})
            .to_string()
            .into(),
    ))
    .await
    .expect("send connect");
    let writer = tokio::spawn(async move {
        for i in 0..n {
            // Padded, so that much of the flood is still unread when the node closes.
            let ping = json!({"id": 10 + i, "ping": {}, "pad": "x".repeat(2000)}).to_string();
            if tx.send(Message::Text(ping.into())).await.is_err() {
                break;
            }
        }
        // Keep the connection open (and unread-from) a while, as a busy client would.
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let read = async {
        let mut closed = None;
        while let Some(msg) = rx.next().await {
            match msg {
                Ok(Message::Close(f)) => {
                    closed = Some(f.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                }
                Ok(_) => continue,
                // A reset (before or after the close frame) is a broken close: the
                // client may never see the code, or the replies queued before it.
                Err(e) => {
                    println!("connection error: {e}");
                    return None;
                }
            }
        }
        closed
    };
    let (closed, ()) = tokio::time::timeout(Duration::from_secs(15), async {
        tokio::join!(read, during)
    })
    .await
    .expect("the connection ended within 15 s");
    writer.abort();
    closed
}

#[tokio::test]
async fn close_codes_arrive_while_the_client_is_still_sending() {
    let n = node_with(|c| {
        c["client"]["command_rate_limit"] = json!(20);
        c["client"]["command_rate_burst"] = json!(20);
        c["client"]["command_rate_disconnect_after"] = json!(20);
    })
    .await;
    // Flooding a rate-limited connection: 3013, received as such, not as a reset.
    let closed = flood_until_closed(&n.ws_url(), &user_token("flood"), 300, async {}).await;
    assert_eq!(closed, Some((3013, "too many requests".to_string())));
    // A server-side disconnect meeting a flood of in-flight commands (from the API).
    let m = node_with(|c| c["client"]["command_rate_limit"] = json!(0)).await;
    let api = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        m.api_ok(
            "disconnect",
            json!({"user": "busy", "disconnect": {"code": 4999, "reason": "bye"}}),
        )
        .await;
    };
    let closed = flood_until_closed(&m.ws_url(), &user_token("busy"), 20_000, api).await;
    assert_eq!(closed, Some((4999, "bye".to_string())));
}

/// The same two cases through the real SDKs (centrifuge-js and centrifuge-python, JSON and
/// Protobuf): a flood over the rate limit ends in 3013, after which the SDK reconnects; a
/// 3503 from the API that meets in-flight commands arrives as 3503 and the SDK stays
/// disconnected (a terminal code, not a network error).
#[tokio::test]
async fn sdks_get_the_close_code_during_a_flood_and_do_not_reconnect_after_a_terminal_one() {
    use ferrocast_tests::compat::{Sdk, run_script};
    // The default limits: 100 commands/s, burst 500, 3013 after 100 refused in a row.
    let n = NodeProcess::start(base_config()).await;
    let runs = [
        (Sdk::Js, "terminal_close_js.mjs"),
        (Sdk::Python, "terminal_close_python.py"),
    ]
    .into_iter()
    .flat_map(|(sdk, script)| ["json", "protobuf"].map(|p| (sdk, script, p)))
    .map(|(sdk, script, protocol)| {
        let tag = format!(
            "{}-{protocol}",
            if matches!(sdk, Sdk::Js) { "js" } else { "py" }
        );
        let env = [
            ("COMPAT_WS_URL", n.ws_url()),
            ("COMPAT_API_URL", format!("http://{}/api", n.addr)),
            ("COMPAT_API_KEY", ferrocast_tests::node::API_KEY.to_string()),
            ("COMPAT_SECRET", ferrocast_tests::node::SECRET.to_string()),
            ("COMPAT_PROTOCOL", protocol.to_string()),
            ("COMPAT_CHANNEL", format!("chat:flood-{tag}")),
            ("COMPAT_USER", format!("flooder-{tag}")),
        ];
        let n = &n;
        async move { run_script(sdk, script, &env, &[n]).await }
    });
    futures_util::future::join_all(runs).await;
}
