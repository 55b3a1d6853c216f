//! `--publish redis`: `XADD <stream> * method publish payload <JSON>` over one Redis
//! connection, pipelined (up to `--http-inflight` commands outstanding), speaking RESP
//! directly. The payload is the same JSON body as `POST /api/publish`; the broker's
//! command stream consumer applies entries in stream order, so per-channel order is kept.
//! A reply only says the entry was appended: what the broker then refuses is counted as
//! lost by the receivers.

use crate::publish::Batch;
use crate::scan::{build_payload, find, now_us};
use crate::stats::{Errors, count};
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct RedisPublisher {
    stream: TcpStream,
    key: String,
    channels: Rc<Vec<String>>,
    payload_size: usize,
    inflight: usize,
    pending: VecDeque<u32>,
    rbuf: BytesMut,
    pub failed: Vec<u64>,
    pub errors: Errors,
    body: Vec<u8>,
    out: Vec<u8>,
}

fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "${}\r\n", arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

impl RedisPublisher {
    pub async fn connect(
        addr: SocketAddr,
        key: String,
        channels: Rc<Vec<String>>,
        payload_size: usize,
        inflight: usize,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let n = channels.len();
        Ok(RedisPublisher {
            stream,
            key,
            channels,
            payload_size,
            inflight: inflight.max(1),
            pending: VecDeque::new(),
            rbuf: BytesMut::with_capacity(64 * 1024),
            failed: vec![0; n],
            errors: Errors::new(),
            body: Vec::new(),
            out: Vec::new(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.inflight.saturating_sub(self.pending.len())
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub async fn send(&mut self, batch: &Batch) -> anyhow::Result<()> {
        use std::io::Write;
        self.out.clear();
        for &(ch, seq) in batch.iter() {
            self.body.clear();
            let _ = write!(
                self.body,
                "{{\"channel\":\"{}\",\"data\":",
                self.channels[ch as usize]
            );
            build_payload(&mut self.body, seq, now_us(), self.payload_size);
            self.body.push(b'}');
            self.out.extend_from_slice(b"*7\r\n");
            bulk(&mut self.out, b"XADD");
            bulk(&mut self.out, self.key.as_bytes());
            bulk(&mut self.out, b"*");
            bulk(&mut self.out, b"method");
            bulk(&mut self.out, b"publish");
            bulk(&mut self.out, b"payload");
            let body = std::mem::take(&mut self.body);
            bulk(&mut self.out, &body);
            self.body = body;
            self.pending.push_back(ch);
        }
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads what is available and accounts complete replies (cancel-safe).
    pub async fn recv(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            count(&mut self.errors, "redis_connection_closed", 1);
            anyhow::bail!("Redis connection closed");
        }
        while let Some((ok, used)) = parse_reply(&self.rbuf)? {
            self.rbuf.advance(used);
            let ch = self.pending.pop_front();
            if !ok {
                if let Some(ch) = ch {
                    self.failed[ch as usize] += 1;
                }
                count(&mut self.errors, "xadd_error", 1);
            }
        }
        Ok(())
    }

    pub async fn after_recv(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    pub async fn finish(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        if !self.pending.is_empty() {
            count(
                &mut self.errors,
                "publish_unanswered",
                self.pending.len() as u64,
            );
        }
        let _ = self.stream.shutdown().await;
    }
}

/// One complete XADD reply at the start of `buf`: (it is an entry id, bytes used).
fn parse_reply(buf: &[u8]) -> anyhow::Result<Option<(bool, usize)>> {
    let Some(line_end) = find(buf, b"\r\n") else {
        if buf.len() > 64 * 1024 {
            anyhow::bail!("Redis reply line too long");
        }
        return Ok(None);
    };
    match buf.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&buf[1..line_end])?.parse()?;
            if len < 0 {
                return Ok(Some((false, line_end + 2)));
            }
            let total = line_end + 2 + len as usize + 2;
            Ok((buf.len() >= total).then_some((true, total)))
        }
        Some(b'-') | Some(b':') | Some(b'+') => Ok(Some((buf[0] == b'+', line_end + 2))),
        other => anyhow::bail!("unexpected Redis reply {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_replies() {
        let r = b"$15\r\n1700000000000-0\r\n-ERR wrong\r\n$15\r\n17000000";
        let (ok, used) = parse_reply(r).unwrap().unwrap();
        assert!(ok);
        let (ok, used2) = parse_reply(&r[used..]).unwrap().unwrap();
        assert!(!ok);
        assert!(parse_reply(&r[used + used2..]).unwrap().is_none());
    }
}
