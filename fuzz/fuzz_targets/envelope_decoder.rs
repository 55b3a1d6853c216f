//! Redis messages (publication envelopes, control messages) must decode or fail cleanly,
//! without unbounded allocation from a length field.
#![no_main]

use ferrocast_protocol::envelope::{ControlMessage, Envelope, decode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((offset, _epoch, Envelope::Pub(p))) = decode_message(data) {
        let _ = p.into_publication(offset);
    }
    let _ = ControlMessage::decode(data);
});
