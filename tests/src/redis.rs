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
    cluster: bool,
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
            cluster: false,
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
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
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

/// A port that is free and whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = fastrand::u16(20000..45000);
        let ok = [port, port + 10000]
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if ok {
            return port;
        }
    }
}

/// A Redis Cluster of `redis-server` processes owned by a test (masters only, slots
/// spread evenly by `redis-cli --cluster create`).
pub struct RedisCluster {
    /// The members, each a master of a third (or so) of the slots.
    pub members: Vec<RedisProcess>,
}

impl RedisCluster {
    /// Starts `n` (at least 3) members and forms the cluster; returns once every member
    /// reports `cluster_state:ok`.
    pub async fn start(n: usize) -> RedisCluster {
        Self::start_opts(n, false).await
    }

    /// Like [`RedisCluster::start`], with members that persist every write (AOF), so a
    /// restarted member keeps its data.
    pub async fn start_persistent(n: usize) -> RedisCluster {
        Self::start_opts(n, true).await
    }

    async fn start_opts(n: usize, persistent: bool) -> RedisCluster {
        let mut members = Vec::new();
        for _ in 0..n {
            let mut r = RedisProcess {
                child: None,
                port: free_cluster_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                persistent,
                cluster: true,
            };
            r.spawn().await;
            members.push(r);
        }
        let addrs: Vec<String> = members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { members };
        cluster.wait_ok().await;
        cluster
    }

    /// Waits until every member reports `cluster_state:ok`.
    pub async fn wait_ok(&self) {
        for _ in 0..200 {
            let mut all = true;
            for m in &self.members {
                if !m.cluster_ok().await {
                    all = false;
                }
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Redis Cluster did not reach cluster_state:ok");
    }

    /// Seed URLs of every member.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(RedisProcess::url).collect()
    }

    /// A cluster connection for the test's own commands.
    pub async fn connection(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("connect to the cluster")
    }

    /// The member serving the slot of `key`.
    pub async fn member_of(&self, key: &str) -> usize {
        let mut c = self.members[0].connection().await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("CLUSTER KEYSLOT");
        let shards: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .expect("CLUSTER SLOTS");
        let redis::Value::Array(ranges) = shards else {
            panic!("CLUSTER SLOTS: {shards:?}");
        };
        for range in ranges {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let (Some(redis::Value::Int(lo)), Some(redis::Value::Int(hi))) =
                (parts.first(), parts.get(1))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&i64::from(slot)) {
                let Some(redis::Value::Array(master)) = parts.get(2) else {
                    continue;
                };
                let Some(redis::Value::Int(port)) = master.get(1) else {
                    continue;
                };
                return self
                    .members
                    .iter()
                    .position(|m| i64::from(m.port) == *port)
                    .expect("a member serves the slot");
            }
        }
        panic!("no member serves slot {slot}");
    }
}

impl RedisProcess {
    async fn cluster_ok(&self) -> bool {
        let Ok(Ok(mut c)) = tokio::time::timeout(
            Duration::from_millis(500),
            redis::Client::open(self.url())
                .expect("client")
                .get_multiplexed_async_connection(),
        )
        .await
        else {
            return false;
        };
        let info: Result<String, _> = redis::cmd("CLUSTER").arg("INFO").query_async(&mut c).await;
        info.is_ok_and(|i| i.contains("cluster_state:ok"))
    }
}

/// What a cluster test runs on: standalone Redis instances (channels sharded over them by
/// ferrocast) or one Redis Cluster (sharded pub/sub, hash slots).
pub enum Backplane {
    /// Standalone instances.
    Standalone(Vec<RedisProcess>),
    /// A Redis Cluster.
    Cluster(RedisCluster),
}

/// A connection for the test's own commands on either backplane.
#[derive(Clone)]
pub enum BackplaneConnection {
    /// To the first standalone instance.
    Single(redis::aio::MultiplexedConnection),
    /// To the cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for BackplaneConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            BackplaneConnection::Single(c) => c.req_packed_command(cmd),
            BackplaneConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            BackplaneConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            BackplaneConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            BackplaneConnection::Single(c) => c.get_db(),
            BackplaneConnection::Cluster(c) => c.get_db(),
        }
    }
}

impl BackplaneConnection {
    /// Appends an entry (`method`, `payload`) to the backend command stream of the nodes
    /// configured with `prefix` (`<prefix>:api`); returns the entry id.
    pub async fn xadd_command(&mut self, prefix: &str, method: &str, payload: &str) -> String {
        redis::cmd("XADD")
            .arg(format!("{prefix}:api"))
            .arg("*")
            .arg("method")
            .arg(method)
            .arg("payload")
            .arg(payload)
            .query_async(self)
            .await
            .expect("XADD to the command stream")
    }

    /// Every entry of the command stream's dead letters (`<prefix>:api:dead`), as text.
    pub async fn dead_letters(&mut self, prefix: &str) -> String {
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(format!("{prefix}:api:dead"))
            .arg("-")
            .arg("+")
            .query_async(self)
            .await
            .expect("XRANGE of the dead letters");
        format!("{v:?}")
    }
}

impl Backplane {
    /// One standalone in-memory redis-server.
    pub async fn standalone() -> Backplane {
        Backplane::Standalone(vec![RedisProcess::start().await])
    }

    /// A Redis Cluster of three masters.
    pub async fn cluster() -> Backplane {
        Backplane::Cluster(RedisCluster::start(3).await)
    }

    /// Addresses for `engine.redis.address`.
    pub fn urls(&self) -> Vec<String> {
        match self {
            Backplane::Standalone(r) => r.iter().map(RedisProcess::url).collect(),
            Backplane::Cluster(c) => c.urls(),
        }
    }

    /// A persistent (AOF) standalone redis-server.
    pub async fn standalone_persistent() -> Backplane {
        Backplane::Standalone(vec![RedisProcess::start_persistent().await])
    }

    /// A Redis Cluster of three persistent (AOF) masters.
    pub async fn cluster_persistent() -> Backplane {
        Backplane::Cluster(RedisCluster::start_persistent(3).await)
    }

    /// The Redis process serving `key`: the standalone instance, or the cluster member
    /// owning its slot.
    pub async fn member_for(&mut self, key: &str) -> &mut RedisProcess {
        match self {
            Backplane::Standalone(r) => &mut r[0],
            Backplane::Cluster(c) => {
                let i = c.member_of(key).await;
                &mut c.members[i]
            }
        }
    }

    /// Waits until the backplane serves every key again (a cluster: `cluster_state:ok`).
    pub async fn wait_serving(&self) {
        if let Backplane::Cluster(c) = self {
            c.wait_ok().await;
        }
    }

    /// Every Redis process: the standalone instances, or the cluster's members.
    pub fn instances(&self) -> &[RedisProcess] {
        match self {
            Backplane::Standalone(v) => v,
            Backplane::Cluster(c) => &c.members,
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Backplane::Cluster(_))
    }

    /// A node configuration on this backplane (see [`crate::node::cluster_config`]).
    pub fn node_config(&self, prefix: &str) -> serde_json::Value {
        let mut cfg = crate::node::cluster_config(&self.urls(), prefix);
        cfg["engine"]["redis"]["cluster"] = serde_json::json!(self.is_cluster());
        cfg
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> BackplaneConnection {
        match self {
            Backplane::Standalone(r) => BackplaneConnection::Single(r[0].connection().await),
            Backplane::Cluster(c) => BackplaneConnection::Cluster(c.connection().await),
        }
    }
}
