//! `proxy-backend`: the application backend of the proxy benchmarks, doing as little as a
//! backend can, so that the numbers measure the broker's proxy path and not the backend.
//!
//! An HTTP/1.1 server (hyper, keep-alive) on 127.0.0.1 answering the broker's HTTP proxy
//! hooks:
//!
//! - `POST /centrifugo/connect`: `{"result":{"user": <data.user>}}`, or `"bench-<n>"` (n
//!   counting the connect calls) when the connect `data` has no string `user`;
//! - `POST /centrifugo/rpc`: `{"result":{"data": <the request's data>}}` (an echo;
//!   `b64data` is echoed as `b64data`);
//! - `GET /stats`: `{"connect": N, "rpc": M, "bad": K, "connections": C}`, the calls
//!   answered so far, the requests refused (not JSON, too large, unknown path or method) and
//!   the TCP connections accepted (the broker's HTTP client opens one per call in flight).
//!
//! Usage: `proxy-backend [--port P] [--threads T]` (port 0: any free one). It prints
//! `LISTENING <port>` on stdout once it accepts connections, runs until SIGTERM or SIGINT,
//! and then prints its counters to stderr.

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Largest request body read (the broker's requests are a few hundred bytes).
const MAX_BODY: usize = 1 << 20;

#[derive(Parser, Debug)]
#[command(about = "Minimal proxy hook backend (connect, rpc) for ferrocast's benchmarks")]
struct Args {
    /// Port on 127.0.0.1 (0: any free port; the one bound is printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Runtime threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Default)]
struct Counters {
    connect: AtomicU64,
    rpc: AtomicU64,
    bad: AtomicU64,
    connections: AtomicU64,
}

#[derive(Deserialize)]
struct ConnectRequest {
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RpcRequest<'a> {
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    b64data: Option<&'a RawValue>,
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The answer to a connect hook call, `None` if the request is not a connect request.
fn connect_answer(body: &[u8], n: u64) -> Option<Vec<u8>> {
    let req: ConnectRequest = serde_json::from_slice(body).ok()?;
    let user = match req.data.as_ref().and_then(|d| d.get("user")) {
        Some(serde_json::Value::String(u)) => u.clone(),
        _ => format!("bench-{n}"),
    };
    serde_json::to_vec(&serde_json::json!({"result": {"user": user}})).ok()
}

/// The answer to an rpc hook call (the request's payload echoed), `None` if the request is
/// not an rpc request.
fn rpc_answer(body: &[u8]) -> Option<Vec<u8>> {
    let req: RpcRequest<'_> = serde_json::from_slice(body).ok()?;
    let (key, raw) = match (req.data, req.b64data) {
        (Some(d), _) => ("data", d.get()),
        (None, Some(b)) => ("b64data", b.get()),
        (None, None) => return Some(br#"{"result":{}}"#.to_vec()),
    };
    let mut out = Vec::with_capacity(raw.len() + 24);
    let _ = write!(out, r#"{{"result":{{"{key}":"#);
    out.extend_from_slice(raw.as_bytes());
    out.extend_from_slice(b"}}");
    Some(out)
}

async fn handle(
    req: Request<Incoming>,
    c: Arc<Counters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let bad = |status: StatusCode| {
        c.bad.fetch_add(1, Ordering::Relaxed);
        Ok(json(status, br#"{}"#.to_vec()))
    };
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/stats") => {
            let body = serde_json::json!({
                "connect": c.connect.load(Ordering::Relaxed),
                "rpc": c.rpc.load(Ordering::Relaxed),
                "bad": c.bad.load(Ordering::Relaxed),
                "connections": c.connections.load(Ordering::Relaxed),
            });
            Ok(json(StatusCode::OK, body.to_string().into_bytes()))
        }
        (&Method::POST, "/centrifugo/connect" | "/centrifugo/rpc") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return bad(StatusCode::BAD_REQUEST),
            };
            let answer = if path == "/centrifugo/connect" {
                let n = c.connect.fetch_add(1, Ordering::Relaxed);
                connect_answer(&body, n)
            } else {
                c.rpc.fetch_add(1, Ordering::Relaxed);
                rpc_answer(&body)
            };
            match answer {
                Some(a) => Ok(json(StatusCode::OK, a)),
                None => bad(StatusCode::BAD_REQUEST),
            }
        }
        (_, "/stats" | "/centrifugo/connect" | "/centrifugo/rpc") => {
            bad(StatusCode::METHOD_NOT_ALLOWED)
        }
        _ => bad(StatusCode::NOT_FOUND),
    }
}

async fn serve(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let bound = listener.local_addr()?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "LISTENING {bound}")?;
        out.flush()?;
    }
    let counters = Arc::new(Counters::default());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            a = listener.accept() => {
                let Ok((stream, _)) = a else { continue };
                let _ = stream.set_nodelay(true);
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let c = counters.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, c.clone()));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    eprintln!(
        "proxy-backend: connect {} rpc {} bad {} connections {}",
        counters.connect.load(Ordering::Relaxed),
        counters.rpc.load(Ordering::Relaxed),
        counters.bad.load(Ordering::Relaxed),
        counters.connections.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(args.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_takes_the_user_from_the_data() {
        let a = connect_answer(br#"{"client":"c","data":{"user":"u7"}}"#, 3).unwrap();
        assert_eq!(a, br#"{"result":{"user":"u7"}}"#);
        let a = connect_answer(br#"{"client":"c"}"#, 3).unwrap();
        assert_eq!(a, br#"{"result":{"user":"bench-3"}}"#);
        assert!(connect_answer(b"{bad", 0).is_none());
    }

    #[test]
    fn rpc_echoes_the_data() {
        let a = rpc_answer(br#"{"method":"m","data":{"seq":1,"pad":"x"}}"#).unwrap();
        assert_eq!(a, br#"{"result":{"data":{"seq":1,"pad":"x"}}}"#);
        let a = rpc_answer(br#"{"method":"m","b64data":"e30="}"#).unwrap();
        assert_eq!(a, br#"{"result":{"b64data":"e30="}}"#);
        assert_eq!(
            rpc_answer(br#"{"method":"m"}"#).unwrap(),
            br#"{"result":{}}"#
        );
    }
}
