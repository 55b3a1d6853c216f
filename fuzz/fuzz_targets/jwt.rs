//! Token verification must reject garbage without panicking.
#![no_main]

use ferrocast_node::auth::TokenVerifier;
use ferrocast_node::config::TokenConfig;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let v = VERIFIER.get_or_init(|| {
        TokenVerifier::new(&TokenConfig {
            hmac_secret_key: "fuzz-secret".into(),
            ..Default::default()
        })
        .expect("verifier")
    });
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = v.verify_connect(token);
        let _ = v.verify_subscribe(token);
    }
});
