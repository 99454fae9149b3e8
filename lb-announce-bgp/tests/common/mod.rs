//! Strategies shared by the codec tests.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network};
use lb_announce_bgp::packet::*;
use proptest::prelude::*;

/// Unicast prefixes only (no 224.0.0.0/3 or ff00::/8 networks): what a load balancer announces,
/// and what an independent codec accepts in a unicast family.
pub fn arb_v4() -> impl Strategy<Value = Ipv4Network> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| {
        let m = if l == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(l))
        };
        Ipv4Network::new(Ipv4Addr::from(a & m & !0x2000_0000), l).unwrap()
    })
}

pub fn arb_v6() -> impl Strategy<Value = IpNetwork> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
        let m = if l == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(l))
        };
        IpNetwork::V6(
            ipnetwork::Ipv6Network::new(Ipv6Addr::from(a & m & !(1u128 << 127)), l).unwrap(),
        )
    })
}

prop_compose! {
    pub fn arb_update()(
        withdrawn in prop::collection::vec(arb_v4(), 0..5),
        nlri in prop::collection::vec(arb_v4(), 0..5),
        origin in prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)],
        path in prop::collection::vec(any::<u32>(), 0..4),
        nh in any::<u32>(),
        med in proptest::option::of(any::<u32>()),
        lp in proptest::option::of(any::<u32>()),
        comms in prop::collection::vec(any::<u32>(), 0..4),
        large in prop::collection::vec(any::<(u32, u32, u32)>(), 0..3),
        v6 in prop::collection::vec(arb_v6(), 0..5),
        v6w in prop::collection::vec(arb_v6(), 0..3),
    ) -> Update {
        let mut a = PathAttributes {
            origin: Some(origin),
            as_path: Some(AsPath::sequence(&path)),
            next_hop: (!nlri.is_empty()).then(|| Ipv4Addr::from(nh)),
            med,
            local_pref: lp,
            communities: comms,
            large_communities: large,
            ..Default::default()
        };
        if !v6.is_empty() {
            a.mp_reach = Some(MpReach { family: AfiSafi::IPV6_UNICAST, next_hops: vec![IpAddr::V6(Ipv6Addr::from(u128::from(nh) + 1))], nlri: v6 });
        }
        if !v6w.is_empty() {
            a.mp_unreach = Some(MpUnreach { family: AfiSafi::IPV6_UNICAST, withdrawn: v6w });
        }
        Update { withdrawn, attributes: a, nlri }
    }
}
