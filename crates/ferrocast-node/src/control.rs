//! The queue of requests from outside a session (server API, hub) to that session.
//!
//! Bounded, and allocated only when something is queued: most connections never get a
//! request, so they should not pay for a channel buffer.

use crate::hub::SessionControl;
use parking_lot::Mutex;
use std::collections::VecDeque;
use tokio::sync::Notify;

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
