//! Cluster-wide questions every node answers over the control channel. Today one: which
//! channels have subscribers (the `channels` API), summed over all nodes.
//!
//! The asking node publishes a request with a fresh id and collects one reply per other
//! live node until a deadline; nodes answer from a bounded queue served by one task, so a
//! flood of surveys cannot pile up work. The node drives it: it hands control messages to
//! [`Surveys::on_control`] and gives the answering task what it needs.

use crate::channels::glob_match;
use crate::hub::Hub;
use ferrocast_engine::Controller;
use ferrocast_protocol::envelope::ControlMessage;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the asking node waits for the other nodes.
pub const SURVEY_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests from other nodes waiting to be answered.
const ANSWER_QUEUE: usize = 64;

/// A request to answer: (survey id, pattern).
type Question = (String, String);

/// One node's answer: channel name and local subscriber count.
pub type Answer = Vec<(String, u64)>;

/// Surveys in flight on this node and the queue of questions to answer.
pub struct Surveys {
    own_id: String,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>,
    questions: mpsc::Sender<Question>,
}

impl Surveys {
    /// Surveys of node `own_id`, answering other nodes' questions from `hub` through
    /// `controller` (one task, which ends at `stop`).
    pub fn start(
        own_id: String,
        hub: Arc<Hub>,
        controller: Arc<dyn Controller>,
        stop: CancellationToken,
    ) -> Self {
        let (questions, rx) = mpsc::channel(ANSWER_QUEUE);
        tokio::spawn(answer(hub, controller, rx, stop));
        Surveys {
            own_id,
            pending: Mutex::default(),
            questions,
        }
    }

    /// A control message for surveys arrived (never blocks).
    pub fn on_control(&self, message: ControlMessage) {
        match message {
            ControlMessage::ChannelsRequest { id, from, pattern } if from != self.own_id => {
                let Err(_) = self.questions.try_send((id, pattern)) else {
                    return;
                };
                tracing::warn!("channels survey dropped: too many in flight");
            }
            ControlMessage::ChannelsReply { id, channels } => {
                if let Some(tx) = self.pending.lock().get(&id) {
                    let _ = tx.send(channels);
                }
            }
            _ => {}
        }
    }

    /// Channels matching `pattern` on this node (`local`) and on the `others` other live
    /// nodes, subscriber counts summed. Nodes that do not answer within
    /// [`SURVEY_TIMEOUT`] are left out (and logged).
    pub async fn channels(
        &self,
        controller: &dyn Controller,
        local: Answer,
        others: usize,
        pattern: &str,
    ) -> BTreeMap<String, u64> {
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        let mut add = |answer: Answer| {
            for (name, n) in answer {
                *merged.entry(name).or_default() += n;
            }
        };
        add(local);
        if others == 0 {
            return merged;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let request = ControlMessage::ChannelsRequest {
            id: id.clone(),
            from: self.own_id.clone(),
            pattern: pattern.to_string(),
        };
        let mut answered = 0;
        if controller.publish_control(&request).await.is_ok() {
            let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
            while answered < others {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(channels)) => {
                        answered += 1;
                        add(channels);
                    }
                    _ => break,
                }
            }
        }
        self.pending.lock().remove(&id);
        if answered < others {
            tracing::warn!(
                answered,
                nodes = others,
                "channels: some nodes did not answer in time"
            );
        }
        merged
    }
}

/// The hub's channels matching `pattern` with their subscriber counts.
pub fn local_channels(hub: &Hub, pattern: &str) -> Answer {
    hub.channels()
        .into_iter()
        .filter(|(name, _)| pattern.is_empty() || glob_match(pattern, name))
        .map(|(name, n)| (name, n as u64))
        .collect()
}

async fn answer(
    hub: Arc<Hub>,
    controller: Arc<dyn Controller>,
    mut rx: mpsc::Receiver<Question>,
    stop: CancellationToken,
) {
    loop {
        let (id, pattern) = tokio::select! {
            _ = stop.cancelled() => return,
            q = rx.recv() => match q {
                Some(q) => q,
                None => return,
            },
        };
        let reply = ControlMessage::ChannelsReply {
            id,
            channels: local_channels(&hub, &pattern),
        };
        if let Err(e) = controller.publish_control(&reply).await {
            tracing::debug!(error = %e, "channels survey reply failed");
        }
    }
}
