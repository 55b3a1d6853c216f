//! The application backends of the proxy tests, from the compatibility venv, each started
//! on a free loopback port, owned by the test and killed with it:
//! `tests/compat/proxy_backend.py` (HTTP hooks, aiohttp) and
//! `tests/compat/proxy_grpc_backend.py` (the `CentrifugoProxy` gRPC service, grpcio).

use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running backend.
pub struct Backend {
    _child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

fn compat_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// Starts `script` from the compatibility venv on a free port and waits for its
/// `LISTENING <port>` line; the other lines of its stdout go to `on_line`.
async fn start_script(
    script: &str,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> (Child, SocketAddr) {
    let dir = compat_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the compatibility venv is missing: run tests/compat/setup.sh"
    );
    let mut child = Command::new(python)
        .arg(dir.join(script))
        .arg("0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(p) = line.strip_prefix("LISTENING ") {
                return p.trim().parse::<u16>().ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("{script} did not start"));
    // Keep reading its stdout so it never blocks on a full pipe.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
        }
    });
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

impl Backend {
    /// Starts the backend and waits until it listens.
    pub async fn start() -> Backend {
        let (child, addr) = start_script("proxy_backend.py", |_| {}).await;
        Backend {
            _child: child,
            addr,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The endpoint of a hook: `/centrifugo/<hook>`.
    pub fn hook(&self, hook: &str) -> String {
        self.url(&format!("/centrifugo/{hook}"))
    }

    /// Every call received so far: `{"hook", "body", "headers"}`.
    pub async fn calls(&self) -> Vec<Value> {
        let (status, body) = crate::http_request(self.addr, "GET", "/calls", &[], b"").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("calls json")
    }

    /// The calls of one hook.
    pub async fn calls_of(&self, hook: &str) -> Vec<Value> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c["hook"] == hook)
            .collect()
    }
}

/// A running gRPC backend (`proxy_grpc_backend.py`), with the events it reported.
pub struct GrpcBackend {
    _child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    events: Arc<Mutex<Vec<Value>>>,
}

impl GrpcBackend {
    /// Starts the backend and waits until it listens.
    pub async fn start() -> GrpcBackend {
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = events.clone();
        let (child, addr) = start_script("proxy_grpc_backend.py", move |line| {
            if let Some(json) = line.strip_prefix("EVENT ")
                && let Ok(v) = serde_json::from_str(json)
            {
                sink.lock().expect("events").push(v);
            }
        })
        .await;
        GrpcBackend {
            _child: child,
            addr,
            events,
        }
    }

    /// `grpc://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// Every event so far: `{"event": kind, ...}`.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().expect("events").clone()
    }

    /// The events of one kind.
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Waits (up to `within`) for an event of `kind` whose fields include `fields`.
    pub async fn wait_for(&self, kind: &str, fields: &Value, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let found = self.events_of(kind).into_iter().find(|e| {
                fields
                    .as_object()
                    .is_none_or(|f| f.iter().all(|(k, v)| &e[k] == v))
            });
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
