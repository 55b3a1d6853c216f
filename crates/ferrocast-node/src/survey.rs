//! Cluster-wide questions every node answers over the control channel: which channels
//! have subscribers (the `channels` API, subscriber counts summed over all nodes) and
//! their statistics (the `channel_stats` API, [`ChannelStat`]s merged).
//!
//! The asking node publishes a request with a fresh id and collects one reply per other
//! live node until a deadline; nodes answer from a bounded queue served by one task, so a
//! flood of surveys cannot pile up work. The node drives it: it hands control messages to
//! [`Surveys::on_control`] and gives the answering task what it needs.

use crate::channels::glob_match;
use crate::hub::Hub;
use crate::stats::ChannelStat;
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

/// What a survey asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question {
    /// Channels and subscriber counts.
    Channels,
    /// Channels and their statistics.
    Stats,
}

/// A request to answer: (kind, survey id, pattern).
type Request = (Question, String, String);

/// One node's answer: its channels (subscriber counts only, for [`Question::Channels`]).
pub type Answer = Vec<ChannelStat>;

/// Surveys in flight on this node and the queue of questions to answer.
pub struct Surveys {
    own_id: String,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>,
    questions: mpsc::Sender<Request>,
}

fn counts_only(channels: Vec<(String, u64)>) -> Answer {
    channels
        .into_iter()
        .map(|(channel, n)| ChannelStat {
            channel,
            num_clients: n,
            publications: 0,
            publications_per_sec: 0.0,
            deliveries: 0,
            deliveries_per_sec: 0.0,
            drops: 0,
        })
        .collect()
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
        let (request, reply) = match message {
            ControlMessage::ChannelsRequest { id, from, pattern } if from != self.own_id => {
                (Some((Question::Channels, id, pattern)), None)
            }
            ControlMessage::ChannelStatsRequest { id, from, pattern } if from != self.own_id => {
                (Some((Question::Stats, id, pattern)), None)
            }
            ControlMessage::ChannelsReply { id, channels } => {
                (None, Some((id, counts_only(channels))))
            }
            ControlMessage::ChannelStatsReply { id, channels } => (None, Some((id, channels))),
            _ => (None, None),
        };
        if let Some(r) = request
            && self.questions.try_send(r).is_err()
        {
            tracing::warn!("channels survey dropped: too many in flight");
        }
        if let Some((id, channels)) = reply
            && let Some(tx) = self.pending.lock().get(&id)
        {
            let _ = tx.send(channels);
        }
    }

    /// Channels matching `pattern` on this node (`local`) and on the `others` other live
    /// nodes, each node's view merged ([`ChannelStat::merge`]). Nodes that do not answer
    /// within [`SURVEY_TIMEOUT`] are left out (and logged).
    pub async fn ask(
        &self,
        question: Question,
        controller: &dyn Controller,
        local: Answer,
        others: usize,
        pattern: &str,
    ) -> BTreeMap<String, ChannelStat> {
        let mut merged: BTreeMap<String, ChannelStat> = BTreeMap::new();
        let mut add = |answer: Answer| {
            for stat in answer {
                match merged.get_mut(&stat.channel) {
                    Some(m) => m.merge(&stat),
                    None => {
                        merged.insert(stat.channel.clone(), stat);
                    }
                }
            }
        };
        add(local);
        if others == 0 {
            return merged;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let (from, pattern) = (self.own_id.clone(), pattern.to_string());
        let request = match question {
            Question::Channels => ControlMessage::ChannelsRequest {
                id: id.clone(),
                from,
                pattern,
            },
            Question::Stats => ControlMessage::ChannelStatsRequest {
                id: id.clone(),
                from,
                pattern,
            },
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

/// The hub's channels matching `pattern` with their statistics.
pub fn local_channels(hub: &Hub, pattern: &str) -> Answer {
    hub.channel_stats(|name| pattern.is_empty() || glob_match(pattern, name))
}

async fn answer(
    hub: Arc<Hub>,
    controller: Arc<dyn Controller>,
    mut rx: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    loop {
        let (question, id, pattern) = tokio::select! {
            _ = stop.cancelled() => return,
            q = rx.recv() => match q {
                Some(q) => q,
                None => return,
            },
        };
        let channels = local_channels(&hub, &pattern);
        let reply = match question {
            Question::Channels => ControlMessage::ChannelsReply {
                id,
                channels: channels
                    .into_iter()
                    .map(|s| (s.channel, s.num_clients))
                    .collect(),
            },
            Question::Stats => ControlMessage::ChannelStatsReply { id, channels },
        };
        if let Err(e) = controller.publish_control(&reply).await {
            tracing::debug!(error = %e, "channels survey reply failed");
        }
    }
}
