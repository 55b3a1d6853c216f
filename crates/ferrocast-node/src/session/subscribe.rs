//! Subscribing and unsubscribing: permissions, recovery, presence and join/leave.

use super::commands::Permission;
use super::{Session, SubState};
use crate::auth::TokenError;
use crate::channels::namespace_of;
use crate::config::SlowConsumerPolicy;
use crate::control::ClientHandle;
use crate::outbox::{DropGroup, DropPolicy};
use crate::subscriber::Subscriber;
use bytes::Bytes;
use ferrocast_engine::HistoryFilter;
use ferrocast_protocol::codes::unsubscribe;
use ferrocast_protocol::*;
use ferrocast_proxy::grpc::SubscriptionStream;
use std::sync::Arc;

/// Namespace options a proxy result may override for one subscription.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Overrides {
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub force_push_join_leave: Option<bool>,
    pub force_recovery: Option<bool>,
    pub force_positioning: Option<bool>,
}

/// What a subscription was granted with, besides the namespace's options.
#[derive(Debug, Default)]
pub(super) struct Grant {
    /// Made by the server (connect token, connect proxy, server API), not asked by the client.
    pub server_side: bool,
    /// Channel info of the client in this channel.
    pub chan_info: Option<Payload>,
    /// Expiry of the subscription (Unix seconds).
    pub expires_at: Option<i64>,
    /// Data sent with the subscribe result.
    pub data: Option<Payload>,
    /// Overridden namespace options.
    pub overrides: Overrides,
    /// The server refreshes it at expiry (sub_refresh proxy), not the client.
    pub server_refresh: bool,
    /// The backend stream its publications also come from (subscribe stream proxy).
    pub stream: Option<SubscriptionStream>,
}

/// What the pushes of a namespace with `policy` drop when they would overflow the queue
/// (`None`: they are never dropped, the connection closes; `block` acts as `close`).
fn drop_policy(policy: SlowConsumerPolicy) -> Option<DropPolicy> {
    match policy {
        SlowConsumerPolicy::Close | SlowConsumerPolicy::Block => None,
        SlowConsumerPolicy::DropOldest => Some(DropPolicy::Oldest),
        SlowConsumerPolicy::DropNewest => Some(DropPolicy::Newest),
        SlowConsumerPolicy::DropAll => Some(DropPolicy::All),
    }
}

/// A subscription that buffers publications until its reply is queued.
pub(crate) struct LiveSub {
    pub(super) subscriber: Arc<Subscriber>,
    /// The stream position the reply covers (positioned subscriptions).
    pub(super) position: Option<StreamPosition>,
    pub(super) channel: String,
    pub(super) join: Option<ClientInfo>,
}

impl Session {
    /// The `subscribe` command. The outer error closes the connection.
    pub(super) async fn client_subscribe(
        &mut self,
        req: SubscribeRequest,
    ) -> Result<Result<(SubscribeResult, LiveSub), ProtocolError>, Disconnect> {
        let opts = match self.node.channel_options(&req.channel) {
            Ok(o) => o.clone(),
            Err(e) => return Ok(Err(e)),
        };
        // A malformed pattern is refused before anything is asked.
        if let Err(e) = self.node.pattern(&req.channel) {
            return Ok(Err(e));
        }
        let mut grant = Grant::default();
        if !req.token.is_empty() {
            let claims = match self.node.verifier.verify_subscribe(&req.token) {
                Ok(c) => c,
                Err(TokenError::Expired) => {
                    return Ok(Err(ProtocolError::new(ErrorCode::TokenExpired)));
                }
                Err(TokenError::Invalid(e)) => {
                    tracing::info!(client = %self.client_id, error = %e, "invalid subscription token");
                    return Err(Disconnect::INVALID_TOKEN);
                }
            };
            if claims.channel != req.channel || claims.sub != self.user() {
                return Ok(Err(ProtocolError::new(ErrorCode::PermissionDenied)));
            }
            grant.chan_info = claims.info;
            grant.expires_at = claims.exp;
        } else if let Some(allowed) = self.node.user_limited_allows(&req.channel, self.user())
            && opts.allow_user_limited_channels
        {
            if !allowed && !self.node.client.insecure {
                return Ok(Err(ProtocolError::new(ErrorCode::PermissionDenied)));
            }
        } else if opts.subscribe_proxy_enabled {
            grant = match Box::pin(self.proxy_subscribe(&opts, &req)).await? {
                Ok(g) => g,
                Err(e) => return Ok(Err(e)),
            };
        } else if opts.subscribe_stream_proxy_enabled {
            grant = match Box::pin(self.proxy_stream_subscribe(&opts, &req)).await? {
                Ok(g) => g,
                Err(e) => return Ok(Err(e)),
            };
        } else {
            let allowed = self.permitted(
                &req.channel,
                Permission {
                    subscriber: false,
                    client: opts.allow_subscribe_for_client,
                    anonymous: opts.allow_subscribe_for_anonymous,
                },
            );
            if !allowed {
                return Ok(Err(ProtocolError::new(ErrorCode::PermissionDenied)));
            }
        }
        Ok(self.subscribe_channel(req, grant).await)
    }

    /// Subscribes this connection to a channel (permissions already checked).
    pub(super) async fn subscribe_channel(
        &mut self,
        req: SubscribeRequest,
        mut grant: Grant,
    ) -> Result<(SubscribeResult, LiveSub), ProtocolError> {
        let stream = grant.stream.take();
        let node = self.node.clone();
        let opts = node.channel_options(&req.channel)?.clone();
        let wildcard = node.pattern(&req.channel)?.is_some();
        if wildcard && req.recover {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "a wildcard subscription cannot recover: it has no stream position",
            ));
        }
        let o = grant.overrides;
        // A pattern is no channel: no presence or join/leave in it.
        let presence = o.presence.unwrap_or(opts.presence) && !wildcard;
        let join_leave_on = o.join_leave.unwrap_or(opts.join_leave) && !wildcard;
        let push_join_leave = o
            .force_push_join_leave
            .unwrap_or(opts.force_push_join_leave);
        let force_recovery =
            o.force_recovery.unwrap_or(opts.force_recovery) || o.force_positioning.unwrap_or(false);
        let server_side = grant.server_side;
        let info = self.client_info(grant.chan_info.clone());
        let Some(c) = self.connected.as_mut() else {
            return Err(ProtocolError::new(ErrorCode::Unauthorized));
        };
        if c.subs.contains_key(&req.channel) {
            return Err(ProtocolError::new(ErrorCode::AlreadySubscribed));
        }
        if c.subs.len() >= node.client.channel_limit as usize {
            return Err(ProtocolError::new(ErrorCode::LimitExceeded));
        }
        let channel = req.channel.clone();
        let join_leave = join_leave_on && (push_join_leave || req.join_leave);
        let recoverable = opts.history_enabled()
            && stream.is_none()
            && !wildcard
            && (force_recovery || req.recoverable || req.recover || server_side);
        let mut subscriber = Subscriber::new(c.handle.clone(), join_leave, recoverable);
        if let Some(policy) = drop_policy(opts.slow_consumer_policy) {
            let ns = namespace_of(&channel);
            subscriber =
                subscriber.with_drops(Arc::new(DropGroup::new(policy, ns, &channel, recoverable)));
        }
        let subscriber = Arc::new(subscriber);
        node.add_subscriber(&channel, subscriber.clone()).await?;
        // A subscription the server refreshes does not tell the client it expires.
        let client_expiry = grant.expires_at.filter(|_| !grant.server_refresh);
        let mut result = SubscribeResult {
            expires: client_expiry.is_some(),
            ttl: super::ttl_until(client_expiry),
            data: grant.data.clone(),
            ..Default::default()
        };
        let mut position = None;
        if recoverable {
            result.recoverable = true;
            result.positioned = true;
            match self.position_and_recover(&channel, &req, &mut result).await {
                Ok(p) => position = Some(p),
                Err(e) => {
                    node.remove_subscriber(&channel, &self.client_id).await;
                    return Err(e);
                }
            }
        }
        if presence && let Err(e) = node.add_presence(&channel, &info).await {
            tracing::warn!(channel = %channel, error = %e, "presence add failed");
        }
        let stream = stream
            .map(|s| self.start_stream(s, &channel, subscriber.clone(), subscriber.client.clone()));
        let Some(c) = self.connected.as_mut() else {
            return Err(ProtocolError::new(ErrorCode::Internal));
        };
        c.subs.insert(
            channel.clone(),
            SubState {
                subscriber: subscriber.clone(),
                server_side,
                presence,
                join_leave: join_leave_on,
                chan_info: grant.chan_info,
                expires_at: grant.expires_at,
                server_refresh: grant.server_refresh,
                stream,
            },
        );
        Ok((
            result,
            LiveSub {
                subscriber,
                position,
                channel,
                join: join_leave_on.then_some(info),
            },
        ))
    }

    /// Fills the stream position (and recovered publications) into `result`; returns the
    /// position up to which the client is now served.
    async fn position_and_recover(
        &self,
        channel: &str,
        req: &SubscribeRequest,
        result: &mut SubscribeResult,
    ) -> Result<StreamPosition, ProtocolError> {
        if req.recover {
            result.was_recovering = true;
            let since = StreamPosition {
                offset: req.offset,
                epoch: req.epoch.clone(),
            };
            let filter = HistoryFilter {
                since: Some(since),
                limit: -1,
                reverse: false,
            };
            match self.node.history(channel, filter).await {
                Ok(h) => {
                    let complete = match h.publications.first() {
                        Some(first) => first.offset == req.offset + 1,
                        None => h.position.offset == req.offset,
                    };
                    result.recovered = complete;
                    result.epoch = h.position.epoch;
                    result.offset = h
                        .publications
                        .last()
                        .map_or(h.position.offset, |p| p.offset);
                    result.publications = h.publications;
                    return Ok(StreamPosition {
                        offset: result.offset,
                        epoch: result.epoch.clone(),
                    });
                }
                Err(e) if e.code == ErrorCode::UnrecoverablePosition.code() => {}
                Err(e) => return Err(e),
            }
        }
        let position = self.node.stream_position(channel).await?;
        result.epoch = position.epoch.clone();
        result.offset = position.offset;
        Ok(position)
    }

    /// Queues `reply` (after the replies already in `out`) and then lets the new
    /// subscriptions deliver; announces the joins; a subscription whose held publications
    /// showed a gap recovers at once.
    pub(super) async fn go_live_all(
        &mut self,
        out: &mut Vec<u8>,
        reply: &Reply,
        subs: Vec<LiveSub>,
    ) -> Result<(), Disconnect> {
        self.encode_reply(out, reply)?;
        let mut frame = Some(Bytes::from(std::mem::take(out)));
        let mut gaps = Vec::new();
        for live in &subs {
            if live.subscriber.go_live(frame.take(), live.position.clone()) {
                gaps.push(live.channel.clone());
            }
        }
        if let Some(f) = frame {
            self.send(f);
        }
        for live in subs {
            if let Some(info) = live.join {
                self.node.publish_join(&live.channel, &info).await;
            }
        }
        for channel in gaps {
            self.recover_channel(&channel).await?;
        }
        Ok(())
    }

    /// The `unsubscribe` command.
    pub(super) async fn client_unsubscribe(&mut self, channel: &str) {
        let Some(c) = self.connected.as_mut() else {
            return;
        };
        let handle = c.handle.clone();
        if let Some(sub) = c.subs.remove(channel) {
            self.release_subscription(channel, sub, &handle).await;
        }
    }

    /// A subscription requested through the server API.
    pub(super) async fn server_subscribe(&mut self, channel: &str) -> Result<(), Disconnect> {
        let req = SubscribeRequest {
            channel: channel.to_string(),
            ..Default::default()
        };
        let grant = Grant {
            server_side: true,
            ..Default::default()
        };
        match self.subscribe_channel(req, grant).await {
            Ok((result, live)) => {
                let frame = self.push(channel, &PushBody::Subscribe(&result))?;
                if live.subscriber.go_live(Some(frame), live.position.clone()) {
                    return self.recover_channel(channel).await;
                }
                if let Some(info) = live.join {
                    self.node.publish_join(channel, &info).await;
                }
            }
            Err(e) => {
                tracing::info!(client = %self.client_id, channel, error = %e, "server-side subscribe failed");
            }
        }
        Ok(())
    }

    /// An unsubscription requested through the server API.
    pub(super) async fn server_unsubscribe(&mut self, channel: &str) -> Result<(), Disconnect> {
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        let handle = c.handle.clone();
        if let Some(sub) = c.subs.remove(channel) {
            self.release_subscription(channel, sub, &handle).await;
            let frame = self.push(
                channel,
                &PushBody::Unsubscribe {
                    code: unsubscribe::SERVER,
                    reason: "server unsubscribe",
                },
            )?;
            handle.send(frame);
        }
        Ok(())
    }

    /// The engine may have missed publications of `channel`: the hub already stopped
    /// delivering them; a client-side subscription is told to resubscribe and recover
    /// (unsubscribe 2500), a server-side one needs a reconnect (3010).
    pub(super) async fn recover_channel(&mut self, channel: &str) -> Result<(), Disconnect> {
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        let handle = c.handle.clone();
        let Some(sub) = c.subs.remove(channel) else {
            return Ok(());
        };
        let server_side = sub.server_side;
        self.release_subscription(channel, sub, &handle).await;
        if server_side {
            return Err(Disconnect::INSUFFICIENT_STATE);
        }
        handle.send(self.push(
            channel,
            &PushBody::Unsubscribe {
                code: unsubscribe::INSUFFICIENT_STATE,
                reason: "insufficient state",
            },
        )?);
        Ok(())
    }

    /// Ends a subscription that expired, as Centrifugo does: a client-side one with the
    /// unsubscribe push 2501 (the SDK subscribes again with a fresh token), a server-side
    /// one by closing the connection with 3006.
    pub(super) async fn expire_subscription(&mut self, channel: &str) -> Result<(), Disconnect> {
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        let Some(sub) = c.subs.get(channel) else {
            return Ok(());
        };
        if sub.server_side {
            return Err(Disconnect::SUBSCRIPTION_EXPIRED);
        }
        let handle = c.handle.clone();
        if let Some(sub) = c.subs.remove(channel) {
            self.release_subscription(channel, sub, &handle).await;
        }
        let frame = self.push(
            channel,
            &PushBody::Unsubscribe {
                code: unsubscribe::EXPIRED,
                reason: "subscription expired",
            },
        )?;
        handle.send(frame);
        Ok(())
    }

    /// Removes a subscription from the hub, presence and announces the leave.
    pub(super) async fn release_subscription(
        &self,
        channel: &str,
        sub: SubState,
        handle: &ClientHandle,
    ) {
        if let Some(stream) = sub.stream {
            // Ends the backend call.
            stream.cancel();
        }
        self.node.remove_subscriber(channel, &handle.id).await;
        if sub.presence {
            self.node.remove_presence(channel, &handle.id).await;
        }
        if sub.join_leave {
            let info = ClientInfo {
                user: handle.user.clone(),
                client: handle.id.clone(),
                conn_info: None,
                chan_info: sub.chan_info,
            };
            self.node.publish_leave(channel, &info).await;
        }
        drop(sub.subscriber);
    }
}
