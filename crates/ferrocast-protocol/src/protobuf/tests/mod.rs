//! Tests of the Protobuf wire layer.
//!
//! The byte vectors in `vectors` are written out by hand from the Protobuf encoding rules
//! (key = field number << 3 | wire type; 0 varint, 2 length-delimited), so they check the
//! field numbers of the schema, not only that encoding and decoding agree with each other.

mod malformed;
mod round_trip;
mod vectors;

use super::wire::*;
use super::*;
use bytes::Bytes;
use std::collections::BTreeMap;

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn record_of(command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command_into(&mut out, command);
    out
}

fn reply_record(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    encode_reply_into(&mut out, reply);
    out
}

fn full_publication(offset: u64) -> Publication {
    Publication {
        data: b("{\"x\":1}"),
        info: Some(ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: b("{\"name\":\"n\"}"),
            chan_info: Bytes::from_static(&[0, 1, 2, 255]),
        }),
        offset,
        tags: BTreeMap::from([("k".to_string(), "v".to_string())]),
        delta: true,
        time: 1_700_000_000_000,
        channel: "news:1".into(),
        key: "key".into(),
        removed: true,
        score: -42,
        epoch: "ep".into(),
        prev_data: b("old"),
        version: 9,
    }
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(v, &mut out);
    out
}
