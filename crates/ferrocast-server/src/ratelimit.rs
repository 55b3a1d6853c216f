//! Per-IP connection rate limiting at accept time (connection floods from one address).

use ferrocast_node::ratelimit::TokenBucket;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Entries kept before idle addresses are swept.
const SWEEP_AT: usize = 100_000;

/// A token bucket per client IP address.
pub struct PerIpLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl PerIpLimiter {
    /// `rate` new connections per second with `burst`; a rate of 0 allows everything.
    pub fn new(rate: u32, burst: u32) -> Self {
        PerIpLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a new connection from `ip` is allowed now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut b = self.buckets.lock();
        let (rate, burst) = (self.rate, self.burst);
        if b.len() >= SWEEP_AT {
            // A full bucket is the same as none.
            b.retain(|_, bucket| bucket.level(rate, burst, now) < burst);
        }
        b.entry(ip)
            .or_insert_with(|| TokenBucket::full(burst, now))
            .take(rate, burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_bursts_per_ip() {
        let l = PerIpLimiter::new(1, 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(l.allow(a) && l.allow(a) && l.allow(a));
        assert!(!l.allow(a));
        assert!(l.allow(b));
        assert!(PerIpLimiter::new(0, 0).allow(a));
    }
}
