//! The WebSocket transport: where a client frame enters ferrocast.
//!
//! The upgrade is validated here (hyper does not), then the TCP stream is split: the
//! read half goes through tungstenite (frame parsing, unmasking, size limits) and feeds
//! [`Session`] through [`FrameSource`]; a writer task owns the write half and drains the
//! session's outbox, joining queued frames into as few WebSocket messages as it can and
//! writing them with one vectored write per batch (see [`crate::wsframe`]).

use crate::wsframe;
use bytes::Bytes;
use ferrocast_node::Node;
use ferrocast_node::outbox::{Outbox, Outgoing};
use ferrocast_node::session::{FrameSource, Incoming, Session};
use ferrocast_protocol::Protocol;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::task::TaskTracker;

/// Read buffer per connection: client commands are small, and larger messages are simply
/// read in several steps. This buffer is most of an idle connection's memory.
const READ_BUFFER: usize = 2048;

/// Why an upgrade request was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Not a valid WebSocket upgrade request.
    #[error("bad websocket upgrade: {0}")]
    BadRequest(&'static str),
    /// The `Origin` is not allowed.
    #[error("origin not allowed")]
    Forbidden,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Checks the upgrade headers and returns the `Sec-WebSocket-Accept` value.
pub fn validate_upgrade(
    headers: &HeaderMap,
    allowed_origins: &[String],
) -> Result<String, UpgradeError> {
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(UpgradeError::BadRequest("missing Upgrade: websocket"));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(UpgradeError::BadRequest("missing Connection: upgrade"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(UpgradeError::BadRequest("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(UpgradeError::BadRequest("missing Sec-WebSocket-Key"))?;
    let k = key.as_bytes();
    if k.len() != 24
        || !k[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        || &k[22..] != b"=="
    {
        return Err(UpgradeError::BadRequest("invalid Sec-WebSocket-Key"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| UpgradeError::Forbidden)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !origin_allowed(origin, host, allowed_origins) {
            return Err(UpgradeError::Forbidden);
        }
    }
    Ok(derive_accept_key(k))
}

/// Whether a browser `Origin` may connect.
pub fn origin_allowed(origin: &str, host: &str, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        return origin_host.eq_ignore_ascii_case(host);
    }
    allowed.iter().any(|pattern| {
        pattern == "*"
            || pattern.eq_ignore_ascii_case(origin)
            || ferrocast_node::channels::glob_match(
                &pattern.to_ascii_lowercase(),
                &origin.to_ascii_lowercase(),
            )
    })
}

/// The WebSocket subprotocol of the JSON protocol.
pub const JSON_SUBPROTOCOL: &str = "centrifuge-json";
/// The WebSocket subprotocol of the Protobuf protocol.
pub const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

/// The protocol a connection speaks, as Centrifugo picks it: the first subprotocol the
/// client offers that the server knows (echoed back, which browsers require), or the
/// query `format=protobuf` / `cf_protocol=protobuf`; JSON otherwise. Returns the protocol
/// and the subprotocol to echo. Offered subprotocols that are all unknown are logged and
/// not echoed, and the connection goes on as JSON (a browser then gives up on its side).
pub fn select_protocol(
    headers: &HeaderMap,
    query: Option<&str>,
) -> (Protocol, Option<&'static str>) {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let echo = offered.iter().find_map(|p| match *p {
        JSON_SUBPROTOCOL => Some(JSON_SUBPROTOCOL),
        PROTOBUF_SUBPROTOCOL => Some(PROTOBUF_SUBPROTOCOL),
        _ => None,
    });
    if echo.is_none() && !offered.is_empty() {
        tracing::info!(
            offered = %offered.join(", "),
            "websocket subprotocols not supported (known: centrifuge-json, centrifuge-protobuf): none echoed, JSON assumed"
        );
    }
    let by_query = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "format=protobuf" || kv == "cf_protocol=protobuf")
    });
    let protocol = if by_query || echo == Some(PROTOBUF_SUBPROTOCOL) {
        Protocol::Protobuf
    } else {
        Protocol::Json
    };
    (protocol, echo)
}

/// The headers of the upgrade request named in `names` (lower case), which the proxies
/// send on to the backend; repeated headers are joined with `, `.
pub fn proxied_headers(headers: &HeaderMap, names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|name| {
            let values: Vec<&str> = headers
                .get_all(name.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!values.is_empty()).then(|| (name.clone(), values.join(", ")))
        })
        .collect()
}

/// The 101 response for an accepted upgrade, echoing `subprotocol` when given.
pub fn switching_protocols<B: Default>(
    accept: String,
    subprotocol: Option<&'static str>,
) -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = subprotocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    resp
}

/// Runs a client session speaking `protocol` over an upgraded connection until it ends.
pub async fn serve_socket(
    node: Arc<Node>,
    upgraded: Upgraded,
    tracker: TaskTracker,
    protocol: Protocol,
    headers: Vec<(String, String)>,
) {
    // Take the TCP stream back from hyper: reads go through tungstenite (frame parsing,
    // unmasking, limits), writes go straight to the socket (see `wsframe`).
    let parts = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(p) => p,
        Err(_) => {
            tracing::error!("websocket upgrade over an unexpected transport");
            return;
        }
    };
    let (read, write) = parts.io.into_inner().into_split();
    let max = node.client.max_message_size;
    // How long the writer may take to flush and send the close frame once the session
    // ended: as long as a client may take to answer a ping.
    let close_grace = node.client.pong_timeout;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // The bytes hyper read past the upgrade request; an empty remainder still pins
    // hyper's whole read buffer (several KiB per connection), so it is not kept.
    let prefix = (!parts.read_buf.is_empty()).then_some(parts.read_buf);
    let reader = ReadSide {
        prefix,
        inner: read,
    };
    let ws = WebSocketStream::from_raw_socket(reader, Role::Server, Some(config)).await;
    let (session, outbox) = Session::new(node, protocol, headers);
    let framing = wsframe::Framing::of(protocol);
    let mut writer = tracker.spawn(write_loop(write, outbox.clone(), framing));
    // Boxed: inline, the session's future made this task's future 5.7 KB (most of it
    // never used while idle); boxed, the task is 0.7 KB and the session 1.8 KB.
    let mut source = WsSource { stream: ws, outbox };
    let reason = Box::pin(session.run(&mut source)).await;
    tracing::debug!(code = reason.code, reason = %reason.reason, "session ended");
    // Give the writer a moment to send the close frame. A client that stopped reading
    // (closed as slow, say) keeps the writer blocked on a full socket: abort it, which
    // drops the write half and closes the socket instead of holding it open.
    let wrote = async {
        if tokio::time::timeout(close_grace, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    };
    // Meanwhile keep reading (and discarding) what the client still sends, until its
    // close frame or end of stream: closing a socket with unread input makes the kernel
    // answer with a reset, and a client may then never see the close code (nor the
    // replies queued before it) and take a terminal close for a network error.
    let lingered = tokio::time::timeout(close_grace.min(LINGER), source.drain());
    let _ = tokio::join!(wrote, lingered);
}

/// Longest a closing connection's input is drained before the socket is dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(3);

/// The read half under tungstenite, with the bytes hyper read past the upgrade request
/// first. What tungstenite writes by itself (automatic pongs and close replies) is
/// dropped here: the session's writer sends those (`Outbox::pong`, close on end).
struct ReadSide {
    prefix: Option<Bytes>,
    inner: OwnedReadHalf,
}

impl AsyncRead for ReadSide {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if prefix.is_empty() {
                // Release hyper's buffer as soon as it is consumed.
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadSide {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct WsSource {
    stream: WebSocketStream<ReadSide>,
    outbox: Arc<Outbox>,
}

impl WsSource {
    /// Reads and drops everything until the client's close frame, an error or the end of
    /// the stream.
    async fn drain(&mut self) {
        while let Some(msg) = self.stream.next().await {
            if matches!(msg, Ok(Message::Close(_)) | Err(_)) {
                return;
            }
        }
    }
}

impl FrameSource for WsSource {
    async fn next(&mut self) -> Incoming {
        loop {
            return match self.stream.next().await {
                Some(Ok(Message::Text(t))) => Incoming::Frame(Bytes::from(t)),
                Some(Ok(Message::Binary(b))) => Incoming::Binary(b),
                Some(Ok(Message::Ping(payload))) => {
                    self.outbox.pong(payload);
                    continue;
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => Incoming::Closed,
                Some(Err(WsError::Capacity(
                    CapacityError::MessageTooLong { .. } | CapacityError::TooManyHeaders,
                ))) => Incoming::TooLarge,
                Some(Err(WsError::Utf8(_))) => Incoming::Invalid,
                Some(Err(WsError::Protocol(_))) => Incoming::Invalid,
                Some(Err(_)) => Incoming::Closed,
            };
        }
    }
}

async fn write_loop(mut socket: OwnedWriteHalf, outbox: Arc<Outbox>, framing: wsframe::Framing) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        batch.clear();
        if batch.capacity() > 64 {
            batch = Vec::new();
        }
        match outbox.next(&mut batch).await {
            Outgoing::Frames { pong } => {
                if wsframe::write_frames(&mut socket, pong.as_ref(), &batch, framing)
                    .await
                    .is_err()
                {
                    outbox.close(ferrocast_protocol::Disconnect::WRITE_ERROR);
                    return;
                }
            }
            Outgoing::Close(reason) => {
                let _ = wsframe::write_close(&mut socket, reason.code, &reason.reason).await;
                let _ = socket.shutdown().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offering(protocols: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for p in protocols {
            h.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(p).unwrap(),
            );
        }
        h
    }

    #[test]
    fn protocol_selection() {
        let none = HeaderMap::new();
        assert_eq!(select_protocol(&none, None), (Protocol::Json, None));
        assert_eq!(
            select_protocol(&offering(&["centrifuge-protobuf"]), None),
            (Protocol::Protobuf, Some(PROTOBUF_SUBPROTOCOL))
        );
        assert_eq!(
            select_protocol(
                &offering(&["foo, centrifuge-json", "centrifuge-protobuf"]),
                None
            ),
            (Protocol::Json, Some(JSON_SUBPROTOCOL)),
            "the client's first known one wins"
        );
        assert_eq!(
            select_protocol(&offering(&["foo"]), None),
            (Protocol::Json, None)
        );
        assert_eq!(
            select_protocol(&none, Some("cf_protocol=protobuf")),
            (Protocol::Protobuf, None)
        );
        assert_eq!(
            select_protocol(&offering(&["centrifuge-json"]), Some("a=1&format=protobuf")),
            (Protocol::Protobuf, Some(JSON_SUBPROTOCOL)),
            "the query switch wins, as in Centrifugo"
        );
        assert_eq!(
            select_protocol(&none, Some("format=json")),
            (Protocol::Json, None)
        );
    }

    #[test]
    fn origins() {
        assert!(origin_allowed(
            "http://localhost:8000",
            "localhost:8000",
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            "localhost:8000",
            &[]
        ));
        let list = vec!["https://*.example.com".to_string()];
        assert!(origin_allowed("https://app.example.com", "x", &list));
        assert!(!origin_allowed("https://example.org", "x", &list));
        assert!(origin_allowed("https://any", "x", &["*".to_string()]));
    }
}
