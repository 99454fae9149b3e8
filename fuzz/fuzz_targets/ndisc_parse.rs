//! IPv6 + Neighbor Discovery parsing: never panics; what parses re-encodes (checksum
//! recomputed) to bytes that parse to the same.

#![no_main]

use lb_announce_l2::wire::ndisc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Some((ip, msg))) = ndisc::parse(bytes) {
        let mut buf = vec![0u8; ndisc::IPV6_HEADER_LEN + msg.buffer_len()];
        ndisc::emit(&ip, &msg, &mut buf);
        assert_eq!(ndisc::parse(&buf), Ok(Some((ip, msg))));
    }
});
