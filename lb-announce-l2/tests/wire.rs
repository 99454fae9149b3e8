//! Wire fixtures in both directions, some captured from the Linux kernel (see
//! `fixtures/README.md`), and property tests: parsing never panics, emit-then-parse is identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_announce_l2::wire::ndisc::{multicast_mac, solicited_node};
use lb_announce_l2::wire::{
    ArpOp, ArpRepr, EtherType, EthernetRepr, Frame, Ipv6Repr, Mac, NaFlags, NdiscRepr, WireError,
};
use proptest::prelude::*;

/// The frames of a classic pcap file (microsecond or nanosecond, either byte order).
fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let u32_at = |b: &[u8], i: usize| {
        let w: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= bytes.len() {
        let len = u32_at(bytes, i + 8) as usize;
        out.push(bytes[i + 16..i + 16 + len].to_vec());
        i += 16 + len;
    }
    out
}

fn kernel() -> Vec<Vec<u8>> {
    pcap_frames(include_bytes!("fixtures/kernel.pcap"))
}

const MAC_A: Mac = Mac(0x02, 0, 0, 0, 0, 0x0a);
const MAC_B: Mac = Mac(0x02, 0, 0, 0, 0, 0x0b);
const IP4_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const IP4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const IP6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const IP6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3);

fn find(pred: impl Fn(&Frame) -> bool) -> (Vec<u8>, Frame) {
    kernel()
        .into_iter()
        .map(|b| {
            let f = Frame::parse(&b).unwrap_or_else(|e| panic!("kernel frame does not parse: {e}"));
            (b, f)
        })
        .find(|(_, f)| pred(f))
        .expect("fixture frame present")
}

fn emitted(f: &Frame) -> Vec<u8> {
    let mut buf = vec![0u8; f.buffer_len()];
    let n = f.emit(&mut buf);
    buf.truncate(n);
    buf
}

#[test]
fn kernel_arp_request_parses_and_reencodes_to_the_same_bytes() {
    let (bytes, f) = find(|f| matches!(f, Frame::Arp { arp, .. } if arp.op == ArpOp::Request));
    let want = Frame::Arp {
        eth: EthernetRepr {
            dst: Mac::broadcast(),
            src: MAC_A,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr {
            op: ArpOp::Request,
            sha: MAC_A,
            spa: IP4_A,
            tha: Mac::zero(),
            tpa: IP4_B,
        },
    };
    assert_eq!(f, want);
    assert_eq!(emitted(&want), bytes);
}

#[test]
fn kernel_arp_reply_parses_and_reencodes_to_the_same_bytes() {
    let (bytes, f) = find(|f| matches!(f, Frame::Arp { arp, .. } if arp.op == ArpOp::Reply));
    let want = Frame::Arp {
        eth: EthernetRepr {
            dst: MAC_A,
            src: MAC_B,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr {
            op: ArpOp::Reply,
            sha: MAC_B,
            spa: IP4_B,
            tha: MAC_A,
            tpa: IP4_A,
        },
    };
    assert_eq!(f, want);
    assert_eq!(emitted(&want), bytes);
}

#[test]
fn kernel_neighbor_solicitation_parses_and_reencodes_to_the_same_bytes() {
    let (bytes, f) = find(
        |f| matches!(f, Frame::Ndisc { msg: NdiscRepr::NeighborSolicit { target, .. }, .. } if *target == IP6_B),
    );
    let group = solicited_node(&IP6_B);
    let want = Frame::Ndisc {
        eth: EthernetRepr {
            dst: multicast_mac(&group),
            src: MAC_A,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: IP6_A,
            dst: group,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborSolicit {
            target: IP6_B,
            source_lladdr: Some(MAC_A),
        },
    };
    assert_eq!(f, want);
    assert_eq!(emitted(&want), bytes, "same bytes, checksum included");
}

#[test]
fn kernel_neighbor_advertisement_parses_and_reencodes_to_the_same_bytes() {
    let (bytes, f) = find(|f| {
        matches!(
            f,
            Frame::Ndisc {
                msg: NdiscRepr::NeighborAdvert { .. },
                ..
            }
        )
    });
    let want = Frame::Ndisc {
        eth: EthernetRepr {
            dst: MAC_A,
            src: MAC_B,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: IP6_B,
            dst: IP6_A,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited: true,
                override_: true,
            },
            target: IP6_B,
            target_lladdr: Some(MAC_B),
        },
    };
    assert_eq!(f, want);
    assert_eq!(emitted(&want), bytes);
}

#[test]
fn kernel_dad_probe_with_nonce_option_parses_without_source_lladdr() {
    let (_, f) = find(|f| matches!(f, Frame::Ndisc { ip, .. } if ip.src.is_unspecified()));
    let Frame::Ndisc { ip, msg, .. } = f else {
        unreachable!()
    };
    let target: Ipv6Addr = "2001:db8::33".parse().unwrap();
    assert_eq!(ip.dst, solicited_node(&target));
    assert_eq!(
        msg,
        NdiscRepr::NeighborSolicit {
            target,
            source_lladdr: None
        }
    );
}

#[test]
fn kernel_frames_of_other_kinds_parse_as_other() {
    let others = kernel()
        .iter()
        .filter(|b| Frame::parse(b) == Ok(Frame::Other))
        .count();
    assert!(
        others >= 3,
        "router solicitation and echo request/reply: {others}"
    );
}

// ---- fixtures written by hand from the RFC layouts (our side of the exchange) ----------------

#[test]
fn gratuitous_arp_request_bytes() {
    let f = Frame::Arp {
        eth: EthernetRepr {
            dst: Mac::broadcast(),
            src: MAC_B,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr::gratuitous_request(MAC_B, Ipv4Addr::new(192, 0, 2, 100)),
    };
    let want: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06, // Ethernet
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // htype, ptype, hlen, plen, op=request
        0x02, 0, 0, 0, 0, 0x0b, 192, 0, 2, 100, // SHA, SPA
        0, 0, 0, 0, 0, 0, 192, 0, 2, 100, // THA, TPA
    ];
    assert_eq!(emitted(&f), want);
    assert_eq!(Frame::parse(&want).unwrap(), f);
}

#[test]
fn unsolicited_na_bytes_and_checksum() {
    let target: Ipv6Addr = "2001:db8::100".parse().unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let f = Frame::Ndisc {
        eth: EthernetRepr {
            dst: multicast_mac(&all_nodes),
            src: MAC_B,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: target,
            dst: all_nodes,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited: false,
                override_: true,
            },
            target,
            target_lladdr: Some(MAC_B),
        },
    };
    let bytes = emitted(&f);
    assert_eq!(bytes.len(), 14 + 40 + 32);
    assert_eq!(&bytes[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(bytes[14 + 7], 255, "hop limit");
    assert_eq!(bytes[54], 136, "NA");
    assert_eq!(bytes[58], 0x20, "Override only");
    assert_eq!(&bytes[78..80], &[2, 1], "target link-layer option, 8 bytes");
    // Checksum computed independently of the crate: one's complement over the pseudo-header.
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for w in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
    };
    add(&target.octets());
    add(&all_nodes.octets());
    add(&[0, 0, 0, 32, 0, 0, 0, 58]);
    add(&bytes[54..86]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(
        sum, 0xffff,
        "a message with a correct checksum sums to all ones"
    );
    assert_eq!(Frame::parse(&bytes).unwrap(), f);
}

// ---- RFC 4861 validation -----------------------------------------------------------------

fn kernel_ns() -> Vec<u8> {
    find(|f| matches!(f, Frame::Ndisc { msg: NdiscRepr::NeighborSolicit { target, .. }, .. } if *target == IP6_B)).0
}

#[test]
fn ndisc_with_hop_limit_below_255_is_rejected() {
    let mut b = kernel_ns();
    b[14 + 7] = 64;
    assert_eq!(Frame::parse(&b), Err(WireError::HopLimit(64)));
}

#[test]
fn ndisc_with_a_wrong_checksum_is_rejected() {
    let mut b = kernel_ns();
    b[14 + 40 + 2] ^= 0x01;
    assert!(matches!(Frame::parse(&b), Err(WireError::Checksum { .. })));
}

#[test]
fn ndisc_with_nonzero_code_is_rejected() {
    let mut b = kernel_ns();
    b[14 + 40 + 1] = 1;
    assert!(matches!(
        Frame::parse(&b),
        Err(WireError::Code(1)) | Err(WireError::Checksum { .. })
    ));
}

#[test]
fn ndisc_option_of_length_zero_is_rejected() {
    let mut b = kernel_ns();
    b[14 + 40 + 25] = 0;
    // Fix the checksum so that only the option is wrong.
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&b[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&b[38..54]).unwrap());
    b[56] = 0;
    b[57] = 0;
    let sum = lb_announce_l2::wire::checksum::icmpv6(&src, &dst, &b[54..]);
    b[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(Frame::parse(&b), Err(WireError::BadOption { offset: 24 }));
}

#[test]
fn truncated_frames_are_errors_not_panics() {
    let b = kernel_ns();
    for n in 0..b.len() {
        let _ = Frame::parse(&b[..n]);
    }
    assert!(matches!(
        Frame::parse(&b[..10]),
        Err(WireError::Truncated { .. })
    ));
    let arp = find(|f| matches!(f, Frame::Arp { .. })).0;
    assert!(matches!(
        Frame::parse(&arp[..30]),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn arp_for_other_hardware_is_rejected() {
    let mut b = find(|f| matches!(f, Frame::Arp { .. })).0;
    b[15] = 6; // IEEE 802 hardware type
    assert!(matches!(
        Frame::parse(&b),
        Err(WireError::ArpNotEthernetIpv4 { htype: 6, .. })
    ));
}

// ---- properties ---------------------------------------------------------------------------

fn mac() -> impl Strategy<Value = Mac> {
    any::<[u8; 6]>().prop_map(|o| Mac::new(o[0], o[1], o[2], o[3], o[4], o[5]))
}

fn unicast_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(|v| Ipv6Addr::from(v & !(0xffu128 << 120)))
}

fn frame() -> impl Strategy<Value = Frame> {
    let arp = (
        mac(),
        mac(),
        any::<[u8; 4]>(),
        mac(),
        any::<[u8; 4]>(),
        prop_oneof![Just(ArpOp::Request), Just(ArpOp::Reply)],
    )
        .prop_map(|(d, sha, spa, tha, tpa, op)| Frame::Arp {
            eth: EthernetRepr {
                dst: d,
                src: sha,
                ethertype: EtherType::ARP,
            },
            arp: ArpRepr {
                op,
                sha,
                spa: spa.into(),
                tha,
                tpa: tpa.into(),
            },
        });
    let ns = (
        mac(),
        mac(),
        unicast_v6(),
        unicast_v6(),
        unicast_v6(),
        proptest::option::of(mac()),
    )
        .prop_map(|(d, s, src, dst, target, lla)| Frame::Ndisc {
            eth: EthernetRepr {
                dst: d,
                src: s,
                ethertype: EtherType::IPV6,
            },
            ip: Ipv6Repr {
                src: if src.is_unspecified() { IP6_A } else { src },
                dst,
                hop_limit: 255,
            },
            msg: NdiscRepr::NeighborSolicit {
                target,
                source_lladdr: lla,
            },
        });
    let na = (
        mac(),
        mac(),
        unicast_v6(),
        unicast_v6(),
        unicast_v6(),
        proptest::option::of(mac()),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(d, s, src, dst, target, lla, (r, so, o))| Frame::Ndisc {
            eth: EthernetRepr {
                dst: d,
                src: s,
                ethertype: EtherType::IPV6,
            },
            ip: Ipv6Repr {
                src,
                dst,
                hop_limit: 255,
            },
            msg: NdiscRepr::NeighborAdvert {
                flags: NaFlags {
                    router: r,
                    solicited: so,
                    override_: o,
                },
                target,
                target_lladdr: lla,
            },
        });
    prop_oneof![arp, ns, na]
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Frame::parse(&bytes);
    }

    #[test]
    fn parsing_mutated_kernel_frames_never_panics(i in 0usize..8, pos in 0usize..128, byte in any::<u8>(), cut in 0usize..130) {
        let frames = kernel();
        let mut b = frames[i % frames.len()].clone();
        if pos < b.len() { b[pos] = byte; }
        b.truncate(cut.max(1));
        let _ = Frame::parse(&b);
    }

    #[test]
    fn emit_then_parse_gives_back_the_same_frame(f in frame()) {
        let bytes = emitted(&f);
        prop_assert_eq!(bytes.len(), f.buffer_len());
        prop_assert_eq!(Frame::parse(&bytes), Ok(f));
    }
}
