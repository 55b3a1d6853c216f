//! [`Node`]: what one ferrocast process is — its configuration, its hub of local
//! connections, and the only door to the engine.
//!
//! Sessions and the server API ask the node; the node checks the channel's namespace
//! options, calls the engine's [`Broker`], [`PresenceManager`] or [`Controller`] and maps
//! engine errors to protocol errors in one place ([`engine_error`]). What the engine
//! delivers comes back through the node's event handler (`events`), which fans out
//! through the hub and routes cluster commands.

mod events;
mod operations;

use crate::auth::TokenVerifier;
use crate::channels::ChannelRules;
use crate::cluster::{self, Identity};
use crate::config::{ChannelConfig, ChannelOptions, ClientConfig, NamedProxyConfig, RpcConfig};
use crate::hub::{Hub, HubStats};
use crate::metrics as m;
use crate::proxy::Proxies;
use crate::stats;
use crate::survey::Surveys;
use crate::telemetry;
use crate::wildcards::{self, Pattern};
use events::NodeEvents;
use ferrocast_engine::{
    Broker, CommandStream, Controller, Engine, EngineError, PresenceManager, PublishOptions,
};
use ferrocast_protocol::envelope::{ControlMessage, NodeInfo};
use ferrocast_protocol::{
    ClientInfo, Disconnect, ErrorCode, Payload, ProtocolError, Publication, StreamPosition,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;

pub use crate::cluster::VERSION;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The engine failed to start.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a node is built from.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Node name shown in `info`.
    pub name: String,
    /// Client settings.
    pub client: ClientConfig,
    /// Channel settings.
    pub channel: ChannelConfig,
    /// RPC namespaces and their proxy.
    pub rpc: RpcConfig,
    /// Named proxies (`proxies[]`).
    pub proxies: Vec<NamedProxyConfig>,
}

/// One ferrocast node.
pub struct Node {
    identity: Identity,
    /// Client settings.
    pub client: ClientConfig,
    /// Token verification.
    pub verifier: TokenVerifier,
    /// The application backend's proxy hooks.
    pub proxies: Proxies,
    rules: ChannelRules,
    hub: Arc<Hub>,
    engine: Arc<dyn Engine>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceManager>,
    controller: Arc<dyn Controller>,
    surveys: Arc<Surveys>,
    draining: AtomicBool,
    /// Stops the node's announcements (when it leaves the cluster).
    announcing: CancellationToken,
    /// Stops the node's background tasks when the node is dropped.
    _stop: DropGuard,
}

/// Parameters of a publish, from a client or from the server API.
#[derive(Debug, Clone, Default)]
pub struct PublishParams {
    /// Payload.
    pub data: Option<Payload>,
    /// Publisher info (client publications).
    pub info: Option<ClientInfo>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Do not store in history.
    pub skip_history: bool,
}

/// Maps an engine failure to a protocol error (the one place that does).
pub fn engine_error(e: EngineError) -> ProtocolError {
    match e {
        EngineError::Unavailable(_) => ProtocolError::new(ErrorCode::NotAvailable),
        EngineError::UnrecoverablePosition => ProtocolError::new(ErrorCode::UnrecoverablePosition),
        EngineError::Internal(msg) => {
            tracing::error!(error = %msg, "engine error");
            ProtocolError::new(ErrorCode::Internal)
        }
    }
}

/// Computes the channels' rates every [`stats::SAMPLE_EVERY`] until `stop`.
async fn sample_channel_stats(hub: Arc<Hub>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(stats::SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        hub.sample_channel_stats(now - last);
        last = now;
    }
}

impl Node {
    /// Builds a node on `engine`, starts the engine's event delivery into the node and the
    /// node's background work (announcements, user registrations, surveys).
    pub async fn start(opts: NodeOptions, engine: Arc<dyn Engine>) -> Result<Arc<Node>, NodeError> {
        opts.client.validate().map_err(NodeError::Config)?;
        opts.channel.validate().map_err(NodeError::Config)?;
        for (namespace, policy) in opts.channel.drop_policies() {
            m::register_slow_consumer_drops(namespace, policy);
        }
        for key in opts.channel.blocking_policies() {
            tracing::warn!(
                key = %key,
                "slow_consumer_policy \"block\" acts as \"close\": a publication that waited for one slow \
                 subscriber would stall every other subscriber of its channel, so a slow connection is \
                 closed with 3008 instead"
            );
        }
        let verifier = TokenVerifier::new(&opts.client.token).map_err(NodeError::Config)?;
        let proxies = Proxies::new(&opts.client, &opts.channel, &opts.rpc, &opts.proxies)
            .map_err(NodeError::Config)?;
        let identity = Identity::new(opts.name);
        let hub = Arc::new(Hub::new());
        let stop = CancellationToken::new();
        let broker: Arc<dyn Broker> = engine.clone();
        let presence: Arc<dyn PresenceManager> = engine.clone();
        let controller: Arc<dyn Controller> = engine.clone();
        let surveys = Arc::new(Surveys::start(
            identity.id.clone(),
            identity.name.clone(),
            hub.clone(),
            controller.clone(),
            stop.child_token(),
        ));
        let events = NodeEvents {
            hub: hub.clone(),
            surveys: surveys.clone(),
        };
        engine.start(Arc::new(events)).await?;
        tokio::spawn(sample_channel_stats(hub.clone(), stop.child_token()));
        let announcing = stop.child_token();
        tokio::spawn(cluster::announce(
            identity.clone(),
            hub.clone(),
            controller.clone(),
            announcing.clone(),
        ));
        tokio::spawn(cluster::refresh_users(
            hub.clone(),
            presence.clone(),
            (
                opts.client.presence_update_interval,
                opts.client.presence_ttl,
            ),
            stop.child_token(),
        ));
        Ok(Arc::new(Node {
            identity,
            client: opts.client,
            verifier,
            proxies,
            rules: ChannelRules::new(opts.channel),
            hub,
            engine,
            broker,
            presence,
            controller,
            surveys,
            draining: AtomicBool::new(false),
            announcing,
            _stop: stop.drop_guard(),
        }))
    }

    /// Unique id of this process.
    pub fn id(&self) -> &str {
        &self.identity.id
    }

    /// Human readable name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// Seconds since the node started.
    pub fn uptime(&self) -> u64 {
        self.identity.started.elapsed().as_secs()
    }

    /// What the hub holds now.
    pub fn stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// This node's announcement (identity and counts).
    pub fn info(&self) -> NodeInfo {
        self.identity.info(&self.hub)
    }

    /// Whether the node should receive traffic: engine usable and not draining.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.engine.is_ready()
    }

    /// Whether the node is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The backend command stream, when the engine has one.
    pub fn command_stream(&self) -> Option<Arc<dyn CommandStream>> {
        self.engine.command_stream()
    }

    /// Checks a channel name and returns its namespace options: 107 for an invalid name,
    /// 102 for an unknown namespace.
    pub fn channel_options(&self, channel: &str) -> Result<&ChannelOptions, ProtocolError> {
        self.rules.options(channel)
    }

    /// `channel` as a wildcard pattern: `Ok(None)` for an ordinary channel; 107 for a
    /// malformed pattern, or a pattern in a namespace without
    /// `allow_wildcard_subscriptions`.
    pub fn pattern(&self, channel: &str) -> Result<Option<Pattern>, ProtocolError> {
        let opts = self.rules.options(channel)?;
        if opts.allow_wildcard_subscriptions {
            return wildcards::parse(channel);
        }
        if wildcards::is_pattern(channel) {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "wildcard subscriptions are not enabled in this namespace",
            ));
        }
        Ok(None)
    }

    /// The options of a concrete channel: 107 for a wildcard pattern (patterns can be
    /// subscribed to only: not published to, nor asked for history or presence).
    fn concrete_options(&self, channel: &str) -> Result<&ChannelOptions, ProtocolError> {
        let opts = self.rules.options(channel)?;
        if opts.allow_wildcard_subscriptions && wildcards::parse(channel)?.is_some() {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "a wildcard pattern can only be subscribed to",
            ));
        }
        Ok(opts)
    }

    /// The options of a channel whose namespace has presence on (108 when it is off).
    pub fn presence_options(&self, channel: &str) -> Result<&ChannelOptions, ProtocolError> {
        let opts = self.concrete_options(channel)?;
        if !opts.presence {
            return Err(ProtocolError::new(ErrorCode::NotAvailable));
        }
        Ok(opts)
    }

    /// The options of a channel whose namespace keeps history (108 when it does not).
    pub fn history_options(&self, channel: &str) -> Result<&ChannelOptions, ProtocolError> {
        let opts = self.concrete_options(channel)?;
        if !opts.history_enabled() {
            return Err(ProtocolError::new(ErrorCode::NotAvailable));
        }
        Ok(opts)
    }

    /// For a user-limited channel (`name#1,2`): whether `user` is listed. `None` when the
    /// channel is not user-limited.
    pub fn user_limited_allows(&self, channel: &str, user: &str) -> Option<bool> {
        self.rules.user_limited_allows(channel, user)
    }

    /// Publishes into a channel with the channel's history settings.
    pub async fn publish(
        &self,
        channel: &str,
        params: PublishParams,
    ) -> Result<StreamPosition, ProtocolError> {
        let (publication, mut opts) = self.prepare_publication(channel, params)?;
        let span = telemetry::publish_span(channel);
        opts.trace = span.in_scope(telemetry::current_traceparent);
        let started = Instant::now();
        let res = self
            .broker
            .publish(channel, publication, &opts)
            .instrument(span)
            .await;
        m::publish_took(started.elapsed());
        res.map_err(engine_error)
    }

    /// Publishes several publications into one channel, in this order, with one engine
    /// call (one Redis round trip): the backend command stream's runs of publishes to one
    /// channel. Each item's `publish` span is a child of the span given with it. Returns
    /// one entry per item: its result, or `None` when it was not tried (the engine stopped
    /// at an earlier failure, see [`ferrocast_engine::Broker::publish_many`]). An item that
    /// cannot be prepared (no data, unknown namespace) fails alone and is not sent; `Err`
    /// is a failure of the whole engine call.
    pub async fn publish_many(
        &self,
        channel: &str,
        items: Vec<(PublishParams, tracing::Span)>,
    ) -> Result<Vec<Option<Result<StreamPosition, ProtocolError>>>, ProtocolError> {
        let mut out: Vec<Option<Result<StreamPosition, ProtocolError>>> =
            Vec::with_capacity(items.len());
        let mut sent = Vec::with_capacity(items.len());
        let mut batch = Vec::with_capacity(items.len());
        let mut spans = Vec::with_capacity(items.len());
        for (i, (params, parent)) in items.into_iter().enumerate() {
            match self.prepare_publication(channel, params) {
                Ok((publication, mut opts)) => {
                    let span = parent.in_scope(|| telemetry::publish_span(channel));
                    opts.trace = span.in_scope(telemetry::current_traceparent);
                    batch.push((publication, opts));
                    // Both spans end when the engine call did.
                    spans.push((span, parent));
                    sent.push(i);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        if batch.is_empty() {
            return Ok(out);
        }
        let started = Instant::now();
        let res = self.broker.publish_many(channel, batch).await;
        let took = started.elapsed();
        drop(spans);
        for (i, r) in sent.into_iter().zip(res.map_err(engine_error)?) {
            m::publish_took(took);
            out[i] = Some(r.map_err(engine_error));
        }
        Ok(out)
    }

    /// The publication and engine options of a publish into `channel`.
    fn prepare_publication(
        &self,
        channel: &str,
        params: PublishParams,
    ) -> Result<(Publication, PublishOptions), ProtocolError> {
        let options = self.concrete_options(channel)?;
        let Some(data) = params.data else {
            return Err(ProtocolError::with_message(
                ErrorCode::BadRequest,
                "data required",
            ));
        };
        let mut opts = PublishOptions {
            idempotency_key: params.idempotency_key,
            // Also to the wildcard subscribers of the namespace, wherever they are.
            feed: options
                .allow_wildcard_subscriptions
                .then(|| wildcards::namespace_of(channel).to_string()),
            ..Default::default()
        };
        if options.history_enabled() && !params.skip_history {
            opts.history_size = options.history_size;
            opts.history_ttl = options.history_ttl;
        }
        let publication = Publication {
            data,
            info: params.info,
            offset: 0,
            tags: params.tags,
            time: 0,
            channel: None,
        };
        Ok((publication, opts))
    }

    /// Leaves the cluster on the way out: stops announcing this node and tells the others
    /// to forget it now (they would after `engine.redis.node_info_ttl` otherwise).
    pub async fn leave(&self) {
        self.announcing.cancel();
        let left = ControlMessage::NodeLeft {
            uid: self.identity.id.clone(),
        };
        if let Err(e) = self.controller.publish_control(&left).await {
            tracing::warn!(error = %e, "could not tell the cluster this node leaves");
        }
    }

    /// Starts draining: readiness turns false and every connection is closed with 3001
    /// (shutdown) at a random moment within `window`, so clients do not all reconnect at once.
    /// Returns when every connection was asked to close.
    pub async fn drain(&self, window: Duration) {
        self.draining.store(true, Ordering::Release);
        let clients = self.hub.all_clients();
        tracing::info!(connections = clients.len(), window = ?window, "draining");
        let mut delays: Vec<(Duration, _)> = clients
            .into_iter()
            .map(|c| {
                let ms = window.as_millis() as u64;
                let d = if ms == 0 { 0 } else { fastrand::u64(0..ms) };
                (Duration::from_millis(d), c)
            })
            .collect();
        delays.sort_by_key(|(d, _)| *d);
        let start = tokio::time::Instant::now();
        for (delay, client) in delays {
            tokio::time::sleep_until(start + delay).await;
            client.outbox.close(Disconnect::SHUTDOWN);
        }
    }
}
