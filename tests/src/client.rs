//! A Centrifugo-protocol WebSocket client for tests, speaking raw JSON frames.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a test waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// A test client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u32,
    pushes: VecDeque<Value>,
    replies: VecDeque<Value>,
    /// Answer server pings automatically.
    pub auto_pong: bool,
    /// Server pings seen.
    pub pings: usize,
    /// Length of the last text message received (the writer's batch of frames).
    pub last_message_len: usize,
    closed: Option<(u16, String)>,
    pending: VecDeque<Value>,
}

/// What [`Client::read_event`] returned.
#[derive(Debug)]
pub enum Event {
    /// A JSON object (reply or push).
    Json(Value),
    /// The server closed the connection.
    Closed(u16, String),
}

impl Client {
    /// Opens a WebSocket connection without sending anything.
    pub async fn open(url: &str) -> Client {
        Self::open_with_origin(url, None)
            .await
            .expect("websocket connect")
    }

    /// Opens a connection with an `Origin` header; errors are returned (e.g. 403).
    pub async fn open_with_origin(
        url: &str,
        origin: Option<&str>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        Self::open_with_headers(url, &headers).await
    }

    /// Opens a connection whose upgrade request carries `headers`.
    pub async fn open_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            let name = http::HeaderName::try_from(*k).expect("header name");
            req.headers_mut().insert(name, v.parse().unwrap());
        }
        let (ws, _) = connect_async(req).await?;
        Ok(Client {
            ws,
            next_id: 0,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
            auto_pong: true,
            pings: 0,
            last_message_len: 0,
            closed: None,
            pending: VecDeque::new(),
        })
    }

    /// Opens a connection whose socket has a receive buffer of `bytes` (the kernel may
    /// round it), so that a client that stops reading fills the server's queue quickly.
    pub async fn open_with_recv_buffer(url: &str, bytes: u32) -> Client {
        let req = url.into_client_request().expect("url");
        let authority = req.uri().authority().expect("host:port").as_str();
        let addr: std::net::SocketAddr = authority.parse().expect("an address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket handshake");
        Client {
            ws,
            next_id: 0,
            pushes: VecDeque::new(),
            replies: VecDeque::new(),
            auto_pong: true,
            pings: 0,
            last_message_len: 0,
            closed: None,
            pending: VecDeque::new(),
        }
    }

    /// Opens and connects with `token`; returns the client and the connect result.
    pub async fn connect(url: &str, token: &str) -> (Client, Value) {
        let mut c = Self::open(url).await;
        let r = c.command("connect", json!({ "token": token })).await;
        assert!(r.get("connect").is_some(), "connect failed: {r}");
        let result = r["connect"].clone();
        (c, result)
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    /// Sends a text frame whose payload is `bytes` as they are (even invalid UTF-8).
    pub async fn send_raw_text(&mut self, bytes: Vec<u8>) {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let frame = Frame::message(bytes, OpCode::Data(Data::Text), true);
        self.ws.send(Message::Frame(frame)).await.expect("send");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: Vec<u8>) {
        self.ws
            .send(Message::Binary(data.into()))
            .await
            .expect("send");
    }

    /// Allocates a command id.
    pub fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends `{"id": N, method: params}` and waits for the reply with that id.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        let id = self.id();
        let mut cmd = serde_json::Map::new();
        cmd.insert("id".into(), json!(id));
        cmd.insert(method.into(), params);
        self.send_text(Value::Object(cmd).to_string()).await;
        self.reply(id).await
    }

    /// Like [`Client::command`], but returns the close (code, reason) instead of panicking.
    pub async fn try_command(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Value, (u16, String)> {
        let id = self.id();
        let mut cmd = serde_json::Map::new();
        cmd.insert("id".into(), json!(id));
        cmd.insert(method.into(), params);
        if self
            .ws
            .send(Message::Text(Value::Object(cmd).to_string().into()))
            .await
            .is_err()
        {
            return Err((1006, String::new()));
        }
        loop {
            if let Some(pos) = self.replies.iter().position(|r| r["id"] == json!(id)) {
                return Ok(self.replies.remove(pos).unwrap());
            }
            match self.read_event(WAIT).await {
                Some(Event::Json(v)) => {
                    if v["id"] == json!(id) {
                        return Ok(v);
                    }
                    self.stash(v);
                }
                Some(Event::Closed(code, reason)) => return Err((code, reason)),
                None => return Err((0, "timeout".into())),
            }
        }
    }

    /// Opens a connection, returning `None` when the node cannot be reached.
    pub async fn try_open(url: &str) -> Option<Client> {
        Self::open_with_origin(url, None).await.ok()
    }

    /// The next push or the close, within `within`; `Ok(None)` on timeout.
    pub async fn next_push_or_close(
        &mut self,
        within: Duration,
    ) -> Result<Option<Value>, (u16, String)> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(Some(p));
        }
        match self.read_event(within).await {
            Some(Event::Json(v)) => {
                self.stash(v);
                Ok(self.pushes.pop_front())
            }
            Some(Event::Closed(code, reason)) => Err((code, reason)),
            None => Ok(None),
        }
    }

    /// Waits for the reply with `id`.
    pub async fn reply(&mut self, id: u32) -> Value {
        loop {
            if let Some(pos) = self.replies.iter().position(|r| r["id"] == json!(id)) {
                return self.replies.remove(pos).unwrap();
            }
            match self.read_event(WAIT).await {
                Some(Event::Json(v)) => {
                    if v["id"] == json!(id) {
                        return v;
                    }
                    self.stash(v);
                }
                Some(Event::Closed(code, reason)) => {
                    panic!("closed ({code} {reason}) while waiting for reply {id}")
                }
                None => panic!("no reply to command {id}"),
            }
        }
    }

    fn stash(&mut self, v: Value) {
        if v.get("push").is_some() {
            self.pushes.push_back(v["push"].clone());
        } else if v.get("id").is_some() {
            self.replies.push_back(v);
        }
    }

    /// Waits for the next push (the `push` object).
    pub async fn push(&mut self) -> Value {
        self.try_push(WAIT).await.expect("expected a push")
    }

    /// The next push within `within`, or `None`.
    pub async fn try_push(&mut self, within: Duration) -> Option<Value> {
        if let Some(p) = self.pushes.pop_front() {
            return Some(p);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_event(left).await {
                Some(Event::Json(v)) => {
                    self.stash(v);
                    if let Some(p) = self.pushes.pop_front() {
                        return Some(p);
                    }
                }
                Some(Event::Closed(..)) | None => return None,
            }
        }
    }

    /// Reads one JSON object or the close; handles pings. `None` on timeout.
    pub async fn read_event(&mut self, within: Duration) -> Option<Event> {
        if let Some(v) = self.pending.pop_front() {
            return Some(Event::Json(v));
        }
        if let Some((code, reason)) = &self.closed {
            return Some(Event::Closed(*code, reason.clone()));
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    self.last_message_len = t.len();
                    let mut objects: Vec<Value> = serde_json::Deserializer::from_str(t.as_str())
                        .into_iter::<Value>()
                        .map(|r| r.expect("server sent invalid JSON"))
                        .collect();
                    let mut out = None;
                    for v in objects.drain(..) {
                        if v.as_object().is_some_and(|o| o.is_empty()) {
                            self.pings += 1;
                            if self.auto_pong {
                                let _ = self.ws.send(Message::Text("{}".into())).await;
                            }
                            continue;
                        }
                        if out.is_none() {
                            out = Some(v);
                        } else {
                            self.pending.push_back(v);
                        }
                    }
                    if let Some(v) = out {
                        return Some(Event::Json(v));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    self.closed = Some((code, reason.clone()));
                    return Some(Event::Closed(code, reason));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    self.closed = Some((1006, String::new()));
                    return Some(Event::Closed(1006, String::new()));
                }
            }
        }
    }

    /// Waits for the server to close the connection; returns code and reason. Frames
    /// before the close are kept.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.read_event(WAIT).await {
                Some(Event::Closed(code, reason)) => return (code, reason),
                Some(Event::Json(v)) => self.stash(v),
                None => panic!("connection was not closed"),
            }
        }
    }

    /// Sends a WebSocket Ping with `payload` and waits for the Pong; returns its payload
    /// (`None` on timeout or close). JSON frames read meanwhile are kept.
    pub async fn ws_ping(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.ws
            .send(Message::Ping(payload.to_vec().into()))
            .await
            .ok()?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
            {
                Ok(Message::Pong(p)) => return Some(p.to_vec()),
                Ok(Message::Text(t)) => {
                    for v in serde_json::Deserializer::from_str(t.as_str()).into_iter::<Value>() {
                        self.pending.push_back(v.expect("server sent invalid JSON"));
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Closes the connection from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
