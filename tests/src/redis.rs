//! A `redis-server` process owned by a test, on a free loopback port.

use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running redis-server.
pub struct RedisProcess {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl RedisProcess {
    /// Starts an in-memory redis-server (no persistence).
    pub async fn start() -> RedisProcess {
        Self::start_opts(false).await
    }

    /// Starts a redis-server that persists every write (append-only file, fsync always),
    /// so its data survives a restart.
    pub async fn start_persistent() -> RedisProcess {
        Self::start_opts(true).await
    }

    async fn start_opts(persistent: bool) -> RedisProcess {
        let mut r = RedisProcess {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            persistent,
        };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--dir", self.dir.path().to_str().expect("utf-8 path")])
        .args([
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]);
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("redis-server must be installed"));
        for _ in 0..200 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(Ok(mut c)) = tokio::time::timeout(
            Duration::from_millis(200),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok()
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis")
    }

    /// Kills the server (SIGKILL).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Starts the server again on the same port (and data directory).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}
