//! Any text a client can send on the signaling WebSocket: parsing never panics, and an error
//! always carries a code and a non-empty message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_signaling::protocol::parse_client_message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = parse_client_message(text) {
        assert!(!error.message.is_empty());
    }
});
