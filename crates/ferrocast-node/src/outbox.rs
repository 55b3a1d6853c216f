//! The outbound queue of one connection.
//!
//! Producers (fan-out, replies) append encoded frames without waiting; one writer task
//! drains everything queued at once and writes it as a batch. The queue is bounded in
//! bytes (`client.queue_max_size`), so one stuck reader never holds back anyone else and
//! never grows memory. What a push that would overflow it does depends on the push:
//!
//! - A frame that may not be dropped — a reply, a push of the session itself
//!   (unsubscribe, subscribe, refresh, ping), or a publication, join or leave of a
//!   namespace with the `close` policy — first makes room by dropping queued *droppable*
//!   pushes, oldest first. When even that is not enough the connection is closed as slow
//!   (3008) and its queue is dropped. One such frame larger than the whole bound (a
//!   recovery reply with many publications) is accepted when no other frame that may not
//!   be dropped is waiting, so a client can always recover what it missed; the bound
//!   applies again to what follows it.
//! - A droppable push (a publication, join or leave of a namespace with a drop policy)
//!   never closes the connection: its [`DropPolicy`] says what is dropped instead. The
//!   queue holds frames of every channel of the connection, so `drop_oldest` and
//!   `drop_all` drop the oldest droppable pushes whatever their channel: the queue is one
//!   FIFO per connection, and its bound is per connection.
//!
//! A dropped publication of a positioned subscription (one that can recover from
//! history) must not be followed by later ones of that subscription, or the client
//! would skip the gap: the subscription's [`DropGroup`] turns stale, its queued pushes
//! are dropped with it, nothing of it is queued any more, and the caller is told to make
//! it recover ([`Lost::recover`]).

use crate::stats::ChannelCounters;
use bytes::Bytes;
use ferrocast_protocol::Disconnect;
use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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

/// What a droppable push that would overflow the queue drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPolicy {
    /// The oldest queued droppable pushes (of any channel), until the new one fits.
    Oldest,
    /// The new push; what is queued stays.
    Newest,
    /// Every queued droppable push (of any channel); then the new one is queued.
    All,
}

impl DropPolicy {
    /// The configuration name (`slow_consumer_policy`), also the metric label.
    pub fn name(self) -> &'static str {
        match self {
            DropPolicy::Oldest => "drop_oldest",
            DropPolicy::Newest => "drop_newest",
            DropPolicy::All => "drop_all",
        }
    }
}

/// The droppable pushes of one subscription: shared by the subscription and each of its
/// queued frames.
#[derive(Debug)]
pub struct DropGroup {
    /// What an overflowing push of this subscription drops.
    pub policy: DropPolicy,
    /// The channel's namespace (empty without namespace), for metrics.
    pub namespace: String,
    /// The channel.
    pub channel: String,
    /// The subscription is positioned: a dropped publication makes it recover.
    pub recoverable: bool,
    /// The channel's statistics on this node (`channel_stats` drops), once it is in the hub.
    pub counters: OnceLock<Arc<ChannelCounters>>,
    /// A positioned publication was dropped: nothing of this subscription is queued any
    /// more. Changed under the outbox lock only.
    stale: AtomicBool,
}

impl DropGroup {
    /// The group of one subscription to `channel` (in `namespace`).
    pub fn new(policy: DropPolicy, namespace: &str, channel: &str, recoverable: bool) -> Self {
        DropGroup {
            policy,
            namespace: namespace.to_string(),
            channel: channel.to_string(),
            recoverable,
            counters: OnceLock::new(),
            stale: AtomicBool::new(false),
        }
    }

    /// Whether a positioned publication of this subscription was dropped.
    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }
}

/// A droppable frame among the queued ones.
struct Tag {
    /// Its position: `frames[seq - head]`.
    seq: u64,
    group: Arc<DropGroup>,
    /// A publication with a stream offset (its loss breaks offset continuity).
    positioned: bool,
}

/// The droppable frames of a queue, allocated when the first one is queued: connections
/// of `close` namespaces only never pay for it.
#[derive(Default)]
struct Droppable {
    /// In queue order.
    tags: VecDeque<Tag>,
    /// Position of `frames[0]` (0 after each drain).
    head: u64,
    /// Bytes of droppable pushes in the queue.
    bytes: usize,
    /// Frames dropped by drop policies since the connection began.
    dropped: u64,
}

/// Pushes of one subscription that a push dropped.
#[derive(Debug)]
pub struct Lost {
    /// The subscription.
    pub group: Arc<DropGroup>,
    /// Frames dropped.
    pub frames: u64,
    /// Of them, frames that had been queued (not the push being made).
    pub queued: u64,
    /// This push made the subscription stale: it must recover now (unsubscribe 2500).
    pub recover: bool,
}

/// Result of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Queued.
    Queued,
    /// The frame was dropped by its drop policy (or its subscription is stale).
    Dropped,
    /// The queue would exceed its bound: the connection is now closing as slow.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// What a push did: to the frame, and to queued pushes it made room with.
#[derive(Debug)]
#[must_use]
pub struct Pushed {
    /// What happened to the frame.
    pub result: PushResult,
    /// Droppable pushes dropped (the frame itself included when it was one), per
    /// subscription; `None` when nothing was (boxed: the common push returns two words).
    pub lost: Option<Box<Vec<Lost>>>,
}

impl Pushed {
    fn only(result: PushResult) -> Self {
        Pushed { result, lost: None }
    }

    fn with(result: PushResult, lost: Vec<Lost>) -> Self {
        Pushed {
            result,
            lost: (!lost.is_empty()).then(|| Box::new(lost)),
        }
    }
}

struct State {
    frames: VecDeque<Bytes>,
    bytes: usize,
    close: Option<Disconnect>,
    pong: Option<Bytes>,
    drops: Option<Box<Droppable>>,
}

/// Notes one dropped frame of `group` in `lost` (`queued`: it had been queued); a
/// positioned publication of a recoverable group makes it stale.
fn note(lost: &mut Vec<Lost>, group: &Arc<DropGroup>, positioned: bool, queued: bool) {
    let recover = positioned && group.recoverable && !group.stale.swap(true, Ordering::AcqRel);
    let queued = u64::from(queued);
    match lost.iter_mut().find(|l| Arc::ptr_eq(&l.group, group)) {
        Some(l) => {
            l.frames += 1;
            l.queued += queued;
            l.recover |= recover;
        }
        None => lost.push(Lost {
            group: group.clone(),
            frames: 1,
            queued,
            recover,
        }),
    }
}

/// Accounts for a queued droppable frame of `len` bytes that was dropped.
fn forget(bytes: &mut usize, drops: &mut Droppable, len: usize) {
    *bytes -= len;
    drops.bytes -= len;
    drops.dropped += 1;
}

impl State {
    fn queue(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    fn queue_droppable(&mut self, frame: Bytes, group: &Arc<DropGroup>, positioned: bool) {
        let drops = self.drops.get_or_insert_with(Box::default);
        drops.tags.push_back(Tag {
            seq: drops.head + self.frames.len() as u64,
            group: group.clone(),
            positioned,
        });
        drops.bytes += frame.len();
        self.queue(frame);
    }

    /// Bytes of droppable pushes in the queue.
    fn droppable(&self) -> usize {
        self.drops.as_ref().map_or(0, |d| d.bytes)
    }

    /// Counts a dropped frame that was not queued.
    fn count_drop(&mut self) {
        self.drops.get_or_insert_with(Box::default).dropped += 1;
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
        if let Some(d) = self.drops.as_mut() {
            d.tags.clear();
            d.head = 0;
            d.bytes = 0;
        }
    }

    /// Drops queued droppable pushes, oldest first, until `need` bytes are free (all of
    /// them with `usize::MAX`), and every push of a group that turned stale.
    fn evict(&mut self, mut need: usize, lost: &mut Vec<Lost>) {
        let Some(mut drops) = self.drops.take() else {
            return;
        };
        // A dropped push of a stale subscription takes the others of it along.
        let mut purge = false;
        // The common case is cheap: droppable pushes at the front.
        while need > 0 && drops.tags.front().is_some_and(|t| t.seq == drops.head) {
            let (Some(tag), Some(frame)) = (drops.tags.pop_front(), self.frames.pop_front()) else {
                break;
            };
            drops.head += 1;
            need = need.saturating_sub(frame.len());
            forget(&mut self.bytes, &mut drops, frame.len());
            note(lost, &tag.group, tag.positioned, true);
            purge |= tag.group.is_stale();
        }
        if need > 0 || purge {
            // Droppable pushes behind frames that may not be dropped, or pushes of a
            // subscription that just turned stale: one pass over the queue.
            let head = drops.head;
            let mut victims = Vec::new();
            let tags = std::mem::take(&mut drops.tags);
            let mut kept = VecDeque::with_capacity(tags.len());
            for tag in tags {
                if need == 0 && !tag.group.is_stale() {
                    kept.push_back(tag);
                    continue;
                }
                let len = self
                    .frames
                    .get((tag.seq - head) as usize)
                    .map_or(0, Bytes::len);
                need = need.saturating_sub(len);
                forget(&mut self.bytes, &mut drops, len);
                note(lost, &tag.group, tag.positioned, true);
                victims.push(tag.seq);
            }
            let (mut v, mut seq) = (0, head);
            self.frames.retain(|_| {
                let victim = victims.get(v) == Some(&seq);
                v += usize::from(victim);
                seq += 1;
                !victim
            });
            // The frames left move up by the victims before them.
            let mut v = 0;
            for tag in kept.iter_mut() {
                while victims.get(v).is_some_and(|&s| s < tag.seq) {
                    v += 1;
                }
                tag.seq -= v as u64;
            }
            drops.tags = kept;
        }
        self.drops = Some(drops);
    }
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

impl Outbox {
    /// A queue holding at most `max_bytes` bytes.
    pub fn new(max_bytes: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                close: None,
                pong: None,
                drops: None,
            }),
            notify: Notify::new(),
            close_notify: Notify::new(),
            max_bytes,
        }
    }

    /// Queues a frame that may not be dropped (a reply, a session push, a push of a
    /// `close` namespace). When it does not fit, queued droppable pushes make room,
    /// oldest first; when they are not enough, the connection closes as slow.
    pub fn push(&self, frame: Bytes) -> Pushed {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return Pushed::only(PushResult::Closed);
        }
        if s.bytes + frame.len() > self.max_bytes {
            return self.overflow(s, frame);
        }
        s.queue(frame);
        let first = s.frames.len() == 1;
        drop(s);
        if first {
            self.notify.notify_waiters();
        }
        Pushed::only(PushResult::Queued)
    }

    /// A frame that may not be dropped and does not fit as the queue is.
    fn overflow(&self, mut s: MutexGuard<'_, State>, frame: Bytes) -> Pushed {
        let len = frame.len();
        // Bytes that may not be dropped.
        let fixed = s.bytes - s.droppable();
        let mut lost = Vec::new();
        if fixed == 0 && len > self.max_bytes {
            // Larger than the whole queue (a big recovery reply) with nothing else that
            // must be written first: refusing it would close the connection whenever the
            // client came back for it. It is queued; the bound applies to what follows.
        } else if fixed + len > self.max_bytes {
            s.clear();
            s.close = Some(Disconnect::SLOW);
            drop(s);
            self.notify.notify_waiters();
            self.close_notify.notify_waiters();
            return Pushed::only(PushResult::Overflow);
        } else {
            let need = s.bytes + len - self.max_bytes;
            s.evict(need, &mut lost);
        }
        s.queue(frame);
        drop(s);
        self.notify.notify_waiters();
        Pushed::with(PushResult::Queued, lost)
    }

    /// Queues a push of a subscription whose namespace has a drop policy; `positioned`:
    /// a publication with a stream offset. When it does not fit, the group's policy
    /// decides what is dropped; the connection is never closed for it.
    pub fn push_droppable(&self, frame: Bytes, group: &Arc<DropGroup>, positioned: bool) -> Pushed {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return Pushed::only(PushResult::Closed);
        }
        let mut lost = Vec::new();
        if group.is_stale() {
            // Its subscription is recovering: what it missed comes from history.
            s.count_drop();
            note(&mut lost, group, positioned, false);
            return Pushed::with(PushResult::Dropped, lost);
        }
        let len = frame.len();
        if s.bytes + len > self.max_bytes {
            // Whether it fits once every droppable push is gone.
            let can_fit = s.bytes - s.droppable() + len <= self.max_bytes;
            match group.policy {
                DropPolicy::Oldest if can_fit => {
                    let need = s.bytes + len - self.max_bytes;
                    s.evict(need, &mut lost);
                }
                DropPolicy::All if can_fit => s.evict(usize::MAX, &mut lost),
                _ => {}
            }
            if s.bytes + len > self.max_bytes || group.is_stale() {
                s.count_drop();
                note(&mut lost, group, positioned, false);
                return Pushed::with(PushResult::Dropped, lost);
            }
        }
        s.queue_droppable(frame, group, positioned);
        let first = s.frames.len() == 1;
        drop(s);
        if first || !lost.is_empty() {
            self.notify.notify_waiters();
        }
        Pushed::with(PushResult::Queued, lost)
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

    /// The bound in bytes (`client.queue_max_size`).
    pub fn capacity(&self) -> usize {
        self.max_bytes
    }

    /// Pushes dropped by drop policies since the connection began.
    pub fn dropped(&self) -> u64 {
        self.state.lock().drops.as_ref().map_or(0, |d| d.dropped)
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
                    s.clear();
                    if s.frames.capacity() > SHRINK_ABOVE {
                        // Give back what a burst grew; idle connections stay small.
                        s.frames = VecDeque::new();
                    }
                    if let Some(d) = s.drops.as_mut()
                        && d.tags.capacity() > SHRINK_ABOVE
                    {
                        d.tags = VecDeque::new();
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
mod tests;
