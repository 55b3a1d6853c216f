//! The load generator (`ferrocast-loadgen`) against a real node on the benchmark
//! configuration, in both encodings of the client protocol and with both publish paths of
//! the bench: every publication counted exactly once per subscriber.
//!
//! The load generator is a binary of another package (it depends on no broker crate), so it
//! is not built for this package alone: `cargo test --workspace` builds it next to the node
//! binary (its own integration tests need it); with `-p ferrocast-tests`, build it first
//! with `cargo build -p ferrocast-loadgen`.

use ferrocast_tests::NodeProcess;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const SUBSCRIBERS: u64 = 40;
/// `--rate 60 --duration 1`.
const PUBLISHED: u64 = 60;

fn loadgen_binary() -> PathBuf {
    let path = ferrocast_tests::node_binary()
        .with_file_name(format!("ferrocast-loadgen{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: run `cargo build -p ferrocast-loadgen` first (cargo test --workspace builds it)",
        path.display()
    );
    path
}

async fn bench_node() -> NodeProcess {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/ferrocast-bench.toml");
    NodeProcess::start_file(&config).await
}

/// Runs the load generator against `node` and returns its JSON line.
async fn load(node: &NodeProcess, encoding: &str, publish: &str) -> Value {
    let out = tokio::process::Command::new(loadgen_binary())
        .args(["--url", &node.ws_url(), "--insecure"])
        .args(["--encoding", encoding, "--publish", publish])
        .args(["--api-key", "bench-api-key", "--channels", "shared"])
        .args([
            "--connections",
            &SUBSCRIBERS.to_string(),
            "--connect-rate",
            "0",
        ])
        .args(["--rate", &PUBLISHED.to_string(), "--duration", "1"])
        .args(["--drain-secs", "5"])
        .kill_on_drop(true)
        .output()
        .await
        .expect("run ferrocast-loadgen");
    assert!(
        out.status.success(),
        "loadgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn assert_exact(r: &Value, encoding: &str, publish: &str) {
    let all = PUBLISHED * SUBSCRIBERS;
    assert_eq!(r["encoding"], json!(encoding), "{r}");
    assert_eq!(r["publish"], json!(publish), "{r}");
    assert_eq!(num(r, "subscribed"), SUBSCRIBERS, "{r}");
    assert_eq!(num(r, "published"), PUBLISHED, "{r}");
    assert_eq!(num(r, "expected"), all, "{r}");
    assert_eq!(num(r, "received"), all, "{r}");
    assert_eq!(num(r, "lost"), 0, "{r}");
    assert_eq!(num(r, "duplicated"), 0, "{r}");
    assert_eq!(num(r, "out_of_order"), 0, "{r}");
    assert_eq!(r["errors"], json!({}), "{r}");
    assert_eq!(num(&r["latency_us"], "count"), all, "{r}");
    assert_eq!(num(&r["latency_socket_us"], "count"), all, "{r}");
}

#[tokio::test]
async fn protobuf_subscribers_count_exactly_as_json_ones() {
    let node = bench_node().await;
    for publish in ["http", "client"] {
        for encoding in ["json", "protobuf"] {
            let r = load(&node, encoding, publish).await;
            assert_exact(&r, encoding, publish);
        }
    }
}

#[tokio::test]
async fn protobuf_is_refused_with_nats() {
    let out = tokio::process::Command::new(loadgen_binary())
        .args(["--url", "ws://127.0.0.1:1/", "--protocol", "nats"])
        .args(["--encoding", "protobuf", "--publish", "client"])
        .output()
        .await
        .expect("run ferrocast-loadgen");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--encoding applies to --protocol centrifugo only"),
        "{err}"
    );
}
