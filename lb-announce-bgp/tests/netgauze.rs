//! Differential tests against an independent BGP codec, netgauze-bgp-pkt: what we encode it
//! reads completely, and what it writes back we read as the same message; the captured BIRD and
//! GoBGP messages go the other way round.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::PathBuf;

use lb_announce_bgp::packet::*;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use proptest::prelude::*;

mod common;

/// netgauze reads `bytes` as one whole message.
fn theirs(bytes: &[u8]) -> BgpMessage {
    let mut cur = SliceReader::new(bytes);
    let m = BgpMessage::parse(&mut cur, &mut BgpParsingContext::default())
        .unwrap_or_else(|e| panic!("netgauze rejects our bytes: {e:?}\n{bytes:02x?}"));
    assert!(cur.is_empty(), "netgauze left {} bytes", cur.remaining());
    m
}

fn their_bytes(m: &BgpMessage) -> Vec<u8> {
    let mut out = Vec::new();
    m.write(&mut out).expect("netgauze writes");
    out
}

fn ours(bytes: &[u8]) -> Message {
    let d = Message::decode(bytes, &Context::default())
        .unwrap_or_else(|e| panic!("we reject netgauze's bytes: {e}"));
    assert!(d.rfc7606.is_empty(), "{:?}", d.rfc7606);
    d.message
}

/// Ours -> theirs -> theirs written -> ours: the same message.
fn round_trip(m: &Message) {
    let b = m.to_bytes(&Context::default());
    let back = ours(&their_bytes(&theirs(&b)));
    assert_eq!(&back, m);
}

#[test]
fn opens_we_write_are_read_and_rewritten_by_netgauze() {
    for caps in [
        vec![Capability::Multiprotocol(AfiSafi::IPV4_UNICAST)],
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::GracefulRestart(GracefulRestart {
                restarted: true,
                notification: false,
                time: 120,
                families: vec![(AfiSafi::IPV4_UNICAST, true), (AfiSafi::IPV6_UNICAST, true)],
            }),
            Capability::ExtendedNextHop(vec![(AfiSafi::IPV4_UNICAST, 2)]),
        ],
    ] {
        round_trip(&Message::Open(Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::new(192, 0, 2, 10),
            caps,
        )));
    }
}

#[test]
fn small_messages_round_trip_through_netgauze() {
    round_trip(&Message::Keepalive);
    round_trip(&Message::Notification(Notification::cease(2)));
    round_trip(&Message::Notification(Notification {
        code: 3,
        subcode: 1,
        data: vec![1, 2, 3],
    }));
    round_trip(&Message::RouteRefresh(RouteRefresh {
        family: AfiSafi::IPV6_UNICAST,
        subtype: 0,
    }));
    round_trip(&Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST)));
    round_trip(&Message::Update(Update::end_of_rib(AfiSafi::IPV6_UNICAST)));
}

#[test]
fn captured_messages_read_by_netgauze_and_rewritten_read_the_same_by_us() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/messages");
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        let rewritten = their_bytes(&theirs(&bytes));
        assert_eq!(
            ours(&rewritten),
            ours(&bytes),
            "{}",
            e.file_name().to_string_lossy()
        );
    }
}

#[test]
fn packed_updates_are_read_by_netgauze() {
    use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(&[64512])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 10)),
        communities: vec![1],
        ..Default::default()
    };
    let mut prefixes: Vec<IpNetwork> = (0..1000u32)
        .map(|i| IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap()))
        .collect();
    prefixes.extend((0..1000u128).map(|i| {
        IpNetwork::V6(Ipv6Network::new((0x2001_0db8_0001u128 << 80 | i).into(), 128).unwrap())
    }));
    let b = UpdateBuilder::new(Context::default());
    for m in b
        .announce(&attrs, &prefixes, &["2001:db8::10".parse().unwrap()])
        .iter()
        .chain(&b.withdraw(&prefixes))
    {
        let _ = theirs(m);
    }
}

/// RFC 8950: with no IPv4 next hop, IPv4 prefixes go in MP_REACH_NLRI (AFI 1) with an IPv6
/// link-local next hop, packed like the others; netgauze reads them so and we read them back.
#[test]
fn ipv4_prefixes_with_an_ipv6_next_hop_are_read_by_netgauze() {
    use ipnetwork::{IpNetwork, Ipv4Network};
    use lb_announce_bgp::packet::{AfiSafi, Update};
    let attrs = PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(&[64512])),
        ..Default::default()
    };
    let prefixes: Vec<IpNetwork> = (0..2000u32)
        .map(|i| IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(0xcb00_7100 + i), 32).unwrap()))
        .collect();
    let ll: std::net::Ipv6Addr = "fe80::c4b:2cff:fed5:22ec".parse().unwrap();
    let msgs = UpdateBuilder::new(Context::default()).announce(&attrs, &prefixes, &[ll]);
    assert!(msgs.len() > 1, "2000 prefixes take more than one UPDATE");
    let mut seen = Vec::new();
    for m in &msgs {
        assert!(m.len() <= 4096);
        let _ = theirs(m);
        let Message::Update(Update {
            nlri, attributes, ..
        }) = ours(m)
        else {
            panic!("not an UPDATE");
        };
        assert!(nlri.is_empty() && attributes.next_hop.is_none());
        let reach = attributes.mp_reach.expect("MP_REACH_NLRI");
        assert_eq!(reach.family, AfiSafi::IPV4_UNICAST);
        assert_eq!(reach.next_hops, [std::net::IpAddr::V6(ll)]);
        seen.extend(reach.nlri);
    }
    assert_eq!(seen, prefixes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_updates_round_trip_through_netgauze(u in common::arb_update()) {
        round_trip(&Message::Update(u));
    }
}
