//! Opening a subscriber or publisher WebSocket connection: TCP connect (with receive
//! timestamps, see [`crate::stamped`]), the client handshake, and small buffers.

use crate::config::Target;
use crate::stamped::StampedTcp;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
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

/// TCP connect + WebSocket handshake; the error is an error-kind label.
pub async fn open_ws(target: &Target) -> Result<Ws, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("tcp_connect:{:?}", e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let tcp = StampedTcp::new(tcp);
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), tcp, Some(ws_config()))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => {
                    format!("ws_handshake_http:{}", r.status().as_u16())
                }
                tokio_tungstenite::tungstenite::Error::Io(e) => {
                    format!("ws_handshake_io:{:?}", e.kind())
                }
                _ => "ws_handshake".to_string(),
            })?;
    Ok(ws)
}
