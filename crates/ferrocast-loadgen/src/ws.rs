//! Opening a subscriber or publisher WebSocket connection: TCP connect (with receive
//! timestamps, see [`crate::stamped`]), the client handshake (with the subprotocol of the
//! encoding, if any), and small buffers.

use crate::config::Target;
use crate::stamped::StampedTcp;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket over a timestamping TCP stream.
pub type Ws = WebSocketStream<StampedTcp>;

/// Small buffers: the load generator holds thousands of connections (see RUST-STACK P1).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(8 << 20)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// TCP connect + WebSocket handshake, offering `subprotocol` if given (the server must
/// echo it); the error is an error-kind label.
pub async fn open_ws(target: &Target, subprotocol: Option<&'static str>) -> Result<Ws, String> {
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|_| "ws_bad_url".to_string())?;
    if let Some(p) = subprotocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("tcp_connect:{:?}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let tcp = StampedTcp::new(tcp);
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(request, tcp, Some(ws_config()))
        .await
        .map_err(|e| match e {
            Error::Http(r) => format!("ws_handshake_http:{}", r.status().as_u16()),
            Error::Io(e) => format!("ws_handshake_io:{:?}", e.kind()),
            Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
                "ws_handshake_subprotocol".to_string()
            }
            _ => "ws_handshake".to_string(),
        })?;
    Ok(ws)
}
