//! Exact bytes of hand-encoded messages, heartbeats and batches.

use super::*;
use crate::protobuf::wire::*;
use std::collections::BTreeMap;

#[test]
fn connect_command_bytes() {
    let cmd = Command {
        id: 1,
        connect: Some(ConnectRequest {
            token: "t".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // len 7 | id: key 1/varint, 1 | connect: key 4/len, 3 bytes | token: key 1/len, "t"
    let expected = [0x07, 0x08, 0x01, 0x22, 0x03, 0x0a, 0x01, b't'];
    assert_eq!(record_of(&cmd), expected);
    let decoded = decode_commands(&expected, 10).unwrap();
    assert_eq!(decoded, vec![cmd]);
    assert_eq!(CommandMethod::of(&decoded[0]), CommandMethod::Connect);
}

#[test]
fn publication_push_bytes() {
    let push = Push {
        channel: "c".into(),
        r#pub: Some(Publication {
            data: b("{}"),
            offset: 5,
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply = Reply {
        push: Some(push.clone()),
        ..Default::default()
    };
    // Publication: data key 4/len "{}" | offset key 6/varint 5             -> 6 bytes
    // Push: channel key 2/len "c" | pub key 4/len (6 bytes)                 -> 11 bytes
    // Reply: push key 4/len (11 bytes)                                      -> 13 bytes
    let expected = [
        0x0d, 0x22, 0x0b, 0x12, 0x01, b'c', 0x22, 0x06, 0x22, 0x02, b'{', b'}', 0x30, 0x05,
    ];
    assert_eq!(reply_record(&reply), expected);
    assert_eq!(&encode_push_record(&push)[..], &expected[..]);
    assert_eq!(&encode_reply(&reply)[..], &expected[..]);
    assert_eq!(decode_replies(&expected).unwrap(), vec![reply]);
}

#[test]
fn error_reply_bytes() {
    let reply = Reply {
        id: 2,
        error: Some(Error {
            code: 107,
            message: "bad request".into(),
            temporary: false,
        }),
        ..Default::default()
    };
    let mut expected = vec![0x13, 0x08, 0x02, 0x12, 0x0f, 0x08, 107, 0x12, 0x0b];
    expected.extend_from_slice(b"bad request");
    assert_eq!(reply_record(&reply), expected);
}

#[test]
fn subscribe_recovery_fields_bytes() {
    let cmd = Command {
        id: 3,
        subscribe: Some(SubscribeRequest {
            channel: "news".into(),
            recover: true,
            epoch: "e".into(),
            offset: 300,
            join_leave: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let expected = [
        0x14, 0x08, 0x03, 0x2a, 0x10, // id 3, subscribe key 5/len, 16 bytes
        0x0a, 0x04, b'n', b'e', b'w', b's', // channel (1)
        0x18, 0x01, // recover (3)
        0x32, 0x01, b'e', // epoch (6)
        0x38, 0xac, 0x02, // offset (7) = 300
        0x58, 0x01, // join_leave (11)
    ];
    assert_eq!(record_of(&cmd), expected);
    assert_eq!(decode_commands(&expected, 1).unwrap(), vec![cmd]);
}

#[test]
fn history_since_bytes() {
    let cmd = Command {
        id: 4,
        history: Some(HistoryRequest {
            channel: "c".into(),
            limit: 10,
            since: Some(StreamPosition {
                offset: 7,
                epoch: "x".into(),
            }),
            reverse: true,
        }),
        ..Default::default()
    };
    let expected = [
        0x12, 0x08, 0x04, 0x52, 0x0e, // id 4, history key 10/len, 14 bytes
        0x0a, 0x01, b'c', // channel (1)
        0x38, 0x0a, // limit (7)
        0x42, 0x05, 0x08, 0x07, 0x12, 0x01, b'x', // since (8): offset 7, epoch "x"
        0x48, 0x01, // reverse (9)
    ];
    assert_eq!(record_of(&cmd), expected);
    assert_eq!(decode_commands(&expected, 1).unwrap(), vec![cmd]);
}

#[test]
fn connect_result_and_presence_bytes() {
    let reply = Reply {
        id: 1,
        connect: Some(ConnectResult {
            client: "abc".into(),
            version: "1".into(),
            ping: 25,
            pong: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let expected = [
        0x10, 0x08, 0x01, 0x2a, 0x0c, // id 1, connect key 5/len, 12 bytes
        0x0a, 0x03, b'a', b'b', b'c', 0x12, 0x01, b'1', // client (1), version (2)
        0x38, 0x19, 0x40, 0x01, // ping (7) = 25, pong (8)
    ];
    assert_eq!(reply_record(&reply), expected);

    let presence = Reply {
        id: 5,
        presence: Some(PresenceResult {
            presence: BTreeMap::from([(
                "c1".to_string(),
                ClientInfo {
                    user: "u".into(),
                    client: "c1".into(),
                    ..Default::default()
                },
            )]),
        }),
        ..Default::default()
    };
    let expected = [
        0x13, 0x08, 0x05, 0x4a, 0x0f, // id 5, presence key 9/len, 15 bytes
        0x0a, 0x0d, // map entry (field 1), 13 bytes
        0x0a, 0x02, b'c', b'1', // entry key
        0x12, 0x07, 0x0a, 0x01, b'u', 0x12, 0x02, b'c', b'1', // entry value: ClientInfo
    ];
    assert_eq!(reply_record(&presence), expected);
}

#[test]
fn ping_and_pong_are_empty_records() {
    assert_eq!(reply_record(&Reply::default()), PING_RECORD);
    assert_eq!(PING_RECORD, [0x00]);
    assert_eq!(&ping_record()[..], PING_RECORD);
    assert_eq!(decode_replies(PING_RECORD).unwrap(), vec![Reply::default()]);

    assert_eq!(record_of(&Command::default()), [0x00]);
    let pong = decode_commands(&[0x00], 1).unwrap();
    assert_eq!(pong.len(), 1);
    assert_eq!(pong[0].id, 0);
    assert_eq!(CommandMethod::of(&pong[0]), CommandMethod::Empty);
    assert_eq!(CommandMethod::Empty.name(), "empty");
}

#[test]
fn batches_of_records() {
    let connect = Command {
        id: 1,
        connect: Some(ConnectRequest::default()),
        ..Default::default()
    };
    let sub = Command {
        id: 2,
        subscribe: Some(SubscribeRequest {
            channel: "a".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut frame = record_of(&connect);
    frame.extend(record_of(&Command::default()));
    frame.extend(record_of(&sub));
    let cmds = decode_commands(&frame, 3).unwrap();
    assert_eq!(cmds, vec![connect, Command::default(), sub]);
    assert_eq!(
        decode_commands(&frame, 2),
        Err(ProtobufDecodeError::TooManyCommands { limit: 2 })
    );
    assert_eq!(records(&frame).count(), 3);

    // Replies and pushes share one server frame the same way.
    let mut out = Vec::new();
    encode_reply_into(&mut out, &Reply::default());
    encode_push_record_into(
        &mut out,
        &Push {
            channel: "a".into(),
            join: Some(Join {
                info: Some(ClientInfo::default()),
            }),
            ..Default::default()
        },
    );
    encode_reply_into(
        &mut out,
        &Reply {
            id: 2,
            subscribe: Some(SubscribeResult::default()),
            ..Default::default()
        },
    );
    let replies = decode_replies(&out).unwrap();
    assert_eq!(replies.len(), 3);
    assert!(replies[1].push.as_ref().is_some_and(|p| p.join.is_some()));
    assert_eq!(replies[2].id, 2);
}

#[test]
fn unknown_fields_are_skipped() {
    // Command { id: 1, ping: {} } plus field 99 (varint) and field 100 (bytes), as a newer
    // SDK might send.
    let body = [
        0x08, 0x01, 0x5a, 0x00, 0x98, 0x06, 0x01, 0xa2, 0x06, 0x01, 0xaa,
    ];
    let mut frame = vec![body.len() as u8];
    frame.extend_from_slice(&body);
    let cmds = decode_commands(&frame, 1).unwrap();
    assert_eq!(cmds[0].id, 1);
    assert_eq!(CommandMethod::of(&cmds[0]), CommandMethod::Ping);
}

#[test]
fn non_minimal_length_prefix_is_accepted() {
    // 0x80 0x00 is a two-byte encoding of 0, as Go's binary.Uvarint accepts.
    let cmds = decode_commands(&[0x80, 0x00], 1).unwrap();
    assert_eq!(cmds, vec![Command::default()]);
}

#[test]
fn method_names_match_the_json_decoder() {
    use crate::command::decode_frame;
    let json = br#"{"id":1,"presence_stats":{"channel":"c"}}"#;
    let m = &decode_frame(json, 1).unwrap()[0].method;
    let cmd = Command {
        id: 1,
        presence_stats: Some(PresenceStatsRequest {
            channel: "c".into(),
        }),
        ..Default::default()
    };
    assert_eq!(CommandMethod::of(&cmd).name(), m.name());
    assert_eq!(CommandMethod::Ambiguous.name(), "ambiguous");
    assert_eq!(CommandMethod::SubRefresh.name(), "sub_refresh");
}
