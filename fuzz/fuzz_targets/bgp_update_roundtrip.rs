//! Structured UPDATEs from fuzz input through the packing builder: every message fits 4096
//! bytes, decodes cleanly, and together they carry exactly the prefixes given.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use lb_announce_bgp::packet::{AsPath, Context, Message, Origin, PathAttributes, UpdateBuilder};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    v4: Vec<(u32, u8)>,
    v6: Vec<(u128, u8)>,
    path: Vec<u32>,
    communities: Vec<u32>,
    large: Vec<(u32, u32, u32)>,
    med: Option<u32>,
    local_pref: Option<u32>,
    four_octet_as: bool,
    withdraw: bool,
}

fuzz_target!(|input: Input| {
    let mut prefixes: Vec<IpNetwork> = Vec::new();
    for (a, l) in input.v4.iter().take(2000) {
        let l = l % 33;
        let m = if l == 0 { 0 } else { u32::MAX << (32 - u32::from(l)) };
        prefixes.push(IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(a & m), l).expect("valid")));
    }
    for (a, l) in input.v6.iter().take(2000) {
        let l = l % 129;
        let m = if l == 0 { 0 } else { u128::MAX << (128 - u32::from(l)) };
        prefixes.push(IpNetwork::V6(Ipv6Network::new(Ipv6Addr::from(a & m), l).expect("valid")));
    }
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(&input.path[..input.path.len().min(100)])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 10)),
        med: input.med,
        local_pref: input.local_pref,
        communities: input.communities.iter().take(60).copied().collect(),
        large_communities: input.large.iter().take(20).copied().collect(),
        ..Default::default()
    };
    let ctx = Context { four_octet_as: input.four_octet_as };
    let b = UpdateBuilder::new(ctx);
    let msgs = if input.withdraw {
        b.withdraw(&prefixes)
    } else {
        b.announce(&attrs, &prefixes, &["2001:db8::10".parse().expect("ip")])
    };
    let mut seen: Vec<IpNetwork> = Vec::new();
    for m in &msgs {
        assert!(m.len() <= 4096, "message of {} bytes", m.len());
        let d = Message::decode(m, &ctx).expect("decodes");
        assert!(d.rfc7606.is_empty());
        let Message::Update(u) = d.message else { panic!("not an UPDATE") };
        let a = u.attributes;
        seen.extend(u.nlri.iter().chain(&u.withdrawn).map(|p| IpNetwork::V4(*p)));
        seen.extend(a.mp_reach.into_iter().flat_map(|r| r.nlri));
        seen.extend(a.mp_unreach.into_iter().flat_map(|r| r.withdrawn));
    }
    let mut want = prefixes;
    want.sort();
    seen.sort();
    assert_eq!(seen, want);
});
