//! Calls the application backend's proxy hooks — `connect`, `refresh`, `subscribe`,
//! `publish`, `sub_refresh`, `rpc`, and subscription streams — as Centrifugo v6 does: over
//! HTTP, a JSON `POST` to the hook's endpoint answered with `{"result": ...}`,
//! `{"error": ...}` or `{"disconnect": ...}`; over gRPC (`grpc://` endpoints), the
//! `CentrifugoProxy` service with the same messages.
//!
//! A [`Proxy`] is one configured backend endpoint. It knows nothing of sessions: the node
//! builds the request ([`messages`]) and decides what the reply means for its client.

pub mod grpc;
pub mod http;
pub mod messages;

use messages::*;
use serde::Serialize;
use std::time::Duration;

/// Why a hook call gave no answer. The node answers its client with error 100 (internal,
/// temporary), unless a status transform maps an HTTP status to another outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No complete answer within the timeout (waiting for a free call slot included).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The backend could not be reached or the connection broke.
    #[error("transport: {0}")]
    Transport(String),
    /// The backend answered with another HTTP status than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The answer was larger than allowed.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The answer is not a valid hook response.
    #[error(transparent)]
    BadResponse(#[from] BadResponse),
}

/// What an HTTP status turns into instead of error 100 (`status_to_code_transforms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTransform {
    /// The HTTP status.
    pub status: u16,
    /// The outcome for the client.
    pub to: Transformed,
}

/// The outcome of a [`StatusTransform`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// An error reply.
    Error(ErrorReply),
    /// A disconnect.
    Disconnect(DisconnectReply),
}

/// How to reach one backend endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `http://host:port/path`.
    pub endpoint: String,
    /// Time for a whole call.
    pub timeout: Duration,
    /// Headers sent with every HTTP call (request headers given per call win).
    pub static_headers: Vec<(String, String)>,
    /// Metadata sent with every gRPC call (with the per-call credentials, if any).
    pub static_metadata: Vec<(String, String)>,
    /// HTTP statuses with another outcome than error 100.
    pub status_transforms: Vec<StatusTransform>,
    /// Payloads as base64 (`b64data`) instead of embedded JSON.
    pub binary_encoding: bool,
    /// Calls in flight at most; more wait for a slot (within the timeout).
    pub max_in_flight: usize,
    /// Largest answer accepted, in bytes.
    pub max_response_size: usize,
}

/// How a proxy reaches its backend.
enum Transport {
    Http(Box<http::HttpCaller>),
    Grpc(Box<grpc::GrpcCaller>),
}

/// One backend endpoint.
pub struct Proxy {
    transport: Transport,
    transforms: Vec<StatusTransform>,
    binary: bool,
}

/// Runs a hook over the proxy's transport: JSON over HTTP, or the gRPC method.
macro_rules! hook {
    ($self:ident, $req:ident, $headers:ident, $method:ident) => {{
        $req.binary = $self.binary;
        match &$self.transport {
            Transport::Http(_) => $self.call(&$req, $headers).await,
            Transport::Grpc(g) => g.$method($req, $headers).await,
        }
    }};
}

impl Proxy {
    /// A proxy calling `settings.endpoint` (`http://` or `grpc://`); the error says what
    /// is wrong with the settings.
    pub fn new(settings: &ProxySettings) -> Result<Proxy, String> {
        let transport = if settings.endpoint.starts_with("grpc://") {
            Transport::Grpc(Box::new(grpc::GrpcCaller::new(
                &settings.endpoint,
                settings.timeout,
                &settings.static_metadata,
                settings.max_in_flight,
            )?))
        } else {
            Transport::Http(Box::new(http::HttpCaller::new(
                &settings.endpoint,
                settings.timeout,
                &settings.static_headers,
                settings.max_in_flight,
                settings.max_response_size,
            )?))
        };
        Ok(Proxy {
            transport,
            transforms: settings.status_transforms.clone(),
            binary: settings.binary_encoding,
        })
    }

    /// Whether payloads go as base64.
    pub fn binary_encoding(&self) -> bool {
        self.binary
    }

    /// Whether the endpoint is gRPC (only gRPC endpoints serve subscription streams).
    pub fn is_grpc(&self) -> bool {
        matches!(self.transport, Transport::Grpc(_))
    }

    async fn call<Req: Serialize, Res: FromResponse>(
        &self,
        req: &Req,
        headers: &[(String, String)],
    ) -> Result<Reply<Res>, CallError> {
        let Transport::Http(caller) = &self.transport else {
            return Err(CallError::Transport("not an HTTP proxy".into()));
        };
        let body = serde_json::to_vec(req).map_err(|e| CallError::Transport(e.to_string()))?;
        match caller.post(body, headers).await {
            Ok(answer) => Ok(parse_reply(&answer)?),
            Err(CallError::Status(status)) => {
                match self.transforms.iter().find(|t| t.status == status) {
                    Some(t) => Ok(match &t.to {
                        Transformed::Error(e) => Reply::Error(e.clone()),
                        Transformed::Disconnect(d) => Reply::Disconnect(d.clone()),
                    }),
                    None => Err(CallError::Status(status)),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The `connect` hook.
    pub async fn connect(
        &self,
        mut req: ConnectRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<ConnectResult>, CallError> {
        hook!(self, req, headers, connect)
    }

    /// The `refresh` hook.
    pub async fn refresh(
        &self,
        mut req: RefreshRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<RefreshResult>, CallError> {
        hook!(self, req, headers, refresh)
    }

    /// The `subscribe` hook.
    pub async fn subscribe(
        &self,
        mut req: SubscribeRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<SubscribeResult>, CallError> {
        hook!(self, req, headers, subscribe)
    }

    /// The `publish` hook.
    pub async fn publish(
        &self,
        mut req: PublishRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<PublishResult>, CallError> {
        hook!(self, req, headers, publish)
    }

    /// The `rpc` hook.
    pub async fn rpc(
        &self,
        mut req: RpcRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<RpcResult>, CallError> {
        hook!(self, req, headers, rpc)
    }

    /// The `sub_refresh` hook.
    pub async fn sub_refresh(
        &self,
        mut req: SubRefreshRequest,
        headers: &[(String, String)],
    ) -> Result<Reply<SubRefreshResult>, CallError> {
        hook!(self, req, headers, sub_refresh)
    }

    /// Opens a subscription stream for one client (gRPC endpoints only): the backend's
    /// answer to the subscription and, when it allows it, the stream of publications
    /// (`bidirectional`: the client's publications go back into it).
    pub async fn subscribe_stream(
        &self,
        mut req: SubscribeRequest,
        headers: &[(String, String)],
        bidirectional: bool,
    ) -> Result<(Reply<SubscribeResult>, Option<grpc::SubscriptionStream>), CallError> {
        req.binary = self.binary;
        match &self.transport {
            Transport::Grpc(g) => g.subscribe_stream(req, headers, bidirectional).await,
            Transport::Http(_) => Err(CallError::Transport(
                "subscription streams need a grpc:// endpoint".into(),
            )),
        }
    }
}
