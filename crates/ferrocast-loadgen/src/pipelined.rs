//! Publishers that pipeline requests over one TCP connection and match the replies in
//! order: `--publish http` (`POST /api/publish`) and `--publish redis` (`XADD`). Only
//! the wire format differs ([`Wire`]); pacing, in-flight bound and accounting are here.

use crate::batch::Batch;
use crate::replies::Replies;
use crate::scan::{build_payload, now_us};
use crate::stats::{Errors, count};
use bytes::{Buf, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request/reply format.
pub trait Wire {
    /// Error kind counted when the server closes the connection.
    const CLOSED: &'static str;
    /// Appends the request that publishes `body` (the JSON body of `/api/publish`).
    fn encode(&self, out: &mut Vec<u8>, body: &[u8]);
    /// One complete reply at the start of `buf`: the error kind when the publish was
    /// refused, and the bytes it used; `None` while incomplete.
    fn parse(buf: &[u8]) -> anyhow::Result<Option<(Option<String>, usize)>>;
}

/// A pipelined publisher over one connection.
pub struct Pipelined<W: Wire> {
    wire: W,
    stream: TcpStream,
    channels: Rc<Vec<String>>,
    payload_size: usize,
    inflight: usize,
    pending: VecDeque<u32>,
    rbuf: BytesMut,
    /// Messages the broker refused, per channel.
    pub failed: Vec<u64>,
    /// Error counters of this publisher.
    pub errors: Errors,
    body: Vec<u8>,
    out: Vec<u8>,
}

impl<W: Wire> Pipelined<W> {
    /// Connects to `addr`; publishes go to `channels`, with payloads of `payload_size`
    /// bytes, at most `inflight` (at least 1) unanswered at a time.
    pub async fn connect(
        addr: SocketAddr,
        wire: W,
        channels: Rc<Vec<String>>,
        payload_size: usize,
        inflight: usize,
    ) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let n = channels.len();
        Ok(Pipelined {
            wire,
            stream,
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

    /// Requests that may be sent before `inflight` are unanswered.
    pub fn capacity(&self) -> usize {
        self.inflight.saturating_sub(self.pending.len())
    }

    /// Writes one request per message, all in one write.
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
            self.wire.encode(&mut self.out, &self.body);
            self.pending.push_back(ch);
        }
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Waits (bounded) for the replies still outstanding and closes the connection.
    pub async fn finish(&mut self, within: Duration) {
        self.await_replies(within).await;
        let _ = self.stream.shutdown().await;
    }
}

impl<W: Wire> Replies for Pipelined<W> {
    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Reads what is available and accounts complete replies (cancel-safe).
    async fn recv(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            count(&mut self.errors, W::CLOSED, 1);
            anyhow::bail!("connection closed by the server");
        }
        while let Some((refused, used)) = W::parse(&self.rbuf)? {
            self.rbuf.advance(used);
            let ch = self.pending.pop_front();
            if let Some(kind) = refused {
                if let Some(ch) = ch {
                    self.failed[ch as usize] += 1;
                }
                count(&mut self.errors, kind, 1);
            }
        }
        Ok(())
    }

    fn errors(&mut self) -> &mut Errors {
        &mut self.errors
    }
}
