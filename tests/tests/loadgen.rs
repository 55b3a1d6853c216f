//! The load generator (`ferrocast-loadgen`) against a real node on the benchmark
//! configuration, in both encodings of the client protocol and with both publish paths of
//! the bench: every publication counted exactly once per subscriber. And the proxy
//! benchmarks' modes against a node whose connect and rpc proxies go to `proxy-backend`:
//! every client connected through the connect proxy (or with its token), every `rpc` call
//! answered through the rpc proxy, each counted once by the load generator and by the
//! backend.
//!
//! The load generator and `proxy-backend` are binaries of another package (it depends on no
//! broker crate), so they are not built for this package alone: `cargo test --workspace`
//! builds them next to the node binary (its own integration tests need them); with
//! `-p ferrocast-tests`, build them first with `cargo build -p ferrocast-loadgen`.

use ferrocast_tests::{NodeProcess, http_request};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

const SUBSCRIBERS: u64 = 40;
/// `--rate 60 --duration 1`.
const PUBLISHED: u64 = 60;

/// A binary of the `ferrocast-loadgen` package, next to the node binary.
fn loadgen_package_binary(name: &str) -> PathBuf {
    let path = ferrocast_tests::node_binary()
        .with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: run `cargo build -p ferrocast-loadgen` first (cargo test --workspace builds it)",
        path.display()
    );
    path
}

fn loadgen_binary() -> PathBuf {
    loadgen_package_binary("ferrocast-loadgen")
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

/// HS256 secret of [`proxy_node`].
const TOKEN_SECRET: &str = "loadgen-test-secret";

/// `proxy-backend`, started by a test (killed when dropped).
struct ProxyBackend {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

impl ProxyBackend {
    /// Starts it on a free port and waits for its `LISTENING <port>` line.
    async fn start() -> ProxyBackend {
        let mut child = tokio::process::Command::new(loadgen_package_binary("proxy-backend"))
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn proxy-backend");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("proxy-backend did not start")
            .expect("read stdout")
            .expect("a LISTENING line");
        let port: u16 = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        ProxyBackend {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn hook(&self, name: &str) -> String {
        format!("http://{}/centrifugo/{name}", self.addr)
    }

    /// The calls it answered so far: `{"connect", "rpc", "bad"}` (without the count of
    /// connections accepted, which depends on the broker's HTTP client pool).
    async fn stats(&self) -> Value {
        let (status, body) = http_request(self.addr, "GET", "/stats", &[], b"").await;
        assert_eq!(status, 200, "{body}");
        let mut v: Value = serde_json::from_str(&body).expect("stats JSON");
        assert!(v["connections"].as_u64().is_some(), "{v}");
        if let Some(o) = v.as_object_mut() {
            o.remove("connections");
        }
        v
    }
}

/// A node that is not insecure: HS256 tokens with [`TOKEN_SECRET`], clients without one go
/// through the connect proxy, rpc without namespace through the rpc proxy, both to `b`.
async fn proxy_node(b: &ProxyBackend) -> NodeProcess {
    NodeProcess::start(json!({
        "http_server": {"connection_rate_per_ip": 0},
        "client": {
            "insecure": false,
            "allowed_origins": ["*"],
            "command_rate_limit": 0,
            "token": {"hmac_secret_key": TOKEN_SECRET},
            "proxy": {"connect": {"enabled": true, "endpoint": b.hook("connect")}},
        },
        "rpc": {
            "proxy": {"endpoint": b.hook("rpc")},
            "without_namespace": {"proxy_enabled": true},
        },
        "channel": {"namespaces": [{"name": "bench", "allow_subscribe_for_client": true}]},
    }))
    .await
}

/// Runs the load generator against `node` with `args` and returns its JSON line.
async fn run_loadgen(node: &NodeProcess, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(loadgen_binary())
        .args(["--url", &node.ws_url()])
        .args(args)
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

/// Connections made by the idle storm runs below.
const STORM: u64 = 30;

fn storm_args<'a>(auth: &[&'a str], encoding: &'a str) -> Vec<&'a str> {
    let mut a = auth.to_vec();
    a.extend([
        "--encoding",
        encoding,
        "--idle",
        "--connections",
        "30",
        "--connect-rate",
        "0",
        "--channels",
        "shared",
        "--duration",
        "0.2",
    ]);
    a
}

#[tokio::test]
async fn every_client_connects_through_the_connect_proxy_or_with_its_token() {
    let b = ProxyBackend::start().await;
    let node = proxy_node(&b).await;
    let mut proxied = 0;
    for encoding in ["json", "protobuf"] {
        // Without a token: one connect hook call per client.
        let data = r#"{"user":"lg-{i}"}"#;
        let r = run_loadgen(&node, &storm_args(&["--connect-data", data], encoding)).await;
        assert_eq!(r["auth"], "proxy", "{r}");
        assert_eq!(r["encoding"], json!(encoding), "{r}");
        assert_eq!(num(&r, "subscribed"), STORM, "{r}");
        assert_eq!(r["errors"], json!({}), "{r}");
        proxied += STORM;
        assert_eq!(
            b.stats().await,
            json!({"connect": proxied, "rpc": 0, "bad": 0})
        );

        // With a token each: the backend is not asked.
        let r = run_loadgen(
            &node,
            &storm_args(&["--token-secret", TOKEN_SECRET], encoding),
        )
        .await;
        assert_eq!(r["auth"], "token", "{r}");
        assert_eq!(num(&r, "subscribed"), STORM, "{r}");
        assert_eq!(r["errors"], json!({}), "{r}");
        assert_eq!(b.stats().await["connect"], json!(proxied));
    }
    // Tokens signed with another secret are refused: every client closed with 3500.
    let r = run_loadgen(&node, &storm_args(&["--token-secret", "wrong"], "json")).await;
    assert_eq!(num(&r, "subscribed"), 0, "{r}");
    assert_eq!(r["errors"], json!({"setup_close:3500": STORM}), "{r}");
    assert_eq!(b.stats().await["connect"], json!(proxied));
}

fn rpc_args<'a>(encoding: &'a str, method: &'a str) -> Vec<&'a str> {
    vec![
        "--token-secret",
        TOKEN_SECRET,
        "--encoding",
        encoding,
        "--rpc",
        "--rpc-method",
        method,
        "--connections",
        "10",
        "--connect-rate",
        "0",
        "--rate",
        "200",
        "--duration",
        "1",
    ]
}

#[tokio::test]
async fn rpc_mode_counts_every_call_through_the_rpc_proxy() {
    let b = ProxyBackend::start().await;
    let node = proxy_node(&b).await;
    let mut rpc = 0;
    for encoding in ["json", "protobuf"] {
        let r = run_loadgen(&node, &rpc_args(encoding, "echo")).await;
        assert_eq!(r["mode"], "rpc", "{r}");
        assert_eq!(r["encoding"], json!(encoding), "{r}");
        assert_eq!(num(&r, "connected"), 10, "{r}");
        for (key, n) in [("calls", 200), ("sent", 200), ("ok", 200)] {
            assert_eq!(num(&r, key), n, "{key}: {r}");
        }
        for key in ["failed", "timeouts", "not_sent"] {
            assert_eq!(num(&r, key), 0, "{key}: {r}");
        }
        assert_eq!(num(&r["latency_us"], "count"), 200, "{r}");
        assert_eq!(num(&r["send_lag_us"], "count"), 200, "{r}");
        assert_eq!(r["errors"], json!({}), "{r}");
        rpc += 200;
        assert_eq!(b.stats().await, json!({"connect": 0, "rpc": rpc, "bad": 0}));
    }
    // A method of no RPC namespace: every call answered with error 104, none proxied.
    let r = run_loadgen(&node, &rpc_args("json", "nowhere:echo")).await;
    assert_eq!((num(&r, "sent"), num(&r, "ok")), (200, 0), "{r}");
    assert_eq!((num(&r, "failed"), num(&r, "timeouts")), (200, 0), "{r}");
    assert_eq!(r["errors"], json!({"rpc_error:104": 200}), "{r}");
    assert_eq!(b.stats().await["rpc"], json!(rpc));
}
