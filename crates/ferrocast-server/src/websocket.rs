//! The WebSocket transport: where a client frame enters ferrocast.
//!
//! The upgrade is validated here (hyper does not), then the socket is split: a reader
//! feeds [`Session`] through [`FrameSource`], and a writer task drains the session's
//! outbox, joining queued frames into as few WebSocket messages as it can and flushing
//! once per batch.

use bytes::{BufMut, Bytes, BytesMut};
use ferrocast_node::Node;
use ferrocast_node::outbox::{Outbox, Outgoing};
use ferrocast_node::session::{FrameSource, Incoming, Session};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::task::TaskTracker;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Read buffer per connection: client commands are small, and larger messages are simply
/// read in several steps. This buffer is most of an idle connection's memory.
const READ_BUFFER: usize = 2048;

/// Largest WebSocket message the writer builds when joining queued frames.
const MAX_BATCH_MESSAGE: usize = 16 * 1024;

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
            || ferrocast_node::api::glob_match(
                &pattern.to_ascii_lowercase(),
                &origin.to_ascii_lowercase(),
            )
    })
}

/// The 101 response for an accepted upgrade.
pub fn switching_protocols<B: Default>(accept: String) -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Runs a client session over an upgraded connection until it ends.
pub async fn serve_socket(node: Arc<Node>, upgraded: Upgraded, tracker: TaskTracker) {
    let max = node.client.max_message_size;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(node.client.queue_max_size.max(MAX_BATCH_MESSAGE) * 2)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, stream) = ws.split();
    let (session, outbox) = Session::new(node);
    let writer = tracker.spawn(write_loop(sink, outbox));
    let reason = session.run(WsSource { stream }).await;
    tracing::debug!(code = reason.code, reason = %reason.reason, "session ended");
    // Give the writer a moment to send the close frame.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

struct WsSource {
    stream: SplitStream<Ws>,
}

impl FrameSource for WsSource {
    async fn next(&mut self) -> Incoming {
        loop {
            return match self.stream.next().await {
                Some(Ok(Message::Text(t))) => Incoming::Frame(Bytes::from(t)),
                Some(Ok(Message::Binary(_))) => Incoming::Binary,
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
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

async fn write_loop(mut sink: SplitSink<Ws, Message>, outbox: Arc<Outbox>) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        batch.clear();
        if batch.capacity() > 64 {
            batch = Vec::new();
        }
        match outbox.next(&mut batch).await {
            Outgoing::Frames => {
                if write_batch(&mut sink, &batch).await.is_err() {
                    outbox.close(ferrocast_protocol::Disconnect::WRITE_ERROR);
                    return;
                }
            }
            Outgoing::Close(reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(reason.code),
                    reason: reason.reason.as_ref().into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
                return;
            }
        }
    }
}

fn text(bytes: Bytes) -> Option<Message> {
    tokio_tungstenite::tungstenite::Utf8Bytes::try_from(bytes)
        .ok()
        .map(Message::Text)
}

/// Writes queued frames, joining consecutive small ones with `\n` into one message.
async fn write_batch(sink: &mut SplitSink<Ws, Message>, batch: &[Bytes]) -> Result<(), WsError> {
    if let [single] = batch {
        if let Some(m) = text(single.clone()) {
            sink.send(m).await?;
        }
        return Ok(());
    }
    let mut buf = BytesMut::new();
    for frame in batch {
        if !buf.is_empty()
            && buf.len() + frame.len() + 1 > MAX_BATCH_MESSAGE
            && let Some(m) = text(buf.split().freeze())
        {
            sink.feed(m).await?;
        }
        if !buf.is_empty() {
            buf.put_u8(b'\n');
        }
        buf.extend_from_slice(frame);
    }
    if !buf.is_empty()
        && let Some(m) = text(buf.freeze())
    {
        sink.feed(m).await?;
    }
    sink.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
