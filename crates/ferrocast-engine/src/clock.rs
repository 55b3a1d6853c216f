//! The wall clock, read in one place: Unix time as the protocol, tokens and Redis use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix time in whole seconds.
pub fn unix_secs() -> i64 {
    since_epoch().as_secs() as i64
}

/// Unix time in seconds with a fraction (Redis sorted-set expiry scores).
pub fn unix_secs_f64() -> f64 {
    since_epoch().as_secs_f64()
}

/// Unix time in milliseconds (publication times).
pub fn unix_millis() -> i64 {
    since_epoch().as_millis() as i64
}
