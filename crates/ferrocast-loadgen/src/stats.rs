//! Accounting: per-connection sequence tracking and per-thread latency histograms and
//! error counters. Nothing here is shared between threads: each worker thread owns its
//! counters and they are merged once, at the end.

use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Sequence accounting for one (connection, channel).
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    seen: Vec<u64>,
    max: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers received more than once (the extra copies).
    pub duplicated: u64,
    /// Received after a higher sequence number of the same channel.
    pub out_of_order: u64,
}

/// Largest sequence number tracked (guards the bitmap against garbage input).
const MAX_SEQ: u64 = 1 << 28;

impl SeqTracker {
    /// Records one delivery of `seq`; returns whether it was new.
    #[inline]
    pub fn record(&mut self, seq: u64) -> bool {
        if seq == 0 || seq > MAX_SEQ {
            return false;
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let mask = 1u64 << bit;
        if self.seen[word] & mask != 0 {
            self.duplicated += 1;
            return false;
        }
        self.seen[word] |= mask;
        self.unique += 1;
        if seq < self.max {
            self.out_of_order += 1;
        } else {
            self.max = seq;
        }
        true
    }
}

/// What one subscriber connection reports at the end.
#[derive(Debug, Default, Clone)]
pub struct ConnResult {
    /// Channel index it was subscribed to.
    pub channel: u32,
    /// Subscribed before publishing started (counts towards `expected`).
    pub subscribed: bool,
    /// Distinct messages received.
    pub unique: u64,
    /// Extra copies received.
    pub duplicated: u64,
    /// Messages received after a later one.
    pub out_of_order: u64,
}

impl ConnResult {
    /// The result of a connection on `channel` whose deliveries `t` accounted.
    pub fn from_tracker(channel: u32, subscribed: bool, t: &SeqTracker) -> Self {
        ConnResult {
            channel,
            subscribed,
            unique: t.unique,
            duplicated: t.duplicated,
            out_of_order: t.out_of_order,
        }
    }
}

/// Latency histogram in microseconds (1 µs .. 120 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// The JSON of a latency histogram in microseconds: count, p50/p90/p99/p999, max, mean.
pub fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": h.mean().round(),
    })
}

/// The JSON of a setup-time histogram (microseconds) in milliseconds: p50, p99, max.
pub fn setup_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| (us as f64 / 100.0).round() / 10.0;
    serde_json::json!({
        "p50": ms(h.value_at_quantile(0.5)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
    })
}

/// Error counters by kind.
pub type Errors = BTreeMap<String, u64>;

/// Adds `n` to the counter `kind`.
pub fn count(errors: &mut Errors, kind: impl Into<String>, n: u64) {
    *errors.entry(kind.into()).or_insert(0) += n;
}

/// State shared by every thread, touched only at connect time, once per frame
/// (`received_unique`) or by the coordinator.
pub struct Shared {
    /// Connections that finished their setup (connect + subscribe replied OK).
    pub subscribed: AtomicUsize,
    /// Connections whose setup failed.
    pub failed: AtomicUsize,
    /// Subscribers per channel.
    pub subs_per_channel: Vec<AtomicU32>,
    /// Microseconds (shared clock) at which the last setup completed.
    pub last_subscribed_us: AtomicU64,
    /// Set by the coordinator right before publishing starts; later setups do not count.
    pub publishing: AtomicBool,
    /// Distinct messages received so far (all threads), to end the drain early.
    pub received_unique: AtomicU64,
}

impl Shared {
    /// Zeroed counters for `channels` channels.
    pub fn new(channels: usize) -> Arc<Self> {
        Arc::new(Shared {
            subscribed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            subs_per_channel: (0..channels).map(|_| AtomicU32::new(0)).collect(),
            last_subscribed_us: AtomicU64::new(0),
            publishing: AtomicBool::new(false),
            received_unique: AtomicU64::new(0),
        })
    }

    /// Marks a connection as subscribed; false if publishing had already started.
    pub fn on_subscribed(&self, channel: u32, at_us: u64) -> bool {
        self.subs_per_channel[channel as usize].fetch_add(1, Ordering::SeqCst);
        if self.publishing.load(Ordering::SeqCst) {
            self.subs_per_channel[channel as usize].fetch_sub(1, Ordering::SeqCst);
            self.failed.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        self.last_subscribed_us.fetch_max(at_us, Ordering::SeqCst);
        self.subscribed.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Counts a connection whose setup failed.
    pub fn on_failed(&self) {
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
}

/// Per-thread accounting (single-threaded runtime: `RefCell`, no locks).
pub struct ThreadStats {
    /// Latency to when the load generator read the message.
    pub hist: RefCell<Histogram<u64>>,
    /// Latency to when the kernel received it at the subscriber's socket.
    pub sock_hist: RefCell<Histogram<u64>>,
    /// Setup time of each connection (scheduled start to subscribed), microseconds.
    pub setup_hist: RefCell<Histogram<u64>>,
    /// Error counters by kind.
    pub errors: RefCell<Errors>,
    /// When (shared clock, µs) the last frame with new messages was read.
    pub last_recv_us: Cell<u64>,
    /// When (shared clock, µs) the first frame with new messages was read.
    pub first_recv_us: Cell<u64>,
    /// Server heartbeats answered.
    pub pings: Cell<u64>,
}

impl ThreadStats {
    /// Empty histograms and counters.
    pub fn new() -> Self {
        ThreadStats {
            hist: RefCell::new(new_histogram()),
            sock_hist: RefCell::new(new_histogram()),
            setup_hist: RefCell::new(new_histogram()),
            errors: RefCell::new(Errors::new()),
            last_recv_us: Cell::new(0),
            first_recv_us: Cell::new(u64::MAX),
            pings: Cell::new(0),
        }
    }

    /// Counts one error of kind `kind`.
    pub fn error(&self, kind: impl Into<String>) {
        count(&mut self.errors.borrow_mut(), kind, 1);
    }

    /// Records how long a connection took from its scheduled start to subscribed.
    pub fn setup_done(&self, started: tokio::time::Instant) {
        let v = (started.elapsed().as_micros() as u64).clamp(1, 120_000_000);
        let _ = self.setup_hist.borrow_mut().record(v);
    }

    /// Records the latency of one new message read at `now_us`, whose data the kernel
    /// received at `rx_us` (0: no socket timestamp).
    #[inline]
    pub fn latency(&self, sent_us: u64, now_us: u64, rx_us: u64) {
        let v = now_us.saturating_sub(sent_us).clamp(1, 120_000_000);
        let _ = self.hist.borrow_mut().record(v);
        if rx_us > 0 {
            let v = rx_us.saturating_sub(sent_us).clamp(1, 120_000_000);
            let _ = self.sock_hist.borrow_mut().record(v);
        }
    }

    /// Notes that a batch of messages arrived at `now_us`.
    #[inline]
    pub fn received_at(&self, now_us: u64) {
        if now_us > self.last_recv_us.get() {
            self.last_recv_us.set(now_us);
        }
        if now_us < self.first_recv_us.get() {
            self.first_recv_us.set(now_us);
        }
    }
}

/// CPU seconds (user + system) used by this process so far.
pub fn cpu_secs() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses): utime is field 14, stime 15.
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ')' the first field is state (field 3), so utime (14) is index 11.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts() {
        let mut t = SeqTracker::default();
        for s in [1, 2, 4, 3, 3, 5, 1000] {
            t.record(s);
        }
        assert_eq!(t.unique, 6);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.out_of_order, 1);
    }
}
