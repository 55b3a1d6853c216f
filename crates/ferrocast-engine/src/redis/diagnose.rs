//! Why a Redis cannot be reached, in words an operator can act on: the host name does not
//! resolve, nothing listens (connection refused), the network drops the packets (timed
//! out), or Redis answers but refuses the credentials. The connection manager retries on
//! its own and only ever reports a timeout; this probe asks once, directly.

use redis::{ConnectionAddr, IntoConnectionInfo};
use std::io::ErrorKind;
use std::time::Duration;

/// How long each step of the probe may take.
const STEP: Duration = Duration::from_secs(1);

/// What is wrong with reaching the Redis at `address` (a `redis://` URL), or what the
/// probe could not tell.
pub async fn why_unreachable(address: &str) -> String {
    let info = match address.into_connection_info() {
        Ok(i) => i,
        Err(e) => return format!("invalid address: {e}"),
    };
    let (host, port) = match info.addr() {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => (h.clone(), *p),
        ConnectionAddr::Unix(path) => {
            return match tokio::net::UnixStream::connect(path).await {
                Ok(_) => "the socket accepts connections but Redis does not answer".into(),
                Err(e) => format!("unix socket {}: {e}", path.display()),
            };
        }
        other => return format!("cannot probe {other:?}"),
    };
    let resolved = tokio::time::timeout(STEP, tokio::net::lookup_host((host.as_str(), port)));
    let addrs: Vec<_> = match resolved.await {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => return format!("cannot resolve {host}: {e}"),
        Err(_) => return format!("resolving {host} timed out"),
    };
    let Some(addr) = addrs.first() else {
        return format!("{host} resolves to no address");
    };
    match tokio::time::timeout(STEP, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            return format!("connection refused by {addr} (is redis-server running there?)");
        }
        Ok(Err(e)) => return format!("cannot connect to {addr}: {e}"),
        Err(_) => return format!("connecting to {addr} timed out (network or firewall)"),
    }
    // TCP works: ask Redis itself, once, without retries.
    let client = match redis::Client::open(info) {
        Ok(c) => c,
        Err(e) => return format!("invalid address: {e}"),
    };
    let answer = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(STEP, answer).await {
        Ok(Ok(_)) => "Redis answers now".into(),
        Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            format!("authentication failed: {e}")
        }
        Ok(Err(e)) if !e.is_timeout() => format!("Redis at {addr} refused: {e}"),
        _ => format!("{addr} accepts connections but does not answer as Redis"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_the_cause() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let refused = why_unreachable(&format!("redis://127.0.0.1:{port}")).await;
        assert!(refused.contains("connection refused"), "{refused}");
        let dns = why_unreachable("redis://no-such-host.invalid:6379").await;
        assert!(
            dns.contains("cannot resolve") || dns.contains("timed out"),
            "{dns}"
        );
        // Something that accepts and never answers.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = mute.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = mute.accept().await {
                held.push(s);
            }
        });
        let silent = why_unreachable(&format!("redis://{addr}")).await;
        assert!(silent.contains("does not answer"), "{silent}");
    }
}
