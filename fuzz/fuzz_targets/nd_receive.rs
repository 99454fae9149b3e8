//! Any bytes as a neighbour discovery message received on an unnumbered peer's interface:
//! decoding never panics, a decoded message's kind matches its first octet, and the learner
//! fed the result never takes a source that is not link-local.

#![no_main]

use std::net::Ipv6Addr;
use std::time::Duration;

use lb_announce_bgp::nd::{self, Learner, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = nd::decode(data) else {
        return;
    };
    match m {
        Message::RouterSolicitation => assert_eq!(data[0], nd::ROUTER_SOLICITATION),
        Message::RouterAdvertisement { router_lifetime } => {
            assert_eq!(data[0], nd::ROUTER_ADVERTISEMENT);
            assert_eq!(router_lifetime.to_be_bytes(), [data[6], data[7]]);
        }
        _ => {}
    }
    // The message's own octets as the source address it came from.
    let mut a = [0u8; 16];
    for (d, s) in a.iter_mut().zip(data.iter().cycle()) {
        *d = *s;
    }
    let from = Ipv6Addr::from(a);
    let mut l = Learner::new(Duration::from_secs(60));
    let changed = l.heard(from, Duration::from_secs(u64::from(data[1])));
    assert_eq!(changed, from.is_unicast_link_local());
    assert!(l.neighbor().is_none_or(|n| n.is_unicast_link_local()));
});
