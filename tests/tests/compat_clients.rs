//! Compatibility with client libraries nobody here wrote: centrifuge-js (npm, under Node
//! with `ws`) and centrifuge-python, plus the `cent` HTTP API client. The scripts in
//! tests/compat/ connect with a token, subscribe, receive a publication sent through the
//! server API, query presence and history, go offline and recover what they missed, and see
//! join/leave pushes and server pings, once on one node and once on two nodes sharing a
//! Redis (the second client on the other node, the offline publications through the other
//! node's API). Install their dependencies with tests/compat/setup.sh (scripts/test.sh does
//! it).

use ferrocast_tests::{NodeProcess, RedisProcess};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// Runs a compatibility script against `nodes`: the first client and the API calls use the
/// first node; with a second node, the second client connects there and the publications
/// made while the first client is offline go through its API.
async fn run_script(program: &str, script: &str, nodes: &[&NodeProcess]) {
    let dir = compat_dir();
    let (first, second) = (nodes[0], nodes[nodes.len() - 1]);
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .env("COMPAT_WS_URL", first.ws_url())
        .env("COMPAT_API_URL", format!("http://{}/api", first.addr))
        .env("COMPAT_WS_URL_2", second.ws_url())
        .env("COMPAT_API_URL_2", format!("http://{}/api", second.addr))
        .env("COMPAT_API_KEY", "compat-api-key")
        .env("COMPAT_HMAC_SECRET", "compat-secret")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 60 s"))
        .unwrap_or_else(|e| {
            panic!("cannot run {program} {script}: {e} (run tests/compat/setup.sh)")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}\nnode logs:\n{}",
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

#[tokio::test]
async fn centrifuge_js_sdk() {
    let dir = compat_dir();
    assert!(
        dir.join("node_modules/centrifuge").exists(),
        "centrifuge (npm) is not installed: run tests/compat/setup.sh"
    );
    let node = NodeProcess::start_file(&dir.join("ferrocast.toml")).await;
    run_script("node", "js_client.mjs", &[&node]).await;
}

#[tokio::test]
async fn centrifuge_python_sdk_and_cent() {
    let dir = compat_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "centrifuge-python is not installed: run tests/compat/setup.sh"
    );
    let node = NodeProcess::start_file(&dir.join("ferrocast.toml")).await;
    run_script(python.to_str().unwrap(), "python_client.py", &[&node]).await;
}

/// Two nodes of the same config on one Redis: the SDK clients of a script sit on different
/// nodes (presence, join/leave across nodes) and the first one recovers publications made
/// through the other node's API while it was offline.
async fn cluster(redis: &RedisProcess) -> (NodeProcess, NodeProcess) {
    let path = compat_dir().join("ferrocast.toml");
    let url = redis.url();
    let env = [
        ("FERROCAST_ENGINE_TYPE", "redis"),
        ("FERROCAST_ENGINE_REDIS_ADDRESS", url.as_str()),
    ];
    let a = NodeProcess::start_file_with(&path, &env).await;
    let b = NodeProcess::start_file_with(&path, &env).await;
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    (a, b)
}

#[tokio::test]
async fn centrifuge_js_sdk_across_two_nodes_of_a_cluster() {
    assert!(
        compat_dir().join("node_modules/centrifuge").exists(),
        "centrifuge (npm) is not installed: run tests/compat/setup.sh"
    );
    let redis = RedisProcess::start().await;
    let (a, b) = cluster(&redis).await;
    run_script("node", "js_client.mjs", &[&a, &b]).await;
}

#[tokio::test]
async fn centrifuge_python_sdk_across_two_nodes_of_a_cluster() {
    let python = compat_dir().join(".venv/bin/python");
    assert!(
        python.exists(),
        "centrifuge-python is not installed: run tests/compat/setup.sh"
    );
    let redis = RedisProcess::start().await;
    let (a, b) = cluster(&redis).await;
    run_script(python.to_str().unwrap(), "python_client.py", &[&a, &b]).await;
}
