//! The JSON command decoder must never panic, whatever a client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(commands) = ferrocast_protocol::decode_frame(data, 1000) {
        for c in commands {
            let _ = c.method.name();
        }
    }
});
