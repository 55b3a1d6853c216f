//! The unit of work the paced publish loop hands a publisher on each tick.

/// (channel index, per-channel sequence number) of each message to send.
pub type Batch = Vec<(u32, u64)>;
