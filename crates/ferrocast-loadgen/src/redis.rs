//! `--publish redis`: `XADD <stream> * method publish payload <JSON>` over one Redis
//! connection, pipelined (up to `--http-inflight` commands outstanding), speaking RESP
//! directly. The payload is the same JSON body as `POST /api/publish`; the broker's
//! command stream consumer applies entries in stream order, so per-channel order is kept.
//! A reply only says the entry was appended: what the broker then refuses is counted as
//! lost by the receivers.

use crate::pipelined::{Pipelined, Wire};
use crate::scan::find;

/// `XADD <key> * method publish payload <body>`, one command per publish.
pub struct RespWire {
    /// The command stream key.
    pub key: String,
}

/// `--publish redis`: pipelined `XADD` commands.
pub type RedisPublisher = Pipelined<RespWire>;

fn bulk(out: &mut Vec<u8>, arg: &[u8]) {
    use std::io::Write;
    let _ = write!(out, "${}\r\n", arg.len());
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
}

impl Wire for RespWire {
    const CLOSED: &'static str = "redis_connection_closed";

    fn encode(&self, out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(b"*7\r\n");
        for arg in [
            &b"XADD"[..],
            self.key.as_bytes(),
            b"*",
            b"method",
            b"publish",
            b"payload",
            body,
        ] {
            bulk(out, arg);
        }
    }

    fn parse(buf: &[u8]) -> anyhow::Result<Option<(Option<String>, usize)>> {
        Ok(parse_reply(buf)?.map(|(ok, used)| ((!ok).then(|| "xadd_error".to_string()), used)))
    }
}

/// One complete XADD reply at the start of `buf`: (it is an entry id, bytes used).
fn parse_reply(buf: &[u8]) -> anyhow::Result<Option<(bool, usize)>> {
    let Some(line_end) = find(buf, b"\r\n") else {
        if buf.len() > 64 * 1024 {
            anyhow::bail!("Redis reply line too long");
        }
        return Ok(None);
    };
    match buf.first() {
        Some(b'$') => {
            let len: i64 = std::str::from_utf8(&buf[1..line_end])?.parse()?;
            if len < 0 {
                return Ok(Some((false, line_end + 2)));
            }
            let total = line_end + 2 + len as usize + 2;
            Ok((buf.len() >= total).then_some((true, total)))
        }
        Some(b'-') | Some(b':') | Some(b'+') => Ok(Some((buf[0] == b'+', line_end + 2))),
        other => anyhow::bail!("unexpected Redis reply {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_replies() {
        let r = b"$15\r\n1700000000000-0\r\n-ERR wrong\r\n$15\r\n17000000";
        let (ok, used) = parse_reply(r).unwrap().unwrap();
        assert!(ok);
        let (ok, used2) = parse_reply(&r[used..]).unwrap().unwrap();
        assert!(!ok);
        assert!(parse_reply(&r[used + used2..]).unwrap().is_none());
    }
}
