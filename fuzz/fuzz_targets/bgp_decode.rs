//! Any bytes as a BGP message, with 2- and 4-octet AS contexts: never panics; a decoded message
//! re-encodes to bytes that decode to the same message; an error yields a NOTIFICATION.

#![no_main]

use lb_announce_bgp::packet::{Context, Message, message_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = message_len(data);
    for four_octet_as in [true, false] {
        let ctx = Context { four_octet_as };
        match Message::decode(data, &ctx) {
            Ok(d) => {
                let again = d.message.to_bytes(&ctx);
                if again.len() <= 4096 {
                    let back = Message::decode(&again, &ctx).expect("our own encoding decodes");
                    assert_eq!(back.message, d.message);
                }
            }
            Err(e) => {
                let _ = e.notification().to_string();
            }
        }
    }
});
