//! Malformed frames give the right error and never a panic.

use super::*;
use crate::protobuf::wire::*;

#[test]
fn malformed_frames() {
    use ProtobufDecodeError as E;
    assert_eq!(decode_commands(&[], 10), Err(E::EmptyFrame));
    assert_eq!(decode_replies(&[]), Err(E::EmptyFrame));

    // The frame ends inside the length prefix.
    assert_eq!(
        decode_commands(&[0x80], 10),
        Err(E::TruncatedLength { offset: 0 })
    );
    assert_eq!(
        decode_commands(&[0x00, 0xff, 0xff], 10),
        Err(E::TruncatedLength { offset: 1 })
    );

    // Length past the end.
    assert_eq!(
        decode_commands(&[0x05, 0x08, 0x01], 10),
        Err(E::LengthPastEnd {
            offset: 0,
            len: 5,
            available: 2
        })
    );
    // The largest length a varint can hold, in a tiny frame.
    let mut max = vec![0xff; 9];
    max.push(0x01);
    assert_eq!(
        decode_commands(&max, 10),
        Err(E::LengthPastEnd {
            offset: 0,
            len: u64::MAX,
            available: 0
        })
    );

    // An 11-byte varint, and a 10-byte one whose last byte overflows 64 bits.
    let mut eleven = vec![0xff; 10];
    eleven.push(0x01);
    assert_eq!(
        decode_commands(&eleven, 10),
        Err(E::VarintOverflow { offset: 0 })
    );
    let mut ten = vec![0x80; 9];
    ten.push(0x02);
    assert_eq!(
        decode_commands(&ten, 10),
        Err(E::VarintOverflow { offset: 0 })
    );
    let mut after_pong = vec![0x00];
    after_pong.extend_from_slice(&eleven);
    assert_eq!(
        decode_commands(&after_pong, 10),
        Err(E::VarintOverflow { offset: 1 })
    );

    // Garbage message bytes: a record whose content is not a Command.
    for body in [
        &[0xff, 0xff][..],             // key with a truncated varint
        &[0x08][..],                   // key of field 1 without its value
        &[0x22, 0x05, 0x0a][..],       // connect announces 5 bytes, has 1
        &[0x0b][..],                   // wire type 3 (start group): not in proto3
        &[0x00, 0x01][..],             // field number 0
        &[0x0a, 0x01, 0x00][..],       // id (a varint field) sent as length-delimited
        &[0x22, 0x02, 0x0a, 0x01][..], // token string cut short inside connect
    ] {
        let mut frame = vec![0x00, body.len() as u8];
        frame.extend_from_slice(body);
        match decode_commands(&frame, 10) {
            Err(E::InvalidMessage {
                offset: 1,
                message: "Command",
                ..
            }) => {}
            other => panic!("{body:02x?}: {other:?}"),
        }
    }

    // A string field that is not UTF-8.
    let frame = [0x05, 0x22, 0x03, 0x0a, 0x01, 0xff];
    assert!(matches!(
        decode_commands(&frame, 10),
        Err(E::InvalidMessage { offset: 0, .. })
    ));
    assert!(matches!(
        decode_replies(&[0x02, 0x12, 0x05]),
        Err(E::InvalidMessage {
            message: "Reply",
            ..
        })
    ));

    assert_eq!(
        decode_commands(&[0x00, 0x00], 1),
        Err(E::TooManyCommands { limit: 1 })
    );
    assert_eq!(
        decode_commands(&[0x00], 0),
        Err(E::TooManyCommands { limit: 0 })
    );
}

#[test]
fn error_messages_are_clear() {
    let e = decode_commands(&[0x05, 0x08], 10).unwrap_err();
    assert_eq!(
        e.to_string(),
        "record at byte 0: length 5 runs past the end of the frame (1 bytes left)"
    );
    let e = decode_commands(&[0x01, 0x08], 10).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("record at byte 0: undecodable Command: ")
    );
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn records_iterator_stops_after_an_error() {
    let frame = [0x01, 0x08, 0x03, 0xaa];
    let mut it = records(&frame);
    assert_eq!(it.next(), Some(Ok(&[0x08][..])));
    assert_eq!(it.position(), 2);
    assert!(matches!(it.next(), Some(Err(_))));
    assert_eq!(it.next(), None);
}

#[test]
fn deep_filter_nesting_is_refused_not_overflowed() {
    // FilterNode { nodes: [FilterNode { nodes: [...] }] } nested 500 deep inside
    // SubscribeRequest.tf: prost's recursion limit rejects it.
    let mut node: Vec<u8> = Vec::new();
    for _ in 0..500 {
        let mut outer = vec![0x32];
        outer.extend(varint(node.len() as u64));
        outer.extend(node);
        node = outer;
    }
    let mut sub = vec![0x6a];
    sub.extend(varint(node.len() as u64));
    sub.extend(node);
    let mut cmd = vec![0x08, 0x01, 0x2a];
    cmd.extend(varint(sub.len() as u64));
    cmd.extend(sub);
    let mut frame = varint(cmd.len() as u64);
    frame.extend(cmd);
    assert!(matches!(
        decode_commands(&frame, 1),
        Err(ProtobufDecodeError::InvalidMessage { .. })
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic generator; the fuzz target covers this far more widely.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seed = record_of(&Command {
        id: 9,
        subscribe: Some(SubscribeRequest {
            channel: "chan".into(),
            recover: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    for _ in 0..20_000 {
        let mut frame = seed.clone();
        let flips = (next() % 4) as usize;
        for _ in 0..=flips {
            let i = (next() as usize) % frame.len();
            frame[i] = next() as u8;
        }
        frame.truncate((next() as usize) % (frame.len() + 1));
        let _ = decode_commands(&frame, 100);
        let _ = decode_replies(&frame);
    }
}
