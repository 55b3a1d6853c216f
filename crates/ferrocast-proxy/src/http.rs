//! The HTTP transport of the proxy hooks: `POST <endpoint>` with a JSON body, over a pool
//! of HTTP/1.1 keep-alive connections, with a bound on the calls in flight, a timeout
//! covering the wait for a slot, the request and the whole response, and a cap on the
//! response size. Only HTTP 200 counts as an answer.

use crate::CallError;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Idle connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One backend endpoint reached over HTTP.
pub struct HttpCaller {
    endpoint: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    static_headers: Vec<(HeaderName, HeaderValue)>,
    slots: Semaphore,
    max_response_size: usize,
}

impl HttpCaller {
    /// A caller of `endpoint` (`http://...`).
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        static_headers: &[(String, String)],
        max_in_flight: usize,
        max_response_size: usize,
    ) -> Result<Self, String> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "endpoint {endpoint:?}: https is not supported; use http:// inside the cluster"
                ));
            }
            _ => return Err(format!("endpoint {endpoint:?} must start with http://")),
        }
        if uri.host().is_none() {
            return Err(format!("endpoint {endpoint:?} has no host"));
        }
        let mut headers = Vec::with_capacity(static_headers.len());
        for (k, v) in static_headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| format!("static header name {k:?} is not valid"))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| format!("static header {k:?} has an invalid value"))?;
            headers.push((name, value));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            // As many idle connections as calls may be in flight: a burst that used them
            // all finds them again instead of opening new ones (and closing the extra).
            .pool_max_idle_per_host(max_in_flight.max(1))
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        Ok(HttpCaller {
            endpoint: uri,
            client,
            timeout,
            static_headers: headers,
            slots: Semaphore::new(max_in_flight.max(1)),
            max_response_size,
        })
    }

    /// Posts `body` with the static headers and then `headers` (which win), and returns
    /// the body of a 200 answer.
    pub async fn post(
        &self,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<Bytes, CallError> {
        match tokio::time::timeout(self.timeout, self.post_now(body, headers)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    async fn post_now(
        &self,
        body: Vec<u8>,
        headers: &[(String, String)],
    ) -> Result<Bytes, CallError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| CallError::Transport("proxy closed".into()))?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let h = req.headers_mut();
        for (k, v) in &self.static_headers {
            h.insert(k.clone(), v.clone());
        }
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                h.insert(k, v);
            }
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = resp.status();
        if status != http::StatusCode::OK {
            return Err(CallError::Status(status.as_u16()));
        }
        match Limited::new(resp.into_body(), self.max_response_size)
            .collect()
            .await
        {
            Ok(b) => Ok(b.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(CallError::TooLarge(self.max_response_size))
            }
            Err(e) => Err(CallError::Transport(e.to_string())),
        }
    }
}
