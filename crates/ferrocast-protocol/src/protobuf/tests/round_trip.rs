//! Every field of every message survives encoding and decoding.

use super::*;
use crate::protobuf::wire::*;
use bytes::Bytes;
use prost::Message as _;
use std::collections::BTreeMap;

#[test]
fn every_command_field_round_trips() {
    let sub = SubscribeRequest {
        channel: "news".into(),
        token: "jwt".into(),
        recover: true,
        epoch: "e".into(),
        offset: u64::MAX,
        data: Bytes::from_static(&[0xff, 0x00]),
        positioned: true,
        recoverable: true,
        join_leave: true,
        delta: "fossil".into(),
        tf: Some(FilterNode {
            op: "and".into(),
            nodes: vec![FilterNode {
                key: "k".into(),
                cmp: "in".into(),
                val: "v".into(),
                vals: vec!["a".into(), "b".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        flag: 3,
        r#type: 1,
        phase: 2,
        cursor: "cur".into(),
        limit: 100,
        asc: true,
    };
    let commands = vec![
        Command {
            id: 1,
            connect: Some(ConnectRequest {
                token: "t".into(),
                data: b("{}"),
                subs: BTreeMap::from([("news".to_string(), sub.clone())]),
                name: "js".into(),
                version: "5.0.0".into(),
                headers: BTreeMap::from([("h".to_string(), "v".to_string())]),
                flag: 1,
                dict: "d".into(),
                profile: "p".into(),
            }),
            ..Default::default()
        },
        Command {
            id: 2,
            subscribe: Some(sub),
            unsubscribe: Some(UnsubscribeRequest {
                channel: "x".into(),
            }),
            publish: Some(PublishRequest {
                channel: "c".into(),
                data: b("1"),
                r#type: 1,
                key: "k".into(),
                removed: true,
            }),
            presence: Some(PresenceRequest {
                channel: "c".into(),
            }),
            presence_stats: Some(PresenceStatsRequest {
                channel: "c".into(),
            }),
            history: Some(HistoryRequest {
                channel: "c".into(),
                limit: -1,
                since: Some(StreamPosition::default()),
                reverse: true,
            }),
            ping: Some(PingRequest {}),
            send: Some(SendRequest { data: b("s") }),
            rpc: Some(RpcRequest {
                data: b("r"),
                method: "m".into(),
            }),
            refresh: Some(RefreshRequest { token: "t".into() }),
            sub_refresh: Some(SubRefreshRequest {
                channel: "c".into(),
                token: "t".into(),
                r#type: 1,
                track: vec![TrackBatch {
                    signature: "sig".into(),
                    items: vec![KeyedItem {
                        key: "k".into(),
                        version: 2,
                    }],
                }],
                untrack: vec!["u".into()],
            }),
            ..Default::default()
        },
    ];
    let mut frame = Vec::new();
    for c in &commands {
        encode_command_into(&mut frame, c);
    }
    assert_eq!(decode_commands(&frame, 2).unwrap(), commands);
    let shared = decode_commands_shared(&Bytes::from(frame), 2).unwrap();
    assert_eq!(shared, commands);
    assert_eq!(CommandMethod::of(&shared[1]), CommandMethod::Ambiguous);
}

#[test]
fn every_reply_field_round_trips() {
    let sub_result = SubscribeResult {
        expires: true,
        ttl: 60,
        recoverable: true,
        epoch: "e".into(),
        publications: vec![full_publication(1), full_publication(2)],
        recovered: true,
        offset: 2,
        positioned: true,
        data: b("{}"),
        was_recovering: true,
        delta: true,
        id: 7,
        r#type: 1,
        phase: 1,
        cursor: "c".into(),
        state: vec![full_publication(3)],
        publish_debounce: 250,
    };
    let replies = vec![
        Reply {
            id: 1,
            connect: Some(ConnectResult {
                client: "id".into(),
                version: "v".into(),
                expires: true,
                ttl: 30,
                data: b("null"),
                subs: BTreeMap::from([("s".to_string(), sub_result.clone())]),
                ping: 25,
                pong: true,
                session: "sess".into(),
                node: "node".into(),
                time: 5,
                flag: 1,
                dict: Some(Dictionary {
                    id: "d".into(),
                    data: b("z"),
                    data_b64: "eg==".into(),
                }),
            }),
            ..Default::default()
        },
        Reply {
            id: 2,
            error: Some(Error {
                code: 100,
                message: "internal server error".into(),
                temporary: true,
            }),
            subscribe: Some(sub_result.clone()),
            unsubscribe: Some(UnsubscribeResult {}),
            publish: Some(PublishResult {}),
            presence_stats: Some(PresenceStatsResult {
                num_clients: 3,
                num_users: 2,
            }),
            history: Some(HistoryResult {
                publications: vec![full_publication(4)],
                epoch: "e".into(),
                offset: 4,
            }),
            ping: Some(PingResult {}),
            rpc: Some(RpcResult { data: b("r") }),
            refresh: Some(RefreshResult {
                client: "c".into(),
                version: "v".into(),
                expires: true,
                ttl: 1,
            }),
            sub_refresh: Some(SubRefreshResult {
                expires: true,
                ttl: 2,
                items: vec![full_publication(5)],
            }),
            ..Default::default()
        },
    ];
    let pushes = vec![
        Push {
            id: 7,
            channel: "c".into(),
            r#pub: Some(full_publication(6)),
            join: Some(Join {
                info: Some(ClientInfo::default()),
            }),
            leave: Some(Leave {
                info: Some(ClientInfo::default()),
            }),
            unsubscribe: Some(Unsubscribe {
                code: 2500,
                reason: "insufficient state".into(),
            }),
            message: Some(Message { data: b("m") }),
            subscribe: Some(Subscribe {
                recoverable: true,
                epoch: "e".into(),
                offset: 1,
                positioned: true,
                data: b("d"),
            }),
            connect: Some(Connect {
                client: "c".into(),
                version: "v".into(),
                data: b("d"),
                subs: BTreeMap::from([("s".to_string(), sub_result)]),
                expires: true,
                ttl: 1,
                ping: 2,
                pong: true,
                session: "s".into(),
                node: "n".into(),
                time: 3,
            }),
            disconnect: Some(Disconnect {
                code: 3501,
                reason: "bad request".into(),
                reconnect: false,
            }),
            refresh: Some(Refresh {
                expires: true,
                ttl: 9,
            }),
        },
        Push::default(),
    ];
    let mut frame = Vec::new();
    for r in &replies {
        encode_reply_into(&mut frame, r);
    }
    for p in &pushes {
        encode_push_record_into(&mut frame, p);
    }
    let mut expected = replies.clone();
    expected.extend(pushes.into_iter().map(|p| Reply {
        push: Some(p),
        ..Default::default()
    }));
    assert_eq!(decode_replies(&frame).unwrap(), expected);

    // The emulation envelope has no record framing of its own, only the message.
    let emu = EmulationRequest {
        node: "n".into(),
        session: "s".into(),
        data: Bytes::from(frame),
    };
    assert_eq!(
        EmulationRequest::decode(&emu.encode_to_vec()[..]).unwrap(),
        emu
    );
}

#[test]
fn push_record_equals_reply_record() {
    let push = Push {
        channel: "x".repeat(300),
        r#pub: Some(full_publication(1)),
        ..Default::default()
    };
    let reply = Reply {
        push: Some(push.clone()),
        ..Default::default()
    };
    // Lengths above 127 take two varint bytes at both levels.
    assert!(push.encoded_len() > 127);
    assert_eq!(&encode_push_record(&push)[..], &reply_record(&reply)[..]);
}

#[test]
fn shared_decoding_borrows_the_frame() {
    let cmd = Command {
        id: 1,
        publish: Some(PublishRequest {
            channel: "c".into(),
            data: Bytes::from(vec![7u8; 64]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let frame = Bytes::from(record_of(&cmd));
    let decoded = decode_commands_shared(&frame, 1).unwrap();
    let data = &decoded[0].publish.as_ref().unwrap().data;
    let frame_range = frame.as_ptr_range();
    assert!(frame_range.contains(&data.as_ptr()), "payload was copied");
    assert_eq!(&data[..], &[7u8; 64][..]);
}
