//! The application backend of the proxy tests: `tests/compat/proxy_backend.py` (aiohttp,
//! from the compatibility venv) started on a free loopback port, owned by the test and
//! killed with it.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
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

impl Backend {
    /// Starts the backend and waits until it listens.
    pub async fn start() -> Backend {
        let dir = compat_dir();
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "the compatibility venv is missing: run tests/compat/setup.sh"
        );
        let mut child = Command::new(python)
            .arg(dir.join("proxy_backend.py"))
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start proxy_backend.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
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
        .expect("proxy_backend.py did not start");
        // Keep reading its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Backend {
            _child: child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
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
