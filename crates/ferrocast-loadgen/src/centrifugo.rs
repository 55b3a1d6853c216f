//! Centrifugo client protocol v2 (JSON) over WebSocket: subscriber connections and the
//! `--publish client` publisher.

use crate::batch::Batch;
use crate::config::Target;
use crate::replies::Replies;
use crate::scan::{build_payload, lines, now_us, parse_push};
use crate::stats::{Errors, count};
use crate::subscriber::{Frame, Session};
use crate::ws::{Ws, open_ws};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[derive(Deserialize)]
struct ReplyMin {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    error: Option<ErrMin>,
}

#[derive(Deserialize)]
struct ErrMin {
    code: u32,
}

fn close_label(prefix: &str, m: Option<&CloseFrame>) -> String {
    match m {
        Some(f) => format!("{prefix}:{}", u16::from(f.code)),
        None => format!("{prefix}:none"),
    }
}

/// Sends `{}` answers to `n` server pings.
async fn pong(ws: &mut Ws, n: usize) -> Result<(), String> {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push('\n');
        }
        s.push_str("{}");
    }
    ws.send(Message::text(s))
        .await
        .map_err(|_| "write_error".to_string())
}

/// Sends `first` and reads replies until every id in `want` answered without error.
async fn handshake(ws: &mut Ws, first: String, want: &[(u64, &str)]) -> Result<(), String> {
    ws.send(Message::text(first))
        .await
        .map_err(|_| "setup_write_error".to_string())?;
    let mut left: Vec<(u64, &str)> = want.to_vec();
    while !left.is_empty() {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let mut pings = 0;
                for line in t.as_str().split('\n') {
                    if line == "{}" {
                        pings += 1;
                        continue;
                    }
                    if line.is_empty() || line.starts_with("{\"push\"") {
                        continue;
                    }
                    let r: ReplyMin =
                        serde_json::from_str(line).map_err(|_| "setup_bad_reply".to_string())?;
                    if let Some(pos) = left.iter().position(|(id, _)| *id == r.id) {
                        let (_, what) = left.remove(pos);
                        if let Some(e) = r.error {
                            return Err(format!("{what}_error:{}", e.code));
                        }
                    }
                }
                if pings > 0 {
                    pong(ws, pings).await?;
                }
            }
            Some(Ok(Message::Close(f))) => return Err(close_label("setup_close", f.as_ref())),
            Some(Ok(_)) => {}
            Some(Err(_)) => return Err("setup_read_error".into()),
            None => return Err("setup_eof".into()),
        }
    }
    Ok(())
}

/// A Centrifugo subscriber connection (no read state: every frame holds whole lines).
pub struct Subscriber;

impl Session for Subscriber {
    const BINARY_FRAMES: bool = false;
    const OTHER_CHANNEL: &'static str = "push_other_channel";
    const UNPARSED: &'static str = "push_unparsed";

    async fn setup(target: &Target, channel: &str) -> Result<(Ws, Self), String> {
        let mut ws = open_ws(target).await?;
        let first = format!(
            "{{\"id\":1,\"connect\":{{\"name\":\"ferrocast-loadgen\"}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":{}}}}}",
            serde_json::to_string(channel).unwrap_or_default()
        );
        handshake(&mut ws, first, &[(1, "connect"), (2, "subscribe")]).await?;
        Ok((ws, Subscriber))
    }

    fn close_kind(frame: Option<&CloseFrame>) -> String {
        close_label("server_close", frame)
    }

    fn read(&mut self, data: &[u8], frame: &mut Frame<'_>) -> Result<(), String> {
        for line in lines(data) {
            if line == b"{}" {
                frame.ping();
            } else if line.starts_with(b"{\"push\"") {
                match parse_push(line) {
                    Some((channel, seq_ts)) => frame.publication(channel, seq_ts),
                    None => frame.unparsed(),
                }
            } else if !line.is_empty() {
                frame.error("unexpected_reply");
            }
        }
        Ok(())
    }

    async fn pong(ws: &mut Ws, n: usize) -> Result<(), String> {
        pong(ws, n).await
    }
}

/// Most commands put in one frame (the broker's default limit is 1000).
const MAX_COMMANDS_PER_FRAME: usize = 500;
/// Largest frame sent (the broker's default `max_message_size` is 65536).
const MAX_FRAME_BYTES: usize = 32 * 1024;
/// Unanswered publish commands before the publisher waits.
const MAX_PENDING: usize = 20_000;

/// `--publish client`: one WebSocket connection sending `publish` commands.
pub struct ClientPublisher {
    ws: Ws,
    channels: Rc<Vec<String>>,
    payload_size: usize,
    next_id: u64,
    pending: HashMap<u64, u32>,
    pings: usize,
    /// Messages the broker refused, per channel.
    pub failed: Vec<u64>,
    /// Error counters of this publisher.
    pub errors: Errors,
    frame: Vec<u8>,
}

impl ClientPublisher {
    /// Opens the connection and sends `connect`; publishes go to `channels`, with
    /// payloads of `payload_size` bytes.
    pub async fn connect(
        target: &Target,
        channels: Rc<Vec<String>>,
        payload_size: usize,
    ) -> anyhow::Result<Self> {
        let mut ws = open_ws(target).await.map_err(anyhow::Error::msg)?;
        handshake(
            &mut ws,
            "{\"id\":1,\"connect\":{\"name\":\"ferrocast-loadgen-publisher\"}}".into(),
            &[(1, "connect")],
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let n = channels.len();
        Ok(ClientPublisher {
            ws,
            channels,
            payload_size,
            next_id: 2,
            pending: HashMap::new(),
            pings: 0,
            failed: vec![0; n],
            errors: Errors::new(),
            frame: Vec::new(),
        })
    }

    /// Messages that may be sent before too many are unanswered.
    pub fn capacity(&self) -> usize {
        MAX_PENDING.saturating_sub(self.pending.len())
    }

    /// Sends one `publish` command per message, in as few frames as the broker's limits
    /// allow.
    pub async fn send(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let mut in_frame = 0;
        self.frame.clear();
        for &(ch, seq) in batch.iter() {
            // One command is at most payload_size + ~100 bytes: start a new frame before
            // the broker's message size or commands-per-frame limits could be reached.
            if in_frame > 0
                && (in_frame >= MAX_COMMANDS_PER_FRAME
                    || self.frame.len() + self.payload_size + 256 > MAX_FRAME_BYTES)
            {
                self.flush_frame().await?;
                in_frame = 0;
            }
            if in_frame > 0 {
                self.frame.push(b'\n');
            }
            let id = self.next_id;
            self.next_id += 1;
            self.pending.insert(id, ch);
            self.frame.extend_from_slice(
                format!(
                    "{{\"id\":{id},\"publish\":{{\"channel\":\"{}\",\"data\":",
                    self.channels[ch as usize]
                )
                .as_bytes(),
            );
            build_payload(&mut self.frame, seq, now_us(), self.payload_size);
            self.frame.extend_from_slice(b"}}");
            in_frame += 1;
        }
        if in_frame > 0 {
            self.flush_frame().await?;
        }
        Ok(())
    }

    async fn flush_frame(&mut self) -> anyhow::Result<()> {
        let text = String::from_utf8(std::mem::take(&mut self.frame))?;
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Waits (bounded) for the replies still outstanding.
    pub async fn finish(&mut self, within: Duration) {
        self.await_replies(within).await;
        let _ = self.ws.close(None).await;
    }
}

impl Replies for ClientPublisher {
    fn pending(&self) -> usize {
        self.pending.len()
    }

    async fn recv(&mut self) -> anyhow::Result<()> {
        match self.ws.next().await {
            Some(Ok(Message::Text(t))) => {
                for line in t.as_str().split('\n') {
                    if line == "{}" {
                        self.pings += 1;
                        continue;
                    }
                    if line.is_empty() || line.starts_with("{\"push\"") {
                        continue;
                    }
                    match serde_json::from_str::<ReplyMin>(line) {
                        Ok(r) => {
                            if let Some(ch) = self.pending.remove(&r.id)
                                && let Some(e) = r.error
                            {
                                self.failed[ch as usize] += 1;
                                count(&mut self.errors, format!("publish_error:{}", e.code), 1);
                            }
                        }
                        Err(_) => count(&mut self.errors, "publish_bad_reply", 1),
                    }
                }
                Ok(())
            }
            Some(Ok(Message::Close(f))) => {
                let l = close_label("publisher_close", f.as_ref());
                count(&mut self.errors, l.clone(), 1);
                anyhow::bail!(l)
            }
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => anyhow::bail!("publisher read error: {e}"),
            None => anyhow::bail!("publisher connection closed"),
        }
    }

    /// Answers pings seen by `recv`.
    async fn after_recv(&mut self) -> anyhow::Result<()> {
        if self.pings > 0 {
            let n = std::mem::take(&mut self.pings);
            pong(&mut self.ws, n).await.map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    fn errors(&mut self) -> &mut Errors {
        &mut self.errors
    }
}
