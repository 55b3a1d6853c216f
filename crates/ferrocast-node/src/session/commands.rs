//! Command dispatch and the commands that need no subscription bookkeeping.

use super::{Session, ttl_until, unix_now};
use crate::auth::TokenError;
use crate::config::ChannelOptions;
use crate::metrics as m;
use crate::node::PublishParams;
use bytes::Bytes;
use ferrocast_engine::HistoryFilter;
use ferrocast_protocol::*;
use std::time::Instant;

/// Who may do a namespace-gated action.
pub(super) struct Permission {
    pub subscriber: bool,
    pub client: bool,
    pub anonymous: bool,
}

impl Session {
    /// Decodes and runs every command of a frame; replies are batched into one frame.
    pub(super) async fn handle_frame(&mut self, frame: &Bytes) -> Result<(), Disconnect> {
        let max = self.node.client.max_commands_per_frame;
        let commands = match self.protocol.decode_commands(frame, max) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client = %self.client_id, error = %e, "bad frame");
                return Err(Disconnect::BAD_REQUEST);
            }
        };
        let mut out = Vec::new();
        for cmd in commands {
            m::command_received(cmd.method.name());
            if let Method::Empty = cmd.method
                && cmd.id == 0
            {
                self.pong_deadline = None;
                continue;
            }
            if let Some(l) = self.limiter.as_mut()
                && !l.allow(Instant::now())
            {
                if l.rejected_in_row > self.node.client.command_rate_disconnect_after {
                    self.send_replies(&mut out);
                    return Err(Disconnect::TOO_MANY_REQUESTS);
                }
                if cmd.id > 0 {
                    let reply = Reply::error(cmd.id, ErrorCode::TooManyRequests);
                    self.encode_reply(&mut out, &reply)?;
                }
                continue;
            }
            if self.connected.is_none() && !matches!(cmd.method, Method::Connect(_)) {
                self.send_replies(&mut out);
                return Err(Disconnect::BAD_REQUEST);
            }
            let id = cmd.id;
            if id == 0 && !matches!(cmd.method, Method::Send(_)) {
                self.send_replies(&mut out);
                return Err(Disconnect::BAD_REQUEST);
            }
            let name = cmd.method.name();
            let result = match cmd.method {
                Method::Connect(req) => {
                    if self.connected.is_some() {
                        self.send_replies(&mut out);
                        return Err(Disconnect::BAD_REQUEST);
                    }
                    match self.connect(req).await? {
                        Ok((result, subs)) => {
                            let reply = Reply {
                                id,
                                result: ReplyResult::Connect(Box::new(result)),
                            };
                            self.go_live_all(&mut out, &reply, subs).await?;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                Method::Subscribe(req) => match self.client_subscribe(req).await? {
                    Ok((result, live)) => {
                        let reply = Reply {
                            id,
                            result: ReplyResult::Subscribe(Box::new(result)),
                        };
                        self.go_live_all(&mut out, &reply, vec![live]).await?;
                        continue;
                    }
                    Err(e) => Err(e),
                },
                Method::Unsubscribe(req) => {
                    self.client_unsubscribe(&req.channel).await;
                    Ok(ReplyResult::Unsubscribe)
                }
                Method::Publish(req) => self.publish(req).await?,
                Method::Presence(req) => self.presence(&req.channel).await,
                Method::PresenceStats(req) => self.presence_stats(&req.channel).await,
                Method::History(req) => self.history(req).await,
                Method::Ping => Ok(ReplyResult::Ping),
                Method::Send(_) => continue,
                Method::Rpc(req) => Box::pin(self.proxy_rpc(req)).await?,
                Method::Refresh(req) => self.refresh(&req.token)?,
                Method::SubRefresh(req) => self.sub_refresh(req)?,
                Method::Empty => Err(ProtocolError::with_message(
                    ErrorCode::BadRequest,
                    "unknown or missing method",
                )),
                Method::Ambiguous => Err(ProtocolError::with_message(
                    ErrorCode::BadRequest,
                    "more than one method in a command",
                )),
            };
            let reply = match result {
                Ok(result) => Reply { id, result },
                Err(e) => {
                    m::command_error(name, e.code);
                    Reply::error(id, e)
                }
            };
            self.encode_reply(&mut out, &reply)?;
        }
        self.send_replies(&mut out);
        Ok(())
    }

    pub(super) fn user(&self) -> &str {
        self.connected
            .as_ref()
            .map_or("", |c| c.handle.user.as_str())
    }

    fn is_subscribed(&self, channel: &str) -> bool {
        self.connected
            .as_ref()
            .is_some_and(|c| c.subs.contains_key(channel))
    }

    /// Checks a namespace permission for this client.
    pub(super) fn permitted(&self, channel: &str, p: Permission) -> bool {
        if self.node.client.insecure {
            return true;
        }
        let user = self.user();
        (p.subscriber && self.is_subscribed(channel))
            || (p.client && !user.is_empty())
            || (p.anonymous && user.is_empty())
    }

    /// `publish`. The outer error closes the connection (a publish proxy may say so).
    async fn publish(
        &mut self,
        req: PublishRequest,
    ) -> Result<Result<ReplyResult, ProtocolError>, Disconnect> {
        let opts: ChannelOptions = match self.node.channel_options(&req.channel) {
            Ok(o) => o.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let chan_info = self
            .connected
            .as_ref()
            .and_then(|c| c.subs.get(&req.channel))
            .and_then(|s| s.chan_info.clone());
        let info = self.client_info(chan_info);
        let params = if opts.publish_proxy_enabled {
            // The backend decides, instead of the namespace's permissions.
            match Box::pin(self.proxy_publish(&opts, &req.channel, req.data, info)).await? {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            }
        } else if opts.subscribe_stream_proxy_enabled {
            // Publications of such a channel come from the backend's streams; a client's
            // go back into its own stream when that is bidirectional.
            return Ok(self.stream_publish(&req.channel, req.data));
        } else {
            if !self.may_publish(&req.channel, &opts) {
                return Ok(Err(ProtocolError::new(ErrorCode::PermissionDenied)));
            }
            PublishParams {
                data: req.data,
                info: Some(info),
                ..Default::default()
            }
        };
        Ok(self
            .node
            .publish(&req.channel, params)
            .await
            .map(|_| ReplyResult::Publish))
    }

    /// Whether the namespace's permissions let this client publish into `channel`.
    fn may_publish(&self, channel: &str, opts: &ChannelOptions) -> bool {
        self.permitted(
            channel,
            Permission {
                subscriber: opts.allow_publish_for_subscriber,
                client: opts.allow_publish_for_client,
                anonymous: opts.allow_publish_for_anonymous,
            },
        )
    }

    /// Whether this client may ask for presence in `channel` (108 when off there).
    fn presence_permitted(&self, channel: &str) -> Result<(), ProtocolError> {
        let opts = self.node.presence_options(channel)?;
        let allowed = self.permitted(
            channel,
            Permission {
                subscriber: opts.allow_presence_for_subscriber,
                client: opts.allow_presence_for_client,
                anonymous: opts.allow_presence_for_anonymous,
            },
        );
        if !allowed {
            return Err(ProtocolError::new(ErrorCode::PermissionDenied));
        }
        Ok(())
    }

    async fn presence(&mut self, channel: &str) -> Result<ReplyResult, ProtocolError> {
        self.presence_permitted(channel)?;
        let presence = self.node.presence(channel).await?;
        Ok(ReplyResult::Presence(PresenceResult {
            presence: presence.into_iter().collect(),
        }))
    }

    async fn presence_stats(&mut self, channel: &str) -> Result<ReplyResult, ProtocolError> {
        self.presence_permitted(channel)?;
        let s = self.node.presence_stats(channel).await?;
        Ok(ReplyResult::PresenceStats(PresenceStatsResult {
            num_clients: s.num_clients,
            num_users: s.num_users,
        }))
    }

    async fn history(&mut self, req: HistoryRequest) -> Result<ReplyResult, ProtocolError> {
        let opts = self.node.history_options(&req.channel)?;
        let allowed = self.permitted(
            &req.channel,
            Permission {
                subscriber: opts.allow_history_for_subscriber,
                client: opts.allow_history_for_client,
                anonymous: opts.allow_history_for_anonymous,
            },
        );
        if !allowed {
            return Err(ProtocolError::new(ErrorCode::PermissionDenied));
        }
        let filter = HistoryFilter {
            since: req.since,
            limit: req.limit,
            reverse: req.reverse,
        };
        let r = self.node.history(&req.channel, filter).await?;
        Ok(ReplyResult::History(HistoryResult {
            publications: r.publications,
            epoch: r.position.epoch,
            offset: r.position.offset,
        }))
    }

    /// `refresh`: a new connection token extends the connection's life.
    fn refresh(&mut self, token: &str) -> Result<Result<ReplyResult, ProtocolError>, Disconnect> {
        let claims = match self.node.verifier.verify_connect(token) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                return Ok(Err(ProtocolError::new(ErrorCode::TokenExpired)));
            }
            Err(TokenError::Invalid(e)) => {
                tracing::info!(client = %self.client_id, error = %e, "invalid refresh token");
                return Err(Disconnect::INVALID_TOKEN);
            }
        };
        let Some(c) = self.connected.as_mut() else {
            return Err(Disconnect::BAD_REQUEST);
        };
        if claims.sub != c.handle.user {
            return Err(Disconnect::INVALID_TOKEN);
        }
        c.expires_at = claims.exp;
        let ttl = ttl_until(claims.exp);
        Ok(Ok(ReplyResult::Refresh(RefreshResult {
            client: self.client_id.clone(),
            version: crate::node::VERSION.to_string(),
            expires: claims.exp.is_some(),
            ttl,
        })))
    }

    /// `sub_refresh`: a new subscription token extends a subscription's life.
    fn sub_refresh(
        &mut self,
        req: SubRefreshRequest,
    ) -> Result<Result<ReplyResult, ProtocolError>, Disconnect> {
        let claims = match self.node.verifier.verify_subscribe(&req.token) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                return Ok(Err(ProtocolError::new(ErrorCode::TokenExpired)));
            }
            Err(TokenError::Invalid(_)) => return Err(Disconnect::INVALID_TOKEN),
        };
        let user = self.user().to_string();
        let Some(c) = self.connected.as_mut() else {
            return Err(Disconnect::BAD_REQUEST);
        };
        if claims.channel != req.channel || claims.sub != user {
            return Err(Disconnect::INVALID_TOKEN);
        }
        let Some(sub) = c.subs.get_mut(&req.channel) else {
            return Ok(Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "not subscribed",
            )));
        };
        sub.expires_at = claims.exp;
        let ttl = ttl_until(claims.exp);
        Ok(Ok(ReplyResult::SubRefresh(SubRefreshResult {
            expires: claims.exp.is_some(),
            ttl,
        })))
    }

    /// A refresh requested through the server API.
    pub(super) fn apply_server_refresh(&mut self, expire_at: i64) -> Result<(), Disconnect> {
        let ttl = if expire_at > 0 {
            (expire_at - unix_now()).max(0) as u32
        } else {
            0
        };
        let frame = self.push(
            "",
            &PushBody::Refresh {
                expires: expire_at > 0,
                ttl,
            },
        )?;
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        c.expires_at = (expire_at > 0).then_some(expire_at);
        c.handle.send(frame);
        Ok(())
    }
}
