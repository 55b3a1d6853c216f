//! The proxy hooks against a real application backend (tests/compat/proxy_backend.py,
//! aiohttp) and real nodes: connect without a token, refresh, subscribe, publish,
//! sub_refresh and rpc, what each answer means for the client (JSON and Protobuf), and
//! the backend's faults with their exact outcomes and no leak.

use ferrocast_protocol::protobuf::wire;
use ferrocast_tests::compat::{Sdk, run_script};
use ferrocast_tests::pbclient::{Command, PbClient};
use ferrocast_tests::{Backend, Backplane, Client, NodeProcess, base_config};
use serde_json::{Value, json};
use std::time::Duration;

/// A node whose hooks all go to `b`; namespace `proxied` uses the subscribe, publish and
/// sub_refresh proxies; rpc without namespace and `fault`-ish rpc namespaces use proxies
/// pointing at the backend's fault endpoints.
fn config(b: &Backend, refresh: bool) -> Value {
    let mut cfg = base_config();
    let hook = |h: &str| json!({"endpoint": b.hook(h), "timeout": "2s"});
    cfg["client"]["proxy"] = json!({
        "connect": {"enabled": true, "endpoint": b.hook("connect"), "http_headers": ["Authorization", "X-Tenant"]},
        "refresh": {"enabled": refresh, "endpoint": b.hook("refresh"), "include_connection_meta": true},
    });
    cfg["channel"]["proxy"] = json!({
        "subscribe": hook("subscribe"),
        "publish": hook("publish"),
        "sub_refresh": hook("sub_refresh"),
    });
    cfg["channel"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "proxied",
            "presence": true,
            "history_size": 10,
            "history_ttl": "60s",
            "allow_presence_for_subscriber": true,
            "allow_history_for_subscriber": true,
            "subscribe_proxy_enabled": true,
            "publish_proxy_enabled": true,
            "sub_refresh_proxy_enabled": true,
        }));
    let fault = |name: &str, kind: &str| json!({"name": name, "endpoint": b.url(&format!("/fault/{kind}")), "timeout": "500ms"});
    let mut transformed = fault("t500", "status500");
    transformed["http"] = json!({"status_to_code_transforms": [
        {"status_code": 500, "to_error": {"code": 1500, "message": "backend is down"}}
    ]});
    cfg["proxies"] = json!([
        fault("status500", "status500"),
        fault("garbage", "garbage"),
        fault("huge", "huge"),
        fault("hang", "hang"),
        fault("close", "close"),
        transformed,
    ]);
    let mut rpc_namespaces: Vec<Value> = ["status500", "garbage", "huge", "hang", "close", "t500"]
        .iter()
        .map(|n| json!({"name": n, "proxy_enabled": true, "proxy_name": n}))
        .collect();
    rpc_namespaces.push(json!({"name": "off"}));
    cfg["rpc"] = json!({
        "proxy": {"endpoint": b.hook("rpc"), "include_connection_meta": true, "timeout": "2s"},
        "without_namespace": {"proxy_enabled": true},
        "namespaces": rpc_namespaces,
    });
    cfg
}

async fn connect_as(n: &NodeProcess, user: &str) -> (Client, Value) {
    let mut c = Client::open(&n.ws_url()).await;
    let r = c
        .command(
            "connect",
            json!({"data": {"user": user}, "name": "rust-test"}),
        )
        .await;
    assert!(r.get("connect").is_some(), "connect failed: {r}");
    (c, r["connect"].clone())
}

#[tokio::test]
async fn the_connect_proxy_decides_who_connects() {
    let b = Backend::start().await;
    let n = NodeProcess::start(config(&b, false)).await;
    let (mut c, result) = connect_as(&n, "alice").await;
    assert_eq!(result["data"], json!({"welcome": "alice"}));
    assert!(result["expires"].is_null(), "{result}");
    // The backend's channels are server-side subscriptions (through the subscribe proxy's
    // namespace options, not its hook: server-side subscriptions are not asked for).
    assert!(
        result["subs"]["proxied:personal-alice"].is_object(),
        "{result}"
    );
    let call = &b.calls_of("connect").await[0];
    assert_eq!(call["body"]["client"], result["client"]);
    assert_eq!(call["body"]["transport"], "websocket");
    assert_eq!(call["body"]["protocol"], "json");
    assert_eq!(call["body"]["encoding"], "json");
    assert_eq!(call["body"]["name"], "rust-test");
    assert_eq!(call["body"]["data"], json!({"user": "alice"}));
    // Who the backend said: presence shows the user and its info.
    let p = c
        .command("presence", json!({"channel": "proxied:personal-alice"}))
        .await;
    let entry = &p["presence"]["presence"][result["client"].as_str().unwrap()];
    assert_eq!(entry["user"], "alice");
    assert_eq!(entry["conn_info"], json!({"via": "proxy", "user": "alice"}));

    // Allow-listed upgrade headers go to the backend, others do not.
    let mut h = Client::open_with_headers(
        &n.ws_url(),
        &[
            ("Authorization", "Bearer bob"),
            ("X-Secret", "s"),
            ("X-Tenant", "acme"),
        ],
    )
    .await
    .unwrap();
    let r = h.command("connect", json!({})).await;
    assert!(r.get("connect").is_some(), "{r}");
    let calls = b.calls_of("connect").await;
    let headers = &calls.last().unwrap()["headers"];
    assert_eq!(headers["authorization"], "Bearer bob");
    assert_eq!(headers["x-tenant"], "acme");
    assert!(headers.get("x-secret").is_none(), "{headers}");

    // Refused: the backend's error is the reply, and the client may try again.
    let mut r1 = Client::open(&n.ws_url()).await;
    let e = r1
        .command("connect", json!({"data": {"refuse": true}}))
        .await;
    assert_eq!(e["error"]["code"], 1000, "{e}");
    assert_eq!(e["error"]["message"], "refused by backend");
    let ok = r1
        .command("connect", json!({"data": {"user": "carol"}}))
        .await;
    assert!(ok.get("connect").is_some(), "{ok}");
    // Disconnected with the backend's code and reason.
    let mut r2 = Client::open(&n.ws_url()).await;
    let closed = r2
        .try_command("connect", json!({"data": {"kick": true}}))
        .await;
    assert_eq!(closed.unwrap_err(), (4501, "go away".to_string()));
    // No credentials at all: bad request, as in Centrifugo.
    let mut r3 = Client::open(&n.ws_url()).await;
    let closed = r3.try_command("connect", json!({"data": {}})).await;
    assert_eq!(closed.unwrap_err().0, 3501);

    // A Protobuf client through the same hook.
    let mut pb = PbClient::open(&n.ws_url()).await;
    let r = pb
        .command(Command {
            connect: Some(wire::ConnectRequest {
                data: br#"{"user": "dave"}"#.to_vec().into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let connected = r.connect.clone().unwrap_or_else(|| panic!("{r:?}"));
    let data: Value = serde_json::from_slice(&connected.data).unwrap();
    assert_eq!(data, json!({"welcome": "dave"}));
    let calls = b.calls_of("connect").await;
    assert_eq!(calls.last().unwrap()["body"]["protocol"], "protobuf");
    c.command("ping", json!({})).await;
}

#[tokio::test]
async fn rpc_subscribe_and_publish_go_through_their_proxies() {
    let b = Backend::start().await;
    let n = NodeProcess::start(config(&b, false)).await;
    let (mut c, _) = connect_as(&n, "alice").await;
    // rpc: the data of the result, with the user and the connection meta.
    let r = c
        .command("rpc", json!({"method": "echo", "data": {"q": 1}}))
        .await;
    assert_eq!(
        r["rpc"]["data"],
        json!({"echo": {"q": 1}, "user": "alice", "meta": {"tenant": "t-alice"}})
    );
    let r = c
        .command("rpc", json!({"method": "fail", "data": {}}))
        .await;
    assert_eq!(
        (r["error"]["code"].as_u64(), r["error"]["message"].as_str()),
        (Some(1003), Some("nope"))
    );
    let r = c
        .command("rpc", json!({"method": "off:x", "data": {}}))
        .await;
    assert_eq!(r["error"]["code"], 108, "namespace without proxy: {r}");
    let r = c
        .command("rpc", json!({"method": "nowhere:x", "data": {}}))
        .await;
    assert_eq!(r["error"]["code"], 104, "no such namespace: {r}");
    // subscribe: allowed with the backend's info and data, refused, or disconnected.
    let r = c
        .command("subscribe", json!({"channel": "proxied:room"}))
        .await;
    assert_eq!(
        r["subscribe"]["data"],
        json!({"hello": "proxied:room"}),
        "{r}"
    );
    let p = c
        .command("presence", json!({"channel": "proxied:room"}))
        .await;
    let entries: Vec<&Value> = p["presence"]["presence"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(entries[0]["chan_info"], json!({"role": "reader"}));
    let r = c
        .command("subscribe", json!({"channel": "proxied:denied-1"}))
        .await;
    assert_eq!(r["error"]["code"], 1001);
    // publish: the backend's data replaces the client's; skip_history keeps it out.
    let (mut other, _) = connect_as(&n, "bob").await;
    other
        .command("subscribe", json!({"channel": "proxied:room"}))
        .await;
    let r = c
        .command(
            "publish",
            json!({"channel": "proxied:room", "data": {"m": 1}}),
        )
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    let want = json!({"published_by": "alice", "original": {"m": 1}});
    assert_eq!(other.push().await["pub"]["data"], want);
    assert_eq!(c.push().await["pub"]["data"], want);
    c.command(
        "publish",
        json!({"channel": "proxied:room", "data": {"m": 2, "skip": true}}),
    )
    .await;
    other.push().await;
    let h = c
        .command("history", json!({"channel": "proxied:room", "limit": -1}))
        .await;
    assert_eq!(
        h["history"]["publications"].as_array().unwrap().len(),
        1,
        "{h}"
    );
    let r = c
        .command("publish", json!({"channel": "proxied:nopub-1", "data": {}}))
        .await;
    assert_eq!(r["error"]["code"], 1002);
    let publish_call = &b.calls_of("publish").await[0];
    assert_eq!(publish_call["body"]["user"], "alice");
    assert_eq!(publish_call["body"]["channel"], "proxied:room");
    // A disconnect from a hook closes with its code.
    assert_eq!(
        c.try_command("rpc", json!({"method": "boom", "data": {}}))
            .await
            .unwrap_err(),
        (4503, "rpc said bye".to_string())
    );
    let closed = other
        .try_command("subscribe", json!({"channel": "proxied:kick-1"}))
        .await;
    assert_eq!(closed.unwrap_err(), (4502, "kicked".to_string()));
}

#[tokio::test]
async fn the_server_refreshes_connections_and_subscriptions_through_the_proxies() {
    let b = Backend::start().await;
    let n = NodeProcess::start(config(&b, true)).await;
    // A connection that expires in 1 s is extended by the backend, silently.
    let mut c = Client::open(&n.ws_url()).await;
    let r = c
        .command("connect", json!({"data": {"user": "bob", "ttl": 1}}))
        .await;
    assert!(
        r["connect"]["expires"].is_null(),
        "the server refreshes: {r}"
    );
    // A subscription that expires in 1 s, extended by the sub_refresh proxy.
    c.command("subscribe", json!({"channel": "proxied:kept-ttl1"}))
        .await;
    // One that the backend does not extend: unsubscribe push 2501.
    c.command("subscribe", json!({"channel": "proxied:gone-noext-ttl1"}))
        .await;
    let push = c
        .try_push(Duration::from_secs(5))
        .await
        .expect("unsubscribe push");
    assert_eq!(push["channel"], "proxied:gone-noext-ttl1");
    assert_eq!(push["unsubscribe"]["code"], 2501, "{push}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.command("ping", json!({})).await.get("ping").is_some());
    let refreshes = b.calls_of("refresh").await;
    assert!(!refreshes.is_empty(), "no refresh call");
    assert_eq!(refreshes[0]["body"]["user"], "bob");
    assert_eq!(refreshes[0]["body"]["meta"], json!({"tenant": "t-bob"}));
    let sub_refreshes = b.calls_of("sub_refresh").await;
    assert!(
        sub_refreshes
            .iter()
            .any(|c| c["body"]["channel"] == "proxied:kept-ttl1"),
        "{sub_refreshes:?}"
    );
    // The backend ends a connection it does not extend: 3005.
    let mut e = Client::open(&n.ws_url()).await;
    e.command("connect", json!({"data": {"user": "expire-me", "ttl": 1}}))
        .await;
    assert_eq!(e.closed().await.0, 3005);
}

#[tokio::test]
async fn backend_faults_get_their_exact_outcome_and_leak_nothing() {
    let b = Backend::start().await;
    let n = NodeProcess::start(config(&b, false)).await;
    let (mut bystander, _) = connect_as(&n, "bystander").await;
    bystander
        .command("subscribe", json!({"channel": "news"}))
        .await;
    let (mut c, _) = connect_as(&n, "alice").await;
    let fds_before = n.open_fds();
    for (ns, code) in [
        ("status500", 100),
        ("garbage", 100),
        ("huge", 100),
        ("hang", 100),
        ("close", 100),
        ("t500", 1500),
    ] {
        let r = c
            .command("rpc", json!({"method": format!("{ns}:m"), "data": {}}))
            .await;
        assert_eq!(r["error"]["code"], code, "{ns}: {r}");
        if code == 100 {
            assert_eq!(r["error"]["temporary"], true, "{ns}: {r}");
        } else {
            assert_eq!(r["error"]["message"], "backend is down");
        }
        // The connection stays usable, and nobody else notices.
        assert!(
            c.command("ping", json!({})).await.get("ping").is_some(),
            "{ns}"
        );
        n.api_ok("publish", json!({"channel": "news", "data": {"after": ns}}))
            .await;
        assert_eq!(bystander.push().await["pub"]["data"]["after"], ns);
    }
    // Calls that never get an answer, many at once, from clients that leave before it:
    // nothing is left behind.
    for _ in 0..20 {
        let (mut gone, _) = connect_as(&n, "gone").await;
        gone.send_text(json!({"id": 1, "rpc": {"method": "hang:m", "data": {}}}).to_string())
            .await;
        gone.close().await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, metrics) = n.get("/metrics").await;
    let connections = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocast_connections "))
        .map(|v| v.trim().to_string());
    assert_eq!(connections.as_deref(), Some("2"), "{metrics}");
    let fds_after = n.open_fds();
    assert!(
        fds_after <= fds_before + 8,
        "descriptors before {fds_before}, after {fds_after}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferrocast_proxy_calls_total{")
                && l.contains("proxy=\"hang\"")
                && l.contains("result=\"timeout\"")),
        "{metrics}"
    );
}

/// Nodes on `backplane` (when given) with the proxies of [`config`].
async fn proxied_nodes(b: &Backend, backplane: Option<&Backplane>, n: usize) -> Vec<NodeProcess> {
    let mut cfg = config(b, false);
    if let Some(bp) = backplane {
        let engine = bp.node_config("px");
        cfg["engine"] = engine["engine"].clone();
    }
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(NodeProcess::start(cfg.clone()).await);
    }
    for node in &nodes {
        node.wait_ready(200).await;
    }
    nodes
}

async fn sdk_through_proxies(sdk: Sdk, protocol: &str, nodes: &[NodeProcess]) {
    let script = match sdk {
        Sdk::Js => "proxy_js.mjs",
        Sdk::Python => "proxy_python.py",
    };
    let env = [
        ("COMPAT_WS_URL", nodes[0].ws_url()),
        ("COMPAT_WS_URL_2", nodes[nodes.len() - 1].ws_url()),
        ("COMPAT_PROTOCOL", protocol.to_string()),
    ];
    let refs: Vec<&NodeProcess> = nodes.iter().collect();
    run_script(sdk, script, &env, &refs).await;
}

#[tokio::test]
async fn sdks_through_the_proxies_across_three_nodes_on_redis() {
    let b = Backend::start().await;
    let bp = Backplane::standalone().await;
    let nodes = proxied_nodes(&b, Some(&bp), 3).await;
    sdk_through_proxies(Sdk::Js, "json", &nodes).await;
    sdk_through_proxies(Sdk::Python, "json", &nodes).await;
}

#[tokio::test]
async fn sdks_through_the_proxies_in_protobuf() {
    let b = Backend::start().await;
    let nodes = proxied_nodes(&b, None, 1).await;
    sdk_through_proxies(Sdk::Js, "protobuf", &nodes).await;
    sdk_through_proxies(Sdk::Python, "protobuf", &nodes).await;
}
