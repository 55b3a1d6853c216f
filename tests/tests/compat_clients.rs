//! Compatibility with client libraries nobody here wrote: centrifuge-js (npm, under Node
//! with `ws`) and centrifuge-python, plus the `cent` HTTP API client. The scripts in
//! tests/compat/ connect with a token, subscribe, receive a publication sent through the
//! server API, query presence and history, go offline and recover what they missed, and see
//! join/leave pushes and server pings, publish from the SDK and call rpc; each in the JSON
//! and in the Protobuf protocol (the SDKs' Protobuf modes), on one node and on several
//! nodes sharing Redis (the second client on another node, the offline publications through
//! another node's API): two nodes on a standalone Redis, three on a standalone Redis and
//! three on a Redis Cluster. Install their dependencies with tests/compat/setup.sh
//! (scripts/test.sh does it).

use ferrocast_tests::{Backplane, NodeProcess, RedisProcess};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// A real SDK and the protocol it speaks.
#[derive(Clone, Copy)]
enum Sdk {
    Js,
    Python,
}

impl Sdk {
    /// The program and script, after checking that the SDK is installed.
    fn command(self) -> (String, &'static str) {
        let dir = compat_dir();
        match self {
            Sdk::Js => {
                assert!(
                    dir.join("node_modules/centrifuge").exists(),
                    "centrifuge (npm) is not installed: run tests/compat/setup.sh"
                );
                ("node".into(), "js_client.mjs")
            }
            Sdk::Python => {
                let python = dir.join(".venv/bin/python");
                assert!(
                    python.exists(),
                    "centrifuge-python is not installed: run tests/compat/setup.sh"
                );
                (python.to_string_lossy().into_owned(), "python_client.py")
            }
        }
    }
}

/// Runs an SDK's script in `protocol` (`json` or `protobuf`) against `nodes`: the first
/// client and the API calls use the first node; with more nodes, the second client connects
/// to the last one and the publications made while the first client is offline go through
/// its API.
async fn run_script(sdk: Sdk, protocol: &str, nodes: &[&NodeProcess]) {
    let (program, script) = sdk.command();
    let dir = compat_dir();
    let (first, second) = (nodes[0], nodes[nodes.len() - 1]);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("COMPAT_WS_URL", first.ws_url())
        .env("COMPAT_API_URL", format!("http://{}/api", first.addr))
        .env("COMPAT_WS_URL_2", second.ws_url())
        .env("COMPAT_API_URL_2", format!("http://{}/api", second.addr))
        .env("COMPAT_API_KEY", "compat-api-key")
        .env("COMPAT_HMAC_SECRET", "compat-secret")
        .env("COMPAT_PROTOCOL", protocol)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} ({protocol}) did not finish within 60 s"))
        .unwrap_or_else(|e| {
            panic!("cannot run {program} {script}: {e} (run tests/compat/setup.sh)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} ({protocol}) failed ({}):\n{stdout}\n{stderr}\nnode logs:\n{}",
        out.status,
        nodes
            .iter()
            .map(|n| n.log_text())
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    assert!(
        stdout.contains("PASS"),
        "{script} printed no step: {stdout}"
    );
}

/// One node with the compatibility config.
async fn single() -> NodeProcess {
    NodeProcess::start_file(&compat_dir().join("ferrocast.toml")).await
}

/// `n` nodes of the compatibility config on `backplane`.
async fn cluster(backplane: &Backplane, n: usize) -> Vec<NodeProcess> {
    let path = compat_dir().join("ferrocast.toml");
    let urls = backplane.urls().join(",");
    let is_cluster = backplane.is_cluster().to_string();
    let env = [
        ("FERROCAST_ENGINE_TYPE", "redis"),
        ("FERROCAST_ENGINE_REDIS_ADDRESS", urls.as_str()),
        ("FERROCAST_ENGINE_REDIS_CLUSTER", is_cluster.as_str()),
    ];
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(NodeProcess::start_file_with(&path, &env).await);
    }
    for node in &nodes {
        node.wait_ready(200).await;
    }
    nodes
}

async fn on_one_node(sdk: Sdk, protocol: &str) {
    let node = single().await;
    run_script(sdk, protocol, &[&node]).await;
}

async fn across_nodes(sdk: Sdk, protocol: &str, backplane: Backplane, n: usize) {
    let nodes = cluster(&backplane, n).await;
    let refs: Vec<&NodeProcess> = nodes.iter().collect();
    run_script(sdk, protocol, &refs).await;
}

#[tokio::test]
async fn centrifuge_js_sdk() {
    on_one_node(Sdk::Js, "json").await;
}

#[tokio::test]
async fn centrifuge_js_sdk_protobuf() {
    on_one_node(Sdk::Js, "protobuf").await;
}

#[tokio::test]
async fn centrifuge_python_sdk_and_cent() {
    on_one_node(Sdk::Python, "json").await;
}

#[tokio::test]
async fn centrifuge_python_sdk_protobuf_and_cent() {
    on_one_node(Sdk::Python, "protobuf").await;
}

#[tokio::test]
async fn centrifuge_js_sdk_across_two_nodes_of_a_cluster() {
    let redis = RedisProcess::start().await;
    across_nodes(Sdk::Js, "json", Backplane::Standalone(vec![redis]), 2).await;
}

#[tokio::test]
async fn centrifuge_python_sdk_across_two_nodes_of_a_cluster() {
    let redis = RedisProcess::start().await;
    across_nodes(Sdk::Python, "json", Backplane::Standalone(vec![redis]), 2).await;
}

#[tokio::test]
async fn centrifuge_js_sdk_protobuf_across_three_nodes_on_redis() {
    across_nodes(Sdk::Js, "protobuf", Backplane::standalone().await, 3).await;
}

#[tokio::test]
async fn centrifuge_python_sdk_protobuf_across_three_nodes_on_redis() {
    across_nodes(Sdk::Python, "protobuf", Backplane::standalone().await, 3).await;
}

#[tokio::test]
async fn centrifuge_js_sdk_protobuf_across_three_nodes_on_redis_cluster() {
    across_nodes(Sdk::Js, "protobuf", Backplane::cluster().await, 3).await;
}

#[tokio::test]
async fn centrifuge_python_sdk_protobuf_across_three_nodes_on_redis_cluster() {
    across_nodes(Sdk::Python, "protobuf", Backplane::cluster().await, 3).await;
}
