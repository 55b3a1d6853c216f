//! The gRPC server API (Centrifugo's `CentrifugoApi` service) driven by a real grpcio
//! client (tests/compat/grpc_api_client.py), with a WebSocket subscriber seeing the
//! effects (publications, presence, the disconnect): on one node, and across two nodes
//! on Redis with the subscriber on the other node.

use ferrocast_tests::compat::compat_dir;
use ferrocast_tests::node::cluster_config;
use ferrocast_tests::{Backplane, Client, NodeProcess, base_config, token};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

const GRPC_KEY: &str = "grpc-test-key";

fn with_grpc(mut cfg: Value) -> Value {
    cfg["grpc_api"] = json!({"enabled": true, "port": 0, "key": GRPC_KEY});
    cfg
}

/// Runs the grpcio client against `api` while a client of `subscriber` is subscribed.
async fn drive(api: &NodeProcess, subscriber: &NodeProcess, nodes: usize) {
    let grpc = api
        .logged_address("listening grpc_api")
        .expect("the node logs the gRPC API address");
    let (mut c, _) = Client::connect(&subscriber.ws_url(), &token(json!({"sub": "alice"}))).await;
    let r = c
        .command("subscribe", json!({"channel": "chat:grpc"}))
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");

    let python = compat_dir().join(".venv/bin/python");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python)
            .arg(compat_dir().join("grpc_api_client.py"))
            .args([
                &grpc.to_string(),
                GRPC_KEY,
                "chat:grpc",
                "alice",
                &nodes.to_string(),
            ])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("grpc_api_client.py finished within 60 s")
    .expect("run grpc_api_client.py (tests/compat/setup.sh installs grpcio)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "grpc_api_client.py failed:\n{stdout}\n{stderr}\n{}",
        api.log_text()
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .expect("a RESULT line");

    // The subscriber got the three publications, with the offsets the API answered, and
    // was disconnected with the API's code.
    let mut offsets = Vec::new();
    for n in 1..=3 {
        let p = c.push().await;
        assert_eq!(p["pub"]["data"], json!({"via": "grpc", "n": n}), "{p}");
        offsets.push(p["pub"]["offset"].clone());
    }
    assert_eq!(Value::Array(offsets), result["offsets"]);
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4321, "bye"));
    // Calls are counted like HTTP API calls.
    let metrics = api.get("/metrics").await.1;
    assert!(
        metrics.contains(r#"ferrocast_api_calls_total{method="publish",result="ok"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_grpcio_backend_drives_the_grpc_server_api() {
    let n = NodeProcess::start(with_grpc(base_config())).await;
    drive(&n, &n, 1).await;
}

#[tokio::test]
async fn the_grpc_server_api_reaches_clients_on_other_nodes() {
    let redis = Backplane::standalone().await;
    let cfg = cluster_config(&redis.urls(), "grpcapi");
    let a = NodeProcess::start(with_grpc(cfg.clone())).await;
    let b = NodeProcess::start(cfg).await;
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    // Both nodes know each other before `info` is asked.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.api_ok("info", json!({})).await["nodes"]
        .as_array()
        .map(Vec::len)
        != Some(2)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not meet"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drive(&a, &b, 2).await;
}
