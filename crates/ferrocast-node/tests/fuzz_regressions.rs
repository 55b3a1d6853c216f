//! Every token input kept by the JWT fuzzer is rejected without a panic.

use ferrocast_node::auth::TokenVerifier;
use ferrocast_node::config::TokenConfig;
use std::path::PathBuf;

#[test]
fn jwt_inputs_are_rejected_cleanly() {
    let v = TokenVerifier::new(&TokenConfig {
        hmac_secret_key: "fuzz-secret".into(),
        ..Default::default()
    })
    .unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["corpus/jwt", "regressions/jwt"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            if let Ok(text) = std::str::from_utf8(&bytes) {
                assert!(
                    v.verify_connect(text).is_err(),
                    "{} was accepted",
                    e.path().display()
                );
                let _ = v.verify_subscribe(text);
            }
            n += 1;
        }
    }
    assert!(n > 0, "the seed corpus is missing");
}

#[test]
fn wildcard_inputs_agree_with_the_definition() {
    use ferrocast_node::control::{ClientHandle, ControlQueue};
    use ferrocast_node::outbox::Outbox;
    use ferrocast_node::subscriber::Subscriber;
    use ferrocast_protocol::Protocol;
    use std::sync::Arc;

    let subscriber = |i: usize| {
        Arc::new(Subscriber::new(
            Arc::new(ClientHandle {
                id: format!("c{i}"),
                user: String::new(),
                protocol: Protocol::Json,
                outbox: Arc::new(Outbox::new(1024)),
                control: Arc::new(ControlQueue::default()),
            }),
            false,
            false,
        ))
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut n = 0;
    for dir in ["corpus/wildcard_matcher", "regressions/wildcard_matcher"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).unwrap();
            if let Ok(text) = std::str::from_utf8(&bytes) {
                ferrocast_node::wildcards::cross_check(text, subscriber)
                    .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            }
            n += 1;
        }
    }
    assert!(n > 0, "the seed corpus is missing");
}
