//! `--publish http`: `POST /api/publish` over one keep-alive HTTP/1.1 connection, with
//! pipelining (up to `--http-inflight` requests outstanding). Requests on one connection
//! are handled in order by the server, so per-channel order is kept.

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

pub struct HttpPublisher {
    stream: TcpStream,
    host: String,
    path: String,
    api_key: String,
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

impl HttpPublisher {
    pub async fn connect(
        addr: SocketAddr,
        path: String,
        api_key: String,
        channels: Rc<Vec<String>>,
        payload_size: usize,
        inflight: usize,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let n = channels.len();
        Ok(HttpPublisher {
            stream,
            host: addr.to_string(),
            path,
            api_key,
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
            let _ = write!(
                self.out,
                "POST {} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.path,
                self.host,
                self.api_key,
                self.body.len()
            );
            self.out.extend_from_slice(&self.body);
            self.pending.push_back(ch);
        }
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Reads what is available and accounts complete responses (cancel-safe).
    pub async fn recv(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            count(&mut self.errors, "api_connection_closed", 1);
            anyhow::bail!("API connection closed by the server");
        }
        while let Some((status, body_ok, used)) = parse_response(&self.rbuf)? {
            self.rbuf.advance(used);
            let ch = self.pending.pop_front();
            if status != 200 || !body_ok {
                if let Some(ch) = ch {
                    self.failed[ch as usize] += 1;
                }
                let kind = if status != 200 {
                    format!("api_http_{status}")
                } else {
                    "api_error".to_string()
                };
                count(&mut self.errors, kind, 1);
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

/// One complete response at the start of `buf`: (status, body is a result, bytes used).
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, bool, usize)>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            anyhow::bail!("API response head too large");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("chunked API responses are not supported");
            }
        }
    }
    let len = len.ok_or_else(|| anyhow::anyhow!("API response without content-length"))?;
    let total = head_end + 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[head_end + 4..total];
    let ok = find(body, b"\"error\"").is_none();
    Ok(Some((status, ok, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"result\":1}HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
        let (s, ok, used) = parse_response(r).unwrap().unwrap();
        assert_eq!((s, ok), (200, true));
        let (s, ok, used2) = parse_response(&r[used..]).unwrap().unwrap();
        assert_eq!((s, ok, used + used2), (401, true, r.len()));
    }

    #[test]
    fn error_bodies() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 28\r\n\r\n{\"error\":{\"code\":102,\"m\":1}}";
        let (s, ok, used) = parse_response(r).unwrap().unwrap();
        assert_eq!((s, ok, used), (200, false, r.len()));
        assert!(parse_response(&r[..r.len() - 1]).unwrap().is_none());
    }
}
