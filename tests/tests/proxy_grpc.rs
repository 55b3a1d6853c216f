//! The proxy hooks over gRPC against a real backend (tests/compat/proxy_grpc_backend.py,
//! grpcio serving Centrifugo's `CentrifugoProxy` service) and a real node: the unary
//! hooks with their metadata, and subscription streams (unidirectional and
//! bidirectional) with what their end, failure and cancellation mean for client and
//! backend.

use ferrocast_protocol::protobuf::wire;
use ferrocast_tests::pbclient::{Command, PbClient};
use ferrocast_tests::{Client, GrpcBackend, NodeProcess, base_config, token};
use serde_json::{Value, json};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(5);

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn config(b: &GrpcBackend) -> Value {
    let mut cfg = base_config();
    let hook = || json!({"endpoint": b.endpoint(), "timeout": "2s"});
    cfg["client"]["proxy"] = json!({
        "connect": {
            "enabled": true,
            "endpoint": b.endpoint(),
            "http_headers": ["Authorization"],
            "grpc": {
                "static_metadata": {"x-static": "yes"},
                "credentials_key": "x-credential",
                "credentials_value": "secret",
            },
        },
    });
    cfg["channel"]["proxy"] = json!({
        "subscribe": hook(),
        "publish": hook(),
        "subscribe_stream": hook(),
    });
    let namespaces = cfg["channel"]["namespaces"].as_array_mut().unwrap();
    namespaces.push(json!({
        "name": "proxied",
        "subscribe_proxy_enabled": true,
        "publish_proxy_enabled": true,
    }));
    namespaces.push(json!({
        "name": "streams",
        "presence": true,
        "allow_presence_for_subscriber": true,
        "subscribe_stream_proxy_enabled": true,
    }));
    namespaces.push(json!({
        "name": "bidi",
        "subscribe_stream_proxy_enabled": true,
        "subscribe_stream_proxy_bidirectional": true,
    }));
    cfg["proxies"] = json!([
        {"name": "down", "endpoint": format!("grpc://127.0.0.1:{}", closed_port()), "timeout": "500ms"},
        {"name": "binary", "endpoint": b.endpoint(), "binary_encoding": true},
    ]);
    cfg["rpc"] = json!({
        "proxy": {"endpoint": b.endpoint(), "include_connection_meta": true, "timeout": "2s"},
        "without_namespace": {"proxy_enabled": true},
        "namespaces": [
            {"name": "down", "proxy_enabled": true, "proxy_name": "down"},
            {"name": "bin", "proxy_enabled": true, "proxy_name": "binary"},
        ],
    });
    cfg
}

async fn connect_as(n: &NodeProcess, user: &str) -> (Client, Value) {
    let mut c = Client::open(&n.ws_url()).await;
    let r = c.command("connect", json!({"data": {"user": user}})).await;
    assert!(r.get("connect").is_some(), "connect failed: {r}");
    (c, r["connect"].clone())
}

#[tokio::test]
async fn grpc_hooks_decide_as_http_ones_do() {
    let b = GrpcBackend::start().await;
    let n = NodeProcess::start(config(&b)).await;
    let (mut c, result) = connect_as(&n, "alice").await;
    assert_eq!(result["data"], json!({"welcome": "alice"}), "{result}");
    let call = b
        .wait_for("connect", &json!({"client": result["client"]}), WITHIN)
        .await
        .expect("connect call");
    assert_eq!(call["transport"], "websocket");
    assert_eq!(call["protocol"], "json");
    // Static metadata and the per-call credentials go with every call.
    assert_eq!(call["static"], "yes", "{call}");
    assert_eq!(call["credential"], "secret", "{call}");

    // Allow-listed upgrade headers become metadata.
    let mut h = Client::open_with_headers(&n.ws_url(), &[("Authorization", "Bearer bob")])
        .await
        .unwrap();
    let r = h.command("connect", json!({})).await;
    assert!(r.get("connect").is_some(), "{r}");
    let r = h.command("rpc", json!({"method": "echo", "data": 1})).await;
    assert_eq!(r["rpc"]["data"]["user"], "bob", "{r}");
    // The backend's disconnect closes with its code; no credentials at all is 3501.
    let mut k = Client::open(&n.ws_url()).await;
    let closed = k
        .try_command("connect", json!({"data": {"kick": true}}))
        .await;
    assert_eq!(closed.unwrap_err(), (4501, "go away".to_string()));
    let mut none = Client::open(&n.ws_url()).await;
    let closed = none.try_command("connect", json!({"data": {}})).await;
    assert_eq!(closed.unwrap_err().0, 3501);

    // rpc: the result's data with user and connection meta; the backend's error.
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
    // binary_encoding: payloads travel base64 in b64data.
    let r = c
        .command("rpc", json!({"method": "bin:echo", "data": {"q": 2}}))
        .await;
    assert_eq!(r["rpc"]["data"]["echo"], json!({"q": 2}), "{r}");
    let call = b
        .wait_for("rpc", &json!({"method": "bin:echo"}), WITHIN)
        .await
        .expect("rpc call");
    assert_eq!(call["encoding"], "binary");
    assert_eq!(call["b64data"], "eyJxIjoyfQ==", "{call}");
    // A backend nobody listens on: error 100, and the connection stays.
    let r = c
        .command("rpc", json!({"method": "down:x", "data": {}}))
        .await;
    assert_eq!(r["error"]["code"], 100, "{r}");

    // subscribe and publish through their hooks.
    let r = c
        .command("subscribe", json!({"channel": "proxied:room"}))
        .await;
    assert_eq!(
        r["subscribe"]["data"],
        json!({"hello": "proxied:room"}),
        "{r}"
    );
    let r = c
        .command("subscribe", json!({"channel": "proxied:denied-1"}))
        .await;
    assert_eq!(
        (r["error"]["code"].as_u64(), r["error"]["message"].as_str()),
        (Some(1001), Some("not for you"))
    );
    let r = c
        .command(
            "publish",
            json!({"channel": "proxied:room", "data": {"m": 1}}),
        )
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    assert_eq!(
        c.push().await["pub"]["data"],
        json!({"published_by": "alice", "original": {"m": 1}})
    );

    // A Protobuf client through the same hooks.
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
    let call = b
        .wait_for("connect", &json!({"client": connected.client}), WITHIN)
        .await
        .expect("connect call");
    assert_eq!(call["protocol"], "protobuf");
    c.command("ping", json!({})).await;
}

/// Reads `n` publications of `channel`; panics on anything else.
async fn publications(c: &mut Client, channel: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let p = c.push().await;
        assert_eq!(p["channel"], channel, "{p}");
        assert!(p.get("pub").is_some(), "expected a publication: {p}");
        out.push(p["pub"]["data"].clone());
    }
    out
}

fn user_token(user: &str) -> String {
    token(json!({"sub": user}))
}

#[tokio::test]
async fn subscription_streams_carry_the_backends_publications_to_one_client() {
    let b = GrpcBackend::start().await;
    let n = NodeProcess::start(config(&b)).await;
    let (mut a, ra) = Client::connect(&n.ws_url(), &user_token("alice")).await;
    let a_id = ra["client"].clone();

    // 1,000 rows in 10 batches with progress, in order, exactly once.
    let r = a
        .command("subscribe", json!({"channel": "streams:rows"}))
        .await;
    assert_eq!(
        r["subscribe"]["data"],
        json!({"stream": "streams:rows"}),
        "{r}"
    );
    let got = publications(&mut a, "streams:rows", 20).await;
    let mut rows = Vec::new();
    for (i, pair) in got.chunks(2).enumerate() {
        assert_eq!(pair[0]["type"], "rows");
        assert_eq!(pair[0]["batch"], i);
        rows.extend(
            pair[0]["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap()),
        );
        assert_eq!(
            pair[1],
            json!({"type": "progress", "done": (i + 1) * 100, "total": 1000})
        );
    }
    assert_eq!(rows, (0..1000).collect::<Vec<u64>>());
    // Then the backend closed the stream: the client is unsubscribed (2000).
    let p = a.push().await;
    assert_eq!(
        (p["channel"].as_str(), p["unsubscribe"]["code"].as_u64()),
        (Some("streams:rows"), Some(2000)),
        "{p}"
    );
    b.wait_for("finished", &json!({"client": a_id}), WITHIN)
        .await
        .expect("the backend finished the stream");

    // Another client leaves halfway: the backend sees its call cancelled.
    let (mut c, rc) = Client::connect(&n.ws_url(), &user_token("carol")).await;
    let c_id = rc["client"].clone();
    c.command("subscribe", json!({"channel": "streams:rows"}))
        .await;
    publications(&mut c, "streams:rows", 6).await;
    let r = c
        .command("unsubscribe", json!({"channel": "streams:rows"}))
        .await;
    assert_eq!(r["unsubscribe"], json!({}), "{r}");
    b.wait_for("cancelled", &json!({"client": c_id}), WITHIN)
        .await
        .expect("the backend saw the unsubscribe");
    // And one that disconnects mid-stream.
    let (mut d, rd) = Client::connect(&n.ws_url(), &user_token("dan")).await;
    let d_id = rd["client"].clone();
    d.command("subscribe", json!({"channel": "streams:rows"}))
        .await;
    publications(&mut d, "streams:rows", 1).await;
    d.close().await;
    b.wait_for("cancelled", &json!({"client": d_id}), WITHIN)
        .await
        .expect("the backend saw the disconnect");
    // Neither ran on to the end (the whole stream takes about one second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let finished: Vec<Value> = b.events_of("finished");
    assert!(
        finished
            .iter()
            .all(|e| e["client"] != c_id && e["client"] != d_id),
        "{finished:?}"
    );

    // The backend ends a stream: unsubscribe 2000; a failing one: 2500 (subscribe again).
    let r = a
        .command("subscribe", json!({"channel": "streams:end"}))
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    assert_eq!(
        publications(&mut a, "streams:end", 2).await,
        vec![json!({"n": 0}), json!({"n": 1})]
    );
    let p = a.push().await;
    assert_eq!(
        (p["channel"].as_str(), p["unsubscribe"]["code"].as_u64()),
        (Some("streams:end"), Some(2000)),
        "{p}"
    );
    a.command("subscribe", json!({"channel": "streams:fail"}))
        .await;
    publications(&mut a, "streams:fail", 2).await;
    let p = a.push().await;
    assert_eq!(
        (p["channel"].as_str(), p["unsubscribe"]["code"].as_u64()),
        (Some("streams:fail"), Some(2500)),
        "{p}"
    );
    // The backend refuses: its error is the reply.
    let r = a
        .command("subscribe", json!({"channel": "streams:denied-1"}))
        .await;
    assert_eq!(r["error"]["code"], 1001, "{r}");

    // A stream subscription is a subscription: presence, and channel publications too.
    a.command("subscribe", json!({"channel": "streams:hold"}))
        .await;
    let p = a.push().await;
    assert_eq!(p["pub"]["data"], json!({"held": true}), "{p}");
    assert_eq!(p["pub"]["tags"], json!({"k": "v"}), "{p}");
    let presence = a
        .command("presence", json!({"channel": "streams:hold"}))
        .await;
    assert!(
        presence["presence"]["presence"][a_id.as_str().unwrap()].is_object(),
        "{presence}"
    );
    n.api_ok(
        "publish",
        json!({"channel": "streams:hold", "data": {"from": "api"}}),
    )
    .await;
    assert_eq!(
        publications(&mut a, "streams:hold", 1).await,
        vec![json!({"from": "api"})]
    );
    // A unidirectional stream takes no publications from the client.
    let r = a
        .command("publish", json!({"channel": "streams:hold", "data": {}}))
        .await;
    assert_eq!(r["error"]["code"], 108, "{r}");
    let metrics = n.get("/metrics").await.1;
    assert!(metrics.contains("ferrocast_proxy_streams 1"), "{metrics}");
    a.command("unsubscribe", json!({"channel": "streams:hold"}))
        .await;
    b.wait_for(
        "cancelled",
        &json!({"client": a_id, "channel": "streams:hold"}),
        WITHIN,
    )
    .await
    .expect("the backend saw the unsubscribe");
    let metrics = n.get("/metrics").await.1;
    assert!(metrics.contains("ferrocast_proxy_streams 0"), "{metrics}");
    a.command("ping", json!({})).await;
}

#[tokio::test]
async fn bidirectional_streams_take_the_clients_publications() {
    let b = GrpcBackend::start().await;
    let n = NodeProcess::start(config(&b)).await;
    let (mut a, ra) = Client::connect(&n.ws_url(), &user_token("alice")).await;
    let r = a
        .command("subscribe", json!({"channel": "bidi:echo"}))
        .await;
    assert_eq!(r["subscribe"]["data"], json!({"bidi": "bidi:echo"}), "{r}");
    for i in 0..20 {
        let r = a
            .command("publish", json!({"channel": "bidi:echo", "data": {"i": i}}))
            .await;
        assert!(r.get("publish").is_some(), "{r}");
    }
    let got = publications(&mut a, "bidi:echo", 20).await;
    let want: Vec<Value> = (0..20).map(|i| json!({"echo": {"i": i}})).collect();
    assert_eq!(got, want);
    // Not subscribed: nowhere to publish to.
    let r = a
        .command("publish", json!({"channel": "bidi:other", "data": {}}))
        .await;
    assert_eq!(r["error"]["code"], 108, "{r}");
    a.command("unsubscribe", json!({"channel": "bidi:echo"}))
        .await;
    b.wait_for("bidi_closed", &json!({"client": ra["client"]}), WITHIN)
        .await
        .expect("the backend saw the stream end");

    // Protobuf: the same stream, binary frames.
    let (mut pb, _) = PbClient::connect(&n.ws_url(), &user_token("bob")).await;
    let r = pb
        .command(Command {
            subscribe: Some(wire::SubscribeRequest {
                channel: "bidi:echo".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert!(r.subscribe.is_some(), "{r:?}");
    let r = pb
        .command(Command {
            publish: Some(wire::PublishRequest {
                channel: "bidi:echo".into(),
                data: br#"{"pb": true}"#.to_vec().into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert!(r.publish.is_some(), "{r:?}");
    let p = pb.push().await;
    let data: Value = serde_json::from_slice(&p.r#pub.expect("publication").data).unwrap();
    assert_eq!(data, json!({"echo": {"pb": true}}));
}
