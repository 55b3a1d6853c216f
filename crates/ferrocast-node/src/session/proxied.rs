//! Session steps decided by the application backend (proxy hooks), and what each answer
//! means for the client, as in Centrifugo: a result goes on, an error is the command's
//! error reply, a disconnect closes the connection with the backend's code, and a call
//! that failed (timeout, backend down, bad answer) is error 100 — except the refreshes,
//! which then give the connection or subscription another minute and try again.

use super::connect::Credentials;
use super::subscribe::{Grant, Overrides};
use super::{Session, unix_now};
use crate::config::ChannelOptions;
use crate::node::PublishParams;
use crate::proxy::{Hook, HookProxy, RpcRoute};
use ferrocast_protocol::*;
use ferrocast_proxy::CallError;
use ferrocast_proxy::messages::{self as pm, Reply};

/// How long a connection or subscription lives on when its refresh call failed.
const REFRESH_RETRY_SECS: i64 = 60;

/// The answer of one hook call for the client.
pub(super) enum Answer<T> {
    /// A result (`None`: the backend answered `{}`).
    Go(Option<T>),
    /// An error reply for the command.
    Refuse(ProtocolError),
    /// Close the connection.
    Close(Disconnect),
}

pub(super) fn answer<T>(res: Result<Reply<T>, CallError>) -> Answer<T> {
    match res {
        Ok(Reply::Result(t)) => Answer::Go(Some(t)),
        Ok(Reply::Empty) => Answer::Go(None),
        Ok(Reply::Error(e)) => Answer::Refuse(ProtocolError {
            code: e.code,
            message: e.message.into(),
            temporary: e.temporary,
        }),
        Ok(Reply::Disconnect(d)) => Answer::Close(Disconnect {
            code: u16::try_from(d.code).unwrap_or(Disconnect::INTERNAL.code),
            reason: d.reason.into(),
        }),
        Err(_) => Answer::Refuse(ProtocolError::new(ErrorCode::Internal)),
    }
}

pub(super) fn overrides(o: &pm::SubscribeOverride) -> Overrides {
    Overrides {
        presence: o.presence.map(|v| v.value),
        join_leave: o.join_leave.map(|v| v.value),
        force_push_join_leave: o.force_push_join_leave.map(|v| v.value),
        force_recovery: o.force_recovery.map(|v| v.value),
        force_positioning: o.force_positioning.map(|v| v.value),
    }
}

pub(super) fn expiry(expire_at: i64) -> Option<i64> {
    (expire_at > 0).then_some(expire_at)
}

impl Session {
    /// What every hook call carries about this connection.
    pub(super) fn caller(&self, proxy: &HookProxy) -> pm::Caller {
        let (user, meta) = match &self.connected {
            Some(c) => (c.handle.user.clone(), c.meta.clone()),
            None => (String::new(), None),
        };
        pm::Caller {
            client: self.client_id.clone(),
            transport: "websocket".into(),
            protocol: self.protocol.name().into(),
            user,
            meta: meta.filter(|_| proxy.include_meta),
        }
    }

    /// The request of a subscribe hook (or subscription stream) for `req`.
    pub(super) fn subscribe_request(
        &self,
        proxy: &HookProxy,
        req: &SubscribeRequest,
    ) -> pm::SubscribeRequest {
        pm::SubscribeRequest {
            caller: self.caller(proxy),
            channel: req.channel.clone(),
            token: req.token.clone(),
            data: req.data.clone(),
            ..Default::default()
        }
    }

    /// `connect` without a token: the backend says who the client is. No result (or an
    /// empty user decision) is a bad request (3501), as in Centrifugo.
    pub(super) async fn proxy_connect(
        &self,
        proxy: &HookProxy,
        req: &ConnectRequest,
    ) -> Result<Result<Credentials, ProtocolError>, Disconnect> {
        let request = pm::ConnectRequest {
            caller: self.caller(proxy),
            name: req.name.clone(),
            version: req.version.clone(),
            data: req.data.clone(),
            channels: req.subs.keys().cloned().collect(),
            ..Default::default()
        };
        let res = proxy
            .call(Hook::Connect, &self.headers, |h| async move {
                proxy.proxy.connect(request, &h).await
            })
            .await;
        let result = match answer(res) {
            Answer::Go(Some(r)) => r,
            Answer::Go(None) => {
                tracing::info!(client = %self.client_id, "connect proxy gave no credentials");
                return Err(Disconnect::BAD_REQUEST);
            }
            Answer::Refuse(e) => return Ok(Err(e)),
            Answer::Close(d) => return Err(d),
        };
        let mut subs: Vec<(String, Grant)> = result
            .channels
            .into_iter()
            .map(|ch| {
                let grant = Grant {
                    server_side: true,
                    ..Default::default()
                };
                (ch, grant)
            })
            .collect();
        for (ch, o) in result.subs {
            subs.retain(|(c, _)| *c != ch);
            subs.push((
                ch,
                Grant {
                    server_side: true,
                    chan_info: o.info,
                    expires_at: expiry(o.expire_at),
                    data: o.data,
                    overrides: overrides(&o.r#override),
                    server_refresh: false,
                    stream: None,
                },
            ));
        }
        for (ch, _) in &subs {
            if let Err(e) = self.node.channel_options(ch) {
                tracing::info!(client = %self.client_id, channel = %ch, error = %e, "connect proxy granted an unknown channel");
                return Ok(Err(e));
            }
        }
        Ok(Ok(Credentials {
            user: result.user,
            expires_at: expiry(result.expire_at),
            info: result.info,
            data: result.data,
            subs,
            meta: result.meta,
        }))
    }

    /// The connection reached its expiry and the server refreshes it: the backend extends
    /// it (new expiry, info, meta) or ends it (3005). A failed call gives it another
    /// minute.
    pub(super) async fn proxy_refresh(&mut self, proxy: &HookProxy) -> Result<(), Disconnect> {
        let request = pm::RefreshRequest {
            caller: self.caller(proxy),
            ..Default::default()
        };
        let res = proxy
            .call(Hook::Refresh, &self.headers, |h| async move {
                proxy.proxy.refresh(request, &h).await
            })
            .await;
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        let now = unix_now();
        match res {
            Err(_) => {
                c.expires_at = Some(now + REFRESH_RETRY_SECS);
                Ok(())
            }
            Ok(Reply::Disconnect(d)) => Err(Disconnect {
                code: u16::try_from(d.code).unwrap_or(Disconnect::EXPIRED.code),
                reason: d.reason.into(),
            }),
            Ok(Reply::Result(r)) if !r.expired && r.expire_at > now => {
                c.expires_at = Some(r.expire_at);
                if r.info.is_some() {
                    c.conn_info = r.info;
                }
                if r.meta.is_some() {
                    c.meta = r.meta;
                }
                Ok(())
            }
            // Expired, no result, or an error: the connection ends.
            Ok(_) => Err(Disconnect::EXPIRED),
        }
    }

    /// A subscription without a token in a namespace with `subscribe_proxy_enabled`: the
    /// backend allows it (with info, data, option overrides, expiry) or refuses it.
    pub(super) async fn proxy_subscribe(
        &self,
        opts: &ChannelOptions,
        req: &SubscribeRequest,
    ) -> Result<Result<Grant, ProtocolError>, Disconnect> {
        let Some(proxy) = self.node.proxies.subscribe(&opts.subscribe_proxy_name) else {
            return Ok(Err(ProtocolError::new(ErrorCode::NotAvailable)));
        };
        let request = self.subscribe_request(proxy, req);
        let res = proxy
            .call(Hook::Subscribe, &self.headers, |h| async move {
                proxy.proxy.subscribe(request, &h).await
            })
            .await;
        let result = match answer(res) {
            Answer::Go(r) => r.unwrap_or_default(),
            Answer::Refuse(e) => return Ok(Err(e)),
            Answer::Close(d) => return Err(d),
        };
        Ok(Ok(Grant {
            server_side: false,
            chan_info: result.info,
            expires_at: expiry(result.expire_at),
            data: result.data,
            overrides: overrides(&result.r#override),
            server_refresh: opts.sub_refresh_proxy_enabled,
            stream: None,
        }))
    }

    /// A client publication in a namespace with `publish_proxy_enabled`: the backend
    /// allows it, and may replace its data, tags and idempotency key or keep it out of
    /// history.
    pub(super) async fn proxy_publish(
        &self,
        opts: &ChannelOptions,
        channel: &str,
        data: Option<Payload>,
        info: ClientInfo,
    ) -> Result<Result<PublishParams, ProtocolError>, Disconnect> {
        let Some(proxy) = self.node.proxies.publish(&opts.publish_proxy_name) else {
            return Ok(Err(ProtocolError::new(ErrorCode::NotAvailable)));
        };
        let request = pm::PublishRequest {
            caller: self.caller(proxy),
            channel: channel.to_string(),
            data: data.clone(),
            ..Default::default()
        };
        let res = proxy
            .call(Hook::Publish, &self.headers, |h| async move {
                proxy.proxy.publish(request, &h).await
            })
            .await;
        let result = match answer(res) {
            Answer::Go(r) => r.unwrap_or_default(),
            Answer::Refuse(e) => return Ok(Err(e)),
            Answer::Close(d) => return Err(d),
        };
        Ok(Ok(PublishParams {
            data: result.data.or(data),
            info: Some(info),
            tags: (!result.tags.is_empty()).then_some(result.tags),
            idempotency_key: (!result.idempotency_key.is_empty()).then_some(result.idempotency_key),
            skip_history: result.skip_history,
        }))
    }

    /// `rpc`: the method's namespace routes it to the backend (104 when no namespace has
    /// it, 108 when its namespace does not proxy).
    pub(super) async fn proxy_rpc(
        &self,
        req: RpcRequest,
    ) -> Result<Result<ReplyResult, ProtocolError>, Disconnect> {
        let proxy = match self.node.proxies.rpc(&req.method) {
            RpcRoute::Proxy(p) => p,
            RpcRoute::NotFound => return Ok(Err(ProtocolError::new(ErrorCode::MethodNotFound))),
            RpcRoute::Disabled => return Ok(Err(ProtocolError::new(ErrorCode::NotAvailable))),
        };
        let request = pm::RpcRequest {
            caller: self.caller(proxy),
            method: req.method,
            data: req.data,
            ..Default::default()
        };
        let res = proxy
            .call(Hook::Rpc, &self.headers, |h| async move {
                proxy.proxy.rpc(request, &h).await
            })
            .await;
        match answer(res) {
            Answer::Go(r) => Ok(Ok(ReplyResult::Rpc(r.and_then(|r| r.data)))),
            Answer::Refuse(e) => Ok(Err(e)),
            Answer::Close(d) => Err(d),
        }
    }

    /// A subscription the server refreshes reached its expiry: the backend extends it or
    /// ends it (a client-side subscription gets an unsubscribe push 2501 and subscribes
    /// again; a server-side one is closed with 3006). A failed call gives it another
    /// minute.
    pub(super) async fn proxy_sub_refresh(&mut self, channel: &str) -> Result<(), Disconnect> {
        let name = match self.node.channel_options(channel) {
            Ok(o) => o.sub_refresh_proxy_name.clone(),
            Err(_) => return Ok(()),
        };
        let Some(proxy) = self.node.proxies.sub_refresh(&name) else {
            return Ok(());
        };
        let request = pm::SubRefreshRequest {
            caller: self.caller(proxy),
            channel: channel.to_string(),
            ..Default::default()
        };
        let res = proxy
            .call(Hook::SubRefresh, &self.headers, |h| async move {
                proxy.proxy.sub_refresh(request, &h).await
            })
            .await;
        let now = unix_now();
        let Some(c) = self.connected.as_mut() else {
            return Ok(());
        };
        let Some(sub) = c.subs.get_mut(channel) else {
            return Ok(());
        };
        let keep = match res {
            Err(_) => {
                sub.expires_at = Some(now + REFRESH_RETRY_SECS);
                true
            }
            Ok(Reply::Result(r)) if !r.expired && r.expire_at > now => {
                sub.expires_at = Some(r.expire_at);
                if r.info.is_some() {
                    sub.chan_info = r.info;
                }
                true
            }
            Ok(Reply::Disconnect(d)) => {
                return Err(Disconnect {
                    code: u16::try_from(d.code).unwrap_or(Disconnect::SUBSCRIPTION_EXPIRED.code),
                    reason: d.reason.into(),
                });
            }
            Ok(_) => false,
        };
        if keep {
            return Ok(());
        }
        self.expire_subscription(channel).await
    }
}
