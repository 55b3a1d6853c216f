//! The gRPC server API: Centrifugo's `CentrifugoApi` service (`proto/api.proto`) on its own
//! port (`grpc_api.*`), for backends that call Centrifugo over gRPC. Every method runs
//! the same typed command as `POST /api/<method>` ([`ferrocast_node::api`]); only the
//! encoding differs. The API key goes in the `authorization` metadata as `apikey <key>`.
//! Errors are in the response's `error` field, as Centrifugo answers by default; with
//! `grpc_api.error_mode = "transport"` (or the metadata `x-centrifugo-error-mode:
//! transport` on a call) they are gRPC statuses instead.

mod convert;

use crate::config::GrpcApiConfig;
use crate::http::constant_time_eq;
use ferrocast_node::Node;
use ferrocast_node::api::{self, ApiCommand, ApiResult};
use ferrocast_protocol::ProtocolError;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The generated types and service of `proto/api.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/centrifugal.centrifugo.api.rs"));
}

use pb::centrifugo_api_server::{CentrifugoApi, CentrifugoApiServer};

/// The service: the node, and how errors are reported.
struct ApiService {
    node: Arc<Node>,
    transport_errors: bool,
}

/// Whether this call wants errors as gRPC statuses.
fn wants_transport_errors<T>(service: &ApiService, req: &Request<T>) -> bool {
    service.transport_errors
        || req
            .metadata()
            .get("x-centrifugo-error-mode")
            .is_some_and(|v| v.as_bytes() == b"transport")
}

/// The gRPC status Centrifugo gives an API error in transport error mode.
fn status_of(e: &ProtocolError) -> Status {
    let code = match e.code {
        100 => tonic::Code::Internal,
        102 | 104 => tonic::Code::NotFound,
        107 | 108 => tonic::Code::InvalidArgument,
        112 => tonic::Code::OutOfRange,
        113 => tonic::Code::AlreadyExists,
        _ => tonic::Code::Internal,
    };
    Status::new(code, e.message.to_string())
}

/// Declares each unary method: decode the request into its command, run it, encode the
/// result into the response (or its error).
macro_rules! methods {
    ($($method:ident($req:ident) -> $resp:ident: $decode:path, $result:path;)*) => {
        #[tonic::async_trait]
        impl CentrifugoApi for ApiService {
            $(
                async fn $method(
                    &self,
                    request: Request<pb::$req>,
                ) -> Result<Response<pb::$resp>, Status> {
                    let transport = wants_transport_errors(self, &request);
                    let command = $decode(request.into_inner());
                    let outcome = run(&self.node, command).await.and_then($result);
                    match outcome {
                        Ok(result) => Ok(Response::new(pb::$resp {
                            error: None,
                            result: Some(result),
                        })),
                        Err(e) if transport => Err(status_of(&e)),
                        Err(e) => Ok(Response::new(pb::$resp {
                            error: Some(convert::error(&e)),
                            result: None,
                        })),
                    }
                }
            )*

            async fn batch(
                &self,
                request: Request<pb::BatchRequest>,
            ) -> Result<Response<pb::BatchResponse>, Status> {
                let (command, methods) = convert::batch_command(request.into_inner());
                let replies = match run(&self.node, Ok(command)).await {
                    Ok(ApiResult::Batch(b)) => convert::batch_replies(b, &methods),
                    _ => Vec::new(),
                };
                Ok(Response::new(pb::BatchResponse { replies }))
            }
        }
    };
}

methods! {
    publish(PublishRequest) -> PublishResponse: convert::publish, convert::publish_result;
    broadcast(BroadcastRequest) -> BroadcastResponse: convert::broadcast, convert::broadcast_result;
    subscribe(SubscribeRequest) -> SubscribeResponse: convert::subscribe, convert::empty;
    unsubscribe(UnsubscribeRequest) -> UnsubscribeResponse: convert::unsubscribe, convert::empty;
    disconnect(DisconnectRequest) -> DisconnectResponse: convert::disconnect, convert::empty;
    presence(PresenceRequest) -> PresenceResponse: convert::presence, convert::presence_result;
    presence_stats(PresenceStatsRequest) -> PresenceStatsResponse: convert::presence_stats, convert::presence_stats_result;
    history(HistoryRequest) -> HistoryResponse: convert::history, convert::history_result;
    history_remove(HistoryRemoveRequest) -> HistoryRemoveResponse: convert::history_remove, convert::empty;
    info(InfoRequest) -> InfoResponse: convert::info, convert::info_result;
    refresh(RefreshRequest) -> RefreshResponse: convert::refresh, convert::empty;
    channels(ChannelsRequest) -> ChannelsResponse: convert::channels, convert::channels_result;
}

/// Runs a decoded command (or the error decoding it) and counts the call.
async fn run(
    node: &Node,
    command: Result<ApiCommand, (api::ApiMethod, ProtocolError)>,
) -> Result<ApiResult, ProtocolError> {
    let (method, res) = match command {
        Ok(cmd) => {
            let method = cmd.method();
            (method, api::execute(node, cmd).await)
        }
        Err((method, e)) => (method, Err(e)),
    };
    api::count_call(method, res.as_ref().map(|_| ()));
    res
}

/// Serves the gRPC API on `listener` until `stop` is cancelled.
pub async fn serve(
    node: Arc<Node>,
    cfg: GrpcApiConfig,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = ApiService {
        node,
        transport_errors: cfg.error_mode == "transport",
    };
    let expected = format!("apikey {}", cfg.key).into_bytes();
    let open = cfg.key.is_empty();
    let mut server = CentrifugoApiServer::new(service);
    if cfg.max_receive_message_size > 0 {
        server = server.max_decoding_message_size(cfg.max_receive_message_size);
    }
    let authorized =
        tonic::service::interceptor::InterceptedService::new(server, move |req: Request<()>| {
            if open {
                return Ok(req);
            }
            match req.metadata().get("authorization") {
                Some(v) if constant_time_eq(v.as_bytes(), &expected) => Ok(req),
                _ => Err(Status::unauthenticated("unauthenticated")),
            }
        });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    // One service, no router: paths of other methods or services answer UNIMPLEMENTED.
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .serve_with_incoming_shutdown(authorized, incoming, stop.cancelled_owned())
        .await
}
