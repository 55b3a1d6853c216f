//! Hostile clients at the HTTP and WebSocket edge: slowloris, connection floods, invalid
//! UTF-8, and the separation of the internal (API, metrics) port.

use ferrocast_tests::node::now;
use ferrocast_tests::{Client, NodeProcess, base_config, http_request, token};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn slowloris_is_closed_after_the_handshake_timeout() {
    let mut cfg = base_config();
    cfg["http_server"] = json!({"handshake_timeout": "1s"});
    let n = NodeProcess::start(cfg).await;
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    s.write_all(b"GET /connection/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let mut total = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => total.extend_from_slice(&buf[..k]),
            Err(_) => panic!("slow client still connected after 5s"),
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    let text = String::from_utf8_lossy(&total);
    assert!(text.is_empty() || text.contains("408"), "{text}");
    // The node still serves everyone else.
    assert_eq!(n.get("/health").await.0, 200);
}

#[tokio::test]
async fn connection_flood_from_one_address_is_limited() {
    let mut cfg = base_config();
    cfg["http_server"] = json!({"connection_rate_per_ip": 2, "connection_burst_per_ip": 5});
    let n = NodeProcess::start(cfg).await;
    let mut ok = 0;
    for _ in 0..30 {
        if let Some((200, _)) =
            ferrocast_tests::node::http_request_opt(n.addr, "GET", "/health", &[], b"").await
        {
            ok += 1;
        }
    }
    assert!((5..=7).contains(&ok), "{ok} of 30 connections served");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        ferrocast_tests::node::http_request_opt(n.addr, "GET", "/health", &[], b"")
            .await
            .is_some()
    );
    let m = metrics_text(&n).await;
    assert!(
        m.contains("ferrocast_connections_refused_total{reason=\"ip_rate\"}"),
        "{m}"
    );
}

async fn metrics_text(n: &NodeProcess) -> String {
    for _ in 0..50 {
        if let Some((200, m)) =
            ferrocast_tests::node::http_request_opt(n.addr, "GET", "/metrics", &[], b"").await
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metrics unreachable");
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_3501() {
    let n = NodeProcess::start(base_config()).await;
    let (mut c, _) =
        Client::connect(&n.ws_url(), &token(json!({"sub": "1", "exp": now() + 60}))).await;
    c.send_raw_text(vec![b'{', 0xff, 0xfe, b'}']).await;
    assert_eq!(c.closed().await.0, 3501);
}

#[tokio::test]
async fn internal_port_serves_the_api_and_metrics_only() {
    let internal = free_port();
    let mut cfg = base_config();
    cfg["http_server"] = json!({"internal_port": internal, "internal_address": "127.0.0.1"});
    let n = NodeProcess::start(cfg).await;
    let key = [("X-API-Key", ferrocast_tests::node::API_KEY)];
    let body = br#"{"channel":"news","data":1}"#;
    let (s, _) = http_request(n.addr, "POST", "/api/publish", &key, body).await;
    assert_eq!(s, 404, "API must not be on the public port");
    assert_eq!(n.get("/metrics").await.0, 404);
    assert_eq!(n.get("/health").await.0, 200);
    let iaddr: std::net::SocketAddr = format!("127.0.0.1:{internal}").parse().unwrap();
    let (s, b) = http_request(iaddr, "POST", "/api/publish", &key, body).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        http_request(iaddr, "GET", "/metrics", &[], b"").await.0,
        200
    );
    assert_eq!(http_request(iaddr, "GET", "/ready", &[], b"").await.0, 200);
    // WebSocket clients stay on the public port.
    assert!(
        Client::open_with_origin(&format!("ws://{iaddr}/connection/websocket"), None)
            .await
            .is_err()
    );
    let (_c, _) = Client::connect(&n.ws_url(), &token(json!({"sub": "1"}))).await;
}
