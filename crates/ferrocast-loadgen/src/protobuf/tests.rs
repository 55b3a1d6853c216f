//! Known byte vectors (several of them the broker's own, from
//! `crates/ferrocast-protocol/src/protobuf/tests/vectors.rs`), batches and broken input.

use super::*;

#[test]
fn varints() {
    for (v, bytes) in [
        (0u64, &[0x00][..]),
        (1, &[0x01]),
        (127, &[0x7f]),
        (128, &[0x80, 0x01]),
        (300, &[0xac, 0x02]),
        (16_384, &[0x80, 0x80, 0x01]),
    ] {
        let mut out = Vec::new();
        put_uvarint(&mut out, v);
        assert_eq!(out, bytes, "{v}");
        assert_eq!(uvarint_len(v), bytes.len(), "{v}");
        assert_eq!(uvarint(bytes), Ok((v, bytes.len())));
    }
    let mut max = Vec::new();
    put_uvarint(&mut max, u64::MAX);
    assert_eq!(max.len(), 10);
    assert_eq!(uvarint_len(u64::MAX), 10);
    assert_eq!(uvarint(&max), Ok((u64::MAX, 10)));
    // Non-minimal, as Go's binary.Uvarint (and the broker) accept.
    assert_eq!(uvarint(&[0x80, 0x00]), Ok((0, 2)));
    assert_eq!(uvarint(&[0x80]), Err(WireError::Varint));
    assert_eq!(uvarint(&[]), Err(WireError::Varint));
    assert_eq!(uvarint(&[0xff; 11]), Err(WireError::Varint));
}

#[test]
fn connect_command_bytes() {
    // The broker's vector: Command { id: 1, connect: { token: "t" } }.
    let mut out = Vec::new();
    put_command(&mut out, 1, COMMAND_CONNECT, &[(1, b"t")]);
    assert_eq!(out, [0x07, 0x08, 0x01, 0x22, 0x03, 0x0a, 0x01, b't']);
    // What the load generator sends in insecure mode: the SDK name (field 4), no token.
    out.clear();
    put_connect(&mut out, 1, "n", "", b"");
    assert_eq!(out, [0x07, 0x08, 0x01, 0x22, 0x03, 0x22, 0x01, b'n']);
    // With a token (1), connect data (2) and the name (4), in field order.
    out.clear();
    put_connect(&mut out, 1, "n", "t", b"{}");
    assert_eq!(
        out,
        [
            0x0e, 0x08, 0x01, 0x22, 0x0a, 0x0a, 0x01, b't', 0x12, 0x02, b'{', b'}', 0x22, 0x01,
            b'n'
        ]
    );
}

#[test]
fn rpc_command_bytes() {
    let mut out = Vec::new();
    put_rpc(&mut out, 4, "m", b"{}");
    // len 11 | id 4 | rpc key 13/len, 7 bytes | data key 1 "{}" | method key 2 "m"
    assert_eq!(
        out,
        [
            0x0b, 0x08, 0x04, 0x6a, 0x07, 0x0a, 0x02, b'{', b'}', 0x12, 0x01, b'm'
        ]
    );
}

#[test]
fn subscribe_command_bytes() {
    let mut out = Vec::new();
    put_subscribe(&mut out, 2, "news");
    // len 10 | id 2 | subscribe key 5/len, 6 bytes | channel key 1/len "news"
    assert_eq!(
        out,
        [
            0x0a, 0x08, 0x02, 0x2a, 0x06, 0x0a, 0x04, b'n', b'e', b'w', b's'
        ]
    );
}

#[test]
fn publish_command_bytes() {
    let mut out = Vec::new();
    put_publish(&mut out, 3, "c", b"{}");
    // len 11 | id 3 | publish key 7/len, 7 bytes | channel key 1 "c" | data key 2 "{}"
    assert_eq!(
        out,
        [
            0x0b, 0x08, 0x03, 0x3a, 0x07, 0x0a, 0x01, b'c', 0x12, 0x02, b'{', b'}'
        ]
    );

    // Multi-byte id and lengths: id 300, 200 bytes of data.
    let data = vec![b'x'; 200];
    out.clear();
    put_publish(&mut out, 300, "bench:shared", &data);
    let mut expected = vec![0xdf, 0x01]; // record length 223
    expected.extend_from_slice(&[0x08, 0xac, 0x02]); // id 300
    expected.extend_from_slice(&[0x3a, 0xd9, 0x01]); // publish, 217 bytes
    expected.extend_from_slice(&[0x0a, 0x0c]);
    expected.extend_from_slice(b"bench:shared");
    expected.extend_from_slice(&[0x12, 0xc8, 0x01]); // data, 200 bytes
    expected.extend_from_slice(&data);
    assert_eq!(out, expected);
    assert_eq!(out.len(), 2 + 223);

    // Several records in one frame read back as they were written.
    put_publish(&mut out, 4, "c", b"{}");
    let recs: Vec<&[u8]> = records(&out).map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 2);
    let f: Vec<_> = fields(recs[0]).map(|f| f.unwrap()).collect();
    assert_eq!(f[0], (COMMAND_ID, Value::Varint(300)));
    let Value::Bytes(req) = f[1].1 else {
        panic!("publish is not bytes: {f:?}");
    };
    let r: Vec<_> = fields(req).map(|f| f.unwrap()).collect();
    assert_eq!(
        r,
        [
            (PUBLISH_CHANNEL, Value::Bytes(b"bench:shared")),
            (PUBLISH_DATA, Value::Bytes(&data))
        ]
    );
}

#[test]
fn pongs_are_empty_records() {
    let mut out = Vec::new();
    put_pongs(&mut out, 3);
    assert_eq!(out, [0, 0, 0]);
    assert_eq!(records(&out).count(), 3);
    assert!(records(&out).all(|r| r == Ok(&[][..])));
}

/// The broker's vector: Reply { push: { channel: "c", pub: { data: "{}", offset: 5 } } }.
const PUSH: [u8; 14] = [
    0x0d, 0x22, 0x0b, 0x12, 0x01, b'c', 0x22, 0x06, 0x22, 0x02, b'{', b'}', 0x30, 0x05,
];

#[test]
fn publication_push() {
    let recs: Vec<_> = records(&PUSH).collect();
    assert_eq!(recs, [Ok(&PUSH[1..])]);
    let r = reply(&PUSH[1..]).unwrap();
    assert_eq!(r.id, 0);
    assert_eq!(r.error, None);
    let p = r.push.unwrap();
    assert_eq!(push(p), Ok((&b"c"[..], Some(&b"{}"[..]))));
}

#[test]
fn error_reply() {
    // The broker's vector: Reply { id: 2, error: { code: 107, message: "bad request" } }.
    let mut rec = vec![0x13, 0x08, 0x02, 0x12, 0x0f, 0x08, 107, 0x12, 0x0b];
    rec.extend_from_slice(b"bad request");
    let msg = records(&rec).next().unwrap().unwrap();
    assert_eq!(
        reply(msg),
        Ok(ReplyView {
            id: 2,
            error: Some(107),
            push: None
        })
    );
}

/// The broker's vector: Reply { id: 1, connect: { client: "abc", version: "1", ping: 25,
/// pong: true } }.
const CONNECT_RESULT: [u8; 17] = [
    0x10, 0x08, 0x01, 0x2a, 0x0c, 0x0a, 0x03, b'a', b'b', b'c', 0x12, 0x01, b'1', 0x38, 0x19, 0x40,
    0x01,
];

#[test]
fn several_records_in_one_frame() {
    // ping | connect result | push | ping | subscribe result (Reply { id: 2, subscribe: {} })
    let mut frame = vec![0x00];
    frame.extend_from_slice(&CONNECT_RESULT);
    frame.extend_from_slice(&PUSH);
    frame.push(0x00);
    frame.extend_from_slice(&[0x04, 0x08, 0x02, 0x32, 0x00]);
    let recs: Vec<&[u8]> = records(&frame).map(|r| r.unwrap()).collect();
    assert_eq!(recs.len(), 5);
    assert!(recs[0].is_empty() && recs[3].is_empty());
    assert_eq!(
        reply(recs[1]),
        Ok(ReplyView {
            id: 1,
            ..Default::default()
        })
    );
    assert!(reply(recs[2]).unwrap().push.is_some());
    assert_eq!(
        reply(recs[4]),
        Ok(ReplyView {
            id: 2,
            ..Default::default()
        })
    );
}

#[test]
fn pushes_without_publication() {
    // Push { channel: "c", join: { info: {} } }: no publication.
    let join = [0x12, 0x01, b'c', 0x2a, 0x02, 0x0a, 0x00];
    assert_eq!(push(&join), Ok((&b"c"[..], None)));
    // A publication without data (proto3 leaves empty bytes out).
    let empty = [0x12, 0x01, b'c', 0x22, 0x02, 0x30, 0x05];
    assert_eq!(push(&empty), Ok((&b"c"[..], None)));
}

#[test]
fn unknown_fields_are_skipped() {
    // Reply { id: 7 } plus field 99 (varint), field 100 (bytes), fixed64 and fixed32 fields.
    let msg = [
        0x08, 0x07, 0x98, 0x06, 0x01, 0xa2, 0x06, 0x01, 0xaa, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x1d,
        1, 2, 3, 4,
    ];
    assert_eq!(
        reply(&msg),
        Ok(ReplyView {
            id: 7,
            ..Default::default()
        })
    );
}

#[test]
fn broken_input() {
    // A record length running past the end of the frame; the iterator then ends.
    let recs: Vec<_> = records(&[0x00, 0x05, 0x08, 0x01]).collect();
    assert_eq!(recs, [Ok(&[][..]), Err(WireError::Length)]);
    // A length prefix cut short.
    assert_eq!(
        records(&[0x80]).collect::<Vec<_>>(),
        [Err(WireError::Varint)]
    );
    // A field length past the end of the message.
    assert_eq!(reply(&[0x22, 0x05, 0x00]), Err(WireError::Length));
    // A group (wire type 3), field number 0, a fixed64 cut short.
    assert_eq!(reply(&[0x0b]), Err(WireError::Field));
    assert_eq!(reply(&[0x00, 0x01]), Err(WireError::Field));
    assert_eq!(reply(&[0x19, 1, 2]), Err(WireError::Length));
    // A broken publication inside a well-formed push.
    assert_eq!(push(&[0x22, 0x02, 0x22, 0x05]), Err(WireError::Length));
    assert_eq!(WireError::Length.kind(), "pb_bad_length");
}
