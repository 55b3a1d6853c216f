//! A Centrifugo-protocol WebSocket client for tests speaking the Protobuf variant
//! (subprotocol `centrifuge-protobuf`, binary frames of length-prefixed records), built on
//! the wire types of `ferrocast_protocol::protobuf`.

use crate::client::WAIT;
use ferrocast_protocol::protobuf::{self, wire};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// A Protobuf test client.
pub struct PbClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u32,
    pushes: VecDeque<wire::Push>,
    replies: VecDeque<wire::Reply>,
    /// The subprotocol the server echoed in the handshake.
    pub subprotocol: Option<String>,
    /// Server pings seen (answered with an empty command).
    pub pings: usize,
    closed: Option<(u16, String)>,
}

/// A command with one request set; `id` is filled in by [`PbClient::command`].
pub type Command = wire::Command;

impl PbClient {
    /// Opens a connection offering the `centrifuge-protobuf` subprotocol.
    pub async fn open(url: &str) -> PbClient {
        let mut req = url.into_client_request().expect("request");
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "centrifuge-protobuf".parse().expect("header"),
        );
        let (ws, resp) = connect_async(req).await.expect("websocket connect");
        let subprotocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        PbClient {
            ws,
            next_id: 0,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
            subprotocol,
            pings: 0,
            closed: None,
        }
    }

    /// Opens and connects with `token`; returns the client and the connect result.
    pub async fn connect(url: &str, token: &str) -> (PbClient, wire::ConnectResult) {
        let mut c = Self::open(url).await;
        let r = c
            .command(Command {
                connect: Some(wire::ConnectRequest {
                    token: token.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let result = r
            .connect
            .clone()
            .unwrap_or_else(|| panic!("connect failed: {r:?}"));
        (c, result)
    }

    /// Sends one binary message with these bytes as they are.
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        let _ = self.ws.send(Message::Binary(data.into())).await;
    }

    /// Sends one text message (as a JSON client would).
    pub async fn send_text(&mut self, text: &str) {
        let _ = self.ws.send(Message::Text(text.into())).await;
    }

    /// Sends `cmd` with a fresh id and waits for its reply.
    pub async fn command(&mut self, mut cmd: Command) -> wire::Reply {
        self.next_id += 1;
        let id = self.next_id;
        cmd.id = id;
        let mut frame = Vec::new();
        protobuf::encode_command_into(&mut frame, &cmd);
        self.send_binary(frame).await;
        self.reply(id).await
    }

    /// Waits for the reply with `id`.
    pub async fn reply(&mut self, id: u32) -> wire::Reply {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(pos) = self.replies.iter().position(|r| r.id == id) {
                return self.replies.remove(pos).expect("reply");
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err((code, reason)) = self.read(left).await {
                panic!("closed ({code} {reason}) while waiting for reply {id}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no reply to command {id}"
            );
        }
    }

    /// The next push within `within`, or `None`.
    pub async fn try_push(&mut self, within: Duration) -> Option<wire::Push> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(p) = self.pushes.pop_front() {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || self.read(left).await.is_err() {
                return self.pushes.pop_front();
            }
        }
    }

    /// Waits for the next push.
    pub async fn push(&mut self) -> wire::Push {
        self.try_push(WAIT).await.expect("expected a push")
    }

    /// Waits for the server to close the connection; returns code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(closed) = self.read(left).await {
                return closed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "connection was not closed"
            );
        }
    }

    /// Reads one message (or times out after `within`), queueing its replies and pushes
    /// and answering pings; `Err` once the connection is closed.
    async fn read(&mut self, within: Duration) -> Result<(), (u16, String)> {
        if let Some(c) = &self.closed {
            return Err(c.clone());
        }
        let Ok(msg) = tokio::time::timeout(within, self.ws.next()).await else {
            return Ok(());
        };
        match msg {
            Some(Ok(Message::Binary(b))) => {
                let replies = protobuf::decode_replies(&b)
                    .expect("server sent an undecodable protobuf frame");
                for r in replies {
                    if let Some(p) = r.push {
                        self.pushes.push_back(p);
                    } else if r.id == 0 && r.error.is_none() {
                        self.pings += 1;
                        let _ = self.ws.send(Message::Binary(vec![0u8].into())).await;
                    } else {
                        self.replies.push_back(r);
                    }
                }
                Ok(())
            }
            Some(Ok(Message::Text(t))) => panic!("text frame on a protobuf connection: {t}"),
            Some(Ok(Message::Close(frame))) => {
                let c = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                self.closed = Some(c.clone());
                Err(c)
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(_)) | None => {
                self.closed = Some((1006, String::new()));
                Err((1006, String::new()))
            }
        }
    }
}
