//! The load generator's accounting, end to end against `fanout-floor` (both binaries of this
//! package): every publication counted once per subscriber, and losses counted exactly.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `fanout-floor` process owned by the test, killed (by pid) on drop.
struct Floor {
    child: Child,
    port: u16,
}

impl Floor {
    fn start(extra: &[&str]) -> Floor {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new(env!("CARGO_BIN_EXE_fanout-floor"))
            .args(["--port", &port.to_string()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fanout-floor");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fanout-floor did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Floor { child, port }
    }

    /// Runs the load generator with `subscribers` connections and returns its JSON line.
    fn load(&self, subscribers: usize) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrocast-loadgen"))
            .args([
                "--url",
                &format!("ws://127.0.0.1:{}/connection/websocket", self.port),
            ])
            .args(["--insecure", "--publish", "client", "--channels", "shared"])
            .args([
                "--connections",
                &subscribers.to_string(),
                "--connect-rate",
                "0",
            ])
            .args(["--rate", "40", "--duration", "1", "--drain-secs", "3"])
            .output()
            .expect("run ferrocast-loadgen");
        assert!(
            out.status.success(),
            "loadgen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON line")
    }

    /// Stops the floor and returns what it printed.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let out = self.child.wait_with_output().expect("floor output");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn every_publication_reaches_every_subscriber_once() {
    let floor = Floor::start(&[]);
    let r = floor.load(20);
    let published = num(&r, "published");
    assert!(published >= 30, "published {published}: {r}");
    assert_eq!(num(&r, "subscribed"), 20, "{r}");
    assert_eq!(num(&r, "expected"), published * 20, "{r}");
    assert_eq!(num(&r, "received"), published * 20, "{r}");
    assert_eq!(num(&r, "lost"), 0, "{r}");
    assert_eq!(num(&r, "duplicated"), 0, "{r}");
    assert_eq!(num(&r, "out_of_order"), 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(num(&r["latency_us"], "count"), published * 20, "{r}");
    // Every message also got the kernel's receive timestamp of its socket.
    assert_eq!(num(&r["latency_socket_us"], "count"), published * 20, "{r}");
    assert!(num(&r["latency_socket_us"], "p50") > 0, "{r}");
    let printed = floor.stop();
    assert!(
        printed.contains(&format!("{published} broadcasts, duration p50")),
        "floor printed: {printed}"
    );
}

#[test]
fn losses_are_counted_exactly() {
    let floor = Floor::start(&["--drop-one-in", "4"]);
    let r = floor.load(10);
    let published = num(&r, "published");
    let dropped = published / 4;
    assert!(dropped >= 5, "published {published}: {r}");
    assert_eq!(num(&r, "expected"), published * 10, "{r}");
    assert_eq!(num(&r, "lost"), dropped * 10, "{r}");
    assert_eq!(num(&r, "received"), (published - dropped) * 10, "{r}");
    assert_eq!(num(&r, "duplicated"), 0, "{r}");
    floor.stop();
}
