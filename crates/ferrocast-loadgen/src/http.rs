//! `--publish http`: `POST /api/publish` over one keep-alive HTTP/1.1 connection, with
//! pipelining (up to `--http-inflight` requests outstanding). Requests on one connection
//! are handled in order by the server, so per-channel order is kept.

use crate::pipelined::{Pipelined, Wire};
use crate::scan::find;

/// `POST <path>` with `X-API-Key`, one request per publish.
pub struct HttpWire {
    /// `Host` header value (host:port).
    pub host: String,
    /// Request path of the publish endpoint.
    pub path: String,
    /// `X-API-Key` header value.
    pub api_key: String,
}

/// `--publish http`: pipelined `POST` requests.
pub type HttpPublisher = Pipelined<HttpWire>;

impl Wire for HttpWire {
    const CLOSED: &'static str = "api_connection_closed";

    fn encode(&self, out: &mut Vec<u8>, body: &[u8]) {
        use std::io::Write;
        let _ = write!(
            out,
            "POST {} HTTP/1.1\r\nHost: {}\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.path,
            self.host,
            self.api_key,
            body.len()
        );
        out.extend_from_slice(body);
    }

    fn parse(buf: &[u8]) -> anyhow::Result<Option<(Option<String>, usize)>> {
        Ok(parse_response(buf)?.map(|(status, body_ok, used)| {
            let refused = if status != 200 {
                Some(format!("api_http_{status}"))
            } else if !body_ok {
                Some("api_error".to_string())
            } else {
                None
            };
            (refused, used)
        }))
    }
}

/// One complete response at the start of `buf`: (status, body is a result, bytes used).
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, bool, usize)>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            anyhow::bail!("API response head too large");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
    let mut len = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                anyhow::bail!("chunked API responses are not supported");
            }
        }
    }
    let len = len.ok_or_else(|| anyhow::anyhow!("API response without content-length"))?;
    let total = head_end + 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[head_end + 4..total];
    let ok = find(body, b"\"error\"").is_none();
    Ok(Some((status, ok, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{\"result\":1}HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
        let (s, ok, used) = parse_response(r).unwrap().unwrap();
        assert_eq!((s, ok), (200, true));
        let (s, ok, used2) = parse_response(&r[used..]).unwrap().unwrap();
        assert_eq!((s, ok, used + used2), (401, true, r.len()));
    }

    #[test]
    fn error_bodies() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 28\r\n\r\n{\"error\":{\"code\":102,\"m\":1}}";
        let (s, ok, used) = parse_response(r).unwrap().unwrap();
        assert_eq!((s, ok, used), (200, false, r.len()));
        assert!(parse_response(&r[..r.len() - 1]).unwrap().is_none());
    }
}
