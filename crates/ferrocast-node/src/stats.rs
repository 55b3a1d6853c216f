//! Per-channel statistics: counters each channel with local subscribers keeps beside them
//! (bumped with relaxed atomics under the hub's read lock: no lock of their own on the
//! fan-out path), rates sampled from them every [`SAMPLE_EVERY`], and one channel's view
//! merged over the nodes of a cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often rates are computed from the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The counters of one channel on this node.
#[derive(Debug, Default)]
pub struct ChannelCounters {
    publications: AtomicU64,
    deliveries: AtomicU64,
    drops: AtomicU64,
    /// The counts at the last sample, and the rates since (f64 bits, per second).
    sampled_publications: AtomicU64,
    sampled_deliveries: AtomicU64,
    publication_rate: AtomicU64,
    delivery_rate: AtomicU64,
}

impl ChannelCounters {
    /// One publication fanned out: `delivered` queued, `dropped` not (the connection was
    /// closing or closed as slow).
    pub fn record(&self, delivered: u64, dropped: u64) {
        self.publications.fetch_add(1, Ordering::Relaxed);
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
        if dropped > 0 {
            self.drops.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Pushes of this channel dropped after they were queued (slow-consumer policies).
    pub fn dropped(&self, n: u64) {
        self.drops.fetch_add(n, Ordering::Relaxed);
    }

    /// Computes the rates over the `elapsed` time since the last sample.
    pub fn sample(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let rate = |count: &AtomicU64, last: &AtomicU64, out: &AtomicU64| {
            let now = count.load(Ordering::Relaxed);
            let before = last.swap(now, Ordering::Relaxed);
            let r = now.saturating_sub(before) as f64 / secs;
            out.store(r.to_bits(), Ordering::Relaxed);
        };
        rate(
            &self.publications,
            &self.sampled_publications,
            &self.publication_rate,
        );
        rate(
            &self.deliveries,
            &self.sampled_deliveries,
            &self.delivery_rate,
        );
    }

    /// What the counters say now, for a channel with `subscribers` local subscribers.
    pub fn snapshot(&self, channel: &str, subscribers: u64) -> ChannelStat {
        let f = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        ChannelStat {
            channel: channel.to_string(),
            num_clients: subscribers,
            publications: self.publications.load(Ordering::Relaxed),
            publications_per_sec: f(&self.publication_rate),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            deliveries_per_sec: f(&self.delivery_rate),
            drops: self.drops.load(Ordering::Relaxed),
        }
    }
}

pub use ferrocast_protocol::envelope::ChannelStat;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_merges() {
        let c = ChannelCounters::default();
        for _ in 0..10 {
            c.record(3, 1);
        }
        c.sample(Duration::from_secs(2));
        let s = c.snapshot("a", 3);
        assert_eq!((s.publications, s.deliveries, s.drops), (10, 30, 10));
        assert_eq!((s.publications_per_sec, s.deliveries_per_sec), (5.0, 15.0));
        c.sample(Duration::from_secs(1));
        assert_eq!(c.snapshot("a", 3).publications_per_sec, 0.0);
        let mut merged = s.clone();
        merged.merge(&ChannelStat {
            num_clients: 2,
            publications: 12,
            deliveries: 24,
            deliveries_per_sec: 1.0,
            ..s.clone()
        });
        assert_eq!(
            (
                merged.num_clients,
                merged.publications,
                merged.deliveries,
                merged.drops
            ),
            (5, 12, 54, 20)
        );
        assert_eq!(merged.deliveries_per_sec, 16.0);
    }
}
