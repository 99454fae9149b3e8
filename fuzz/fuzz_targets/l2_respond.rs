//! Whole Ethernet frames through the responder with a fixed announced set: never panics, and
//! every reply it writes is a frame that parses.

#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use lb_announce_l2::responder::{Announced, Interface, Verdict, claim, respond};
use lb_announce_l2::wire::{Frame, MAX_FRAME_LEN, Mac};
use lb_core::plan::Interfaces;
use libfuzzer_sys::fuzz_target;

fn announced() -> &'static Announced {
    static A: OnceLock<Announced> = OnceLock::new();
    A.get_or_init(|| {
        let mut a = Announced::default();
        for ip in ["192.0.2.100", "192.0.2.3", "2001:db8::100", "2001:db8::3"] {
            a.insert(ip.parse::<IpAddr>().expect("ip"), Interfaces::All);
        }
        a.insert("192.0.2.7".parse::<IpAddr>().expect("ip"), Interfaces::Only(["eth9".to_string()].into()));
        a
    })
}

fuzz_target!(|frame: &[u8]| {
    let iface = Interface { index: 2, name: "eth0".into(), mac: Mac::new(2, 0, 0, 0, 0, 0x11), link_local: None };
    let mut out = [0u8; MAX_FRAME_LEN];
    match respond(announced(), &iface, frame, &mut out) {
        Verdict::Reply { len, .. } | Verdict::Conflict { len, .. } if len > 0 => {
            assert!(Frame::parse(&out[..len]).is_ok(), "our reply does not parse");
        }
        _ => {}
    }
    let _ = claim(&iface, frame);
});
