//! Cluster-wide questions every node answers over the control channel: which channels
//! have subscribers (the `channels` API, subscriber counts summed over all nodes), their
//! statistics (the `channel_stats` API, [`ChannelStat`]s merged), and how the connections
//! of a user or a client keep up (the `connection_health` API), wherever they are.
//!
//! The asking node publishes a request with a fresh id and collects one reply per other
//! live node until a deadline; nodes answer from a bounded queue served by one task, so a
//! flood of surveys cannot pile up work. The node drives it: it hands control messages to
//! [`Surveys::on_control`] and gives the answering task what it needs.

use crate::channels::glob_match;
use crate::hub::Hub;
use crate::stats::ChannelStat;
use ferrocast_engine::Controller;
use ferrocast_protocol::envelope::{ConnectionHealth, ControlMessage};
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

/// A request of another node to answer.
enum Request {
    /// A [`Question`] about the channels matching a pattern.
    Channels {
        question: Question,
        id: String,
        pattern: String,
    },
    /// The health of the connections of `user` (or of `client`).
    Health {
        id: String,
        user: String,
        client: String,
    },
}

/// One node's reply.
enum Reply {
    Channels(Answer),
    Health(Vec<ConnectionHealth>),
}

/// One node's answer: its channels (subscriber counts only, for [`Question::Channels`]).
pub type Answer = Vec<ChannelStat>;

/// Surveys in flight on this node and the queue of questions to answer.
pub struct Surveys {
    own_id: String,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Reply>>>,
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
    /// Surveys of node `own_id` (named `name`), answering other nodes' questions from
    /// `hub` through `controller` (one task, which ends at `stop`).
    pub fn start(
        own_id: String,
        name: String,
        hub: Arc<Hub>,
        controller: Arc<dyn Controller>,
        stop: CancellationToken,
    ) -> Self {
        let (questions, rx) = mpsc::channel(ANSWER_QUEUE);
        tokio::spawn(answer(hub, name, controller, rx, stop));
        Surveys {
            own_id,
            pending: Mutex::default(),
            questions,
        }
    }

    /// A control message for surveys arrived (never blocks).
    pub fn on_control(&self, message: ControlMessage) {
        let channels = |question, id, pattern| Request::Channels {
            question,
            id,
            pattern,
        };
        let (request, reply) = match message {
            ControlMessage::ChannelsRequest { id, from, pattern } if from != self.own_id => {
                (Some(channels(Question::Channels, id, pattern)), None)
            }
            ControlMessage::ChannelStatsRequest { id, from, pattern } if from != self.own_id => {
                (Some(channels(Question::Stats, id, pattern)), None)
            }
            ControlMessage::HealthRequest {
                id,
                from,
                user,
                client,
            } if from != self.own_id => (Some(Request::Health { id, user, client }), None),
            ControlMessage::ChannelsReply { id, channels } => {
                (None, Some((id, Reply::Channels(counts_only(channels)))))
            }
            ControlMessage::ChannelStatsReply { id, channels } => {
                (None, Some((id, Reply::Channels(channels))))
            }
            ControlMessage::HealthReply { id, connections } => {
                (None, Some((id, Reply::Health(connections))))
            }
            _ => (None, None),
        };
        if let Some(r) = request
            && self.questions.try_send(r).is_err()
        {
            tracing::warn!("survey dropped: too many in flight");
        }
        if let Some((id, reply)) = reply
            && let Some(tx) = self.pending.lock().get(&id)
        {
            let _ = tx.send(reply);
        }
    }

    /// Publishes the request `make(id, own id)` and collects the replies of the `others`
    /// other live nodes until [`SURVEY_TIMEOUT`]; nodes that do not answer in time are
    /// left out (and logged).
    async fn collect(
        &self,
        controller: &dyn Controller,
        others: usize,
        what: &'static str,
        make: impl FnOnce(String, String) -> ControlMessage,
    ) -> Vec<Reply> {
        let mut replies = Vec::new();
        if others == 0 {
            return replies;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.lock().insert(id.clone(), tx);
        let request = make(id.clone(), self.own_id.clone());
        if controller.publish_control(&request).await.is_ok() {
            let deadline = tokio::time::Instant::now() + SURVEY_TIMEOUT;
            while replies.len() < others {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(reply)) => replies.push(reply),
                    _ => break,
                }
            }
        }
        self.pending.lock().remove(&id);
        if replies.len() < others {
            tracing::warn!(
                answered = replies.len(),
                nodes = others,
                "{what}: some nodes did not answer in time"
            );
        }
        replies
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
        let pattern = pattern.to_string();
        let replies = self
            .collect(controller, others, "channels", |id, from| match question {
                Question::Channels => ControlMessage::ChannelsRequest { id, from, pattern },
                Question::Stats => ControlMessage::ChannelStatsRequest { id, from, pattern },
            })
            .await;
        for reply in replies {
            if let Reply::Channels(answer) = reply {
                add(answer);
            }
        }
        merged
    }

    /// The connections of `user` (or the one `client`, or that client of the user) on
    /// this node (`local`) and on the `others` other live nodes. A client found here is
    /// not looked for elsewhere.
    pub async fn health(
        &self,
        controller: &dyn Controller,
        mut local: Vec<ConnectionHealth>,
        others: usize,
        user: &str,
        client: &str,
    ) -> Vec<ConnectionHealth> {
        if !client.is_empty() && !local.is_empty() {
            return local;
        }
        let (user, client) = (user.to_string(), client.to_string());
        let replies = self
            .collect(controller, others, "connection_health", |id, from| {
                ControlMessage::HealthRequest {
                    id,
                    from,
                    user,
                    client,
                }
            })
            .await;
        for reply in replies {
            if let Reply::Health(connections) = reply {
                local.extend(connections);
            }
        }
        local.sort_by(|a, b| (&a.node, &a.client).cmp(&(&b.node, &b.client)));
        local
    }
}

/// The hub's channels matching `pattern` with their statistics.
pub fn local_channels(hub: &Hub, pattern: &str) -> Answer {
    hub.channel_stats(|name| pattern.is_empty() || glob_match(pattern, name))
}

/// The health of the connections of `user` (or the one `client`) held by `hub` on the
/// node called `node`.
pub fn local_health(hub: &Hub, node: &str, user: &str, client: &str) -> Vec<ConnectionHealth> {
    let clients = hub.addressed(user, client);
    if clients.is_empty() {
        return Vec::new();
    }
    let ids: Vec<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    let mut subscriptions = hub.subscriptions_of(&ids);
    clients
        .iter()
        .map(|c| {
            let mut channels = subscriptions.remove(&c.id).unwrap_or_default();
            channels.sort();
            ConnectionHealth {
                client: c.id.clone(),
                user: c.user.clone(),
                node: node.to_string(),
                queue_bytes: c.outbox.queued_bytes() as u64,
                queue_max: c.outbox.capacity() as u64,
                dropped: c.outbox.dropped(),
                subscriptions: channels,
            }
        })
        .collect()
}

async fn answer(
    hub: Arc<Hub>,
    name: String,
    controller: Arc<dyn Controller>,
    mut rx: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            q = rx.recv() => match q {
                Some(q) => q,
                None => return,
            },
        };
        let reply = match request {
            Request::Channels {
                question,
                id,
                pattern,
            } => {
                let channels = local_channels(&hub, &pattern);
                match question {
                    Question::Channels => ControlMessage::ChannelsReply {
                        id,
                        channels: channels
                            .into_iter()
                            .map(|s| (s.channel, s.num_clients))
                            .collect(),
                    },
                    Question::Stats => ControlMessage::ChannelStatsReply { id, channels },
                }
            }
            Request::Health { id, user, client } => ControlMessage::HealthReply {
                id,
                connections: local_health(&hub, &name, &user, &client),
            },
        };
        if let Err(e) = controller.publish_control(&reply).await {
            tracing::debug!(error = %e, "survey reply failed");
        }
    }
}
