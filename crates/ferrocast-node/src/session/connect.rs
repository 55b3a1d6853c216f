//! The `connect` command: authentication (connection token or connect proxy), limits and
//! server-side subscriptions.

use super::subscribe::{Grant, LiveSub};
use super::{Connected, Session, ttl_until};
use crate::auth::{ConnectClaims, TokenError};
use crate::control::ClientHandle;
use ferrocast_protocol::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

/// Who a connection is and what it gets, from its token or from the connect proxy.
#[derive(Debug, Default)]
pub(super) struct Credentials {
    /// User id (empty: anonymous).
    pub user: String,
    /// Expiry (Unix seconds).
    pub expires_at: Option<i64>,
    /// Connection info.
    pub info: Option<Payload>,
    /// Data for the connect result.
    pub data: Option<Payload>,
    /// Server-side subscriptions, each with what it was granted with.
    pub subs: Vec<(String, Grant)>,
    /// Connection meta (connect proxy).
    pub meta: Option<Payload>,
}

impl From<ConnectClaims> for Credentials {
    fn from(c: ConnectClaims) -> Self {
        let server_side = || Grant {
            server_side: true,
            ..Default::default()
        };
        Credentials {
            user: c.sub,
            expires_at: c.exp,
            info: c.info,
            data: None,
            subs: c
                .channels
                .into_iter()
                .map(|ch| (ch, server_side()))
                .collect(),
            meta: None,
        }
    }
}

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
        let creds: Credentials = if !req.token.is_empty() {
            match node.verifier.verify_connect(&req.token) {
                Ok(c) => c.into(),
                Err(TokenError::Expired) => {
                    return Ok(Err(ProtocolError::new(ErrorCode::TokenExpired)));
                }
                Err(TokenError::Invalid(e)) => {
                    tracing::info!(client = %self.client_id, error = %e, "invalid connection token");
                    return Err(Disconnect::INVALID_TOKEN);
                }
            }
        } else if let Some(proxy) = node.proxies.connect() {
            match Box::pin(self.proxy_connect(proxy, &req)).await? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            }
        } else if node.client.insecure {
            Credentials::default()
        } else {
            tracing::info!(client = %self.client_id, "connect without token refused");
            return Err(Disconnect::INVALID_TOKEN);
        };
        if node.at_connection_limit() {
            return Err(Disconnect::CONNECTION_LIMIT);
        }
        if creds.subs.len() > node.client.channel_limit as usize {
            return Err(Disconnect::CHANNEL_LIMIT);
        }
        if !creds.user.is_empty() {
            match node.add_user_connection(&creds.user, &self.client_id).await {
                Ok(true) => {}
                Ok(false) => return Err(Disconnect::CONNECTION_LIMIT),
                Err(e) => return Ok(Err(e)),
            }
        }
        let handle = Arc::new(ClientHandle {
            id: self.client_id.clone(),
            user: creds.user.clone(),
            protocol: self.protocol,
            outbox: self.outbox.clone(),
            control: self.control.clone(),
        });
        node.add_client(handle.clone());
        // With a refresh proxy the server extends connections itself: the client is not
        // told about the expiry.
        let server_refresh = node.proxies.refresh().is_some();
        self.connected = Some(Connected {
            handle,
            conn_info: creds.info.clone(),
            expires_at: creds.expires_at,
            server_refresh,
            meta: creds.meta,
            subs: HashMap::new(),
        });
        let now = Instant::now();
        self.next_ping = Some(now + node.client.ping_interval);
        self.next_presence = Some(now + node.client.presence_update_interval);

        let mut subs = BTreeMap::new();
        let mut live = Vec::new();
        let mut recover_requests = req.subs;
        for (channel, grant) in creds.subs {
            let mut sub_req = recover_requests.remove(&channel).unwrap_or_default();
            sub_req.channel = channel.clone();
            match self.subscribe_channel(sub_req, grant).await {
                Ok((result, l)) => {
                    subs.insert(channel, result);
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
        let client_expiry = creds.expires_at.filter(|_| !server_refresh);
        tracing::debug!(client = %self.client_id, user = %creds.user, "connected");
        Ok(Ok((
            ConnectResult {
                client: self.client_id.clone(),
                version: crate::node::VERSION.to_string(),
                expires: client_expiry.is_some(),
                ttl: ttl_until(client_expiry),
                data: creds.data,
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
