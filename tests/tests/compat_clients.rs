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

use ferrocast_tests::compat::{Sdk, compat_dir};
use ferrocast_tests::{Backplane, NodeProcess, RedisProcess};

/// Runs an SDK's compatibility script in `protocol` (`json` or `protobuf`) against
/// `nodes`: the first client and the API calls use the first node; with more nodes, the
/// second client connects to the last one and the publications made while the first client
/// is offline go through its API.
async fn run_script(sdk: Sdk, protocol: &str, nodes: &[&NodeProcess]) {
    let script = match sdk {
        Sdk::Js => "js_client.mjs",
        Sdk::Python => "python_client.py",
    };
    let (first, second) = (nodes[0], nodes[nodes.len() - 1]);
    let env = [
        ("COMPAT_WS_URL", first.ws_url()),
        ("COMPAT_API_URL", format!("http://{}/api", first.addr)),
        ("COMPAT_WS_URL_2", second.ws_url()),
        ("COMPAT_API_URL_2", format!("http://{}/api", second.addr)),
        ("COMPAT_API_KEY", "compat-api-key".to_string()),
        ("COMPAT_HMAC_SECRET", "compat-secret".to_string()),
        ("COMPAT_PROTOCOL", protocol.to_string()),
    ];
    ferrocast_tests::compat::run_script(sdk, script, &env, nodes).await;
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
