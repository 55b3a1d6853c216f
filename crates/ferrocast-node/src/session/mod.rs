//! The client session: one connection's state machine.
//!
//! A transport hands the session each incoming frame ([`FrameSource`]); the session
//! decodes commands, runs them, and queues replies to the connection's [`Outbox`], which
//! the transport's writer drains. Timers (connect deadline, ping/pong, token expiry) and
//! requests from the server API ([`SessionControl`]) are handled in the same loop, so
//! session state has one owner and needs no lock.

mod commands;
mod connect;
mod proxied;
mod streams;
mod subscribe;

use crate::control::{ClientHandle, ControlQueue, SessionControl};
use crate::metrics as m;
use crate::node::Node;
use crate::outbox::Outbox;
use crate::ratelimit::TokenBucket;
use crate::subscriber::Subscriber;
use bytes::Bytes;
use ferrocast_protocol::{ClientInfo, Disconnect, Payload, Protocol, PushBody, Reply};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use ferrocast_engine::clock::unix_secs as unix_now;

/// Something a transport received from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A text frame.
    Frame(Bytes),
    /// A binary frame: Protobuf records (the JSON protocol does not accept it).
    Binary(Bytes),
    /// A message above `client.max_message_size`.
    TooLarge,
    /// A frame that is not valid (e.g. text that is not UTF-8).
    Invalid,
    /// The client closed the connection or the socket failed.
    Closed,
}

/// Where a session reads client frames from.
pub trait FrameSource: Send {
    /// The next thing received.
    fn next(&mut self) -> impl Future<Output = Incoming> + Send;
}

/// A borrowed source: the transport keeps it after the session (to drain the input of
/// a closing connection).
impl<S: FrameSource> FrameSource for &mut S {
    fn next(&mut self) -> impl Future<Output = Incoming> + Send {
        (**self).next()
    }
}

/// One subscription of this session.
struct SubState {
    subscriber: Arc<Subscriber>,
    server_side: bool,
    presence: bool,
    join_leave: bool,
    chan_info: Option<Payload>,
    expires_at: Option<i64>,
    /// Refreshed by the server through the sub_refresh proxy at `expires_at`.
    server_refresh: bool,
    /// Its publications come from a backend stream (subscribe stream proxy), not the hub.
    stream: Option<streams::StreamSub>,
}

/// State that exists once `connect` succeeded.
struct Connected {
    handle: Arc<ClientHandle>,
    conn_info: Option<Payload>,
    expires_at: Option<i64>,
    /// Refreshed by the server through the refresh proxy at `expires_at`.
    server_refresh: bool,
    /// Connection meta from the connect proxy, sent with later hooks that want it.
    meta: Option<Payload>,
    subs: HashMap<String, SubState>,
}

/// The connection's command rate limit, and how many commands in a row it refused.
struct RateLimiter {
    rate: f64,
    burst: f64,
    bucket: TokenBucket,
    rejected_in_row: u32,
}

impl RateLimiter {
    fn new(rate: u32, burst: u32) -> Option<Self> {
        let burst = f64::from(burst.max(1));
        (rate > 0).then(|| RateLimiter {
            rate: f64::from(rate),
            burst,
            bucket: TokenBucket::full(burst, Instant::now()),
            rejected_in_row: 0,
        })
    }

    fn allow(&mut self, now: Instant) -> bool {
        if self.bucket.take(self.rate, self.burst, now) {
            self.rejected_in_row = 0;
            true
        } else {
            self.rejected_in_row += 1;
            false
        }
    }
}

/// One client connection.
pub struct Session {
    node: Arc<Node>,
    protocol: Protocol,
    /// Headers of the upgrade request that some proxy sends on to the backend.
    headers: Vec<(String, String)>,
    client_id: String,
    outbox: Arc<Outbox>,
    control: Arc<ControlQueue>,
    connected: Option<Connected>,
    connect_deadline: Instant,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    next_presence: Option<Instant>,
    limiter: Option<RateLimiter>,
}

/// When something expiring at `exp` (Unix seconds) is ended: at once when the server
/// refreshes it (its refresh proxy is called then), else after the grace `delay` the
/// client has to refresh it (Centrifugo's `expired_close_delay`).
fn close_at(exp: Option<i64>, server_refresh: bool, delay: Duration) -> Option<i64> {
    exp.map(|e| {
        if server_refresh {
            e
        } else {
            e + delay.as_secs() as i64
        }
    })
}

/// Seconds from now until the Unix time `exp` (0 when absent or past).
pub(crate) fn ttl_until(exp: Option<i64>) -> u32 {
    exp.map_or(0, |e| (e - unix_now()).max(0) as u32)
}

impl Session {
    /// A new session for a freshly upgraded connection speaking `protocol`, with the
    /// upgrade request's headers named by `node.proxies.header_names()` (lower-case
    /// names). The caller spawns a writer that drains the returned outbox.
    pub fn new(
        node: Arc<Node>,
        protocol: Protocol,
        headers: Vec<(String, String)>,
    ) -> (Session, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(node.client.queue_max_size));

        let limiter = RateLimiter::new(
            node.client.command_rate_limit,
            node.client.command_rate_burst,
        );
        let session = Session {
            client_id: uuid::Uuid::new_v4().to_string(),
            connect_deadline: Instant::now() + node.client.connect_timeout,
            node,
            protocol,
            headers,
            outbox: outbox.clone(),
            control: Arc::default(),
            connected: None,
            next_ping: None,
            pong_deadline: None,
            next_presence: None,
            limiter,
        };
        (session, outbox)
    }

    /// Runs the session until the connection ends; returns why it ended.
    ///
    /// Command handling is boxed: its future is large (connect, subscribe, recovery...)
    /// and would otherwise be part of every idle connection's task.
    pub async fn run<S: FrameSource>(mut self, mut source: S) -> Disconnect {
        let reason = loop {
            let deadline = self.next_deadline();
            let step = tokio::select! {
                biased;
                reason = self.outbox.closed() => Err(reason),
                ctl = self.control.recv() => Box::pin(self.handle_control(ctl)).await,
                incoming = source.next() => match incoming {
                    Incoming::Frame(frame) => Box::pin(self.handle_frame(&frame)).await,
                    // Protobuf reads every message as records, whatever its opcode (as
                    // Centrifugo does); JSON takes text frames only.
                    Incoming::Binary(frame) if self.protocol == Protocol::Protobuf => {
                        Box::pin(self.handle_frame(&frame)).await
                    }
                    Incoming::Binary(_) | Incoming::TooLarge | Incoming::Invalid => Err(Disconnect::BAD_REQUEST),
                    Incoming::Closed => Err(Disconnect::CONNECTION_CLOSED),
                },
                _ = tokio::time::sleep_until(deadline.into()) => Box::pin(self.on_timer(Instant::now())).await,
            };
            if let Err(reason) = step {
                break reason;
            }
        };
        self.outbox.close(reason.clone());
        let reason = self.outbox.close_reason().unwrap_or(reason);
        m::disconnect(reason.code);
        // Boxed: the cleanup future would otherwise be part of every idle session.
        Box::pin(self.cleanup()).await;
        reason
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut d = if self.connected.is_none() {
            self.connect_deadline
        } else {
            far
        };
        for t in [self.next_ping, self.pong_deadline, self.next_presence]
            .into_iter()
            .flatten()
        {
            d = d.min(t);
        }
        if let Some(c) = &self.connected {
            let client = &self.node.client;
            let exp = close_at(c.expires_at, c.server_refresh, client.expired_close_delay)
                .into_iter()
                .chain(c.subs.values().filter_map(|s| {
                    close_at(
                        s.expires_at,
                        s.server_refresh,
                        client.expired_sub_close_delay,
                    )
                }))
                .min();
            if let Some(exp) = exp {
                let secs = (exp - unix_now()).max(0) as u64;
                d = d.min(Instant::now() + Duration::from_secs(secs));
            }
        }
        d
    }

    async fn on_timer(&mut self, now: Instant) -> Result<(), Disconnect> {
        if self.next_presence.is_some_and(|t| now >= t) {
            self.next_presence = Some(now + self.node.client.presence_update_interval);
            self.refresh_presence().await;
        }
        self.refresh_expired().await?;
        self.expire_subscriptions().await?;
        self.check_deadlines(now)
    }

    /// Ends the subscriptions whose token expired longer than `expired_sub_close_delay`
    /// ago without a `sub_refresh`.
    async fn expire_subscriptions(&mut self) -> Result<(), Disconnect> {
        let Some(c) = &self.connected else {
            return Ok(());
        };
        let unix = unix_now();
        let delay = self.node.client.expired_sub_close_delay;
        let expired: Vec<String> = c
            .subs
            .iter()
            .filter(|(_, s)| {
                close_at(s.expires_at, s.server_refresh, delay).is_some_and(|t| unix >= t)
            })
            .map(|(ch, _)| ch.clone())
            .collect();
        for channel in expired {
            self.expire_subscription(&channel).await?;
        }
        Ok(())
    }

    /// Asks the refresh and sub_refresh proxies to extend what the server refreshes and
    /// has reached its expiry.
    async fn refresh_expired(&mut self) -> Result<(), Disconnect> {
        let Some(c) = &self.connected else {
            return Ok(());
        };
        let unix = unix_now();
        let due = |exp: Option<i64>| exp.is_some_and(|e| unix >= e);
        let connection = c.server_refresh && due(c.expires_at);
        let channels: Vec<String> = c
            .subs
            .iter()
            .filter(|(_, s)| s.server_refresh && due(s.expires_at))
            .map(|(ch, _)| ch.clone())
            .collect();
        if connection {
            let node = self.node.clone();
            if let Some(proxy) = node.proxies.refresh() {
                Box::pin(self.proxy_refresh(proxy)).await?;
            }
        }
        for channel in channels {
            Box::pin(self.proxy_sub_refresh(&channel)).await?;
        }
        Ok(())
    }

    /// Re-adds presence entries so they outlive `client.presence_ttl` while connected.
    async fn refresh_presence(&self) {
        let Some(c) = &self.connected else { return };
        for (channel, sub) in c.subs.iter().filter(|(_, s)| s.presence) {
            let info = self.client_info(sub.chan_info.clone());
            if let Err(e) = self.node.add_presence(channel, &info).await {
                tracing::debug!(channel = %channel, error = %e, "presence refresh failed");
            }
        }
    }

    fn check_deadlines(&mut self, now: Instant) -> Result<(), Disconnect> {
        let Some(c) = &self.connected else {
            if now >= self.connect_deadline {
                return Err(Disconnect::STALE);
            }
            return Ok(());
        };
        if self.pong_deadline.is_some_and(|d| now >= d) {
            return Err(Disconnect::NO_PONG);
        }
        let unix = unix_now();
        let delay = self.node.client.expired_close_delay;
        if close_at(c.expires_at, c.server_refresh, delay).is_some_and(|t| unix >= t) {
            return Err(Disconnect::EXPIRED);
        }
        if self.next_ping.is_some_and(|p| now >= p) {
            self.send(self.protocol.ping());
            if self.pong_deadline.is_none() {
                self.pong_deadline = Some(now + self.node.client.pong_timeout);
            }
            self.next_ping = Some(now + self.node.client.ping_interval);
        }
        Ok(())
    }

    fn send(&self, frame: Bytes) {
        match &self.connected {
            Some(c) => {
                c.handle.send(frame);
            }
            None => {
                if self.outbox.push(frame).result == crate::outbox::PushResult::Overflow {
                    m::slow_consumer_closed();
                }
            }
        }
    }

    fn send_replies(&self, out: &mut Vec<u8>) {
        if !out.is_empty() {
            self.send(Bytes::from(std::mem::take(out)));
        }
    }

    fn client_info(&self, chan_info: Option<Payload>) -> ClientInfo {
        let (user, conn_info) = match &self.connected {
            Some(c) => (c.handle.user.clone(), c.conn_info.clone()),
            None => (String::new(), None),
        };
        ClientInfo {
            user,
            client: self.client_id.clone(),
            conn_info,
            chan_info,
        }
    }

    async fn handle_control(&mut self, ctl: SessionControl) -> Result<(), Disconnect> {
        if self.connected.is_none() {
            return Ok(());
        }
        match ctl {
            SessionControl::Disconnect(d) => Err(d),
            SessionControl::Subscribe { channel } => self.server_subscribe(&channel).await,
            SessionControl::Unsubscribe { channel } => self.server_unsubscribe(&channel).await,
            SessionControl::InsufficientState { channel } => self.recover_channel(&channel).await,
            SessionControl::StreamEnded {
                channel,
                stream,
                failed,
            } => self.stream_ended(&channel, stream, failed).await,
            SessionControl::Refresh { expired, expire_at } => {
                if expired {
                    return Err(Disconnect::EXPIRED);
                }
                self.apply_server_refresh(expire_at)
            }
        }
    }

    async fn cleanup(&mut self) {
        let Some(mut c) = self.connected.take() else {
            return;
        };
        // The connection is gone for everyone before its leaves are announced, so a client
        // that sees the leave also sees the user offline.
        self.node.remove_client(&c.handle).await;
        let channels: Vec<String> = c.subs.keys().cloned().collect();
        for channel in channels {
            if let Some(sub) = c.subs.remove(&channel) {
                self.release_subscription(&channel, sub, &c.handle).await;
            }
        }
    }

    /// Appends a reply to the frame being built. A reply that cannot be encoded for this
    /// connection (a binary payload for a JSON client) closes it with 3506.
    /// The replies before it in `out` are sent first.
    fn encode_reply(&self, out: &mut Vec<u8>, reply: &Reply) -> Result<(), Disconnect> {
        self.protocol.append_reply(out, reply).map_err(|e| {
            tracing::info!(client = %self.client_id, error = %e, "reply cannot be encoded");
            self.send_replies(out);
            Disconnect::INAPPROPRIATE_PROTOCOL
        })
    }

    /// A push for this connection; one that cannot be encoded for it closes it with 3506.
    fn push(&self, channel: &str, body: &PushBody<'_>) -> Result<Bytes, Disconnect> {
        self.protocol.encode_push(channel, body).map_err(|e| {
            tracing::info!(client = %self.client_id, channel, error = %e, "push cannot be encoded");
            Disconnect::INAPPROPRIATE_PROTOCOL
        })
    }
}
