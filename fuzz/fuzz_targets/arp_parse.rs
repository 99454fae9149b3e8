//! ARP payload parsing: never panics; what parses re-encodes to bytes that parse to the same.

#![no_main]

use lb_announce_l2::wire::ArpRepr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(repr) = ArpRepr::parse(bytes) {
        let mut buf = [0u8; lb_announce_l2::wire::arp::LEN];
        repr.emit(&mut buf);
        assert_eq!(ArpRepr::parse(&buf), Ok(repr));
    }
});
