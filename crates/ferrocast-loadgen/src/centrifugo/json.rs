//! The JSON encoding: text frames holding `\n`-separated JSON objects; ping and pong are
//! `{}`.

use super::{Codec, Item};
use crate::config::Creds;
use crate::scan::{build_payload, lines, now_us, parse_push};
use crate::subscriber::Frame;
use serde::Deserialize;
use std::io::Write;
use tokio_tungstenite::tungstenite::Message;

#[derive(Deserialize)]
struct ReplyMin {
    #[serde(default)]
    id: u64,
    #[serde(default)]
    error: Option<ErrMin>,
}

#[derive(Deserialize)]
struct ErrMin {
    code: u32,
}

/// Centrifugo client protocol v2, JSON.
pub struct JsonCodec;

impl Codec for JsonCodec {
    const BINARY: bool = false;
    const SUBPROTOCOL: Option<&'static str> = None;

    fn connect(out: &mut Vec<u8>, id: u32, name: &str, creds: &Creds) {
        let _ = write!(out, "{{\"id\":{id},\"connect\":{{");
        if !creds.token.is_empty() {
            out.extend_from_slice(b"\"token\":");
            let _ = serde_json::to_writer(&mut *out, &creds.token);
            out.push(b',');
        }
        if let Some(d) = &creds.data {
            // JSON text, checked when the options were read.
            out.extend_from_slice(b"\"data\":");
            out.extend_from_slice(d.as_bytes());
            out.push(b',');
        }
        out.extend_from_slice(b"\"name\":");
        let _ = serde_json::to_writer(&mut *out, name);
        out.extend_from_slice(b"}}");
    }

    fn subscribe(out: &mut Vec<u8>, id: u32, channel: &str) {
        let _ = write!(out, "{{\"id\":{id},\"subscribe\":{{\"channel\":");
        let _ = serde_json::to_writer(&mut *out, channel);
        out.extend_from_slice(b"}}");
    }

    fn publish(
        out: &mut Vec<u8>,
        id: u32,
        channel: &str,
        seq: u64,
        payload_size: usize,
        _scratch: &mut Vec<u8>,
    ) {
        let _ = write!(
            out,
            "{{\"id\":{id},\"publish\":{{\"channel\":\"{channel}\",\"data\":"
        );
        build_payload(out, seq, now_us(), payload_size);
        out.extend_from_slice(b"}}");
    }

    fn rpc(out: &mut Vec<u8>, id: u32, method: &str, data: &[u8]) {
        let _ = write!(out, "{{\"id\":{id},\"rpc\":{{\"method\":");
        let _ = serde_json::to_writer(&mut *out, method);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data);
        out.extend_from_slice(b"}}");
    }

    fn separate(out: &mut Vec<u8>) {
        out.push(b'\n');
    }

    fn pongs(out: &mut Vec<u8>, n: usize) {
        for i in 0..n {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(b"{}");
        }
    }

    fn message(frame: Vec<u8>) -> Result<Message, String> {
        String::from_utf8(frame)
            .map(Message::text)
            .map_err(|_| "frame_not_utf8".to_string())
    }

    fn data(m: &Message) -> Option<&[u8]> {
        match m {
            Message::Text(t) => Some(t.as_bytes()),
            _ => None,
        }
    }

    fn items(data: &[u8], mut f: impl FnMut(Item)) {
        for line in lines(data) {
            if line == b"{}" {
                f(Item::Ping);
                continue;
            }
            if line.is_empty() || line.starts_with(b"{\"push\"") {
                continue;
            }
            f(match serde_json::from_slice::<ReplyMin>(line) {
                Ok(r) => Item::Reply {
                    id: r.id,
                    error: r.error.map(|e| e.code),
                },
                Err(_) => Item::Bad,
            });
        }
    }

    #[inline]
    fn read(data: &[u8], frame: &mut Frame<'_>) {
        for line in lines(data) {
            if line == b"{}" {
                frame.ping();
            } else if line.starts_with(b"{\"push\"") {
                match parse_push(line) {
                    Some((channel, seq_ts)) => frame.publication(channel, seq_ts),
                    None => frame.unparsed(),
                }
            } else if !line.is_empty() {
                frame.error("unexpected_reply");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies() {
        let mut out = Vec::new();
        JsonCodec::connect(&mut out, 1, "ferrocast-loadgen", &Creds::default());
        JsonCodec::separate(&mut out);
        JsonCodec::subscribe(&mut out, 2, "bench:shared");
        assert_eq!(
            out,
            br#"{"id":1,"connect":{"name":"ferrocast-loadgen"}}
{"id":2,"subscribe":{"channel":"bench:shared"}}"#
        );
        out.clear();
        let creds = Creds {
            token: "t.k".into(),
            data: Some(r#"{"user":"u1"}"#.into()),
        };
        JsonCodec::connect(&mut out, 1, "n", &creds);
        assert_eq!(
            out,
            br#"{"id":1,"connect":{"token":"t.k","data":{"user":"u1"},"name":"n"}}"#
        );
        out.clear();
        JsonCodec::rpc(&mut out, 4, "echo", br#"{"a":1}"#);
        assert_eq!(out, br#"{"id":4,"rpc":{"method":"echo","data":{"a":1}}}"#);
        out.clear();
        JsonCodec::publish(&mut out, 3, "b:c", 7, 0, &mut Vec::new());
        let head = br#"{"id":3,"publish":{"channel":"b:c","data":{"seq":7,"ts":"#;
        assert!(out.starts_with(head), "{}", String::from_utf8_lossy(&out));
        assert!(out.ends_with(br#","pad":""}}}"#));
        out.clear();
        JsonCodec::pongs(&mut out, 2);
        assert_eq!(out, b"{}\n{}");

        let mut v = Vec::new();
        JsonCodec::items(
            b"{}\n{\"push\":{\"channel\":\"c\"}}\n{\"id\":1,\"connect\":{}}\n{\"id\":2,\"error\":{\"code\":107}}\n{bad",
            |it| v.push(it),
        );
        assert_eq!(
            v,
            [
                Item::Ping,
                Item::Reply { id: 1, error: None },
                Item::Reply {
                    id: 2,
                    error: Some(107)
                },
                Item::Bad
            ]
        );
    }
}
