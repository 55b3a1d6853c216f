//! The wildcard pattern index must agree with the definition of a match on any input
//! (a channel, then patterns, one per line), and never panic on malformed patterns.
#![no_main]

use ferrocast_node::control::{ClientHandle, ControlQueue};
use ferrocast_node::outbox::Outbox;
use ferrocast_node::subscriber::Subscriber;
use ferrocast_node::wildcards::cross_check;
use ferrocast_protocol::Protocol;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fn subscriber(i: usize) -> Arc<Subscriber> {
    let handle = Arc::new(ClientHandle {
        id: format!("c{i}"),
        user: String::new(),
        protocol: Protocol::Json,
        outbox: Arc::new(Outbox::new(1024)),
        control: Arc::new(ControlQueue::default()),
    });
    Arc::new(Subscriber::new(handle, false, false))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = cross_check(text, subscriber)
    {
        panic!("{e}");
    }
});
