//! Redis key and channel names (the data model is described in docs/CLUSTER.md).
//!
//! Channel-scoped keys carry the channel in a hash tag so one script may touch them all.

use crate::{feed_channel, feed_namespace};
use std::borrow::Cow;

/// Names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (e.g. `ferrocast`).
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// Pub/sub channel of a broker channel; a namespace's wildcard feed is
    /// `<prefix>:feed:{<namespace>}`.
    pub fn pubsub(&self, channel: &str) -> String {
        match feed_namespace(channel) {
            Some(namespace) => format!("{}:feed:{{{}}}", self.prefix, namespace),
            None => format!("{}:ch:{{{}}}", self.prefix, channel),
        }
    }

    /// The broker channel of a pub/sub channel name (or wildcard feed), if it is one.
    pub fn channel_of<'a>(&self, pubsub: &'a str) -> Option<Cow<'a, str>> {
        let rest = pubsub.strip_prefix(self.prefix.as_str())?;
        if let Some(namespace) = rest.strip_prefix(":feed:{") {
            return Some(Cow::Owned(feed_channel(namespace.strip_suffix('}')?)));
        }
        rest.strip_prefix(":ch:{")?
            .strip_suffix('}')
            .map(Cow::Borrowed)
    }

    /// History stream.
    pub fn history(&self, channel: &str) -> String {
        format!("{}:hist:{{{}}}", self.prefix, channel)
    }

    /// History meta hash (`e` epoch, `s` top offset).
    pub fn meta(&self, channel: &str) -> String {
        format!("{}:meta:{{{}}}", self.prefix, channel)
    }

    /// Idempotency key of a publish.
    pub fn idempotency(&self, channel: &str, key: &str) -> String {
        format!("{}:idem:{{{}}}:{}", self.prefix, channel, key)
    }

    /// Presence hash (client → info).
    pub fn presence(&self, channel: &str) -> String {
        format!("{}:pres:{{{}}}", self.prefix, channel)
    }

    /// Presence expiry zset (client → expiry).
    pub fn presence_expiry(&self, channel: &str) -> String {
        format!("{}:pexp:{{{}}}", self.prefix, channel)
    }

    /// Online users zset (user → expiry).
    pub fn online(&self) -> String {
        format!("{}:online", self.prefix)
    }

    /// Connections of one user (client → expiry).
    pub fn user_connections(&self, user: &str) -> String {
        format!("{}:user:{{{}}}", self.prefix, user)
    }

    /// Control pub/sub channel.
    pub fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }

    /// Backend command stream.
    pub fn api_stream(&self) -> String {
        format!("{}:api", self.prefix)
    }

    /// Dead-letter stream of the backend command stream.
    pub fn api_dead(&self) -> String {
        format!("{}:api:dead", self.prefix)
    }

    /// Consumer lease of the backend command stream.
    pub fn api_lease(&self) -> String {
        format!("{}:api:lease", self.prefix)
    }
}

/// Jump consistent hash: the shard of `key` among `n` (stable when shards are appended).
pub fn jump_hash(mut key: u64, n: usize) -> usize {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let k = Keys::new("fc");
        assert_eq!(k.pubsub("chat:1"), "fc:ch:{chat:1}");
        assert_eq!(k.channel_of("fc:ch:{chat:1}").as_deref(), Some("chat:1"));
        let feed = feed_channel("sensors");
        assert_eq!(k.pubsub(&feed), "fc:feed:{sensors}");
        assert_eq!(
            k.channel_of("fc:feed:{sensors}").as_deref(),
            Some(feed.as_str())
        );
        assert_eq!(k.pubsub(&feed_channel("")), "fc:feed:{}");
        assert_eq!(k.channel_of("fc:control"), None);
        assert_eq!(k.history("a"), "fc:hist:{a}");
    }

    #[test]
    fn jump_hash_spreads_and_is_stable() {
        let mut counts = [0; 3];
        for i in 0..3000u64 {
            let s = jump_hash(crate::stable_hash(format!("ch{i}").as_bytes()), 3);
            counts[s] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(jump_hash(12345, 1), 0);
        // Adding a shard moves only part of the keys.
        let moved = (0..1000u64)
            .filter(|i| {
                let h = crate::stable_hash(&i.to_le_bytes());
                jump_hash(h, 3) != jump_hash(h, 4)
            })
            .count();
        assert!(moved < 400, "{moved}");
    }
}
