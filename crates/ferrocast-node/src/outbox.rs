//! The outbound queue of one connection.
//!
//! Producers (fan-out, replies) append encoded frames without waiting; one writer task
//! drains everything queued at once and writes it as a batch. The queue is bounded in
//! bytes: a producer that would overflow it closes the connection as slow (3008) instead
//! of growing memory, so one stuck reader never holds back anyone else.

use bytes::Bytes;
use ferrocast_protocol::Disconnect;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// Queue capacity (in frames) above which a drained queue releases its memory.
const SHRINK_ABOVE: usize = 64;

/// What the writer should do next.
#[derive(Debug)]
pub enum Outgoing {
    /// Write these frames (in order), after answering the transport-level ping whose
    /// payload is given, if any.
    Frames {
        /// Payload of the latest unanswered transport ping.
        pong: Option<Bytes>,
    },
    /// Close the connection with this code and reason (after the frames taken).
    Close(Disconnect),
}

struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    close: Option<Disconnect>,
    pong: Option<Bytes>,
}

/// A bounded byte queue with a close signal.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: frames, a pong or a close to write.
    notify: Notify,
    /// Wakes whoever waits in [`Outbox::closed`] (the session), on close only: a frame
    /// pushed to a busy connection must not wake its session as well as its writer.
    close_notify: Notify,
    max_bytes: usize,
}

/// Result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Queued.
    Queued,
    /// The queue would exceed its bound: the connection is now closing as slow.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

impl Outbox {
    /// A queue holding at most `max_bytes` bytes.
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                close: None,
                pong: None,
            }),
            notify: Notify::new(),
            close_notify: Notify::new(),
            max_bytes,
        }
    }

    /// Queues a frame for the writer.
    pub fn push(&self, frame: Bytes) -> PushResult {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return PushResult::Closed;
        }
        if s.bytes + frame.len() > self.max_bytes {
            s.frames.clear();
            s.bytes = 0;
            s.close = Some(Disconnect::SLOW);
            drop(s);
            self.notify.notify_waiters();
            self.close_notify.notify_waiters();
            return PushResult::Overflow;
        }
        s.bytes += frame.len();
        s.frames.push_back(frame);
        let first = s.frames.len() == 1;
        drop(s);
        if first {
            self.notify.notify_waiters();
        }
        PushResult::Queued
    }

    /// Asks the writer to answer a transport-level ping (a WebSocket Ping) with this
    /// payload; only the latest one is kept.
    pub fn pong(&self, payload: Bytes) {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return;
        }
        s.pong = Some(payload);
        drop(s);
        self.notify.notify_waiters();
    }

    /// Asks the writer to close the connection once the frames queued so far are written.
    /// The first close wins.
    pub fn close(&self, reason: Disconnect) {
        let mut s = self.state.lock();
        if s.close.is_none() {
            s.close = Some(reason);
        }
        drop(s);
        self.notify.notify_waiters();
        self.close_notify.notify_waiters();
    }

    /// Whether a close was requested.
    pub fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// The close reason, if any.
    pub fn close_reason(&self) -> Option<Disconnect> {
        self.state.lock().close.clone()
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }

    /// Waits until there is something to do, moves all queued frames into `into`.
    /// Returns [`Outgoing::Close`] once the queue is empty and a close was requested.
    pub async fn next(&self, into: &mut Vec<Bytes>) -> Outgoing {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if !s.frames.is_empty() || s.pong.is_some() {
                    into.extend(s.frames.drain(..));
                    s.bytes = 0;
                    if s.frames.capacity() > SHRINK_ABOVE {
                        // Give back what a burst grew; idle connections stay small.
                        s.frames = VecDeque::new();
                    }
                    return Outgoing::Frames {
                        pong: s.pong.take(),
                    };
                }
                if let Some(reason) = &s.close {
                    return Outgoing::Close(reason.clone());
                }
            }
            notified.await;
        }
    }

    /// Waits until a close is requested.
    pub async fn closed(&self) -> Disconnect {
        loop {
            let notified = self.close_notify.notified();
            if let Some(reason) = self.close_reason() {
                return reason;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_as_slow_and_drops_queue() {
        let o = Outbox::new(10);
        assert_eq!(o.push(Bytes::from_static(b"12345")), PushResult::Queued);
        assert_eq!(o.push(Bytes::from_static(b"123456")), PushResult::Overflow);
        assert_eq!(o.push(Bytes::from_static(b"1")), PushResult::Closed);
        let mut v = Vec::new();
        assert!(matches!(o.next(&mut v).await, Outgoing::Close(d) if d.code == 3008));
        assert!(v.is_empty());
    }

    #[tokio::test]
    async fn frames_before_close_are_written() {
        let o = Outbox::new(100);
        o.push(Bytes::from_static(b"a"));
        o.push(Bytes::from_static(b"b"));
        o.close(Disconnect::SHUTDOWN);
        let mut v = Vec::new();
        assert!(matches!(
            o.next(&mut v).await,
            Outgoing::Frames { pong: None }
        ));
        assert_eq!(v.len(), 2);
        assert!(matches!(o.next(&mut v).await, Outgoing::Close(d) if d.code == 3001));
    }

    #[tokio::test]
    async fn a_ping_wakes_the_writer_even_without_frames() {
        let o = Outbox::new(100);
        o.pong(Bytes::from_static(b"p1"));
        o.pong(Bytes::from_static(b"p2"));
        let mut v = Vec::new();
        match o.next(&mut v).await {
            Outgoing::Frames { pong } => assert_eq!(pong.as_deref(), Some(&b"p2"[..])),
            other => panic!("{other:?}"),
        }
        assert!(v.is_empty());
    }
}
