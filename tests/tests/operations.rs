//! Health, readiness, metrics, graceful drain on SIGTERM and the command line.

use ferrocast_tests::node::{SECRET, now};
use ferrocast_tests::{Client, NodeProcess, base_config, token};
use serde_json::json;
use std::time::{Duration, Instant};

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let n = NodeProcess::start(base_config()).await;
    assert_eq!(n.get("/health").await.0, 200);
    assert_eq!(n.get("/ready").await.0, 200);
    assert_eq!(n.get("/nope").await.0, 404);
    let (mut c, _) = Client::connect(&n.ws_url(), &user_token("1")).await;
    c.command("subscribe", json!({"channel": "news"})).await;
    n.api_ok("publish", json!({"channel": "news", "data": 1}))
        .await;
    c.push().await;
    let (status, m) = n.get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "ferrocast_connections 1",
        "ferrocast_subscriptions 1",
        "ferrocast_channels 1",
        "ferrocast_messages_sent_total{type=\"pub\"} 1",
        "ferrocast_messages_received_total{method=\"subscribe\"} 1",
        "ferrocast_publish_duration_seconds_bucket",
        "ferrocast_fanout_duration_seconds_bucket",
        "ferrocast_api_calls_total{method=\"publish\",result=\"ok\"} 1",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    c.close().await;
    let mut bad = Client::open(&n.ws_url()).await;
    bad.send_text("{oops").await;
    bad.closed().await;
    let (_, m) = n.get("/metrics").await;
    assert!(
        m.contains("ferrocast_disconnects_total{code=\"3501\"} 1"),
        "{m}"
    );
    assert!(!m.contains(SECRET));
}

#[tokio::test]
async fn sigterm_drains_clients_over_the_window_and_exits_zero() {
    let mut cfg = base_config();
    cfg["shutdown"] = json!({"drain_window": "1500ms"});
    let mut n = NodeProcess::start(cfg).await;
    let mut clients = Vec::new();
    for i in 0..12 {
        let (c, _) = Client::connect(&n.ws_url(), &user_token(&i.to_string())).await;
        clients.push(c);
    }
    let started = Instant::now();
    n.sigterm();
    // Readiness goes false while the clients drain; new upgrades are refused.
    let mut saw_unready = false;
    for _ in 0..50 {
        if n.get("/ready").await.0 == 503 {
            saw_unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_unready, "/ready never turned 503");
    assert!(Client::open_with_origin(&n.ws_url(), None).await.is_err());
    let mut close_times = Vec::new();
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { (c.closed().await, Instant::now()) }))
        .collect();
    for h in handles {
        let ((code, reason), at) = h.await.unwrap();
        assert_eq!((code, reason.as_str()), (3001, "shutdown"));
        close_times.push(at.duration_since(started));
    }
    let first = *close_times.iter().min().unwrap();
    let last = *close_times.iter().max().unwrap();
    assert!(
        last - first >= Duration::from_millis(150),
        "closes not spread: {close_times:?}"
    );
    assert!(
        last <= Duration::from_secs(4),
        "drain too slow: {close_times:?}"
    );
    let status = n.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
}

fn ferrocast(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(ferrocast_tests::node_binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ferrocast")
}

#[tokio::test]
async fn genconfig_checkconfig_gentoken() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferrocast(&["genconfig"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("hmac_secret_key") && text.contains("drain_window"));
    let path = dir.path().join("ferrocast.toml");
    std::fs::write(&path, &text).unwrap();
    let out = ferrocast(&["checkconfig", path.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[client]\nping_intervall = \"5s\"\n").unwrap();
    let out = ferrocast(&["checkconfig", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ping_intervall"));

    let bad = dir.path().join("bad2.toml");
    std::fs::write(&bad, "[http_server]\nport = \"eighty\"\n").unwrap();
    let out = ferrocast(&["checkconfig", bad.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("http_server.port"));

    let out = ferrocast(
        &["checkconfig", path.to_str().unwrap()],
        &[("FERROCAST_CLIENT_PING_INTERVALL", "5s")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FERROCAST_CLIENT_PING_INTERVALL"));

    // serve refuses to start on an invalid config.
    let out = ferrocast(
        &["serve", "--config", bad.to_str().unwrap(), "--port", "0"],
        &[],
    );
    assert!(!out.status.success());

    // gentoken signs with the configured secret; the token connects.
    let out = ferrocast(
        &[
            "gentoken",
            "--config",
            path.to_str().unwrap(),
            "--user",
            "42",
            "--ttl",
            "60",
        ],
        &[("FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY", SECRET)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tok = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let n = NodeProcess::start(base_config()).await;
    let (_c, r) = Client::connect(&n.ws_url(), &tok).await;
    assert_eq!(r["expires"], true);
    assert!(r["ttl"].as_u64().unwrap() <= 60);
    let out = ferrocast(&["gentoken", "--user", "1"], &[]);
    assert!(!out.status.success(), "gentoken without a secret must fail");
}

#[tokio::test]
async fn env_overrides_config_at_start() {
    let mut cfg = base_config();
    cfg["client"]["token"]["hmac_secret_key"] = json!("file-secret");
    let n =
        NodeProcess::start_with(cfg, &[("FERROCAST_CLIENT_TOKEN_HMAC_SECRET_KEY", SECRET)]).await;
    let (_c, r) = Client::connect(&n.ws_url(), &user_token("1")).await;
    assert!(r["client"].is_string());
    assert!(!n.log_text().contains(SECRET), "secret leaked into logs");
}

#[tokio::test]
async fn help_says_what_ferrocast_is_and_how_to_start() {
    let out = ferrocast(&["--help"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("real-time messaging server"), "{text}");
    assert!(text.contains("Centrifugo"), "{text}");
    assert!(
        text.contains("ferrocast serve --config config/dev.toml"),
        "{text}"
    );
    for sub in ["serve", "genconfig", "checkconfig", "gentoken"] {
        let out = ferrocast(&[sub, "--help"], &[]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Example"), "{sub}: {text}");
    }
}

/// The first stderr lines of a node logging text with `color` (stderr is a pipe here).
async fn text_log_lines(color: &str) -> String {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!("[log]\nformat = \"text\"\ncolor = \"{color}\"\n"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(ferrocast_tests::node_binary())
        .args([
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--address",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ferrocast");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("listening") && !line.contains("grpc") {
                break;
            }
        }
    })
    .await;
    let _ = child.kill().await;
    seen
}

#[tokio::test]
async fn text_logs_are_coloured_only_on_a_terminal_or_when_asked() {
    let plain = text_log_lines("auto").await;
    assert!(plain.contains("listening"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "ANSI escapes in a pipe: {plain:?}"
    );
    let coloured = text_log_lines("always").await;
    assert!(coloured.contains('\u{1b}'), "{coloured:?}");
}

#[tokio::test]
async fn a_fresh_node_exports_every_documented_series() {
    let ops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/OPERATIONS.md"),
    )
    .unwrap();
    // The first cell of each metrics table row: | `ferrocast_...` |
    let documented: Vec<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix("| `ferrocast_"))
        .filter_map(|l| l.split('`').next())
        .map(|name| format!("ferrocast_{name}"))
        .collect();
    assert!(documented.len() > 20, "{documented:?}");
    let mut cfg = base_config();
    // Slow-consumer drops are counted per namespace with a drop policy.
    cfg["channel"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ticker", "slow_consumer_policy": "drop_oldest"}));
    let n = NodeProcess::start(cfg).await;
    let (status, metrics) = n.get("/metrics").await;
    assert_eq!(status, 200);
    for name in &documented {
        // Histograms appear with their first observation, proxy metrics with a proxy.
        if name.ends_with("_seconds") && !name.contains("process") || name.contains("proxy_call") {
            continue;
        }
        let present = metrics
            .lines()
            .any(|l| l.starts_with(name.as_str()) && l[name.len()..].starts_with([' ', '{']));
        assert!(
            present,
            "{name} is documented but not exported by a fresh node"
        );
    }
}
