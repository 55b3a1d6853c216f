//! Cluster-wide questions every node answers over the control channel. Today one: which
//! channels have subscribers (the `channels` API), summed over all nodes.
//!
//! The asking node publishes a request with a fresh id and collects one reply per live
//! node (as listed by the engine) until a deadline; nodes answer from a bounded queue
//! served by one task, so a flood of surveys cannot pile up work.

use crate::node::Node;
use ferrocast_protocol::envelope::ControlMessage;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the asking node waits for the other nodes.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests from other nodes waiting to be answered.
const ANSWER_QUEUE: usize = 64;

/// A request to answer: (survey id, pattern).
type Question = (String, String);

/// One node's answer: channel name and local subscriber count.
type Answer = Vec<(String, u64)>;

/// Surveys in flight on this node and the queue of questions to answer.
#[derive(Default)]
pub struct Surveys {
    own_id: std::sync::OnceLock<String>,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>,
    questions: Mutex<Option<mpsc::Sender<Question>>>,
}

impl Surveys {
    /// A control message for surveys arrived (called by the hub, never blocks).
    pub fn on_control(&self, message: ControlMessage) {
        match message {
            ControlMessage::ChannelsRequest { id, from, pattern }
                if self.own_id.get().is_some_and(|own| *own != from) =>
            {
                let q = self.questions.lock().clone();
                if let Some(tx) = q
                    && tx.try_send((id, pattern)).is_err()
                {
                    tracing::warn!("channels survey dropped: too many in flight");
                }
            }
            ControlMessage::ChannelsReply { id, channels } => {
                if let Some(tx) = self.pending.lock().get(&id) {
                    let _ = tx.send(channels);
                }
            }
            _ => {}
        }
    }
}

/// Starts answering other nodes' surveys; ends when the node is dropped.
pub fn spawn(node: &Arc<Node>) {
    let (tx, rx) = mpsc::channel(ANSWER_QUEUE);
    let _ = node.hub.surveys.own_id.set(node.id.clone());
    *node.hub.surveys.questions.lock() = Some(tx);
    tokio::spawn(answer(Arc::downgrade(node), rx));
}

async fn answer(node: Weak<Node>, mut rx: mpsc::Receiver<Question>) {
    while let Some((id, pattern)) = rx.recv().await {
        let Some(node) = node.upgrade() else { return };
        let reply = ControlMessage::ChannelsReply {
            id,
            channels: local_channels(&node, &pattern),
        };
        if let Err(e) = node.engine.publish_control(&reply).await {
            tracing::debug!(error = %e, "channels survey reply failed");
        }
    }
}

/// This node's channels matching `pattern` with their subscriber counts.
pub fn local_channels(node: &Node, pattern: &str) -> Answer {
    node.hub
        .channels()
        .into_iter()
        .filter(|(name, _)| pattern.is_empty() || crate::api::glob_match(pattern, name))
        .map(|(name, n)| (name, n as u64))
        .collect()
}

/// Channels matching `pattern` on every live node, subscriber counts summed. Nodes that
/// do not answer within [`SURVEY_TIMEOUT`] are left out (and logged).
pub async fn channels(node: &Node, pattern: &str) -> BTreeMap<String, u64> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (name, n) in local_channels(node, pattern) {
        *merged.entry(name).or_default() += n;
    }
    let others = node
        .engine
        .nodes()
        .iter()
        .filter(|n| n.uid != node.id)
        .count();
    if others == 0 {
        return merged;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    node.hub.surveys.pending.lock().insert(id.clone(), tx);
    let request = ControlMessage::ChannelsRequest {
        id: id.clone(),
        from: node.id.clone(),
        pattern: pattern.to_string(),
    };
    let mut answered = 0;
    if node.engine.publish_control(&request).await.is_ok() {
        let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
        while answered < others {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(channels)) => {
                    answered += 1;
                    for (name, n) in channels {
                        *merged.entry(name).or_default() += n;
                    }
                }
                _ => break,
            }
        }
    }
    node.hub.surveys.pending.lock().remove(&id);
    if answered < others {
        tracing::warn!(
            answered,
            nodes = others,
            "channels: some nodes did not answer in time"
        );
    }
    merged
}
