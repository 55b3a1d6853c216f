//! One subscription of one connection, as seen by fan-out: it holds publications back
//! until the subscribe reply is out, never delivers an offset twice, and notices when a
//! publication is not the next one it expects (a gap), so the client recovers instead of
//! silently missing something. A subscription of a namespace with a drop policy queues
//! its pushes as droppable ([`DropGroup`]).

use crate::control::ClientHandle;
use crate::outbox::DropGroup;
use crate::stats::ChannelCounters;
use bytes::Bytes;
use ferrocast_protocol::StreamPosition;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// What happened to one publication for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued to the client.
    Sent,
    /// Held until the subscribe reply is queued.
    Held,
    /// Already delivered (or returned by recovery): dropped.
    Duplicate,
    /// Publications before this one are missing: the subscription must recover.
    Gap,
    /// Not queued: dropped by the namespace's slow-consumer policy, or the connection is
    /// closing (or closed as slow by this push).
    Dropped,
}

/// A subscription as seen by fan-out.
pub struct Subscriber {
    /// The connection.
    pub client: Arc<ClientHandle>,
    /// Whether join/leave pushes go to this subscriber.
    pub join_leave: bool,
    /// Whether the subscription is positioned in the channel stream and can recover.
    pub recoverable: bool,
    /// Set when the namespace's slow-consumer policy drops pushes instead of closing.
    drops: Option<Arc<DropGroup>>,
    epoch: OnceLock<String>,
    /// Highest offset delivered (or recovered).
    last_offset: AtomicU64,
    syncing: AtomicBool,
    pending: Mutex<Option<Vec<Held>>>,
}

/// A publication held back while the subscription is being set up.
struct Held {
    offset: u64,
    epoch: String,
    frame: Bytes,
}

impl Subscriber {
    /// A subscriber that holds publications back until [`Subscriber::go_live`].
    pub fn new(client: Arc<ClientHandle>, join_leave: bool, recoverable: bool) -> Self {
        Subscriber {
            client,
            join_leave,
            recoverable,
            drops: None,
            epoch: OnceLock::new(),
            last_offset: AtomicU64::new(0),
            syncing: AtomicBool::new(true),
            pending: Mutex::new(Some(Vec::new())),
        }
    }

    /// Queues this subscription's pushes as droppable by `group`'s policy.
    pub fn with_drops(mut self, group: Arc<DropGroup>) -> Self {
        self.drops = Some(group);
        self
    }

    /// Counts the pushes its drop policy drops after they were queued in the channel's
    /// statistics (the hub calls it when the subscription joins the channel).
    pub fn count_drops_in(&self, counters: &Arc<ChannelCounters>) {
        if let Some(group) = &self.drops {
            let _ = group.counters.set(counters.clone());
        }
    }

    /// Queues one push (a publication at `offset`, or a join/leave with offset 0); whether
    /// it was queued.
    fn send(&self, frame: Bytes, offset: u64) -> bool {
        match &self.drops {
            None => self.client.send(frame),
            Some(group) => self.client.send_droppable(frame, group, offset > 0),
        }
    }

    /// Whether `epoch` is another stream than the one this subscription is positioned in.
    fn epoch_changed(&self, epoch: &str) -> bool {
        self.recoverable && self.epoch.get().is_some_and(|e| e != epoch)
    }

    /// Checks a publication against the subscription's position and moves it forward.
    /// Subscriptions without a position, and offset 0 (channels without history, joins,
    /// leaves), always pass.
    fn admit(&self, offset: u64, epoch_changed: bool) -> Delivery {
        if !self.recoverable || offset == 0 {
            return Delivery::Sent;
        }
        if epoch_changed {
            return Delivery::Gap;
        }
        let last = self.last_offset.load(Ordering::Acquire);
        if offset <= last {
            return Delivery::Duplicate;
        }
        if offset > last + 1 {
            return Delivery::Gap;
        }
        self.last_offset.store(offset, Ordering::Release);
        Delivery::Sent
    }

    /// Delivers one encoded publication of stream `epoch` (or a join/leave with offset 0).
    pub fn deliver(&self, offset: u64, epoch: &str, frame: &Bytes) -> Delivery {
        if self.syncing.load(Ordering::Acquire) {
            let mut p = self.pending.lock();
            if let Some(buf) = p.as_mut() {
                // The position is not known yet: it is checked in `go_live`.
                buf.push(Held {
                    offset,
                    epoch: epoch.to_string(),
                    frame: frame.clone(),
                });
                return Delivery::Held;
            }
        }
        let d = self.admit(offset, offset > 0 && self.epoch_changed(epoch));
        if d == Delivery::Sent && !self.send(frame.clone(), offset) {
            return Delivery::Dropped;
        }
        d
    }

    /// Queues `reply` (if any), then the publications held since the subscription began
    /// that come after `position` (the last offset the reply covered). From now on
    /// publications go straight out. Returns true when a held publication showed a gap:
    /// the subscription must recover.
    pub fn go_live(&self, reply: Option<Bytes>, position: Option<StreamPosition>) -> bool {
        let mut p = self.pending.lock();
        if let Some(pos) = position {
            self.last_offset.store(pos.offset, Ordering::Release);
            let _ = self.epoch.set(pos.epoch);
        }
        if let Some(reply) = reply {
            self.client.send(reply);
        }
        let mut gap = false;
        if let Some(held) = p.take() {
            for h in held {
                let changed = h.offset > 0 && self.epoch_changed(&h.epoch);
                match self.admit(h.offset, changed) {
                    Delivery::Sent => {
                        self.send(h.frame, h.offset);
                    }
                    Delivery::Gap => {
                        gap = true;
                        break;
                    }
                    _ => {}
                }
            }
        }
        self.syncing.store(false, Ordering::Release);
        gap
    }

    /// Whether a live, recoverable subscription has missed publications up to `position`.
    pub fn is_behind(&self, position: &StreamPosition) -> bool {
        if !self.recoverable || self.syncing.load(Ordering::Acquire) {
            return false;
        }
        let epoch_changed = self.epoch.get().is_some_and(|e| *e != position.epoch);
        epoch_changed || self.last_offset.load(Ordering::Acquire) < position.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Outbox, Outgoing};

    fn subscriber(recoverable: bool) -> (Subscriber, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(1 << 20));
        let control = Arc::new(crate::control::ControlQueue::default());
        let client = Arc::new(ClientHandle {
            id: "c".into(),
            user: "u".into(),
            protocol: ferrocast_protocol::Protocol::Json,
            outbox: outbox.clone(),
            control,
        });
        (Subscriber::new(client, false, recoverable), outbox)
    }

    async fn drained(o: &Outbox) -> Vec<Bytes> {
        let mut v = Vec::new();
        o.close(ferrocast_protocol::Disconnect::SHUTDOWN);
        while let Outgoing::Frames { .. } = o.next(&mut v).await {}
        v
    }

    fn pos(offset: u64) -> Option<StreamPosition> {
        Some(StreamPosition {
            offset,
            epoch: "e".into(),
        })
    }

    #[tokio::test]
    async fn holds_until_live_and_skips_what_the_reply_covered() {
        let (s, o) = subscriber(true);
        for off in 4..=7 {
            assert_eq!(
                s.deliver(off, "e", &Bytes::from(off.to_string())),
                Delivery::Held
            );
        }
        assert!(!s.go_live(Some(Bytes::from_static(b"reply")), pos(5)));
        // A late duplicate of a recovered publication is dropped; the next one passes.
        assert_eq!(
            s.deliver(5, "e", &Bytes::from_static(b"5")),
            Delivery::Duplicate
        );
        assert_eq!(s.deliver(8, "e", &Bytes::from_static(b"8")), Delivery::Sent);
        let frames: Vec<Bytes> = drained(&o).await;
        assert_eq!(
            frames,
            vec![
                Bytes::from_static(b"reply"),
                "6".into(),
                "7".into(),
                "8".into()
            ]
        );
    }

    #[tokio::test]
    async fn a_gap_is_reported_not_skipped() {
        let (s, _o) = subscriber(true);
        assert!(!s.go_live(None, pos(3)));
        assert_eq!(s.deliver(4, "e", &Bytes::new()), Delivery::Sent);
        assert_eq!(s.deliver(6, "e", &Bytes::new()), Delivery::Gap);
        // A publication of another stream (Redis lost it and started anew) is a gap too,
        // even with a low offset.
        assert_eq!(s.deliver(1, "new", &Bytes::new()), Delivery::Gap);
        assert!(s.is_behind(&StreamPosition {
            offset: 6,
            epoch: "e".into()
        }));
        assert!(!s.is_behind(&StreamPosition {
            offset: 4,
            epoch: "e".into()
        }));
        assert!(s.is_behind(&StreamPosition {
            offset: 4,
            epoch: "other".into()
        }));
        let (h, _o) = subscriber(true);
        h.deliver(2, "e", &Bytes::new());
        assert!(h.go_live(None, pos(0)), "held publication after a gap");
    }

    #[tokio::test]
    async fn a_dropped_publication_sends_the_subscription_to_recover() {
        use crate::control::SessionControl;
        use crate::outbox::DropPolicy;
        let outbox = Arc::new(Outbox::new(20));
        let control = Arc::new(crate::control::ControlQueue::default());
        let client = Arc::new(ClientHandle {
            id: "c".into(),
            user: "u".into(),
            protocol: ferrocast_protocol::Protocol::Json,
            outbox: outbox.clone(),
            control: control.clone(),
        });
        let group = Arc::new(DropGroup::new(DropPolicy::Newest, "h", "h:1", true));
        let s = Subscriber::new(client, false, true).with_drops(group.clone());
        // Held while syncing, then queued by go_live: droppable as well.
        s.deliver(1, "e", &Bytes::from_static(b"1........."));
        assert!(!s.go_live(None, pos(0)));
        for frame in [b"2.........", b"3........."] {
            s.deliver(
                frame[0] as u64 - u64::from(b'0'),
                "e",
                &Bytes::from_static(frame),
            );
        }
        let ctl = tokio::time::timeout(std::time::Duration::from_secs(1), control.recv())
            .await
            .expect("a recovery request");
        assert!(
            matches!(&ctl, SessionControl::InsufficientState { channel } if channel == "h:1"),
            "{ctl:?}"
        );
        assert!(group.is_stale());
        // Nothing after the gap reaches the client.
        assert_eq!(
            s.deliver(4, "e", &Bytes::from_static(b"4")),
            Delivery::Dropped
        );
        let frames = drained(&outbox).await;
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"1........."), "2.........".into()]
        );
        assert_eq!(outbox.dropped(), 2);
    }

    #[tokio::test]
    async fn drops_are_told_to_fan_out_and_counted_for_the_channel() {
        use crate::outbox::DropPolicy;
        let outbox = Arc::new(Outbox::new(20));
        let client = Arc::new(ClientHandle {
            id: "c".into(),
            user: "u".into(),
            protocol: ferrocast_protocol::Protocol::Json,
            outbox: outbox.clone(),
            control: Arc::default(),
        });
        let counters = Arc::new(ChannelCounters::default());
        let subscriber = |policy| {
            let group = Arc::new(DropGroup::new(policy, "n", "n:1", false));
            let s = Subscriber::new(client.clone(), false, false).with_drops(group);
            s.count_drops_in(&counters);
            assert!(!s.go_live(None, None));
            s
        };
        let oldest = subscriber(DropPolicy::Oldest);
        let frame = Bytes::from_static(b"0123456789");
        for _ in 0..3 {
            assert_eq!(oldest.deliver(0, "", &frame), Delivery::Sent);
        }
        // The third evicted a queued one: counted for the channel here, by fan-out below.
        assert_eq!(counters.snapshot("n:1", 1).drops, 1);
        let newest = subscriber(DropPolicy::Newest);
        assert_eq!(newest.deliver(0, "", &frame), Delivery::Dropped);
        assert_eq!(counters.snapshot("n:1", 1).drops, 1);
        assert_eq!(outbox.dropped(), 2);
    }

    #[tokio::test]
    async fn without_position_everything_passes_once() {
        let (s, _o) = subscriber(false);
        assert!(!s.go_live(None, None));
        assert_eq!(s.deliver(0, "", &Bytes::new()), Delivery::Sent);
        assert_eq!(s.deliver(0, "", &Bytes::new()), Delivery::Sent);
        assert_eq!(s.deliver(7, "e", &Bytes::new()), Delivery::Sent);
        assert_eq!(s.deliver(9, "e", &Bytes::new()), Delivery::Sent);
        assert!(!s.is_behind(&StreamPosition {
            offset: 100,
            epoch: "x".into()
        }));
    }
}
