//! OpenTelemetry: real nodes export spans over OTLP/gRPC to a collector owned by the
//! test, and one trace links the caller, the API call (or command stream entry), the
//! publish and the fan-out on every node, carried across nodes through Redis.

use ferrocast_tests::node::{API_KEY, cluster_config, now};
use ferrocast_tests::otlp::{Collector, ReceivedSpan};
use ferrocast_tests::{Client, NodeProcess, RedisProcess, http_request, token};
use serde_json::json;
use std::time::Duration;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const BACKEND_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const BACKEND_SPAN: &str = "b7ad6b7169203331";
/// Two entries appended together: applied as one run (one Redis transaction).
const RUN_TRACES: [&str; 2] = [
    "1af7651916cd43dd8448eb211c80319c",
    "2af7651916cd43dd8448eb211c80319c",
];

fn find<'a>(spans: &'a [ReceivedSpan], name: &str, parent: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent)
        .collect()
}

/// The chain under the span `root_parent`: `first` (api or ingest) → publish → one
/// fan_out per node. Returns a description of what is missing, if anything.
fn chain_missing(
    spans: &[ReceivedSpan],
    trace: &str,
    first: &str,
    root_parent: &str,
) -> Option<String> {
    let spans: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .cloned()
        .collect();
    let Some(head) = find(&spans, first, root_parent).into_iter().next() else {
        return Some(format!("no {first} span under {root_parent}"));
    };
    let Some(publish) = find(&spans, "publish", &head.span_id).into_iter().next() else {
        return Some(format!("no publish span under {first}"));
    };
    let mut nodes: Vec<&str> = find(&spans, "fan_out", &publish.span_id)
        .iter()
        .map(|s| s.instance.as_str())
        .collect();
    nodes.sort();
    if nodes != ["node-0", "node-1"] {
        return Some(format!("fan_out spans under publish on {nodes:?}"));
    }
    None
}

#[tokio::test]
async fn one_trace_follows_a_publish_to_every_node() {
    let collector = Collector::start().await;
    let redis = RedisProcess::start().await;
    let mut cfg = cluster_config(&[redis.url()], "otel");
    cfg["opentelemetry"] = json!({"enabled": true, "endpoint": collector.endpoint()});
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut c = cfg.clone();
        c["node"] = json!({"name": format!("node-{i}")});
        nodes.push(NodeProcess::start_with(c, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]).await);
    }
    for n in &nodes {
        n.wait_ready(200).await;
    }
    let mut clients = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let t = token(json!({"sub": format!("u{i}"), "exp": now() + 600}));
        let (mut c, _) = Client::connect(&n.ws_url(), &t).await;
        let r = c.command("subscribe", json!({"channel": "news"})).await;
        assert!(r.get("subscribe").is_some(), "{r}");
        clients.push(c);
    }

    // 1. A backend calls the HTTP API with its own trace context.
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, body) = http_request(
        nodes[0].addr,
        "POST",
        "/api/publish",
        &[("X-API-Key", API_KEY), ("traceparent", &traceparent)],
        br#"{"channel":"news","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for c in &mut clients {
        let p = c.push().await;
        assert_eq!(p["pub"]["data"]["n"], 1, "{p}");
    }

    // 2. A backend appends to the command stream with a `traceparent` field.
    let mut conn = redis.connection().await;
    let backend_parent = format!("00-{BACKEND_TRACE}-{BACKEND_SPAN}-01");
    let _: String = redis::cmd("XADD")
        .arg("otel:api")
        .arg("*")
        .arg("method")
        .arg("publish")
        .arg("payload")
        .arg(r#"{"channel":"news","data":{"n":2}}"#)
        .arg("traceparent")
        .arg(&backend_parent)
        .query_async(&mut conn)
        .await
        .expect("XADD");
    for c in &mut clients {
        let p = c.push().await;
        assert_eq!(p["pub"]["data"]["n"], 2, "{p}");
    }

    // 2b. Two entries in one transaction: the consumer reads them together and applies
    // them as one run; each keeps its own trace.
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (n, trace) in RUN_TRACES.iter().enumerate() {
        pipe.cmd("XADD")
            .arg("otel:api")
            .arg("*")
            .arg("method")
            .arg("publish")
            .arg("payload")
            .arg(json!({"channel": "news", "data": {"n": 20 + n}}).to_string())
            .arg("traceparent")
            .arg(format!("00-{trace}-{BACKEND_SPAN}-01"))
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.expect("XADD x2");
    for c in &mut clients {
        for n in [20, 21] {
            let p = c.push().await;
            assert_eq!(p["pub"]["data"]["n"], n, "{p}");
        }
    }

    let spans = collector
        .wait_for(Duration::from_secs(20), |s| {
            chain_missing(s, CALLER_TRACE, "api", CALLER_SPAN).is_none()
                && chain_missing(s, BACKEND_TRACE, "ingest", BACKEND_SPAN).is_none()
                && RUN_TRACES
                    .iter()
                    .all(|t| chain_missing(s, t, "ingest", BACKEND_SPAN).is_none())
        })
        .await;
    for t in RUN_TRACES {
        assert_eq!(
            chain_missing(&spans, t, "ingest", BACKEND_SPAN),
            None,
            "command stream run, trace {t}; spans: {spans:#?}"
        );
    }
    assert_eq!(
        chain_missing(&spans, CALLER_TRACE, "api", CALLER_SPAN),
        None,
        "HTTP API trace; spans: {spans:#?}"
    );
    assert_eq!(
        chain_missing(&spans, BACKEND_TRACE, "ingest", BACKEND_SPAN),
        None,
        "command stream trace; spans: {spans:#?}"
    );
    let api = spans
        .iter()
        .find(|s| s.trace_id == CALLER_TRACE && s.name == "api")
        .expect("api span");
    assert_eq!(api.instance, "node-0");
    assert_eq!(
        api.attributes.get("api.method").map(String::as_str),
        Some("publish")
    );
    let fan_out = spans
        .iter()
        .find(|s| s.trace_id == CALLER_TRACE && s.name == "fan_out")
        .expect("fan_out span");
    assert_eq!(
        fan_out.attributes.get("channel").map(String::as_str),
        Some("news")
    );
    assert_eq!(
        fan_out.attributes.get("subscribers").map(String::as_str),
        Some("1")
    );

    // 3. A client publish starts a trace of its own, followed onto the other node.
    let r = clients[1]
        .command("publish", json!({"channel": "news", "data": {"n": 3}}))
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    let spans = collector
        .wait_for(Duration::from_secs(20), |s| {
            s.iter().any(|p| {
                p.name == "publish"
                    && p.parent_span_id.is_empty()
                    && s.iter()
                        .filter(|f| f.name == "fan_out" && f.parent_span_id == p.span_id)
                        .count()
                        == 2
            })
        })
        .await;
    let root = spans
        .iter()
        .find(|p| p.name == "publish" && p.parent_span_id.is_empty())
        .unwrap_or_else(|| panic!("no root publish span: {spans:#?}"));
    assert_eq!(root.instance, "node-1");
    assert_eq!(
        find(&spans, "fan_out", &root.span_id).len(),
        2,
        "{spans:#?}"
    );
}

#[tokio::test]
async fn no_trace_context_travels_when_export_is_off() {
    // With export off (the default) the envelope carries no trace context: read the raw
    // pub/sub message a node publishes and check its `trace` field is absent.
    let redis = RedisProcess::start().await;
    let node = NodeProcess::start(cluster_config(&[redis.url()], "plain")).await;
    node.wait_ready(200).await;
    let client = redis::Client::open(redis.url()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.psubscribe("plain:*").await.expect("psubscribe");
    let (status, body) = http_request(
        node.addr,
        "POST",
        "/api/publish",
        &[
            ("X-API-Key", API_KEY),
            (
                "traceparent",
                &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"),
            ),
        ],
        br#"{"channel":"news","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut stream = pubsub.on_message();
    let msg = loop {
        let m = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut stream),
        )
        .await
        .expect("a pub/sub message")
        .expect("stream open");
        if m.get_channel_name() == "plain:ch:{news}" {
            break m;
        }
    };
    let (_, _, envelope) =
        ferrocast_protocol::envelope::decode_message(msg.get_payload_bytes()).expect("decode");
    match envelope {
        ferrocast_protocol::envelope::Envelope::Pub(p) => assert_eq!(p.trace, None),
        other => panic!("unexpected envelope {other:?}"),
    }
}
