//! What the rest of the node holds of a connection ([`ClientHandle`]) and the requests it
//! may send to that connection's session ([`SessionControl`], through a [`ControlQueue`]).
//!
//! The queue is bounded, and allocated only when something is queued: most connections
//! never get a request, so they should not pay for a channel buffer.

use crate::metrics as m;
use crate::outbox::{DropGroup, Outbox, PushResult, Pushed};
use bytes::Bytes;
use ferrocast_protocol::{Disconnect, Protocol};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::Notify;

/// A request from outside a session (server API, drain) to that session.
#[derive(Debug, Clone)]
pub enum SessionControl {
    /// Subscribe the client to a channel on the server's behalf.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// Unsubscribe the client from a channel.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Close the connection.
    Disconnect(Disconnect),
    /// The node may have missed publications of the channel: the subscription must
    /// recover (client-side: unsubscribe push 2500; server-side: disconnect 3010).
    InsufficientState {
        /// The channel.
        channel: String,
    },
    /// The backend ended a subscription stream (`failed`: with an error).
    StreamEnded {
        /// The channel.
        channel: String,
        /// Which stream (a newer subscription to the channel has another).
        stream: u64,
        /// It failed rather than closed.
        failed: bool,
    },
    /// Change the connection's expiry (Unix seconds, 0: never) or expire it now.
    Refresh {
        /// Close the connection as expired now.
        expired: bool,
        /// New expiry time (Unix seconds, 0: never).
        expire_at: i64,
    },
}

/// What other parts of the node may hold of a connection.
pub struct ClientHandle {
    /// Client id.
    pub id: String,
    /// User id (empty for anonymous).
    pub user: String,
    /// The encoding the connection speaks (fan-out picks the frame encoded for it).
    pub protocol: Protocol,
    /// Outbound queue.
    pub outbox: Arc<Outbox>,
    /// Requests to the session.
    pub control: Arc<ControlQueue>,
}

impl ClientHandle {
    /// Queues a frame that may not be dropped; a connection that overflows is closed as
    /// slow (after droppable pushes could not make room). Whether it was queued.
    pub fn send(&self, frame: Bytes) -> bool {
        let pushed = self.outbox.push(frame);
        let queued = pushed.result == PushResult::Queued;
        self.settle(pushed);
        queued
    }

    /// Queues a push of a subscription whose namespace has a drop policy (`positioned`:
    /// a publication with a stream offset); whether it was queued.
    pub fn send_droppable(&self, frame: Bytes, group: &Arc<DropGroup>, positioned: bool) -> bool {
        let pushed = self.outbox.push_droppable(frame, group, positioned);
        let queued = pushed.result == PushResult::Queued;
        self.settle(pushed);
        queued
    }

    /// Accounts for what a push dropped; a subscription that lost a positioned
    /// publication is sent to recover (unsubscribe 2500), as after an offset gap.
    pub fn settle(&self, pushed: Pushed) {
        if pushed.result == PushResult::Overflow {
            m::slow_consumer_closed();
        }
        for lost in pushed.lost.into_iter().flat_map(|l| *l) {
            let group = &lost.group;
            m::slow_consumer_dropped(&group.namespace, group.policy.name(), lost.frames);
            // The push being made is counted by whoever made it (fan-out).
            if let Some(counters) = group.counters.get()
                && lost.queued > 0
            {
                counters.dropped(lost.queued);
            }
            if lost.recover {
                tracing::debug!(
                    client = %self.id,
                    channel = %group.channel,
                    "slow consumer: publications dropped, the subscription recovers"
                );
                self.control(
                    SessionControl::InsufficientState {
                        channel: group.channel.clone(),
                    },
                    Disconnect::INSUFFICIENT_STATE,
                );
            }
        }
    }

    /// Hands a request to the session without blocking; a session too busy to take it
    /// is closed with `fallback` so that nothing is silently skipped.
    pub fn control(&self, ctl: SessionControl, fallback: Disconnect) {
        if let Err(e) = self.control.try_push(ctl) {
            tracing::warn!(client = %self.id, error = %e, "session control queue full");
            self.outbox.close(fallback);
        }
    }
}

/// Requests queued at most per session.
pub const CONTROL_QUEUE: usize = 64;

/// A bounded, lazily allocated request queue with one consumer.
#[derive(Default)]
pub struct ControlQueue {
    queue: Mutex<VecDeque<SessionControl>>,
    notify: Notify,
}

/// The queue is full: the session is not keeping up.
#[derive(Debug, thiserror::Error)]
#[error("session control queue full")]
pub struct QueueFull;

impl ControlQueue {
    /// Queues a request without waiting.
    pub fn try_push(&self, ctl: SessionControl) -> Result<(), QueueFull> {
        let mut q = self.queue.lock();
        if q.len() >= CONTROL_QUEUE {
            return Err(QueueFull);
        }
        q.push_back(ctl);
        drop(q);
        self.notify.notify_one();
        Ok(())
    }

    /// Waits for the next request.
    pub async fn recv(&self) -> SessionControl {
        loop {
            if let Some(ctl) = self.pop() {
                return ctl;
            }
            self.notify.notified().await;
        }
    }

    fn pop(&self) -> Option<SessionControl> {
        let mut q = self.queue.lock();
        let ctl = q.pop_front();
        if q.is_empty() && q.capacity() > 0 {
            *q = VecDeque::new();
        }
        ctl
    }
}
