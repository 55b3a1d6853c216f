//! HTTP routes: the WebSocket endpoint, the server API, health, readiness and metrics.

use crate::config::HttpApiConfig;
use crate::observability::Metrics;
use crate::websocket;
use bytes::Bytes;
use ferrocast_node::Node;
use ferrocast_node::api::{ApiMethod, ApiResult};
use ferrocast_protocol::{ErrorCode, ProtocolError};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Response body type.
pub type Body = Full<Bytes>;

/// What every request handler shares.
pub struct AppState {
    /// The node.
    pub node: Arc<Node>,
    /// API settings.
    pub api: HttpApiConfig,
    /// Metrics renderer.
    pub metrics: Metrics,
    /// Tracks upgraded connections so shutdown can wait for them.
    pub sockets: TaskTracker,
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    respond(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn api_error(status: StatusCode, e: ProtocolError) -> Response<Body> {
    json(status, &serde_json::json!({ "error": e }))
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything on one port.
    All,
    /// WebSocket and probes only (the API and metrics are on the internal port).
    Public,
    /// Server API, metrics and probes.
    Internal,
}

impl Surface {
    fn serves_clients(self) -> bool {
        self != Surface::Internal
    }

    fn serves_admin(self) -> bool {
        self != Surface::Public
    }
}

/// Routes one request.
pub async fn handle(
    state: Arc<AppState>,
    surface: Surface,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/connection/websocket") if surface.serves_clients() => upgrade(state, req),
        (&Method::GET, "/health") => respond(StatusCode::OK, "application/json", "{}"),
        (&Method::GET, "/ready") => {
            if state.node.is_ready() {
                respond(StatusCode::OK, "application/json", "{\"ready\":true}")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    "{\"ready\":false}",
                )
            }
        }
        (&Method::GET, "/metrics") if surface.serves_admin() => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            state.metrics.render(&state.node),
        ),
        (&Method::POST, p) if surface.serves_admin() && p.starts_with("/api/") => {
            let method = p["/api/".len()..].to_string();
            api(state, method, req).await
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}

fn upgrade(state: Arc<AppState>, mut req: Request<Incoming>) -> Response<Body> {
    if state.node.is_draining() {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down",
        );
    }
    let accept = match websocket::validate_upgrade(
        req.headers(),
        &state.node.client.allowed_origins,
    ) {
        Ok(a) => a,
        Err(websocket::UpgradeError::Forbidden) => {
            tracing::info!(origin = ?req.headers().get(header::ORIGIN), "websocket origin refused");
            return respond(StatusCode::FORBIDDEN, "text/plain", "origin not allowed");
        }
        Err(e) => return respond(StatusCode::BAD_REQUEST, "text/plain", e.to_string()),
    };
    let (protocol, subprotocol) = websocket::select_protocol(req.headers(), req.uri().query());
    let headers = websocket::proxied_headers(req.headers(), state.node.proxies.header_names());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let node = state.node.clone();
    let tracker = state.sockets.clone();
    state.sockets.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                websocket::serve_socket(node, upgraded, tracker, protocol, headers).await
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    websocket::switching_protocols(accept, subprotocol)
}

/// Constant-time comparison of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

fn api_authorized(api: &HttpApiConfig, req: &Request<Incoming>) -> bool {
    if api.insecure {
        return true;
    }
    if api.key.is_empty() {
        return false;
    }
    let h = req.headers();
    let presented = h.get("x-api-key").map(|v| v.as_bytes()).or_else(|| {
        h.get(header::AUTHORIZATION).and_then(|v| {
            let v = v.as_bytes();
            (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"apikey ")).then(|| &v[7..])
        })
    });
    presented.is_some_and(|p| constant_time_eq(p, api.key.as_bytes()))
}

async fn api(state: Arc<AppState>, method: String, req: Request<Incoming>) -> Response<Body> {
    if !api_authorized(&state.api, &req) {
        ferrocast_node::metrics::api_call("unauthorized", "401");
        return api_error(
            StatusCode::UNAUTHORIZED,
            ProtocolError::new(ErrorCode::Unauthorized),
        );
    }
    let Some(method) = ApiMethod::from_name(&method) else {
        ferrocast_node::metrics::api_call("unknown", "104");
        return api_error(
            StatusCode::NOT_FOUND,
            ProtocolError::new(ErrorCode::MethodNotFound),
        );
    };
    let span = ferrocast_node::telemetry::api_span(
        method.name(),
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let body = match Limited::new(req.into_body(), state.api.max_body_size)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return api_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ProtocolError::with_message(ErrorCode::BadRequest, "request body too large"),
                );
            }
            return api_error(
                StatusCode::BAD_REQUEST,
                ProtocolError::new(ErrorCode::BadRequest),
            );
        }
    };
    match ferrocast_node::api::call(&state.node, method, &body)
        .instrument(span)
        .await
    {
        // Centrifugo answers a batch with its BatchResponse itself (`{"replies": [...]}`),
        // every other method with `{"result": ...}`.
        Ok(result @ ApiResult::Batch(_)) => json(StatusCode::OK, &serde_json::json!(result)),
        Ok(result) => json(StatusCode::OK, &serde_json::json!({ "result": result })),
        Err(e) => api_error(StatusCode::OK, e),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
