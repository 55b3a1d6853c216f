//! Publishers that get one reply per message sent (`--publish http`, `--publish redis`,
//! Centrifugo `--publish client`): reading the replies, and the bounded wait for those
//! still outstanding when publishing ends.

use crate::stats::{Errors, count};
use std::time::Duration;

/// A publisher matching one reply to each message it sent.
pub trait Replies {
    /// Messages sent whose reply is still awaited.
    fn pending(&self) -> usize;

    /// Waits for what the server sent and accounts the replies in it (cancel-safe).
    async fn recv(&mut self) -> anyhow::Result<()>;

    /// What follows a completed [`Replies::recv`] outside its cancel-safe part (answering
    /// server pings); nothing by default.
    async fn after_recv(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The publisher's error counters.
    fn errors(&mut self) -> &mut Errors;

    /// Reads replies until none is outstanding or `within` has passed, then counts those
    /// still missing as `publish_unanswered`.
    async fn await_replies(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.pending() > 0 {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Ok(())) => {
                    if self.after_recv().await.is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        let unanswered = self.pending();
        if unanswered > 0 {
            count(self.errors(), "publish_unanswered", unanswered as u64);
        }
    }
}
