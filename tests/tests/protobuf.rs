//! The Protobuf variant of the client protocol against real nodes: how a connection picks
//! it, every command over it, JSON and Protobuf clients sharing channels (on one node and
//! across nodes on Redis), binary payloads, one encoding per protocol per publication, and
//! malformed frames with their exact outcomes.

use ferrocast_protocol::protobuf::{self, wire};
use ferrocast_tests::node::now;
use ferrocast_tests::pbclient::{Command, PbClient};
use ferrocast_tests::{Backplane, Client, NodeProcess, base_config, token};
use serde_json::{Value, json};
use std::time::Duration;

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

/// A subscribe asking for a recoverable subscription, as the SDKs do (it is one where the
/// namespace keeps history).
fn subscribe(channel: &str) -> Command {
    Command {
        subscribe: Some(wire::SubscribeRequest {
            channel: channel.into(),
            recoverable: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn publish(channel: &str, data: &[u8]) -> Command {
    Command {
        publish: Some(wire::PublishRequest {
            channel: channel.into(),
            data: data.to_vec().into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ping() -> Command {
    Command {
        ping: Some(wire::PingRequest {}),
        ..Default::default()
    }
}

/// The counter `name{protocol=...}` from the node's /metrics.
async fn metric(n: &NodeProcess, name: &str, protocol: &str) -> f64 {
    let (_, text) = n.get("/metrics").await;
    let prefix = format!("{name}{{protocol=\"{protocol}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_subprotocol_or_the_query_picks_protobuf() {
    let n = NodeProcess::start(base_config()).await;
    let (c, result) = PbClient::connect(&n.ws_url(), &user_token("1")).await;
    assert_eq!(c.subprotocol.as_deref(), Some("centrifuge-protobuf"));
    assert!(!result.client.is_empty());
    assert!(result.pong && result.ping > 0, "{result:?}");
    assert_eq!(result.flag, 0, "no connection feature is claimed");
    // `?format=protobuf` without a subprotocol: still Protobuf (older SDKs do this).
    let url = format!("{}?format=protobuf", n.ws_url());
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut().remove("sec-websocket-protocol");
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    use futures_util::{SinkExt, StreamExt};
    let mut frame = Vec::new();
    let connect = Command {
        id: 1,
        connect: Some(wire::ConnectRequest {
            token: user_token("2"),
            ..Default::default()
        }),
        ..Default::default()
    };
    protobuf::encode_command_into(&mut frame, &connect);
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        frame.into(),
    ))
    .await
    .unwrap();
    let msg = ws.next().await.unwrap().unwrap();
    let replies = protobuf::decode_replies(&msg.into_data()).unwrap();
    assert_eq!(replies[0].id, 1);
    assert!(replies[0].connect.is_some(), "{replies:?}");
    // A JSON client that offers `centrifuge-json` gets it echoed.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        n.ws_url().as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "centrifuge-json".parse().unwrap());
    let (_, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("centrifuge-json")
    );
}

#[tokio::test]
async fn every_command_works_over_protobuf() {
    let mut cfg = base_config();
    cfg["client"]["ping_interval"] = json!("1s");
    cfg["client"]["pong_timeout"] = json!("500ms");
    let n = NodeProcess::start(cfg).await;
    let (mut c, connected) = PbClient::connect(&n.ws_url(), &user_token("7")).await;
    let ch = "chat:pb";
    let r = c.command(subscribe(ch)).await;
    let sub = r.subscribe.clone().unwrap_or_else(|| panic!("{r:?}"));
    assert!(sub.recoverable && sub.positioned && !sub.epoch.is_empty());
    let epoch = sub.epoch.clone();
    // A join push for ourselves is not sent (join_leave not asked); publish and receive.
    let r = c.command(publish(ch, br#"{"n":1}"#)).await;
    assert!(r.publish.is_some() && r.error.is_none(), "{r:?}");
    let p = c.push().await;
    assert_eq!(p.channel, ch);
    let publication = p.r#pub.expect("a publication");
    assert_eq!(&publication.data[..], br#"{"n":1}"#);
    assert_eq!(publication.offset, 1);
    let info = publication.info.expect("publisher info");
    assert_eq!(
        (info.user.as_str(), info.client.as_str()),
        ("7", connected.client.as_str())
    );
    // Presence and its counts.
    let r = c
        .command(Command {
            presence: Some(wire::PresenceRequest { channel: ch.into() }),
            ..Default::default()
        })
        .await;
    let presence = r
        .presence
        .clone()
        .unwrap_or_else(|| panic!("{r:?}"))
        .presence;
    assert_eq!(presence.len(), 1);
    assert_eq!(presence[&connected.client].user, "7");
    let r = c
        .command(Command {
            presence_stats: Some(wire::PresenceStatsRequest { channel: ch.into() }),
            ..Default::default()
        })
        .await;
    let stats = r.presence_stats.unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
    // History, and recovery from a position.
    c.command(publish(ch, br#"{"n":2}"#)).await;
    c.push().await;
    let r = c
        .command(Command {
            history: Some(wire::HistoryRequest {
                channel: ch.into(),
                limit: -1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let h = r.history.clone().unwrap_or_else(|| panic!("{r:?}"));
    let got: Vec<(u64, Vec<u8>)> = h
        .publications
        .iter()
        .map(|p| (p.offset, p.data.to_vec()))
        .collect();
    assert_eq!(
        got,
        [(1, br#"{"n":1}"#.to_vec()), (2, br#"{"n":2}"#.to_vec())]
    );
    assert_eq!((h.offset, h.epoch.as_str()), (2, epoch.as_str()));
    let (mut d, _) = PbClient::connect(&n.ws_url(), &user_token("8")).await;
    let r = d
        .command(Command {
            subscribe: Some(wire::SubscribeRequest {
                channel: ch.into(),
                recover: true,
                epoch: epoch.clone(),
                offset: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let s = r.subscribe.unwrap();
    assert!(s.recovered && s.was_recovering, "{s:?}");
    assert_eq!(s.publications.len(), 1);
    assert_eq!(&s.publications[0].data[..], br#"{"n":2}"#);
    // ping, rpc (no RPC handler: 104), refresh with a bad token (closed 3500 for JSON too),
    // unsubscribe, send (no reply).
    assert!(c.command(ping()).await.ping.is_some());
    let r = c
        .command(Command {
            rpc: Some(wire::RpcRequest {
                method: "m".into(),
                data: b"{}".to_vec().into(),
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(r.error.map(|e| e.code), Some(104));
    let r = c
        .command(Command {
            unsubscribe: Some(wire::UnsubscribeRequest { channel: ch.into() }),
            ..Default::default()
        })
        .await;
    assert!(r.unsubscribe.is_some());
    let r = c
        .command(Command {
            sub_refresh: Some(wire::SubRefreshRequest {
                channel: ch.into(),
                token: token(json!({"sub": "7", "channel": ch, "exp": now() + 60})),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(
        r.error.map(|e| e.code),
        Some(107),
        "not subscribed any more"
    );
    let r = c
        .command(Command {
            refresh: Some(wire::RefreshRequest {
                token: user_token("7"),
            }),
            ..Default::default()
        })
        .await;
    let refreshed = r.refresh.clone().unwrap_or_else(|| panic!("{r:?}"));
    assert!(refreshed.expires && refreshed.ttl > 3000);
    // The server pings (an empty Reply) and the client's empty Command answers it: the
    // connection outlives several pong timeouts (1 s) while the client only reads.
    assert!(c.try_push(Duration::from_millis(3500)).await.is_none());
    assert!(c.pings >= 2, "{} server pings seen", c.pings);
    assert!(c.command(ping()).await.ping.is_some());
}

#[tokio::test]
async fn json_and_protobuf_clients_share_a_channel() {
    let n = NodeProcess::start(base_config()).await;
    let ch = "chat:mixed";
    let (mut pb, _) = PbClient::connect(&n.ws_url(), &user_token("pb")).await;
    pb.command(subscribe(ch)).await;
    let (mut js, _) = Client::connect(&n.ws_url(), &user_token("js")).await;
    js.command("subscribe", json!({"channel": ch})).await;
    // From the JSON client to both.
    js.command("publish", json!({"channel": ch, "data": {"from": "json"}}))
        .await;
    assert_eq!(js.push().await["pub"]["data"], json!({"from": "json"}));
    let p = pb.push().await.r#pub.unwrap();
    assert_eq!(&p.data[..], br#"{"from":"json"}"#);
    // From the Protobuf client (JSON bytes) to both.
    pb.command(publish(ch, br#"{"from": "protobuf"}"#)).await;
    assert_eq!(js.push().await["pub"]["data"], json!({"from": "protobuf"}));
    assert_eq!(
        &pb.push().await.r#pub.unwrap().data[..],
        br#"{"from": "protobuf"}"#
    );
    // The server API takes binary payloads as base64 (`b64data`); bad base64 is refused.
    let r = n
        .api("publish", json!({"channel": ch, "b64data": "%%"}))
        .await;
    assert_eq!(r["error"]["code"], 107, "bad base64: {r}");
}

#[tokio::test]
async fn a_binary_payload_reaches_protobuf_clients_and_closes_json_ones_with_3506() {
    let n = NodeProcess::start(base_config()).await;
    let ch = "chat:bin";
    let (mut pb, _) = PbClient::connect(&n.ws_url(), &user_token("pb")).await;
    pb.command(subscribe(ch)).await;
    let (mut js, _) = Client::connect(&n.ws_url(), &user_token("js")).await;
    js.command("subscribe", json!({"channel": ch})).await;
    let (mut other, _) = Client::connect(&n.ws_url(), &user_token("other")).await;
    other.command("subscribe", json!({"channel": "news"})).await;
    pb.command(publish(ch, b"\x00\x01 not json \xff")).await;
    assert_eq!(
        &pb.push().await.r#pub.unwrap().data[..],
        b"\x00\x01 not json \xff"
    );
    assert_eq!(
        js.closed().await,
        (3506, "inappropriate protocol".to_string())
    );
    // Through the API too, and JSON clients elsewhere are untouched.
    n.api_ok("publish", json!({"channel": ch, "b64data": "AAEC/w=="}))
        .await;
    assert_eq!(&pb.push().await.r#pub.unwrap().data[..], [0, 1, 2, 0xff]);
    n.api_ok(
        "publish",
        json!({"channel": "news", "data": {"still": "here"}}),
    )
    .await;
    assert_eq!(other.push().await["pub"]["data"], json!({"still": "here"}));
    // A JSON client asking for the history with that publication is closed the same way.
    let (mut late, _) = Client::connect(&n.ws_url(), &user_token("late")).await;
    late.command("subscribe", json!({"channel": ch})).await;
    late.send_text(json!({"id": 5, "history": {"channel": ch, "limit": -1}}).to_string())
        .await;
    assert_eq!(late.closed().await.0, 3506);
    let (_, text) = n.get("/metrics").await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferrocast_inappropriate_protocol_closes_total ")),
        "{text}"
    );
}

#[tokio::test]
async fn a_publication_is_encoded_once_per_protocol_not_per_subscriber() {
    let n = NodeProcess::start(base_config()).await;
    let ch = "news";
    let mut pbs = Vec::new();
    let mut jss = Vec::new();
    for i in 0..5 {
        let (mut pb, _) = PbClient::connect(&n.ws_url(), &user_token(&format!("p{i}"))).await;
        pb.command(subscribe(ch)).await;
        pbs.push(pb);
        let (mut js, _) = Client::connect(&n.ws_url(), &user_token(&format!("j{i}"))).await;
        js.command("subscribe", json!({"channel": ch})).await;
        jss.push(js);
    }
    let before = (
        metric(&n, "ferrocast_push_encodings_total", "json").await,
        metric(&n, "ferrocast_push_encodings_total", "protobuf").await,
    );
    for k in 0..10 {
        n.api_ok("publish", json!({"channel": ch, "data": {"k": k}}))
            .await;
    }
    for c in &mut pbs {
        for _ in 0..10 {
            c.push().await;
        }
    }
    for c in &mut jss {
        for _ in 0..10 {
            c.push().await;
        }
    }
    let after = (
        metric(&n, "ferrocast_push_encodings_total", "json").await,
        metric(&n, "ferrocast_push_encodings_total", "protobuf").await,
    );
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (10.0, 10.0),
        "10 publications to 5 + 5 subscribers"
    );
}

#[tokio::test]
async fn json_and_protobuf_clients_on_different_nodes_of_a_cluster() {
    for bp in [Backplane::standalone().await, Backplane::cluster().await] {
        let cfg = bp.node_config("pbc");
        let a = NodeProcess::start(cfg.clone()).await;
        let b = NodeProcess::start(cfg).await;
        a.wait_ready(200).await;
        b.wait_ready(200).await;
        let ch = "chat:across";
        let (mut pb, _) = PbClient::connect(&a.ws_url(), &user_token("pb")).await;
        let epoch = pb.command(subscribe(ch)).await.subscribe.unwrap().epoch;
        let (mut js, _) = Client::connect(&b.ws_url(), &user_token("js")).await;
        js.command("subscribe", json!({"channel": ch})).await;
        pb.command(publish(ch, br#"{"via":"a"}"#)).await;
        assert_eq!(js.push().await["pub"]["data"], json!({"via": "a"}));
        assert_eq!(&pb.push().await.r#pub.unwrap().data[..], br#"{"via":"a"}"#);
        js.command("publish", json!({"channel": ch, "data": {"via": "b"}}))
            .await;
        assert_eq!(&pb.push().await.r#pub.unwrap().data[..], br#"{"via":"b"}"#);
        js.push().await;
        // Recovery through the other node: the Protobuf client comes back on node b.
        n_publish(&a, ch, json!({"n": 3})).await;
        let (mut again, _) = PbClient::connect(&b.ws_url(), &user_token("pb")).await;
        let r = again
            .command(Command {
                subscribe: Some(wire::SubscribeRequest {
                    channel: ch.into(),
                    recover: true,
                    epoch: epoch.clone(),
                    offset: 2,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        let s = r.subscribe.clone().unwrap_or_else(|| panic!("{r:?}"));
        assert!(s.recovered, "{s:?}");
        assert_eq!(&s.publications[0].data[..], br#"{"n":3}"#);
        assert_eq!(s.publications[0].offset, 3);
    }
}

async fn n_publish(n: &NodeProcess, ch: &str, data: Value) {
    n.api_ok("publish", json!({"channel": ch, "data": data}))
        .await;
}

/// What a malformed Protobuf input leads to.
enum Expect {
    /// The connection is closed with this code.
    Close(u16),
    /// A ping reply to command id 99.
    Pong,
}

#[tokio::test]
async fn malformed_protobuf_frames_get_their_exact_outcome_and_disturb_nobody() {
    let n = NodeProcess::start(base_config()).await;
    let (mut bystander, _) = PbClient::connect(&n.ws_url(), &user_token("bystander")).await;
    bystander.command(subscribe("news")).await;
    let mut ping99 = Vec::new();
    protobuf::encode_command_into(
        &mut ping99,
        &Command {
            id: 99,
            ping: Some(wire::PingRequest {}),
            ..Default::default()
        },
    );
    // The same command with an unknown field (number 100, varint 7) appended to it.
    let mut with_unknown = ping99[1..].to_vec();
    with_unknown.extend_from_slice(&[0xa0, 0x06, 0x07]);
    let mut unknown_field = vec![with_unknown.len() as u8];
    unknown_field.extend(with_unknown);
    let mut two_pow_63 = vec![0x80u8; 9];
    two_pow_63.push(0x01);
    let cases: Vec<(&str, Vec<u8>, bool, Expect)> = vec![
        ("truncated varint", vec![0x80], false, Expect::Close(3501)),
        (
            "length past the frame",
            vec![0x05, 0x08],
            false,
            Expect::Close(3501),
        ),
        ("2^63 length", two_pow_63, false, Expect::Close(3501)),
        (
            "11-byte varint",
            [vec![0xff; 10], vec![0x01]].concat(),
            false,
            Expect::Close(3501),
        ),
        (
            "unknown field (ignored)",
            unknown_field,
            false,
            Expect::Pong,
        ),
        // id (field 1) sent as a length-delimited field.
        (
            "wrong wire type",
            vec![0x03, 0x0a, 0x01, 0x01],
            false,
            Expect::Close(3501),
        ),
        ("empty frame", vec![], false, Expect::Close(3501)),
        (
            "a JSON text frame on a Protobuf connection",
            br#"{"id":99,"ping":{}}"#.to_vec(),
            true,
            Expect::Close(3501),
        ),
        (
            "a good frame after a broken record",
            [ping99.clone(), vec![0x7f]].concat(),
            false,
            Expect::Close(3501),
        ),
    ];
    for (i, (name, input, as_text, expect)) in cases.into_iter().enumerate() {
        let (mut c, _) = PbClient::connect(&n.ws_url(), &user_token("bad")).await;
        if as_text {
            c.send_text(std::str::from_utf8(&input).unwrap()).await;
        } else {
            c.send_binary(input).await;
        }
        match expect {
            Expect::Close(code) => assert_eq!(c.closed().await.0, code, "{name}"),
            Expect::Pong => assert!(c.reply(99).await.ping.is_some(), "{name}"),
        }
        let marker = format!("{{\"after\":{i}}}");
        n.api_ok("publish", json!({"channel": "news", "data": {"after": i}}))
            .await;
        let p = bystander.push().await.r#pub.unwrap();
        assert_eq!(&p.data[..], marker.as_bytes(), "bystander after {name}");
    }
    // Before connect: any command other than connect closes with 3501.
    let mut c = PbClient::open(&n.ws_url()).await;
    c.send_binary(ping99.clone()).await;
    assert_eq!(c.closed().await.0, 3501);
    // The JSON protocol takes no binary frame (a client switching to Protobuf mid-way).
    let (mut js, _) = Client::connect(&n.ws_url(), &user_token("js")).await;
    js.send_binary(ping99).await;
    assert_eq!(js.closed().await.0, 3501);
    // An oversized binary message: 3501 as for JSON.
    let (mut big, _) = PbClient::connect(&n.ws_url(), &user_token("big")).await;
    big.send_binary(vec![0u8; 70_000]).await;
    assert_eq!(big.closed().await.0, 3501);
}
