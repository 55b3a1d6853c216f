//! `slow_consumer_policy`: what a namespace's publications, joins and leaves do when they
//! would overflow a connection's queue (`client.queue_max_size`).

use super::{ChannelConfig, ChannelOptions};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A namespace's slow-consumer policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close the connection with 3008 (slow); the client reconnects and recovers.
    #[default]
    Close,
    /// Accepted for configurations that ask the publisher to wait for the slow client; it
    /// acts as `close`. One channel fans out to many connections: a publication that
    /// waited for its slowest subscriber would hold back every other subscriber of the
    /// channel (and every channel published after it on the node), so one stuck client
    /// would stall them all.
    Block,
    /// Drop the oldest queued droppable pushes (of any channel of the connection) until
    /// the new one fits.
    DropOldest,
    /// Drop the new push; what is queued stays.
    DropNewest,
    /// Drop every queued droppable push of the connection, then queue the new one.
    DropAll,
}

impl SlowConsumerPolicy {
    /// Every policy, by configuration name.
    pub const ALL: [(&'static str, SlowConsumerPolicy); 5] = [
        ("close", SlowConsumerPolicy::Close),
        ("block", SlowConsumerPolicy::Block),
        ("drop_oldest", SlowConsumerPolicy::DropOldest),
        ("drop_newest", SlowConsumerPolicy::DropNewest),
        ("drop_all", SlowConsumerPolicy::DropAll),
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("close", |(n, _)| n)
    }

    /// Whether pushes of the namespace may be dropped (they are never a reason to close).
    pub fn drops(self) -> bool {
        !matches!(self, SlowConsumerPolicy::Close | SlowConsumerPolicy::Block)
    }
}

impl Serialize for SlowConsumerPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for SlowConsumerPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "slow_consumer_policy {name:?} is not one of close, drop_oldest, drop_newest, drop_all, block"
                ))
            })
    }
}

impl ChannelConfig {
    /// The namespaces (empty: channels without namespace) whose policy drops pushes, with
    /// the policy's name.
    pub fn drop_policies(&self) -> Vec<(&str, &'static str)> {
        let own = std::iter::once(("", &self.without_namespace));
        own.chain(
            self.namespaces
                .iter()
                .map(|ns| (ns.name.as_str(), &ns.options)),
        )
        .filter(|(_, o)| o.slow_consumer_policy.drops())
        .map(|(name, o)| (name, o.slow_consumer_policy.name()))
        .collect()
    }

    /// The keys (`channel.without_namespace`, `channel.namespaces[i]` with its name) whose
    /// `slow_consumer_policy` is `block`, which acts as `close`: logged at start.
    pub fn blocking_policies(&self) -> Vec<String> {
        let mut out = Vec::new();
        let block = |o: &ChannelOptions| o.slow_consumer_policy == SlowConsumerPolicy::Block;
        if block(&self.without_namespace) {
            out.push("channel.without_namespace".to_string());
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            if block(&ns.options) {
                out.push(format!("channel.namespaces[{i}] ({:?})", ns.name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_name_the_key() {
        for (name, p) in SlowConsumerPolicy::ALL {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json, serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<SlowConsumerPolicy>(json).unwrap(),
                p
            );
        }
        let e =
            serde_json::from_value::<SlowConsumerPolicy>(serde_json::json!("drop")).unwrap_err();
        assert!(
            e.to_string().contains("slow_consumer_policy \"drop\""),
            "{e}"
        );
        assert!(SlowConsumerPolicy::DropAll.drops());
        assert!(!SlowConsumerPolicy::Block.drops());
    }

    #[test]
    fn block_is_reported_where_it_is_set() {
        let mut c = ChannelConfig::default();
        assert!(c.blocking_policies().is_empty());
        c.without_namespace.slow_consumer_policy = SlowConsumerPolicy::Block;
        c.namespaces.push(super::super::Namespace {
            name: "feed".into(),
            options: ChannelOptions {
                slow_consumer_policy: SlowConsumerPolicy::Block,
                ..Default::default()
            },
        });
        assert_eq!(
            c.blocking_policies(),
            [
                "channel.without_namespace",
                "channel.namespaces[0] (\"feed\")"
            ]
        );
        assert!(c.drop_policies().is_empty());
        c.namespaces[0].options.slow_consumer_policy = SlowConsumerPolicy::DropAll;
        assert_eq!(c.drop_policies(), [("feed", "drop_all")]);
    }
}
