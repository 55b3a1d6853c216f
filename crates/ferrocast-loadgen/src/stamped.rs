//! A TCP stream that remembers when the kernel received the data last read from it
//! (`SO_TIMESTAMPNS`), so latency can be measured at the subscriber's socket as well as
//! when the load generator got round to the message.
//!
//! With thousands of subscribers on one core, the load generator reads a broadcast one
//! socket after the other: the last socket is read long after its data arrived. The socket
//! timestamp takes that delay out. When one read returns several segments, the kernel gives
//! the timestamp of the last one, so a frame's socket latency is never under-stated.

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A `TcpStream` whose reads record the kernel's receive timestamp.
pub struct StampedTcp {
    inner: TcpStream,
    /// Room for one `SCM_TIMESTAMPNS` control message.
    cmsg: Vec<u8>,
    /// Receive time of the data last read, microseconds on the load generator's clock
    /// (see [`crate::scan::now_us`]); 0 when the kernel gave none.
    last_rx_us: u64,
}

impl StampedTcp {
    /// Wraps `inner` and asks the kernel for receive timestamps (best effort: without them,
    /// [`StampedTcp::last_rx_us`] stays 0).
    pub fn new(inner: TcpStream) -> Self {
        let _ = setsockopt(&inner, sockopt::ReceiveTimestampns, &true);
        StampedTcp {
            inner,
            cmsg: nix::cmsg_space!(nix::sys::time::TimeSpec),
            last_rx_us: 0,
        }
    }

    /// When the kernel received the data last read (load generator clock, µs; 0: unknown).
    pub fn last_rx_us(&self) -> u64 {
        self.last_rx_us
    }
}

/// One `recvmsg` into `buf`; also returns the kernel's receive time of the data (load
/// generator clock, µs) when it came with it.
fn recv_stamped(fd: RawFd, buf: &mut [u8], cmsg: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<()>(fd, &mut iov, Some(cmsg), MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)?;
    let mut at = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let since_epoch = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
                at = Some(crate::scan::wall_to_clock_us(UNIX_EPOCH + since_epoch));
            }
        }
    }
    Ok((msg.bytes, at))
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let StampedTcp {
            inner,
            cmsg,
            last_rx_us,
        } = self.get_mut();
        loop {
            ready!(inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // `try_io` clears the readiness when the read reports `WouldBlock`.
            match inner.try_io(Interest::READABLE, || {
                recv_stamped(inner.as_raw_fd(), unfilled, cmsg)
            }) {
                Ok((n, at)) => {
                    if let Some(at) = at {
                        *last_rx_us = at;
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
