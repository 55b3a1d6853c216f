//! The gRPC transport of the proxy hooks: Centrifugo's `CentrifugoProxy` service
//! (`proto/proxy.proto`), one lazily connected HTTP/2 channel per endpoint, a bound on the
//! calls in flight, a deadline per call, metadata from the allow-listed client headers,
//! the static metadata and the per-call credentials. Also the subscription streams
//! (`SubscribeUnidirectional`, `SubscribeBidirectional`).

use crate::CallError;
use crate::messages::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ferrocast_protocol::Payload;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

/// The generated types of `proto/proxy.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/centrifugal.centrifugo.proxy.rs"));
}

use pb::centrifugo_proxy_client::CentrifugoProxyClient;

/// Messages a bidirectional stream takes at most before the client's publish waits.
const STREAM_QUEUE: usize = 64;

/// One backend endpoint reached over gRPC.
pub struct GrpcCaller {
    endpoint: Endpoint,
    /// Made on first use: a channel needs the runtime, the configuration check has none.
    client: OnceLock<CentrifugoProxyClient<Channel>>,
    timeout: Duration,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    slots: Semaphore,
}

fn bytes(p: &Option<Payload>) -> bytes::Bytes {
    p.as_ref().map(|p| p.as_bytes().clone()).unwrap_or_default()
}

/// A request payload as raw bytes (`data`), unless the proxy has `binary_encoding`.
fn data(p: &Option<Payload>, binary: bool) -> bytes::Bytes {
    if binary {
        bytes::Bytes::new()
    } else {
        bytes(p)
    }
}

/// A request payload as base64 (`b64data`) when the proxy has `binary_encoding`.
fn b64data(p: &Option<Payload>, binary: bool) -> String {
    match p {
        Some(p) if binary => B64.encode(p.as_bytes()),
        _ => String::new(),
    }
}

fn encoding(binary: bool) -> String {
    if binary { "binary" } else { "json" }.into()
}

/// A payload field of a result: `b64` wins when set (as in Centrifugo).
fn payload(raw: bytes::Bytes, b64: String, what: &str) -> Result<Option<Payload>, BadResponse> {
    if !b64.is_empty() {
        return B64
            .decode(b64)
            .map(|v| Some(Payload::from_bytes(v)))
            .map_err(|_| BadResponse(format!("b64{what} is not base64")));
    }
    Ok((!raw.is_empty()).then(|| Payload::from_bytes(raw)))
}

fn overrides(o: Option<pb::SubscribeOptionOverride>) -> SubscribeOverride {
    let o = o.unwrap_or_default();
    let b = |v: Option<pb::BoolValue>| v.map(|v| BoolValue { value: v.value });
    SubscribeOverride {
        presence: b(o.presence),
        join_leave: b(o.join_leave),
        force_recovery: b(o.force_recovery),
        force_positioning: b(o.force_positioning),
        force_push_join_leave: b(o.force_push_join_leave),
    }
}

/// `{result, error, disconnect}` of every response, as a [`Reply`].
fn reply<R, T>(
    result: Option<R>,
    error: Option<pb::Error>,
    disconnect: Option<pb::Disconnect>,
    convert: impl FnOnce(R) -> Result<T, BadResponse>,
) -> Result<Reply<T>, CallError> {
    if let Some(d) = disconnect {
        return Ok(Reply::Disconnect(DisconnectReply {
            code: d.code,
            reason: d.reason,
        }));
    }
    if let Some(e) = error {
        return Ok(Reply::Error(ErrorReply {
            code: e.code,
            message: e.message,
            temporary: e.temporary,
        }));
    }
    match result {
        Some(r) => Ok(Reply::Result(convert(r)?)),
        None => Ok(Reply::Empty),
    }
}

fn status_error(s: tonic::Status, timeout: Duration) -> CallError {
    match s.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => CallError::Timeout(timeout),
        code => CallError::Transport(format!("gRPC status {code:?}: {}", s.message())),
    }
}

/// A gRPC request message of a hook made after the connection exists: the caller's
/// fields (`client`, `transport`, `protocol`, `encoding`, `user`, `meta`) and the given ones.
macro_rules! caller_request {
    ($ty:ident, $r:expr, { $($field:ident: $value:expr),* $(,)? }) => {
        pb::$ty {
            client: $r.caller.client.clone(),
            transport: $r.caller.transport.clone(),
            protocol: $r.caller.protocol.clone(),
            encoding: encoding($r.binary),
            user: $r.caller.user.clone(),
            meta: bytes(&$r.caller.meta),
            $($field: $value),*
        }
    };
}

fn subscribe_request(r: &SubscribeRequest) -> pb::SubscribeRequest {
    caller_request!(SubscribeRequest, r, {
        channel: r.channel.clone(),
        token: r.token.clone(),
        data: data(&r.data, r.binary),
        b64data: b64data(&r.data, r.binary),
    })
}

fn subscribe_result(r: pb::SubscribeResult) -> Result<SubscribeResult, BadResponse> {
    Ok(SubscribeResult {
        expire_at: r.expire_at,
        info: payload(r.info, r.b64info, "info")?,
        data: payload(r.data, r.b64data, "data")?,
        r#override: overrides(r.r#override),
    })
}

/// A publication the backend streams to one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPublication {
    /// Payload.
    pub data: Payload,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// An open subscription stream: the backend's publications, and (bidirectional) a way to
/// send the client's publications into it. Dropping it cancels the backend call.
pub struct SubscriptionStream {
    incoming: tonic::Streaming<pb::StreamSubscribeResponse>,
    outgoing: Option<mpsc::Sender<pb::StreamSubscribeRequest>>,
}

impl std::fmt::Debug for SubscriptionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionStream")
            .field("bidirectional", &self.outgoing.is_some())
            .finish_non_exhaustive()
    }
}

/// How a subscription stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The backend closed it.
    Closed,
    /// It failed (backend error, connection lost).
    Failed(String),
}

impl SubscriptionStream {
    /// The next publication, or how the stream ended.
    pub async fn next(&mut self) -> Result<StreamPublication, StreamEnd> {
        loop {
            match self.incoming.message().await {
                Ok(Some(m)) => {
                    if let Some(p) = m.publication {
                        return Ok(StreamPublication {
                            data: Payload::from_bytes(p.data),
                            tags: p.tags,
                        });
                    }
                }
                Ok(None) => return Err(StreamEnd::Closed),
                Err(s) => {
                    return Err(StreamEnd::Failed(format!(
                        "{:?}: {}",
                        s.code(),
                        s.message()
                    )));
                }
            }
        }
    }

    /// A sender of the client's publications into a bidirectional stream.
    pub fn publisher(&self) -> Option<StreamPublisher> {
        self.outgoing.clone().map(StreamPublisher)
    }
}

/// Sends a client's publications into a bidirectional subscription stream.
#[derive(Clone)]
pub struct StreamPublisher(mpsc::Sender<pb::StreamSubscribeRequest>);

impl StreamPublisher {
    /// Queues one publication; false when the stream is gone or not keeping up.
    pub fn publish(&self, data: &Payload) -> bool {
        let msg = pb::StreamSubscribeRequest {
            subscribe_request: None,
            publication: Some(pb::Publication {
                data: data.as_bytes().clone(),
                tags: BTreeMap::new(),
            }),
        };
        self.0.try_send(msg).is_ok()
    }
}

impl GrpcCaller {
    /// A caller of `endpoint` (`grpc://host:port`), connecting on first use.
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        static_metadata: &[(String, String)],
        max_in_flight: usize,
    ) -> Result<Self, String> {
        let rest = endpoint
            .strip_prefix("grpc://")
            .ok_or_else(|| format!("endpoint {endpoint:?} must start with grpc://"))?;
        let endpoint = Endpoint::from_shared(format!("http://{rest}"))
            .map_err(|e| format!("endpoint {endpoint:?}: {e}"))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let mut metadata = Vec::with_capacity(static_metadata.len());
        for (k, v) in static_metadata {
            let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("metadata key {k:?} is not valid"))?;
            let value = AsciiMetadataValue::try_from(v.as_str())
                .map_err(|_| format!("metadata {k:?} has an invalid value"))?;
            metadata.push((key, value));
        }
        Ok(GrpcCaller {
            endpoint,
            client: OnceLock::new(),
            timeout,
            metadata,
            slots: Semaphore::new(max_in_flight.max(1)),
        })
    }

    /// The client of the endpoint's channel (one HTTP/2 connection, shared by all calls).
    fn client(&self) -> CentrifugoProxyClient<Channel> {
        self.client
            .get_or_init(|| CentrifugoProxyClient::new(self.endpoint.connect_lazy()))
            .clone()
    }

    fn request<T>(&self, msg: T, headers: &[(String, String)]) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(self.timeout);
        let md = req.metadata_mut();
        for (k, v) in &self.metadata {
            md.insert(k.clone(), v.clone());
        }
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                AsciiMetadataValue::try_from(v.as_str()),
            ) {
                md.insert(k, v);
            }
        }
        req
    }

    /// Runs one unary call within the timeout (waiting for a slot included).
    async fn unary<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        F: FnOnce(CentrifugoProxyClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.timeout;
        let work = async {
            let _slot = self
                .slots
                .acquire()
                .await
                .map_err(|_| CallError::Transport("proxy closed".into()))?;
            call(self.client())
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| status_error(s, timeout))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// The `connect` hook.
    pub async fn connect(
        &self,
        r: ConnectRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<ConnectResult>, CallError> {
        let msg = pb::ConnectRequest {
            client: r.caller.client,
            transport: r.caller.transport,
            protocol: r.caller.protocol,
            encoding: encoding(r.binary),
            data: data(&r.data, r.binary),
            b64data: b64data(&r.data, r.binary),
            name: r.name,
            version: r.version,
            channels: r.channels,
        };
        let req = self.request(msg, headers);
        let resp = self
            .unary(|mut c| async move { c.connect(req).await })
            .await?;
        reply(resp.result, resp.error, resp.disconnect, |r| {
            let mut subs = BTreeMap::new();
            for (ch, o) in r.subs {
                subs.insert(
                    ch,
                    SubscribeOptions {
                        expire_at: o.expire_at,
                        info: payload(o.info, o.b64info, "info")?,
                        data: payload(o.data, o.b64data, "data")?,
                        r#override: overrides(o.r#override),
                    },
                );
            }
            Ok(ConnectResult {
                user: r.user,
                expire_at: r.expire_at,
                info: payload(r.info, r.b64info, "info")?,
                data: payload(r.data, r.b64data, "data")?,
                channels: r.channels,
                subs,
                meta: payload(r.meta, String::new(), "meta")?,
            })
        })
    }

    /// The `refresh` hook.
    pub async fn refresh(
        &self,
        r: RefreshRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<RefreshResult>, CallError> {
        let msg = caller_request!(RefreshRequest, r, {});
        let req = self.request(msg, headers);
        let resp = self
            .unary(|mut c| async move { c.refresh(req).await })
            .await?;
        reply(resp.result, resp.error, resp.disconnect, |r| {
            Ok(RefreshResult {
                expired: r.expired,
                expire_at: r.expire_at,
                info: payload(r.info, r.b64info, "info")?,
                meta: payload(r.meta, String::new(), "meta")?,
            })
        })
    }

    /// The `subscribe` hook.
    pub async fn subscribe(
        &self,
        r: SubscribeRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<SubscribeResult>, CallError> {
        let req = self.request(subscribe_request(&r), headers);
        let resp = self
            .unary(|mut c| async move { c.subscribe(req).await })
            .await?;
        reply(resp.result, resp.error, resp.disconnect, subscribe_result)
    }

    /// The `publish` hook.
    pub async fn publish(
        &self,
        r: PublishRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<PublishResult>, CallError> {
        let msg = caller_request!(PublishRequest, r, {
            channel: r.channel.clone(),
            data: data(&r.data, r.binary),
            b64data: b64data(&r.data, r.binary),
        });
        let req = self.request(msg, headers);
        let resp = self
            .unary(|mut c| async move { c.publish(req).await })
            .await?;
        reply(resp.result, resp.error, resp.disconnect, |r| {
            Ok(PublishResult {
                data: payload(r.data, r.b64data, "data")?,
                skip_history: r.skip_history,
                tags: r.tags,
                idempotency_key: r.idempotency_key,
            })
        })
    }

    /// The `rpc` hook.
    pub async fn rpc(
        &self,
        r: RpcRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<RpcResult>, CallError> {
        let msg = caller_request!(RpcRequest, r, {
            method: r.method.clone(),
            data: data(&r.data, r.binary),
            b64data: b64data(&r.data, r.binary),
        });
        let req = self.request(msg, headers);
        let resp = self.unary(|mut c| async move { c.rpc(req).await }).await?;
        reply(resp.result, resp.error, resp.disconnect, |r| {
            Ok(RpcResult {
                data: payload(r.data, r.b64data, "data")?,
            })
        })
    }

    /// The `sub_refresh` hook.
    pub async fn sub_refresh(
        &self,
        r: SubRefreshRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<SubRefreshResult>, CallError> {
        let msg = caller_request!(SubRefreshRequest, r, {
            channel: r.channel.clone(),
        });
        let req = self.request(msg, headers);
        let resp = self
            .unary(|mut c| async move { c.sub_refresh(req).await })
            .await?;
        reply(resp.result, resp.error, resp.disconnect, |r| {
            Ok(SubRefreshResult {
                expired: r.expired,
                expire_at: r.expire_at,
                info: payload(r.info, r.b64info, "info")?,
            })
        })
    }

    /// Opens a subscription stream: the first message is the backend's answer to the
    /// subscription, the stream then carries its publications until either side ends it.
    /// `bidirectional` also opens the way back for the client's publications.
    pub async fn subscribe_stream(
        &self,
        r: SubscribeRequest,
        headers: &[(String, String)],
        bidirectional: bool,
    ) -> Result<(Reply<SubscribeResult>, Option<SubscriptionStream>), CallError> {
        let timeout = self.timeout;
        let first = subscribe_request(&r);
        let open = async {
            let mut client = self.client();
            if bidirectional {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let opening = pb::StreamSubscribeRequest {
                    subscribe_request: Some(first),
                    publication: None,
                };
                tx.try_send(opening)
                    .map_err(|_| CallError::Transport("stream queue".into()))?;
                let mut req =
                    self.request(tokio_stream::wrappers::ReceiverStream::new(rx), headers);
                // The stream outlives the call's deadline.
                let _ = req.metadata_mut().remove("grpc-timeout");
                let incoming = client
                    .subscribe_bidirectional(req)
                    .await
                    .map_err(|s| status_error(s, timeout))?
                    .into_inner();
                Ok::<_, CallError>((incoming, Some(tx)))
            } else {
                let mut req = self.request(first, headers);
                let _ = req.metadata_mut().remove("grpc-timeout");
                let incoming = client
                    .subscribe_unidirectional(req)
                    .await
                    .map_err(|s| status_error(s, timeout))?
                    .into_inner();
                Ok((incoming, None))
            }
        };
        let answer = async {
            let (mut incoming, outgoing) = open.await?;
            let first = incoming
                .message()
                .await
                .map_err(|s| status_error(s, timeout))?
                .and_then(|m| m.subscribe_response)
                .ok_or_else(|| {
                    BadResponse("the stream began without a subscribe response".into())
                })?;
            let reply = reply(
                first.result,
                first.error,
                first.disconnect,
                subscribe_result,
            )?;
            Ok::<_, CallError>((reply, incoming, outgoing))
        };
        let (reply, incoming, outgoing) = match tokio::time::timeout(timeout, answer).await {
            Ok(r) => r?,
            Err(_) => return Err(CallError::Timeout(timeout)),
        };
        let stream = matches!(reply, Reply::Result(_) | Reply::Empty)
            .then_some(SubscriptionStream { incoming, outgoing });
        Ok((reply, stream))
    }
}
