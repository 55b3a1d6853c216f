//! The `connect` command: authentication, limits and server-side subscriptions.

use super::subscribe::LiveSub;
use super::{Connected, Session, ttl_until};
use crate::auth::{ConnectClaims, TokenError};
use crate::control::ClientHandle;
use ferrocast_protocol::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

impl Session {
    /// Authenticates the connection and registers it. The outer error closes the
    /// connection; the inner one is an error reply.
    pub(super) async fn connect(
        &mut self,
        req: ConnectRequest,
    ) -> Result<Result<(ConnectResult, Vec<LiveSub>), ProtocolError>, Disconnect> {
        let node = self.node.clone();
        if node.is_draining() {
            return Err(Disconnect::SHUTDOWN);
        }
        let claims = if req.token.is_empty() {
            if !node.client.insecure {
                tracing::info!(client = %self.client_id, "connect without token refused");
                return Err(Disconnect::INVALID_TOKEN);
            }
            ConnectClaims::default()
        } else {
            match node.verifier.verify_connect(&req.token) {
                Ok(c) => c,
                Err(TokenError::Expired) => {
                    return Ok(Err(ProtocolError::new(ErrorCode::TokenExpired)));
                }
                Err(TokenError::Invalid(e)) => {
                    tracing::info!(client = %self.client_id, error = %e, "invalid connection token");
                    return Err(Disconnect::INVALID_TOKEN);
                }
            }
        };
        if node.at_connection_limit() {
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        if claims.channels.len() > node.client.channel_limit as usize {
            return Err(Disconnect::CHANNEL_LIMIT);
        }
        if !claims.sub.is_empty() {
            match node.add_user_connection(&claims.sub, &self.client_id).await {
                Ok(true) => {}
                Ok(false) => return Err(Disconnect::CONNECTION_LIMIT),
                Err(e) => return Ok(Err(e)),
            }
        }
        let handle = Arc::new(ClientHandle {
            id: self.client_id.clone(),
            user: claims.sub.clone(),
            protocol: self.protocol,
            outbox: self.outbox.clone(),
            control: self.control.clone(),
        });
        node.add_client(handle.clone());
        self.connected = Some(Connected {
            handle,
            conn_info: claims.info.clone(),
            expires_at: claims.exp,
            subs: HashMap::new(),
        });
        let now = Instant::now();
        self.next_ping = Some(now + node.client.ping_interval);
        self.next_presence = Some(now + node.client.presence_update_interval);

        let mut subs = BTreeMap::new();
        let mut live = Vec::new();
        let mut recover_requests = req.subs;
        for channel in &claims.channels {
            let mut sub_req = recover_requests.remove(channel).unwrap_or_default();
            sub_req.channel = channel.clone();
            match self.subscribe_channel(sub_req, true, None, None).await {
                Ok((result, l)) => {
                    subs.insert(channel.clone(), result);
                    live.push(l);
                }
                Err(e) if e.code == ErrorCode::LimitExceeded.code() => {
                    return Err(Disconnect::CHANNEL_LIMIT);
                }
                Err(e) => {
                    tracing::warn!(client = %self.client_id, channel = %channel, error = %e, "server-side subscription skipped");
                }
            }
        }
        let ttl = ttl_until(claims.exp);
        tracing::debug!(client = %self.client_id, user = %claims.sub, "connected");
        Ok(Ok((
            ConnectResult {
                client: self.client_id.clone(),
                version: crate::node::VERSION.to_string(),
                expires: claims.exp.is_some(),
                ttl,
                data: None,
                subs,
                ping: node.client.ping_interval.as_secs().max(1) as u32,
                pong: true,
                session: String::new(),
                node: node.name().to_string(),
            },
            live,
        )))
    }
}
