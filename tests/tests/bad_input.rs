//! Every kind of bad client input in one table: each case gets its exact outcome (an
//! error reply or a close code), and a bystander subscribed on the same node keeps
//! receiving publications after every case.

use ferrocast_tests::node::{now, token_with};
use ferrocast_tests::{Client, NodeProcess, base_config, token};
use serde_json::json;

enum Send {
    Text(String),
    Binary(Vec<u8>),
    RawText(Vec<u8>),
}

enum Expect {
    /// An error reply with this code to command id 99.
    Reply(u64),
    /// The connection is closed with this code.
    Close(u16),
}

struct Case {
    name: &'static str,
    /// Connect with this token first (None: send the input instead of connecting).
    connect_as: Option<String>,
    input: Send,
    expect: Expect,
}

fn user_token(user: &str) -> String {
    token(json!({"sub": user, "exp": now() + 3600}))
}

fn cmd(method: &str, params: serde_json::Value) -> Send {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), json!(99));
    m.insert(method.into(), params);
    Send::Text(serde_json::Value::Object(m).to_string())
}

fn cases() -> Vec<Case> {
    let user = || Some(user_token("42"));
    let unsigned_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiI0MiJ9.".to_string();
    let many: Vec<String> = (0..10_000)
        .map(|i| json!({"id": i + 1, "ping": {}}).to_string())
        .collect();
    vec![
        Case {
            name: "malformed JSON",
            connect_as: user(),
            input: Send::Text("{\"id\":1,".into()),
            expect: Expect::Close(3501),
        },
        Case {
            name: "valid JSON of the wrong shape",
            connect_as: user(),
            input: Send::Text("[1,2,3]".into()),
            expect: Expect::Close(3501),
        },
        Case {
            name: "unknown method",
            connect_as: user(),
            input: cmd("frobnicate", json!({})),
            expect: Expect::Reply(107),
        },
        Case {
            name: "missing id",
            connect_as: user(),
            input: Send::Text(json!({"subscribe": {"channel": "news"}}).to_string()),
            expect: Expect::Close(3501),
        },
        Case {
            name: "huge id",
            connect_as: user(),
            input: Send::Text(json!({"id": 1u64 << 40, "ping": {}}).to_string()),
            expect: Expect::Close(3501),
        },
        Case {
            name: "binary frame on the JSON protocol",
            connect_as: user(),
            input: Send::Binary(vec![0, 1, 2]),
            expect: Expect::Close(3501),
        },
        Case {
            name: "invalid UTF-8",
            connect_as: user(),
            input: Send::RawText(vec![b'{', 0xff, b'}']),
            expect: Expect::Close(3501),
        },
        Case {
            name: "frame over the size limit",
            connect_as: user(),
            input: cmd(
                "publish",
                json!({"channel": "news", "data": "x".repeat(70_000)}),
            ),
            expect: Expect::Close(3501),
        },
        Case {
            name: "10,000 commands in one frame",
            connect_as: user(),
            input: Send::Text(many.join("\n")),
            expect: Expect::Close(3501),
        },
        Case {
            name: "empty channel name",
            connect_as: user(),
            input: cmd("subscribe", json!({"channel": ""})),
            expect: Expect::Reply(107),
        },
        Case {
            name: "channel name too long",
            connect_as: user(),
            input: cmd("subscribe", json!({"channel": "c".repeat(256)})),
            expect: Expect::Reply(107),
        },
        Case {
            name: "channel name with control characters",
            connect_as: user(),
            input: cmd("subscribe", json!({"channel": "a\u{0}b"})),
            expect: Expect::Reply(107),
        },
        Case {
            name: "expired token",
            connect_as: None,
            input: cmd(
                "connect",
                json!({"token": token(json!({"sub": "1", "exp": now() - 60}))}),
            ),
            expect: Expect::Reply(109),
        },
        Case {
            name: "token with alg none",
            connect_as: None,
            input: cmd("connect", json!({"token": unsigned_none})),
            expect: Expect::Close(3500),
        },
        Case {
            name: "token signed with another key",
            connect_as: None,
            input: cmd(
                "connect",
                json!({"token": token_with("another-key", json!({"sub": "42"}))}),
            ),
            expect: Expect::Close(3500),
        },
        Case {
            name: "another user's limited channel",
            connect_as: user(),
            input: cmd("subscribe", json!({"channel": "dialog:x#7,8"})),
            expect: Expect::Reply(103),
        },
        Case {
            name: "subscription token for another channel",
            connect_as: user(),
            input: cmd(
                "subscribe",
                json!({"channel": "private:a", "token": token(json!({"sub": "42", "channel": "private:b"}))}),
            ),
            expect: Expect::Reply(103),
        },
        Case {
            name: "command before connect",
            connect_as: None,
            input: cmd("subscribe", json!({"channel": "news"})),
            expect: Expect::Close(3501),
        },
    ]
}

#[tokio::test]
async fn each_bad_input_gets_its_exact_outcome_and_disturbs_nobody() {
    let n = NodeProcess::start(base_config()).await;
    let (mut bystander, _) = Client::connect(&n.ws_url(), &user_token("bystander")).await;
    bystander
        .command("subscribe", json!({"channel": "news"}))
        .await;
    for (i, case) in cases().into_iter().enumerate() {
        let mut c = match &case.connect_as {
            Some(t) => Client::connect(&n.ws_url(), t).await.0,
            None => Client::open(&n.ws_url()).await,
        };
        match case.input {
            Send::Text(t) => c.send_text(t).await,
            Send::Binary(b) => c.send_binary(b).await,
            Send::RawText(b) => c.send_raw_text(b).await,
        }
        match case.expect {
            Expect::Reply(code) => {
                let r = c.reply(99).await;
                assert_eq!(r["error"]["code"], json!(code), "{}: {r}", case.name);
                // A connected client stays usable.
                if case.connect_as.is_some() {
                    let pong = c.command("ping", json!({})).await;
                    assert!(pong.get("ping").is_some(), "{}", case.name);
                }
            }
            Expect::Close(code) => assert_eq!(c.closed().await.0, code, "{}", case.name),
        }
        let marker = json!({"after": i});
        n.api_ok("publish", json!({"channel": "news", "data": marker}))
            .await;
        assert_eq!(
            bystander.push().await["pub"]["data"],
            marker,
            "bystander after {}",
            case.name
        );
    }
}
