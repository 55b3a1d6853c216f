//! Centrifugo client protocol v2 over WebSocket, in either encoding (`--encoding json`:
//! text frames of `\n`-separated JSON; `--encoding protobuf`: subprotocol
//! `centrifuge-protobuf`, binary frames of length-prefixed records): subscriber connections
//! and the `--publish client` publisher. What differs between the encodings is a
//! [`Codec`]; the connection logic and the accounting are shared.

mod json;
mod pb;

pub use json::JsonCodec;
pub use pb::ProtobufCodec;

use crate::batch::Batch;
use crate::config::{Creds, Target};
use crate::replies::Replies;
use crate::stats::{Errors, count};
use crate::subscriber::{Frame, Session};
use crate::ws::{Ws, open_ws};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A server message as the handshake and the publisher read it (pushes are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A server ping.
    Ping,
    /// The reply to command `id`, with its error code if it failed.
    Reply {
        /// Id of the answered command.
        id: u64,
        /// `error.code`, when the command failed.
        error: Option<u32>,
    },
    /// A message that could not be read.
    Bad,
}

/// One encoding of the Centrifugo client protocol, as far as the load generator uses it.
pub trait Codec {
    /// Whether the encoding's frames are binary (else text).
    const BINARY: bool;
    /// The WebSocket subprotocol to offer, if any.
    const SUBPROTOCOL: Option<&'static str>;

    /// Appends a `connect` command (`name` is the SDK name) with the token and the data
    /// of `creds`, if any.
    fn connect(out: &mut Vec<u8>, id: u32, name: &str, creds: &Creds);

    /// Appends a `subscribe` command to `channel`.
    fn subscribe(out: &mut Vec<u8>, id: u32, channel: &str);

    /// Appends a `publish` command to `channel` whose data is a payload of `payload_size`
    /// bytes carrying `seq` and the current time; `scratch` is a reusable buffer.
    fn publish(
        out: &mut Vec<u8>,
        id: u32,
        channel: &str,
        seq: u64,
        payload_size: usize,
        scratch: &mut Vec<u8>,
    );

    /// Appends an `rpc` command calling `method` with `data` (JSON text).
    fn rpc(out: &mut Vec<u8>, id: u32, method: &str, data: &[u8]);

    /// Appends what separates two commands in one frame.
    fn separate(out: &mut Vec<u8>);

    /// Appends the answers to `n` server pings.
    fn pongs(out: &mut Vec<u8>, n: usize);

    /// The WebSocket message carrying the encoded `frame`.
    fn message(frame: Vec<u8>) -> Result<Message, String>;

    /// The protocol bytes of a received message (`None`: not a data frame of this
    /// encoding).
    fn data(m: &Message) -> Option<&[u8]>;

    /// Reports the replies and pings of a server frame to `f`, in order (pushes are
    /// skipped).
    fn items(data: &[u8], f: impl FnMut(Item));

    /// Reads one frame of a subscriber connection into `frame` (the hot path).
    fn read(data: &[u8], frame: &mut Frame<'_>);
}

fn close_label(prefix: &str, m: Option<&CloseFrame>) -> String {
    match m {
        Some(f) => format!("{prefix}:{}", u16::from(f.code)),
        None => format!("{prefix}:none"),
    }
}

/// Sends the answers to `n` server pings.
pub async fn pong<C: Codec>(ws: &mut Ws, n: usize) -> Result<(), String> {
    let mut out = Vec::with_capacity(n * 3);
    C::pongs(&mut out, n);
    ws.send(C::message(out)?)
        .await
        .map_err(|_| "write_error".to_string())
}

/// Sends `first` and reads replies until every id in `want` answered without error.
pub async fn handshake<C: Codec>(
    ws: &mut Ws,
    first: Vec<u8>,
    want: &[(u32, &str)],
) -> Result<(), String> {
    let first = C::message(first).map_err(|_| "setup_write_error".to_string())?;
    ws.send(first)
        .await
        .map_err(|_| "setup_write_error".to_string())?;
    let mut left: Vec<(u32, &str)> = want.to_vec();
    while !left.is_empty() {
        let m = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(_)) => return Err("setup_read_error".into()),
            None => return Err("setup_eof".into()),
        };
        let Some(data) = C::data(&m) else {
            if let Message::Close(f) = &m {
                return Err(close_label("setup_close", f.as_ref()));
            }
            continue;
        };
        let (mut pings, mut failed) = (0, None);
        C::items(data, |it| {
            if failed.is_some() {
                return;
            }
            match it {
                Item::Ping => pings += 1,
                Item::Bad => failed = Some("setup_bad_reply".to_string()),
                Item::Reply { id, error } => {
                    if let Some(pos) = left.iter().position(|(want, _)| u64::from(*want) == id) {
                        let (_, what) = left.remove(pos);
                        if let Some(code) = error {
                            failed = Some(format!("{what}_error:{code}"));
                        }
                    }
                }
            }
        });
        if let Some(kind) = failed {
            return Err(kind);
        }
        if pings > 0 {
            pong::<C>(ws, pings).await?;
        }
    }
    Ok(())
}

/// A Centrifugo subscriber connection in encoding `C` (no read state: every frame holds
/// whole messages).
pub struct Subscriber<C>(PhantomData<C>);

impl<C: Codec> Session for Subscriber<C> {
    const BINARY_FRAMES: bool = C::BINARY;
    const OTHER_CHANNEL: &'static str = "push_other_channel";
    const UNPARSED: &'static str = "push_unparsed";

    async fn setup(target: &Target, channel: &str, creds: &Creds) -> Result<(Ws, Self), String> {
        let mut ws = open_ws(target, C::SUBPROTOCOL).await?;
        let mut first = Vec::new();
        C::connect(&mut first, 1, "ferrocast-loadgen", creds);
        C::separate(&mut first);
        C::subscribe(&mut first, 2, channel);
        handshake::<C>(&mut ws, first, &[(1, "connect"), (2, "subscribe")]).await?;
        Ok((ws, Subscriber(PhantomData)))
    }

    fn close_kind(frame: Option<&CloseFrame>) -> String {
        close_label("server_close", frame)
    }

    fn read(&mut self, data: &[u8], frame: &mut Frame<'_>) -> Result<(), String> {
        C::read(data, frame);
        Ok(())
    }

    async fn pong(ws: &mut Ws, n: usize) -> Result<(), String> {
        pong::<C>(ws, n).await
    }
}

/// Most commands put in one frame (the broker's default limit is 1000).
const MAX_COMMANDS_PER_FRAME: usize = 500;
/// Largest frame sent (the broker's default `max_message_size` is 65536).
const MAX_FRAME_BYTES: usize = 32 * 1024;
/// Unanswered publish commands before the publisher waits.
const MAX_PENDING: usize = 20_000;

/// `--publish client`: one WebSocket connection sending `publish` commands in encoding
/// `C`.
pub struct ClientPublisher<C> {
    ws: Ws,
    channels: Rc<Vec<String>>,
    payload_size: usize,
    next_id: u32,
    pending: HashMap<u32, u32>,
    pings: usize,
    /// Messages the broker refused, per channel.
    pub failed: Vec<u64>,
    /// Error counters of this publisher.
    pub errors: Errors,
    frame: Vec<u8>,
    /// The payload being encoded (reused).
    scratch: Vec<u8>,
    codec: PhantomData<C>,
}

impl<C: Codec> ClientPublisher<C> {
    /// Opens the connection and sends `connect` with `creds`; publishes go to `channels`,
    /// with payloads of `payload_size` bytes.
    pub async fn connect(
        target: &Target,
        creds: &Creds,
        channels: Rc<Vec<String>>,
        payload_size: usize,
    ) -> anyhow::Result<Self> {
        let mut ws = open_ws(target, C::SUBPROTOCOL)
            .await
            .map_err(anyhow::Error::msg)?;
        let mut first = Vec::new();
        C::connect(&mut first, 1, "ferrocast-loadgen-publisher", creds);
        handshake::<C>(&mut ws, first, &[(1, "connect")])
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
            scratch: Vec::new(),
            codec: PhantomData,
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
                C::separate(&mut self.frame);
            }
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(2);
            self.pending.insert(id, ch);
            C::publish(
                &mut self.frame,
                id,
                &self.channels[ch as usize],
                seq,
                self.payload_size,
                &mut self.scratch,
            );
            in_frame += 1;
        }
        if in_frame > 0 {
            self.flush_frame().await?;
        }
        Ok(())
    }

    async fn flush_frame(&mut self) -> anyhow::Result<()> {
        let m = C::message(std::mem::take(&mut self.frame)).map_err(anyhow::Error::msg)?;
        self.ws.send(m).await?;
        Ok(())
    }

    /// Waits (bounded) for the replies still outstanding.
    pub async fn finish(&mut self, within: Duration) {
        self.await_replies(within).await;
        let _ = self.ws.close(None).await;
    }
}

impl<C: Codec> Replies for ClientPublisher<C> {
    fn pending(&self) -> usize {
        self.pending.len()
    }

    async fn recv(&mut self) -> anyhow::Result<()> {
        let m = match self.ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => anyhow::bail!("publisher read error: {e}"),
            None => anyhow::bail!("publisher connection closed"),
        };
        let Some(data) = C::data(&m) else {
            if let Message::Close(f) = &m {
                let l = close_label("publisher_close", f.as_ref());
                count(&mut self.errors, l.clone(), 1);
                anyhow::bail!(l)
            }
            return Ok(());
        };
        let ClientPublisher {
            pending,
            failed,
            errors,
            pings,
            ..
        } = self;
        C::items(data, |it| match it {
            Item::Ping => *pings += 1,
            Item::Bad => count(errors, "publish_bad_reply", 1),
            Item::Reply { id, error } => {
                if let Some(ch) = u32::try_from(id).ok().and_then(|id| pending.remove(&id))
                    && let Some(code) = error
                {
                    failed[ch as usize] += 1;
                    count(errors, format!("publish_error:{code}"), 1);
                }
            }
        });
        Ok(())
    }

    /// Answers pings seen by `recv`.
    async fn after_recv(&mut self) -> anyhow::Result<()> {
        if self.pings > 0 {
            let n = std::mem::take(&mut self.pings);
            pong::<C>(&mut self.ws, n)
                .await
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    fn errors(&mut self) -> &mut Errors {
        &mut self.errors
    }
}
