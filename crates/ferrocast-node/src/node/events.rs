//! The node as the engine's event handler: publications, joins and leaves fan out
//! through the hub; cluster commands on the control channel are routed to the local
//! connections they address, or to the surveys.

use crate::control::SessionControl;
use crate::hub::Hub;
use crate::survey::Surveys;
use crate::telemetry;
use ferrocast_engine::{EventHandler, feed_namespace};
use ferrocast_protocol::envelope::ControlMessage;
use ferrocast_protocol::{ClientInfo, Disconnect, Publication, StreamPosition};
use std::sync::Arc;

/// What the engine delivers into (the node's hub and surveys).
pub(super) struct NodeEvents {
    pub(super) hub: Arc<Hub>,
    pub(super) surveys: Arc<Surveys>,
}

impl NodeEvents {
    /// Applies a cluster-wide command to the local connections it addresses.
    fn route_control(&self, message: ControlMessage) {
        let (user, client, ctl) = match message {
            ControlMessage::Node(_) | ControlMessage::NodeLeft { .. } => return,
            m @ (ControlMessage::ChannelsRequest { .. }
            | ControlMessage::ChannelsReply { .. }
            | ControlMessage::ChannelStatsRequest { .. }
            | ControlMessage::ChannelStatsReply { .. }
            | ControlMessage::HealthRequest { .. }
            | ControlMessage::HealthReply { .. }) => {
                return self.surveys.on_control(m);
            }
            ControlMessage::Disconnect {
                user,
                client,
                code,
                reason,
            } => {
                for c in self.hub.addressed(&user, &client) {
                    c.outbox.close(Disconnect {
                        code,
                        reason: reason.clone().into(),
                    });
                }
                return;
            }
            ControlMessage::Subscribe {
                user,
                client,
                channel,
            } => (user, client, SessionControl::Subscribe { channel }),
            ControlMessage::Unsubscribe {
                user,
                client,
                channel,
            } => (user, client, SessionControl::Unsubscribe { channel }),
            ControlMessage::Refresh {
                user,
                client,
                expired,
                expire_at,
            } => (user, client, SessionControl::Refresh { expired, expire_at }),
        };
        for c in self.hub.addressed(&user, &client) {
            c.control(ctl.clone(), Disconnect::INSUFFICIENT_STATE);
        }
    }
}

impl EventHandler for NodeEvents {
    fn on_publication(
        &self,
        channel: &str,
        publication: &Publication,
        epoch: &str,
        trace: Option<&str>,
    ) {
        let span = telemetry::fan_out_span(channel, trace);
        let _entered = span.enter();
        let delivered = self.hub.broadcast_publication(channel, publication, epoch);
        span.record("subscribers", delivered);
    }

    fn on_join(&self, channel: &str, info: &ClientInfo) {
        self.hub.broadcast_join_leave(channel, info, true);
    }

    fn on_leave(&self, channel: &str, info: &ClientInfo) {
        self.hub.broadcast_join_leave(channel, info, false);
    }

    fn on_insufficient_state(&self, channel: &str) {
        self.hub.insufficient_state(channel);
    }

    fn on_stream_position(&self, channel: &str, position: &StreamPosition) {
        self.hub.check_position(channel, position);
    }

    fn on_feed_publication(&self, channel: &str, publication: &Publication, trace: Option<&str>) {
        let span = telemetry::fan_out_span(channel, trace);
        let _entered = span.enter();
        let delivered = self.hub.broadcast_to_patterns(channel, publication);
        span.record("subscribers", delivered);
    }

    fn on_control(&self, message: ControlMessage) {
        self.route_control(message);
    }

    fn has_local_subscribers(&self, channel: &str) -> bool {
        match feed_namespace(channel) {
            Some(namespace) => self.hub.has_pattern_subscribers(namespace),
            None => self.hub.has_subscribers(channel),
        }
    }
}
