//! The NATS text protocol over WebSocket (`--protocol nats`), for comparison runs against
//! `nats-server` with its WebSocket listener: `CONNECT`, `SUB`, `PUB`, `PING`/`PONG`,
//! `MSG`. Messages may be split across WebSocket frames, so input is parsed as a stream.

use crate::batch::Batch;
use crate::config::{Creds, Target};
use crate::scan::{build_payload, find, now_us, payload_seq_ts};
use crate::stats::{Errors, count};
use crate::subscriber::{Frame, Session};
use crate::ws::{Ws, open_ws};
use futures_util::{SinkExt, StreamExt};
use std::rc::Rc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const CONNECT: &str = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,\"name\":\"ferrocast-loadgen\",\"lang\":\"rust\",\"version\":\"0.1\"}\r\n";
/// Largest partial message kept between frames.
const MAX_BUFFER: usize = 32 << 20;

/// One protocol item.
#[derive(Debug, PartialEq)]
pub enum Item<'a> {
    /// `MSG <subject> <sid> [reply] <size>` and its payload.
    Msg {
        /// The subject the message was published on.
        subject: &'a [u8],
        /// The message payload.
        payload: &'a [u8],
    },
    /// A server `PING`.
    Ping,
    /// A `PONG` answering our `PING`.
    Pong,
    /// `INFO {...}`.
    Info,
    /// `+OK`.
    Ok,
    /// An `-ERR '...'` line, whole.
    Err(&'a [u8]),
    /// Any other line.
    Other,
}

/// Parses complete items from `data`; returns the bytes consumed.
pub fn parse<'a>(data: &'a [u8], mut f: impl FnMut(Item<'a>)) -> Result<usize, String> {
    let mut pos = 0;
    loop {
        let rest = &data[pos..];
        let Some(eol) = find(rest, b"\r\n") else {
            return Ok(pos);
        };
        let line = &rest[..eol];
        if line.starts_with(b"MSG ") {
            let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
            let _ = tokens.next();
            let subject = tokens.next().ok_or("nats_bad_msg")?;
            let size: usize = tokens
                .next_back()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse().ok())
                .ok_or("nats_bad_msg")?;
            let need = eol + 2 + size + 2;
            if rest.len() < need {
                return Ok(pos);
            }
            f(Item::Msg {
                subject,
                payload: &rest[eol + 2..eol + 2 + size],
            });
            pos += need;
        } else {
            f(if line == b"PING" {
                Item::Ping
            } else if line == b"PONG" {
                Item::Pong
            } else if line == b"+OK" {
                Item::Ok
            } else if line.starts_with(b"INFO") {
                Item::Info
            } else if line.starts_with(b"-ERR") {
                Item::Err(line)
            } else {
                Item::Other
            });
            pos += eol + 2;
        }
    }
}

/// Stream reassembly across WebSocket frames.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Parses the complete items of `frame` (after what earlier frames left over) into
    /// `f` and keeps the incomplete rest.
    pub fn feed(&mut self, frame: &[u8], f: impl FnMut(Item<'_>)) -> Result<(), String> {
        if self.buf.is_empty() {
            let used = parse(frame, f)?;
            self.buf.extend_from_slice(&frame[used..]);
        } else {
            self.buf.extend_from_slice(frame);
            let used = parse(&self.buf, f)?;
            self.buf.drain(..used);
        }
        if self.buf.len() > MAX_BUFFER {
            return Err("nats_buffer_overflow".into());
        }
        Ok(())
    }
}

/// The error kind of a server `-ERR '...'` line: `nats_err:'...'`, spaces as `_`.
fn err_kind(line: &[u8]) -> String {
    format!(
        "nats_err:{}",
        String::from_utf8_lossy(line)
            .trim_start_matches("-ERR ")
            .replace(' ', "_")
    )
}

fn frame_bytes(m: &Message) -> Option<&[u8]> {
    match m {
        Message::Binary(b) => Some(&b[..]),
        Message::Text(t) => Some(t.as_bytes()),
        _ => None,
    }
}

async fn send(ws: &mut Ws, data: Vec<u8>) -> Result<(), String> {
    ws.send(Message::binary(data))
        .await
        .map_err(|_| "write_error".to_string())
}

/// Reads until the `PONG` answering our `PING` (answering server pings meanwhile).
async fn until_pong(ws: &mut Ws, reader: &mut Reader, first: Vec<u8>) -> Result<(), String> {
    send(ws, first).await?;
    loop {
        let m = match ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(_)) => return Err("setup_read_error".into()),
            None => return Err("setup_eof".into()),
        };
        if let Message::Close(_) = m {
            return Err("setup_close".into());
        }
        let Some(bytes) = frame_bytes(&m) else {
            continue;
        };
        let (mut pong, mut pings, mut err) = (false, 0, None);
        reader.feed(bytes, |it| match it {
            Item::Pong => pong = true,
            Item::Ping => pings += 1,
            Item::Err(e) => err = Some(err_kind(e)),
            _ => {}
        })?;
        if let Some(kind) = err {
            return Err(kind);
        }
        if pings > 0 {
            send(ws, b"PONG\r\n".repeat(pings)).await?;
        }
        if pong {
            return Ok(());
        }
    }
}

/// A NATS subscriber connection: the reassembly of its input stream.
pub struct Subscriber {
    reader: Reader,
}

impl Session for Subscriber {
    const BINARY_FRAMES: bool = true;
    const OTHER_CHANNEL: &'static str = "msg_other_subject";
    const UNPARSED: &'static str = "msg_unparsed";

    /// NATS connections send no credentials.
    async fn setup(target: &Target, subject: &str, _creds: &Creds) -> Result<(Ws, Self), String> {
        let mut ws = open_ws(target, None).await?;
        let mut reader = Reader::default();
        let first = format!("{CONNECT}SUB {subject} 1\r\nPING\r\n").into_bytes();
        until_pong(&mut ws, &mut reader, first).await?;
        Ok((ws, Subscriber { reader }))
    }

    fn close_kind(_frame: Option<&CloseFrame>) -> String {
        "server_close".into()
    }

    fn read(&mut self, data: &[u8], frame: &mut Frame<'_>) -> Result<(), String> {
        self.reader.feed(data, |it| match it {
            Item::Msg { subject, payload } => frame.publication(subject, payload_seq_ts(payload)),
            Item::Ping => frame.ping(),
            Item::Err(e) => frame.error(err_kind(e)),
            _ => {}
        })
    }

    async fn pong(ws: &mut Ws, n: usize) -> Result<(), String> {
        send(ws, b"PONG\r\n".repeat(n)).await
    }
}

/// Publisher over its own NATS WebSocket connection.
pub struct NatsPublisher {
    ws: Ws,
    reader: Reader,
    subjects: Rc<Vec<String>>,
    payload_size: usize,
    pings: usize,
    /// Messages the broker refused, per channel.
    pub failed: Vec<u64>,
    /// Error counters of this publisher.
    pub errors: Errors,
    payload: Vec<u8>,
}

impl NatsPublisher {
    /// Opens the connection and waits for the `PONG` answering `CONNECT`; publishes go to
    /// `subjects`, with payloads of `payload_size` bytes.
    pub async fn connect(
        target: &Target,
        subjects: Rc<Vec<String>>,
        payload_size: usize,
    ) -> anyhow::Result<Self> {
        let mut ws = open_ws(target, None).await.map_err(anyhow::Error::msg)?;
        let mut reader = Reader::default();
        until_pong(
            &mut ws,
            &mut reader,
            format!("{CONNECT}PING\r\n").into_bytes(),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let n = subjects.len();
        Ok(NatsPublisher {
            ws,
            reader,
            subjects,
            payload_size,
            pings: 0,
            failed: vec![0; n],
            errors: Errors::new(),
            payload: Vec::new(),
        })
    }

    /// Unbounded: NATS does not answer each `PUB`.
    pub fn capacity(&self) -> usize {
        usize::MAX
    }

    /// Sends one `PUB` per message, all in one frame.
    pub async fn send(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(batch.len() * (self.payload_size + 48));
        for &(ch, seq) in batch.iter() {
            self.payload.clear();
            build_payload(&mut self.payload, seq, now_us(), self.payload_size);
            out.extend_from_slice(
                format!(
                    "PUB {} {}\r\n",
                    self.subjects[ch as usize],
                    self.payload.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(&self.payload);
            out.extend_from_slice(b"\r\n");
        }
        send(&mut self.ws, out).await.map_err(anyhow::Error::msg)
    }

    /// Waits for one incoming frame (cancel-safe); returns whether a PONG was seen.
    pub async fn recv(&mut self) -> anyhow::Result<bool> {
        let m = match self.ws.next().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => anyhow::bail!("publisher read error: {e}"),
            None => anyhow::bail!("publisher connection closed"),
        };
        if let Message::Close(_) = m {
            count(&mut self.errors, "publisher_close", 1);
            anyhow::bail!("publisher closed by server");
        }
        let Some(bytes) = frame_bytes(&m) else {
            return Ok(false);
        };
        let (mut pings, mut pong) = (0, false);
        let errors = &mut self.errors;
        self.reader
            .feed(bytes, |it| match it {
                Item::Ping => pings += 1,
                Item::Pong => pong = true,
                Item::Err(e) => count(errors, err_kind(e), 1),
                _ => {}
            })
            .map_err(anyhow::Error::msg)?;
        self.pings += pings;
        Ok(pong)
    }

    /// Answers the server pings seen by `recv`.
    pub async fn after_recv(&mut self) -> anyhow::Result<()> {
        if self.pings > 0 {
            let n = std::mem::take(&mut self.pings);
            send(&mut self.ws, b"PONG\r\n".repeat(n))
                .await
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// PING and wait (bounded) for the PONG: everything sent before it was processed.
    pub async fn finish(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        if send(&mut self.ws, b"PING\r\n".to_vec()).await.is_err() {
            count(&mut self.errors, "publish_flush_failed", 1);
            return;
        }
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {
                    if self.after_recv().await.is_err() {
                        break;
                    }
                }
                _ => {
                    count(&mut self.errors, "publish_flush_failed", 1);
                    break;
                }
            }
        }
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_split_messages() {
        let data = b"INFO {}\r\nMSG a.b 1 5\r\nhello\r\nPING\r\nMSG a.b 1 3\r\nab";
        let mut items = Vec::new();
        let used = parse(data, |it| items.push(format!("{it:?}"))).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(&data[used..], b"MSG a.b 1 3\r\nab");
        let mut r = Reader::default();
        let mut n = 0;
        r.feed(b"MSG x 1 2\r\nh", |_| n += 1).unwrap();
        assert_eq!(n, 0);
        r.feed(b"i\r\nMSG x 1 1\r\n", |_| n += 1).unwrap();
        assert_eq!(n, 1);
        r.feed(b"z\r\n", |it| {
            assert_eq!(
                it,
                Item::Msg {
                    subject: b"x",
                    payload: b"z"
                }
            );
            n += 1
        })
        .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            err_kind(b"-ERR 'Authorization Violation'"),
            "nats_err:'Authorization_Violation'"
        );
    }
}
