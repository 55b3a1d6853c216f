//! Wildcard subscriptions against real nodes: what a pattern receives and how its pushes
//! look, what is refused, and publications from other nodes (HTTP API and the Redis
//! command stream) on standalone Redis and on a Redis Cluster.

use ferrocast_protocol::protobuf::wire;
use ferrocast_tests::compat::{Sdk, compat_dir};
use ferrocast_tests::{Backplane, Client, NodeProcess, PbClient, base_config, token};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn with_sensors(mut cfg: Value) -> Value {
    cfg["channel"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "sensors",
            "allow_wildcard_subscriptions": true,
            "allow_subscribe_for_client": true,
            "allow_publish_for_client": true,
            "allow_history_for_client": true,
            "presence": true,
            "allow_presence_for_client": true,
            "history_size": 100,
            "history_ttl": "60s",
            "force_recovery": true,
        }));
    cfg
}

async fn connect(n: &NodeProcess, user: &str) -> Client {
    Client::connect(&n.ws_url(), &token(json!({"sub": user})))
        .await
        .0
}

async fn subscribe(c: &mut Client, channel: &str) -> Value {
    let r = c.command("subscribe", json!({"channel": channel})).await;
    assert!(r.get("subscribe").is_some(), "subscribe {channel}: {r}");
    r["subscribe"].clone()
}

/// The (push channel, publication channel, data) of the next `n` publications.
async fn received(c: &mut Client, n: usize) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let p = c.push().await;
        assert!(p.get("pub").is_some(), "expected a publication: {p}");
        out.push((
            p["channel"].as_str().unwrap_or_default().to_string(),
            p["pub"]["channel"].as_str().unwrap_or_default().to_string(),
            p["pub"]["data"].clone(),
        ));
    }
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

fn row(push: &str, channel: &str, data: Value) -> (String, String, Value) {
    (push.to_string(), channel.to_string(), data)
}

#[tokio::test]
async fn patterns_receive_the_channels_they_match() {
    let n = NodeProcess::start(with_sensors(base_config())).await;
    let mut p = connect(&n, "alice").await;
    let r = subscribe(&mut p, "sensors:b1.*.temp").await;
    // A pattern is neither recoverable nor positioned, even with force_recovery.
    assert!(
        r.get("recoverable").is_none() && r.get("positioned").is_none(),
        "{r}"
    );
    subscribe(&mut p, "sensors:b2.>").await;
    let mut exact = connect(&n, "bob").await;
    subscribe(&mut exact, "sensors:b1.f1.temp").await;

    for (ch, v) in [
        ("sensors:b1.f1.temp", 1),
        ("sensors:b1.f2.hum", 2),
        ("sensors:b2.f1.temp", 3),
        ("sensors:b2", 4),
        ("sensors:b1.f9.temp", 5),
    ] {
        n.api_ok("publish", json!({"channel": ch, "data": {"v": v}}))
            .await;
    }
    // The push names the pattern (the SDK's subscription); the publication the channel.
    assert_eq!(
        received(&mut p, 3).await,
        vec![
            row("sensors:b1.*.temp", "sensors:b1.f1.temp", json!({"v": 1})),
            row("sensors:b1.*.temp", "sensors:b1.f9.temp", json!({"v": 5})),
            row("sensors:b2.>", "sensors:b2.f1.temp", json!({"v": 3})),
        ]
    );
    assert!(p.try_push(Duration::from_millis(300)).await.is_none());
    // The exact subscriber gets its channel as always, with its offset.
    let e = exact.push().await;
    assert_eq!(
        (
            e["channel"].as_str(),
            e["pub"]["offset"].as_u64(),
            e["pub"].get("channel")
        ),
        (Some("sensors:b1.f1.temp"), Some(1), None),
        "{e}"
    );
    // A client publish reaches the pattern too; unsubscribing a pattern stops it.
    let r = exact
        .command(
            "publish",
            json!({"channel": "sensors:b1.f3.temp", "data": {"v": 6}}),
        )
        .await;
    assert!(r.get("publish").is_some(), "{r}");
    assert_eq!(
        received(&mut p, 1).await,
        vec![row(
            "sensors:b1.*.temp",
            "sensors:b1.f3.temp",
            json!({"v": 6})
        )]
    );
    let r = p
        .command("unsubscribe", json!({"channel": "sensors:b1.*.temp"}))
        .await;
    assert_eq!(r["unsubscribe"], json!({}), "{r}");
    n.api_ok(
        "publish",
        json!({"channel": "sensors:b1.f1.temp", "data": {"v": 7}}),
    )
    .await;
    n.api_ok(
        "publish",
        json!({"channel": "sensors:b2.x", "data": {"v": 8}}),
    )
    .await;
    assert_eq!(
        received(&mut p, 1).await,
        vec![row("sensors:b2.>", "sensors:b2.x", json!({"v": 8}))]
    );
    // In Protobuf the concrete channel is the publication's field 10.
    let (mut pb, _) = PbClient::connect(&n.ws_url(), &token(json!({"sub": "dave"}))).await;
    let r = pb
        .command(wire::Command {
            subscribe: Some(wire::SubscribeRequest {
                channel: "sensors:b4.*".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert!(r.subscribe.is_some(), "{r:?}");
    n.api_ok(
        "publish",
        json!({"channel": "sensors:b4.z", "data": {"v": 10}}),
    )
    .await;
    let push = pb.push().await;
    assert_eq!(push.channel, "sensors:b4.*");
    let publication = push.r#pub.expect("a publication");
    assert_eq!(publication.channel, "sensors:b4.z");
    assert_eq!(publication.data.as_ref(), br#"{"v":10}"#);
    // A subscription token may name a pattern.
    let mut t = connect(&n, "carol").await;
    let sub_token = token(json!({"sub": "carol", "channel": "sensors:b3.*"}));
    let r = t
        .command(
            "subscribe",
            json!({"channel": "sensors:b3.*", "token": sub_token}),
        )
        .await;
    assert!(r.get("subscribe").is_some(), "{r}");
    n.api_ok(
        "publish",
        json!({"channel": "sensors:b3.q", "data": {"v": 9}}),
    )
    .await;
    assert_eq!(
        received(&mut t, 1).await,
        vec![row("sensors:b3.*", "sensors:b3.q", json!({"v": 9}))]
    );
}

#[tokio::test]
async fn malformed_and_misplaced_patterns_get_exact_errors() {
    let n = NodeProcess::start(with_sensors(base_config())).await;
    let mut c = connect(&n, "alice").await;
    let code = |r: &Value| {
        (
            r["error"]["code"].as_u64(),
            r["error"]["message"].as_str().map(str::to_string),
        )
    };
    for (channel, message) in [
        (
            "sensors:**",
            "* and > must be whole tokens of a wildcard pattern",
        ),
        (
            "sensors:a*",
            "* and > must be whole tokens of a wildcard pattern",
        ),
        (
            "sensors:>.a",
            "> must be the last token of a wildcard pattern",
        ),
        ("sensors:a..*", "a wildcard pattern has an empty token"),
        (
            "sensors:a.*.b#42",
            "a wildcard pattern cannot name user-limited channels",
        ),
        (
            "chat:*",
            "wildcard subscriptions are not enabled in this namespace",
        ),
    ] {
        let r = c.command("subscribe", json!({"channel": channel})).await;
        assert_eq!(
            code(&r),
            (Some(107), Some(message.to_string())),
            "{channel}: {r}"
        );
    }
    let long = format!("sensors:{}.*", "x".repeat(300));
    let r = c.command("subscribe", json!({"channel": long})).await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = c
        .command(
            "subscribe",
            json!({"channel": "sensors:a.*", "recover": true, "offset": 1, "epoch": "e"}),
        )
        .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    // Patterns are for subscribing only.
    let only = Some("a wildcard pattern can only be subscribed to".to_string());
    let r = c
        .command("publish", json!({"channel": "sensors:a.*", "data": {}}))
        .await;
    assert_eq!(code(&r), (Some(107), only.clone()), "{r}");
    let r = c.command("history", json!({"channel": "sensors:>"})).await;
    assert_eq!(code(&r), (Some(107), only.clone()), "{r}");
    let r = c.command("presence", json!({"channel": "sensors:>"})).await;
    assert_eq!(code(&r), (Some(107), only.clone()), "{r}");
    let api = n
        .api("publish", json!({"channel": "sensors:a.>", "data": {}}))
        .await;
    assert_eq!(api["error"]["code"], 107, "{api}");
    // The connection is still fine.
    c.command("ping", json!({})).await;
}

/// Three nodes on `bp`: patterns on node 2 and 3 get publications made on node 1 through
/// the HTTP API and through the command stream.
async fn across_nodes(bp: Backplane, prefix: &str) {
    let cfg = with_sensors(bp.node_config(prefix));
    let nodes = [
        NodeProcess::start(cfg.clone()).await,
        NodeProcess::start(cfg.clone()).await,
        NodeProcess::start(cfg).await,
    ];
    for n in &nodes {
        n.wait_ready(200).await;
    }
    let mut b = connect(&nodes[1], "bob").await;
    subscribe(&mut b, "sensors:b1.*.temp").await;
    let mut c = connect(&nodes[2], "carol").await;
    subscribe(&mut c, "sensors:>").await;
    nodes[0]
        .api_ok(
            "publish",
            json!({"channel": "sensors:b1.f1.temp", "data": {"v": 1}}),
        )
        .await;
    let mut conn = bp.connection().await;
    conn.xadd_command(
        prefix,
        "publish",
        &json!({"channel": "sensors:b1.f2.temp", "data": {"v": 2}}).to_string(),
    )
    .await;
    nodes[0]
        .api_ok(
            "publish",
            json!({"channel": "sensors:other", "data": {"v": 3}}),
        )
        .await;
    assert_eq!(
        received(&mut b, 2).await,
        vec![
            row("sensors:b1.*.temp", "sensors:b1.f1.temp", json!({"v": 1})),
            row("sensors:b1.*.temp", "sensors:b1.f2.temp", json!({"v": 2})),
        ]
    );
    assert_eq!(
        received(&mut c, 3).await,
        vec![
            row("sensors:>", "sensors:b1.f1.temp", json!({"v": 1})),
            row("sensors:>", "sensors:b1.f2.temp", json!({"v": 2})),
            row("sensors:>", "sensors:other", json!({"v": 3})),
        ]
    );
    // The last wildcard subscriber of the namespace leaving a node unfollows its feed.
    let feed = format!("{prefix}:feed:{{sensors}}");
    assert_eq!(feed_followers(&bp, &feed).await, 2);
    c.command("unsubscribe", json!({"channel": "sensors:>"}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while feed_followers(&bp, &feed).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3 still follows the feed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many connections follow the pub/sub channel `feed` (on a Redis Cluster, summed
/// over the members: sharded channels are counted where they live).
async fn feed_followers(bp: &Backplane, feed: &str) -> i64 {
    let (members, cmd) = match bp {
        Backplane::Standalone(r) => (r.iter().collect::<Vec<_>>(), "NUMSUB"),
        Backplane::Cluster(c) => (c.members.iter().collect(), "SHARDNUMSUB"),
    };
    let mut total = 0;
    for m in members {
        let mut conn = m.connection().await;
        let v: Vec<redis::Value> = redis::cmd("PUBSUB")
            .arg(cmd)
            .arg(feed)
            .query_async(&mut conn)
            .await
            .expect("PUBSUB NUMSUB");
        if let Some(redis::Value::Int(n)) = v.get(1) {
            total += n;
        }
    }
    total
}

#[tokio::test]
async fn patterns_across_three_nodes_on_redis() {
    across_nodes(Backplane::standalone().await, "wild").await;
}

#[tokio::test]
async fn patterns_across_three_nodes_on_a_redis_cluster() {
    across_nodes(Backplane::cluster().await, "wildc").await;
}

/// Runs an SDK's wildcard script against `subscriber_node`; once it is subscribed,
/// publishes through `api_node`'s HTTP API and through the command stream, and waits for
/// it to pass.
async fn sdk_patterns(
    sdk: Sdk,
    protocol: &str,
    bp: &Backplane,
    prefix: &str,
    api_node: &NodeProcess,
    subscriber_node: &NodeProcess,
) {
    let script = match sdk {
        Sdk::Js => "wildcards_js.mjs",
        Sdk::Python => "wildcards_python.py",
    };
    let expect = json!({
        "sensors:b1.*.temp": [{"v": 1}, {"v": 2}],
        "sensors:>": [{"v": 1}, {"v": 2}, {"v": 3}],
    });
    let mut child = tokio::process::Command::new(sdk.program())
        .arg(compat_dir().join(script))
        .current_dir(compat_dir())
        .env("COMPAT_WS_URL", subscriber_node.ws_url())
        .env("COMPAT_TOKEN", token(json!({"sub": "sdk"})))
        .env("COMPAT_PROTOCOL", protocol)
        .env("COMPAT_EXPECT", expect.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the SDK script");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut output = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            output.push(line.clone());
            if line == "READY" {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ready, "{script} ({protocol}) did not subscribe: {output:?}");
    api_node
        .api_ok(
            "publish",
            json!({"channel": "sensors:b1.f1.temp", "data": {"v": 1}}),
        )
        .await;
    let mut conn = bp.connection().await;
    conn.xadd_command(
        prefix,
        "publish",
        &json!({"channel": "sensors:b1.f2.temp", "data": {"v": 2}}).to_string(),
    )
    .await;
    api_node
        .api_ok(
            "publish",
            json!({"channel": "sensors:b2.x", "data": {"v": 3}}),
        )
        .await;
    let rest = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            output.push(line);
        }
        child.wait().await
    })
    .await
    .expect("the SDK script finished")
    .expect("wait");
    println!("{}", output.join("\n"));
    assert!(rest.success(), "{script} ({protocol}) failed: {output:?}");
}

#[tokio::test]
async fn sdks_subscribe_to_patterns_across_nodes() {
    let bp = Backplane::standalone().await;
    let prefix = "wsdk";
    let cfg = with_sensors(bp.node_config(prefix));
    let a = NodeProcess::start(cfg.clone()).await;
    let b = NodeProcess::start(cfg).await;
    a.wait_ready(200).await;
    b.wait_ready(200).await;
    for sdk in [Sdk::Js, Sdk::Python] {
        for protocol in ["json", "protobuf"] {
            sdk_patterns(sdk, protocol, &bp, prefix, &a, &b).await;
        }
    }
}
