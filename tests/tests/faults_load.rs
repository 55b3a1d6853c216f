//! Fault tests: A slow consumer among many clients.
//!
//! Against real `redis-server` processes and real ferrocast nodes. Traffic is
//! sequence-numbered (`{"seq": n}`) on channels of the `live:` namespace (history 5000,
//! force_recovery) and every published number is accounted for at every subscriber:
//! missing, duplicated and out of order. Each test prints its figures (`--nocapture`).
//! Everything listens on 127.0.0.1 and every process killed is one the test started.

use ferrocast_tests::faults::*;
use ferrocast_tests::node::cluster_config;
use ferrocast_tests::{Client, RedisProcess};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// 5. Slow consumer among many clients.

/// pid of the child process of this test that listens on `port` (from /proc, so only
/// processes this test started are considered).
fn child_listening_on(port: u16) -> u32 {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let inode = tcp
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let p = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            (p == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
        })
        .expect("listening socket");
    let me = std::process::id();
    let want = format!("socket:[{inode}]");
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid != Some(me) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == want) {
                return pid;
            }
        }
    }
    panic!("no child process of this test listens on port {port}");
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A client with a tiny socket receive buffer that stops reading after subscribing, so
/// the server's queue for it fills quickly.
async fn stuck_client(addr: SocketAddr, channels: &[&str]) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/connection/websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("handshake");
    let mut cmds = vec![json!({"id": 1, "connect": {"token": user_token("stuck")}})];
    for (i, ch) in channels.iter().enumerate() {
        cmds.push(json!({"id": i + 2, "subscribe": {"channel": ch}}));
    }
    for c in cmds {
        ws.send(c.to_string().into()).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("reply")
                .expect("open")
                .expect("frame");
            let text = m.into_text().unwrap_or_default();
            if text.contains(&format!("\"id\":{}", c["id"])) {
                assert!(!text.contains("\"error\""), "{text}");
                break;
            }
        }
    }
    ws
}

/// Reads what is left and returns the close code.
async fn close_code(ws: &mut RawWs) -> Option<u16> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                return f.map(|f| u16::from(f.code));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Value of a counter or gauge without labels in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn slow_consumer_among_many_is_the_only_one_closed() {
    const T: &str = "slow-consumer";
    const CH: &str = "news";
    const BALLAST: &str = "ballast";
    const CLIENTS: usize = 1000;
    const QUEUE: u64 = 256 * 1024;
    const M: u64 = 300;
    const AHEAD: u64 = 100;
    let redis = RedisProcess::start().await;
    let mut cfg = cluster_config(&[redis.url()], "fc");
    cfg["client"]["queue_max_size"] = json!(QUEUE);
    let nodes = start_nodes(&cfg, &["node-0", "node-1"]).await;
    let node = &nodes[0];
    let pid = child_listening_on(node.addr.port());
    let url = node.ws_url();
    let t0 = Instant::now();
    // Connect in 8 concurrent batches.
    let mut conns = Vec::new();
    for b in 0..8 {
        let url = url.clone();
        conns.push(tokio::spawn(async move {
            let mut v = Vec::new();
            for i in 0..CLIENTS / 8 {
                let (mut c, _) = Client::connect(&url, &user_token(&format!("c{b}-{i}"))).await;
                let r = c.command("subscribe", json!({ "channel": CH })).await;
                assert!(r.get("subscribe").is_some(), "{r}");
                v.push(c);
            }
            v
        }));
    }
    let mut clients = Vec::new();
    for c in conns {
        clients.extend(c.await.unwrap());
    }
    let connected = t0.elapsed();
    // The stuck client follows the same stream and, to fill its queue without pushing
    // megabytes through the other 1000 (the kernel socket buffers alone take ~2 MB before
    // the server's queue grows), also a ballast channel nobody else follows.
    let mut stuck = stuck_client(node.addr, &[CH, BALLAST]).await;
    let baseline = vm_rss_kib(pid);
    // Every reader in its own task; progress[i] = publications client i has read.
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let mut readers = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let progress = progress.clone();
        readers.push(tokio::spawn(async move {
            let mut next = 0;
            while next < M {
                match c.next_push_or_close(Duration::from_secs(30)).await {
                    Ok(Some(p)) => {
                        let seq = p["pub"]["data"]["seq"].as_u64();
                        if seq != Some(next) {
                            return Err(format!("client {i}: expected seq {next}, got {p}"));
                        }
                        next += 1;
                        progress[i].store(next, Ordering::Release);
                    }
                    Ok(None) => return Err(format!("client {i}: nothing for 30 s at {next}")),
                    Err(code) => return Err(format!("client {i}: closed {code:?} at {next}")),
                }
            }
            c.close().await;
            Ok(())
        }));
    }
    let peak = Arc::new(AtomicU64::new(baseline));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Acquire) {
                peak.fetch_max(vm_rss_kib(pid), Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // The fast stream, 20 publications per batch call through the other node. The
    // publisher stays at most AHEAD publications ahead of the slowest reading client, so
    // their queues stay far below QUEUE whatever the machine load.
    let publish_started = Instant::now();
    let fast = {
        let (progress, api) = (progress.clone(), nodes[1].addr);
        tokio::spawn(async move {
            let payload = "x".repeat(100);
            let min_progress = || {
                progress
                    .iter()
                    .map(|p| p.load(Ordering::Acquire))
                    .min()
                    .unwrap_or(0)
            };
            for batch in 0..M / 20 {
                let waiting = Instant::now();
                while batch * 20 > min_progress() + AHEAD {
                    assert!(
                        waiting.elapsed() < Duration::from_secs(30),
                        "a reading client is stuck at {}",
                        min_progress()
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let commands: Vec<Value> = (0..20)
                    .map(|i| json!({"publish": {"channel": CH, "data": {"seq": batch * 20 + i, "p": payload}}}))
                    .collect();
                let body = json!({ "commands": commands }).to_string();
                let (status, text) = ferrocast_tests::http_request(
                    api,
                    "POST",
                    "/api/batch",
                    &[("X-API-Key", ferrocast_tests::node::API_KEY)],
                    body.as_bytes(),
                )
                .await;
                assert!(status == 200 && !text.contains("\"error\""), "{text}");
            }
        })
    };
    // Ballast for the stuck client, 32 KiB a publication, until it is closed as slow, once
    // the stream is well under way.
    while progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .min()
        .unwrap_or(0)
        < M / 4
    {
        assert!(
            publish_started.elapsed() < Duration::from_secs(30),
            "the stream does not flow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ballast = "b".repeat(32 * 1024);
    let mut ballast_sent = 0u64;
    let mut slow_closes = 0.0;
    while ballast_sent < 20 * 1024 * 1024 {
        let commands: Vec<Value> = (0..8)
            .map(|_| json!({"publish": {"channel": BALLAST, "data": {"b": ballast}}}))
            .collect();
        nodes[1]
            .api_ok("batch", json!({ "commands": commands }))
            .await;
        ballast_sent += 8 * 32 * 1024;
        let (_, metrics) = node.get("/metrics").await;
        slow_closes = metric(&metrics, "ferrocast_slow_consumer_closes_total").unwrap_or(0.0);
        if slow_closes > 0.0 {
            break;
        }
    }
    let closed_after = publish_started.elapsed();
    let at_close = progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    fast.await.unwrap();
    let mut failures = Vec::new();
    for r in readers {
        if let Err(e) = r.await.unwrap() {
            failures.push(e);
        }
    }
    let publishing = publish_started.elapsed();
    sampling.store(false, Ordering::Release);
    sampler.await.unwrap();
    let code = close_code(&mut stuck).await;
    let (_, metrics) = node.get("/metrics").await;
    let slow_closes_end = metric(&metrics, "ferrocast_slow_consumer_closes_total");
    let peak = peak.load(Ordering::Acquire);
    let bound = baseline + (QUEUE / 1024) * (CLIENTS as u64 + 1) + 64 * 1024;
    println!(
        "[{T}] {CLIENTS} clients connected and subscribed in {} ms; stuck client closed as slow after {} KiB of ballast, {} ms into the stream (every reader at >= {at_close} of {M}), close code {code:?}; stream of {M} publications done in {} ms: {} clients got all {M} in order ({} failures: {:?}); slow_consumer_closes_total {slow_closes_end:?}; node RSS baseline {baseline} KiB, peak {peak} KiB (+{} KiB), bound {bound} KiB (queue_max_size {} KiB x {} clients + 64 MiB)",
        ms(connected),
        ballast_sent / 1024,
        ms(closed_after),
        ms(publishing),
        CLIENTS - failures.len(),
        failures.len(),
        failures.iter().take(5).collect::<Vec<_>>(),
        peak - baseline,
        QUEUE / 1024,
        CLIENTS + 1
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        slow_closes, 1.0,
        "the stuck client was never closed as slow"
    );
    assert_eq!(code, Some(3008), "the stuck client was not closed as slow");
    assert_eq!(slow_closes_end, Some(1.0), "{metrics}");
    assert!(
        peak <= bound,
        "node RSS peaked at {peak} KiB, bound {bound} KiB"
    );
}
