//! Test harness: starts real `ferrocast` node processes on free ports and talks to them
//! with real WebSocket and HTTP clients.

pub mod backend;
pub mod client;
pub mod compat;
pub mod faults;
pub mod node;
pub mod otlp;
pub mod pbclient;
pub mod proxy;
pub mod recovering;
pub mod redis;

pub use backend::{Backend, GrpcBackend};
pub use client::Client;
pub use node::{NodeProcess, base_config, http_request, token};
pub use pbclient::PbClient;
pub use recovering::RecoveringSubscriber;
pub use redis::{Backplane, RedisCluster, RedisProcess};

/// Path of the node binary built next to the test executables.
pub fn node_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    dir.join(format!(
        "ferrocast-testnode{}",
        std::env::consts::EXE_SUFFIX
    ))
}
