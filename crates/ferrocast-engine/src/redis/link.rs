//! The pub/sub connection under a worker: a standalone Redis pub/sub connection
//! (SUBSCRIBE) or a Redis Cluster connection with sharded pub/sub (SSUBSCRIBE, messages
//! as RESP3 pushes). The worker sees the same three things from both: (un)subscribe a
//! batch of names, ping, and the next message or the news that the link was lost.

use super::conn::{Target, cluster_builder, connect_cluster};
use futures_util::future::{BoxFuture, try_join_all};
use futures_util::{FutureExt, StreamExt};
use redis::aio::{PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::{Msg, ProtocolVersion, PushInfo, PushKind, RedisResult, Value};
use std::time::Duration;
use tokio::sync::mpsc;

/// One message from Redis.
pub enum Incoming {
    /// A message of a standalone SUBSCRIBE.
    Message(Msg),
    /// A sharded pub/sub message of a Redis Cluster: (channel, payload).
    Sharded(Vec<u8>, Vec<u8>),
}

impl Incoming {
    /// Pub/sub channel name and payload.
    pub fn parts(&self) -> (&[u8], &[u8]) {
        match self {
            Incoming::Message(m) => (m.get_channel_name().as_bytes(), m.get_payload_bytes()),
            Incoming::Sharded(c, p) => (c, p),
        }
    }
}

/// The sending half: subscriptions and pings.
pub enum Link {
    /// Standalone Redis.
    Single(PubSubSink),
    /// Redis Cluster (a cluster connection that reconnects and reroutes by itself).
    Cluster(ClusterConnection),
}

/// The receiving half.
pub enum Messages {
    /// Standalone Redis: the connection's message stream.
    Single(PubSubStream),
    /// Redis Cluster: RESP3 pushes of every node.
    Cluster(mpsc::UnboundedReceiver<PushInfo>),
}

/// A cluster connection kept across link losses: the cluster client reconnects to a
/// lost node by itself, so only the subscriptions need to be confirmed again.
pub struct ClusterLink {
    conn: ClusterConnection,
    pushes: Option<mpsc::UnboundedReceiver<PushInfo>>,
}

/// Opens (or, for a cluster, reuses) the link.
pub async fn open(
    target: &Target,
    kept: &mut Option<ClusterLink>,
) -> RedisResult<(Link, Messages)> {
    match target {
        Target::Single(client) => {
            let (sink, stream) = client.get_async_pubsub().await?.split();
            Ok((Link::Single(sink), Messages::Single(stream)))
        }
        Target::Cluster(addresses) => {
            if kept.is_none() {
                let (tx, rx) = mpsc::unbounded_channel();
                let builder = cluster_builder(addresses)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(tx);
                let conn = connect_cluster(builder).await?;
                *kept = Some(ClusterLink {
                    conn,
                    pushes: Some(rx),
                });
            }
            let link = kept.as_mut().ok_or_else(closed)?;
            // The receiver travels with the worker's loop and comes back through `close`.
            let rx = link.pushes.take().ok_or_else(closed)?;
            Ok((Link::Cluster(link.conn.clone()), Messages::Cluster(rx)))
        }
    }
}

/// Gives a cluster link's push receiver back for the next [`open`].
pub fn close(messages: Messages, kept: &mut Option<ClusterLink>) {
    if let (Messages::Cluster(rx), Some(link)) = (messages, kept.as_mut()) {
        link.pushes = Some(rx);
    }
}

/// SSUBSCRIBE (or SUNSUBSCRIBE) each name with its own command, all in flight at once.
async fn each_name(conn: &ClusterConnection, names: &[String], subscribe: bool) -> RedisResult<()> {
    let calls: Vec<BoxFuture<'static, RedisResult<()>>> = names
        .iter()
        .map(|n| {
            let (mut c, n) = (conn.clone(), n.clone());
            async move {
                if subscribe {
                    c.ssubscribe(n).await
                } else {
                    c.sunsubscribe(n).await
                }
            }
            .boxed()
        })
        .collect();
    try_join_all(calls).await?;
    Ok(())
}

fn closed() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "cluster link closed"))
}

impl Link {
    /// Subscribes to every name (one command on a standalone Redis; one per name on a
    /// cluster, where a command may only name channels of one slot).
    pub async fn subscribe(&mut self, names: &[String]) -> RedisResult<()> {
        match self {
            Link::Single(sink) => sink.subscribe(names).await,
            Link::Cluster(conn) => each_name(conn, names, true).await,
        }
    }

    /// Unsubscribes from every name.
    pub async fn unsubscribe(&mut self, names: &[String]) -> RedisResult<()> {
        match self {
            Link::Single(sink) => sink.unsubscribe(names).await,
            Link::Cluster(conn) => each_name(conn, names, false).await,
        }
    }

    /// Whether Redis answers (on a cluster: every node).
    pub async fn ping(&mut self, within: Duration) -> bool {
        let res = match self {
            Link::Single(sink) => tokio::time::timeout(within, sink.ping::<Value>()).await,
            Link::Cluster(conn) => {
                tokio::time::timeout(within, redis::cmd("PING").query_async::<Value>(conn)).await
            }
        };
        matches!(res, Ok(Ok(_)))
    }
}

impl Messages {
    /// The next message; `None` when the link was lost (a standalone connection closed,
    /// or a cluster node's connection dropped: its subscriptions must be confirmed again
    /// and the positions of the followed channels checked).
    pub async fn next(&mut self) -> Option<Incoming> {
        match self {
            Messages::Single(stream) => stream.next().await.map(Incoming::Message),
            Messages::Cluster(rx) => loop {
                let push = rx.recv().await?;
                match push.kind {
                    PushKind::SMessage | PushKind::Message => {
                        let mut data = push.data.into_iter();
                        if let (Some(Value::BulkString(c)), Some(Value::BulkString(p))) =
                            (data.next(), data.next())
                        {
                            return Some(Incoming::Sharded(c, p));
                        }
                    }
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}
