//! The Protobuf command decoder must never panic, whatever a client sends, and what it
//! decodes must survive re-encoding unchanged.
#![no_main]

use ferrocast_protocol::protobuf::{
    CommandMethod, decode_commands, decode_commands_shared, encode_command_into,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_commands(data, 1000);
    let shared = decode_commands_shared(&bytes::Bytes::copy_from_slice(data), 1000);
    assert_eq!(decoded, shared, "copying and sharing decoders disagree");
    if let Ok(commands) = decoded {
        let mut frame = Vec::new();
        for c in &commands {
            let _ = CommandMethod::of(c).name();
            encode_command_into(&mut frame, c);
        }
        let again = decode_commands(&frame, 1000).expect("re-encoded frame decodes");
        assert_eq!(again, commands, "re-encoding changed a command");
    }
});
