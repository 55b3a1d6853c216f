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
