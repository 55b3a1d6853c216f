//! A ferrocast node process owned by a test.

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// HMAC secret used by [`base_config`].
pub const SECRET: &str = "test-secret";
/// API key used by [`base_config`].
pub const API_KEY: &str = "test-api-key";

/// A configuration with a token secret, an API key and a few namespaces used by tests.
pub fn base_config() -> Value {
    json!({
        "client": {
            "token": {"hmac_secret_key": SECRET},
            "allowed_origins": ["*"],
        },
        "http_api": {"key": API_KEY},
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": true,
                "allow_publish_for_subscriber": true,
            },
            "namespaces": [
                {
                    "name": "chat",
                    "presence": true,
                    "join_leave": true,
                    "history_size": 10,
                    "history_ttl": "300s",
                    "allow_subscribe_for_client": true,
                    "allow_publish_for_subscriber": true,
                    "allow_presence_for_subscriber": true,
                    "allow_history_for_subscriber": true,
                },
                {
                    "name": "private",
                },
                {
                    "name": "live",
                    "history_size": 5000,
                    "history_ttl": "600s",
                    "force_recovery": true,
                    "allow_subscribe_for_client": true,
                },
                {
                    "name": "dialog",
                    "allow_user_limited_channels": true,
                },
                {
                    "name": "feed",
                    "history_size": 3,
                    "history_ttl": "300s",
                    "force_recovery": true,
                    "allow_subscribe_for_client": true,
                    "allow_history_for_client": true,
                },
            ],
        },
    })
}

/// [`base_config`] on the Redis engine over `redis_urls`, with short presence and node
/// lifetimes so that fault tests finish quickly.
pub fn cluster_config(redis_urls: &[String], prefix: &str) -> Value {
    let mut cfg = base_config();
    cfg["engine"] = json!({
        "type": "redis",
        "redis": {"address": redis_urls, "prefix": prefix, "node_info_ttl": "4s"},
    });
    cfg["client"]["presence_update_interval"] = json!("1s");
    cfg["client"]["presence_ttl"] = json!("3s");
    cfg
}

/// Signs an HS256 token with [`SECRET`].
pub fn token(claims: Value) -> String {
    token_with(SECRET, claims)
}

/// Signs an HS256 token with `secret`.
pub fn token_with(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running node.
pub struct NodeProcess {
    child: Child,
    /// Address it listens on.
    pub addr: SocketAddr,
    /// Its stderr lines so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Starts a node with `config` on a free loopback port and waits until it listens.
    pub async fn start(config: Value) -> NodeProcess {
        Self::start_with(config, &[]).await
    }

    /// Like [`NodeProcess::start`], with extra environment variables.
    pub async fn start_with(config: Value, env: &[(&str, &str)]) -> NodeProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ferrocast.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        Self::spawn(&path, env, dir).await
    }

    /// Starts a node with a configuration file as it is (TOML or JSON).
    pub async fn start_file(path: &std::path::Path) -> NodeProcess {
        Self::start_file_with(path, &[]).await
    }

    /// Like [`NodeProcess::start_file`], with extra environment variables (e.g. the
    /// `FERROCAST_ENGINE_*` settings that put it on Redis).
    pub async fn start_file_with(path: &std::path::Path, env: &[(&str, &str)]) -> NodeProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn(path, env, dir).await
    }

    async fn spawn(
        path: &std::path::Path,
        env: &[(&str, &str)],
        dir: tempfile::TempDir,
    ) -> NodeProcess {
        let mut cmd = Command::new(crate::node_binary());
        cmd.arg("serve")
            .arg("--config")
            .arg(path)
            .args([
                "--address",
                "127.0.0.1",
                "--port",
                "0",
                "--log-format",
                "json",
            ])
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ferrocast node");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = listening_address(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(20), rx).await {
            Ok(Ok(a)) => a,
            _ => {
                let _ = child.start_kill();
                panic!("node did not start: {:?}", logs.lock().unwrap());
            }
        };
        NodeProcess {
            child,
            addr,
            logs,
            _dir: dir,
        }
    }

    /// The address of another listener, from the log line `message` (for example
    /// `listening grpc_api`).
    pub fn logged_address(&self, message: &str) -> Option<SocketAddr> {
        self.logs.lock().unwrap().iter().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            if v.get("message")?.as_str()? != message {
                return None;
            }
            v.get("address")?.as_str()?.parse().ok()
        })
    }

    /// WebSocket endpoint URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Calls a server API method with the test API key; returns the whole JSON response.
    pub async fn api(&self, method: &str, body: Value) -> Value {
        let (status, body) = http_request(
            self.addr,
            "POST",
            &format!("/api/{method}"),
            &[("X-API-Key", API_KEY)],
            body.to_string().as_bytes(),
        )
        .await;
        assert!(status == 200, "api {method}: status {status}: {body}");
        serde_json::from_str(&body).expect("api json")
    }

    /// Calls a server API method and returns its `result` (for `batch`, the whole
    /// answer: Centrifugo's BatchResponse has no `result` wrapper), panicking on an error.
    pub async fn api_ok(&self, method: &str, body: Value) -> Value {
        let v = self.api(method, body).await;
        assert!(v.get("error").is_none(), "api {method} failed: {v}");
        if method == "batch" {
            assert!(v.get("result").is_none(), "batch answer wrapped: {v}");
            return v;
        }
        v["result"].clone()
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_request(self.addr, "GET", path, &[], b"").await
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("pid")
    }

    /// Open file descriptors of the process (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("pid");
        // Only the pid of the process this test started.
        let rc = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(rc.success());
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits until `/ready` answers `status` (within 15 s).
    pub async fn wait_ready(&self, status: u16) {
        for _ in 0..300 {
            if let Some((s, _)) = http_request_opt(self.addr, "GET", "/ready", &[], b"").await
                && s == status
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} never answered /ready {status}", self.addr);
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("node did not exit in time")
            .expect("wait")
    }

    /// All stderr output so far.
    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("message")?.as_str()? != "listening" {
        return None;
    }
    v.get("address")?.as_str()?.parse().ok()
}

/// Like [`http_request`], returning `None` when the node cannot be reached.
pub async fn http_request_opt(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    s.write_all(body).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A minimal HTTP/1.1 request over a fresh connection; returns status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("http timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
