//! Every input kept by the fuzzers (seed corpus and crashers) decodes or fails cleanly.

use ferrocast_protocol::decode_frame;
use ferrocast_protocol::envelope::{ControlMessage, Envelope, decode_message};
use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() {
                let bytes = std::fs::read(&p).expect("read fuzz input");
                out.push((p, bytes));
            }
        }
    }
    out
}

#[test]
fn command_decoder_inputs() {
    let inputs = inputs("command_decoder");
    assert!(!inputs.is_empty(), "the seed corpus is missing");
    for (_, bytes) in inputs {
        let _ = decode_frame(&bytes, 1000);
    }
}

#[test]
fn envelope_decoder_inputs() {
    let inputs = inputs("envelope_decoder");
    assert!(!inputs.is_empty(), "the seed corpus is missing");
    for (path, bytes) in inputs {
        if let Ok((offset, _, Envelope::Pub(p))) = decode_message(&bytes) {
            let _ = p.into_publication(offset);
        } else if path.to_string_lossy().contains("corpus")
            && path.extension().is_some_and(|e| e == "bin")
        {
            panic!("seed {} no longer decodes", path.display());
        }
        let _ = ControlMessage::decode(&bytes);
    }
}

#[test]
fn protobuf_decoder_inputs() {
    use ferrocast_protocol::protobuf::{decode_commands, encode_command_into};
    let inputs = inputs("protobuf_decoder");
    assert!(!inputs.is_empty(), "the seed corpus is missing");
    for (path, bytes) in inputs {
        match decode_commands(&bytes, 1000) {
            Ok(commands) => {
                let mut frame = Vec::new();
                for c in &commands {
                    encode_command_into(&mut frame, c);
                }
                assert_eq!(decode_commands(&frame, 1000).ok(), Some(commands));
            }
            Err(e)
                if path.to_string_lossy().contains("corpus")
                    && path.extension().is_some_and(|x| x == "bin") =>
            {
                panic!("seed {} no longer decodes: {e}", path.display())
            }
            Err(_) => {}
        }
    }
}
