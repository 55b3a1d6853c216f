//! The Protobuf encoding: subprotocol `centrifuge-protobuf`, binary frames of
//! length-prefixed `Command`/`Reply` records ([`crate::protobuf`]); ping and pong are empty
//! records. Publication data are the same JSON payload bytes as in the JSON encoding.

use super::{Codec, Item};
use crate::config::Creds;
use crate::protobuf::{self, ReplyView};
use crate::scan::{build_payload, now_us, payload_seq_ts};
use crate::subscriber::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Centrifugo client protocol v2, Protobuf.
pub struct ProtobufCodec;

impl Codec for ProtobufCodec {
    const BINARY: bool = true;
    const SUBPROTOCOL: Option<&'static str> = Some("centrifuge-protobuf");

    fn connect(out: &mut Vec<u8>, id: u32, name: &str, creds: &Creds) {
        let data = creds.data.as_deref().unwrap_or("");
        protobuf::put_connect(out, id, name, &creds.token, data.as_bytes());
    }

    fn subscribe(out: &mut Vec<u8>, id: u32, channel: &str) {
        protobuf::put_subscribe(out, id, channel);
    }

    fn publish(
        out: &mut Vec<u8>,
        id: u32,
        channel: &str,
        seq: u64,
        payload_size: usize,
        scratch: &mut Vec<u8>,
    ) {
        scratch.clear();
        build_payload(scratch, seq, now_us(), payload_size);
        protobuf::put_publish(out, id, channel, scratch);
    }

    /// The data go as their JSON text's bytes.
    fn rpc(out: &mut Vec<u8>, id: u32, method: &str, data: &[u8]) {
        protobuf::put_rpc(out, id, method, data);
    }

    /// Records need no separator.
    fn separate(_out: &mut Vec<u8>) {}

    fn pongs(out: &mut Vec<u8>, n: usize) {
        protobuf::put_pongs(out, n);
    }

    fn message(frame: Vec<u8>) -> Result<Message, String> {
        Ok(Message::binary(frame))
    }

    fn data(m: &Message) -> Option<&[u8]> {
        match m {
            Message::Binary(b) => Some(&b[..]),
            _ => None,
        }
    }

    fn items(data: &[u8], mut f: impl FnMut(Item)) {
        for record in protobuf::records(data) {
            let Ok(msg) = record else {
                f(Item::Bad);
                return;
            };
            if msg.is_empty() {
                f(Item::Ping);
                continue;
            }
            match protobuf::reply(msg) {
                Ok(ReplyView { push: Some(_), .. }) => {}
                Ok(r) => f(Item::Reply {
                    id: r.id,
                    error: r.error,
                }),
                Err(_) => f(Item::Bad),
            }
        }
    }

    #[inline]
    fn read(data: &[u8], frame: &mut Frame<'_>) {
        for record in protobuf::records(data) {
            let msg = match record {
                Ok(m) => m,
                Err(e) => {
                    // The rest of the frame cannot be delimited.
                    frame.error(e.kind());
                    return;
                }
            };
            if msg.is_empty() {
                frame.ping();
                continue;
            }
            match protobuf::reply(msg) {
                Ok(ReplyView { push: Some(p), .. }) => match protobuf::push(p) {
                    // A connection-level push (no channel), as in JSON.
                    Ok((b"", _)) | Err(_) => frame.unparsed(),
                    Ok((channel, data)) => {
                        frame.publication(channel, data.and_then(payload_seq_ts))
                    }
                },
                Ok(_) => frame.error("unexpected_reply"),
                Err(e) => frame.error(e.kind()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(frame: &[u8]) -> Vec<Item> {
        let mut v = Vec::new();
        ProtobufCodec::items(frame, |it| v.push(it));
        v
    }

    #[test]
    fn replies_and_pings_of_a_frame() {
        // ping | push (skipped) | Reply { id: 1, connect: {} } | Reply { id: 2, error: 107 }
        let mut frame = vec![0x00];
        frame.extend_from_slice(&[
            0x0d, 0x22, 0x0b, 0x12, 0x01, b'c', 0x22, 0x06, 0x22, 0x02, b'{', b'}', 0x30, 0x05,
        ]);
        frame.extend_from_slice(&[0x04, 0x08, 0x01, 0x2a, 0x00]);
        frame.extend_from_slice(&[0x06, 0x08, 0x02, 0x12, 0x02, 0x08, 107]);
        assert_eq!(
            items(&frame),
            [
                Item::Ping,
                Item::Reply { id: 1, error: None },
                Item::Reply {
                    id: 2,
                    error: Some(107)
                }
            ]
        );
        // A record cut short ends the frame.
        frame.extend_from_slice(&[0x09, 0x08]);
        frame.push(0x00);
        assert_eq!(items(&frame).last(), Some(&Item::Bad));
        assert_eq!(items(&frame).len(), 4);
    }

    #[test]
    fn publish_carries_the_json_payload_as_bytes() {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        ProtobufCodec::publish(&mut out, 9, "bench:shared", 42, 128, &mut scratch);
        ProtobufCodec::separate(&mut out);
        ProtobufCodec::publish(&mut out, 10, "bench:shared", 43, 128, &mut scratch);
        let recs: Vec<&[u8]> = protobuf::records(&out).map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 2);
        // Command { id: 9, publish: { channel, data } }: read the data (field 2) back.
        let fields: Vec<_> = protobuf::fields(recs[0]).map(|f| f.unwrap()).collect();
        assert_eq!(fields[0], (1, protobuf::Value::Varint(9)));
        let protobuf::Value::Bytes(req) = fields[1].1 else {
            panic!("{fields:?}");
        };
        let data = protobuf::fields(req)
            .map(|f| f.unwrap())
            .find_map(|f| match f {
                (2, protobuf::Value::Bytes(d)) => Some(d),
                _ => None,
            })
            .unwrap();
        assert_eq!(data.len(), 128);
        assert_eq!(payload_seq_ts(data).map(|(seq, _)| seq), Some(42));
    }
}
