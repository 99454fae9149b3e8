//! The responder's rules, one test each, on frames built from the kernel fixtures' shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_announce_l2::responder::{
    Announced, Ignored, Interface, Verdict, announcement_frames, answers_probe, probe_frame,
    respond,
};
use lb_announce_l2::wire::ndisc::{ALL_NODES, multicast_mac, solicited_node};
use lb_announce_l2::wire::{
    ArpOp, ArpRepr, EtherType, EthernetRepr, Frame, Ipv6Repr, Mac, NaFlags, NdiscRepr, WireError,
};
use lb_core::plan::Interfaces;

const OURS: Mac = Mac(0x02, 0, 0, 0, 0, 0x11);
const CLIENT: Mac = Mac(0x02, 0, 0, 0, 0, 0x02);
const OTHER: Mac = Mac(0x02, 0, 0, 0, 0, 0x99);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

fn eth0() -> Interface {
    Interface {
        index: 2,
        name: "eth0".into(),
        mac: OURS,
        link_local: None,
    }
}

fn announced(scope: Interfaces) -> Announced {
    let mut a = Announced::default();
    a.insert(IpAddr::V4(VIP4), scope.clone());
    a.insert(IpAddr::V6(VIP6), scope);
    a
}

fn bytes(f: &Frame) -> Vec<u8> {
    let mut b = vec![0u8; f.buffer_len()];
    f.emit(&mut b);
    b
}

fn arp_request(dst: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    bytes(&Frame::Arp {
        eth: EthernetRepr {
            dst,
            src: CLIENT,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr {
            op: ArpOp::Request,
            sha: CLIENT,
            spa: CLIENT4,
            tha: Mac::zero(),
            tpa,
        },
    })
}

fn ns(dst: Ipv6Addr, target: Ipv6Addr, slla: Option<Mac>) -> Vec<u8> {
    bytes(&Frame::Ndisc {
        eth: EthernetRepr {
            dst: if dst.is_multicast() {
                multicast_mac(&dst)
            } else {
                OURS
            },
            src: CLIENT,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: CLIENT6,
            dst,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborSolicit {
            target,
            source_lladdr: slla,
        },
    })
}

/// Another station advertising our IPv6 VIP as its own.
fn foreign_na() -> Vec<u8> {
    bytes(&Frame::Ndisc {
        eth: EthernetRepr {
            dst: multicast_mac(&ALL_NODES),
            src: OTHER,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: VIP6,
            dst: ALL_NODES,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborAdvert {
            flags: NaFlags {
                override_: true,
                ..Default::default()
            },
            target: VIP6,
            target_lladdr: Some(OTHER),
        },
    })
}

fn run(a: &Announced, frame: &[u8]) -> (Verdict, Option<Frame>) {
    let mut out = [0u8; 128];
    let v = respond(a, &eth0(), frame, &mut out);
    let reply = match v {
        Verdict::Reply { len, .. } | Verdict::Conflict { len, .. } if len > 0 => {
            Some(Frame::parse(&out[..len]).unwrap())
        }
        _ => None,
    };
    (v, reply)
}

#[test]
fn answers_a_broadcast_arp_request_for_an_owned_address() {
    let (v, reply) = run(
        &announced(Interfaces::All),
        &arp_request(Mac::broadcast(), VIP4),
    );
    assert!(matches!(v, Verdict::Reply { ip, .. } if ip == IpAddr::V4(VIP4)));
    assert_eq!(
        reply.unwrap(),
        Frame::Arp {
            eth: EthernetRepr {
                dst: CLIENT,
                src: OURS,
                ethertype: EtherType::ARP
            },
            arp: ArpRepr {
                op: ArpOp::Reply,
                sha: OURS,
                spa: VIP4,
                tha: CLIENT,
                tpa: CLIENT4
            },
        }
    );
}

#[test]
fn answers_a_unicast_arp_request_to_us_but_not_to_another_station() {
    let a = announced(Interfaces::All);
    assert!(matches!(
        run(&a, &arp_request(OURS, VIP4)).0,
        Verdict::Reply { .. }
    ));
    assert_eq!(
        run(&a, &arp_request(OTHER, VIP4)).0,
        Verdict::Ignore(Ignored::NotForUs)
    );
}

#[test]
fn ignores_arp_for_an_address_not_owned() {
    let (v, _) = run(
        &announced(Interfaces::All),
        &arp_request(Mac::broadcast(), Ipv4Addr::new(192, 0, 2, 101)),
    );
    assert_eq!(v, Verdict::Ignore(Ignored::NotOwned));
}

#[test]
fn ignores_requests_on_an_interface_not_selected_for_the_address() {
    let a = announced(Interfaces::Only(["eth1".to_string()].into()));
    assert_eq!(
        run(&a, &arp_request(Mac::broadcast(), VIP4)).0,
        Verdict::Ignore(Ignored::NotOnThisInterface)
    );
    assert_eq!(
        run(&a, &ns(solicited_node(&VIP6), VIP6, Some(CLIENT))).0,
        Verdict::Ignore(Ignored::NotOnThisInterface)
    );
}

#[test]
fn answers_a_multicast_solicitation_with_a_solicited_override_na() {
    let (v, reply) = run(
        &announced(Interfaces::All),
        &ns(solicited_node(&VIP6), VIP6, Some(CLIENT)),
    );
    assert!(matches!(v, Verdict::Reply { .. }));
    assert_eq!(
        reply.unwrap(),
        Frame::Ndisc {
            eth: EthernetRepr {
                dst: CLIENT,
                src: OURS,
                ethertype: EtherType::IPV6
            },
            ip: Ipv6Repr {
                src: VIP6,
                dst: CLIENT6,
                hop_limit: 255
            },
            msg: NdiscRepr::NeighborAdvert {
                flags: NaFlags {
                    router: false,
                    solicited: true,
                    override_: true
                },
                target: VIP6,
                target_lladdr: Some(OURS),
            },
        }
    );
}

#[test]
fn answers_a_unicast_nud_probe_without_source_lladdr() {
    // MetalLB #2920: unicast NUD probes to the VIP went unanswered.
    let (v, reply) = run(&announced(Interfaces::All), &ns(VIP6, VIP6, None));
    assert!(matches!(v, Verdict::Reply { .. }));
    let Some(Frame::Ndisc { eth, .. }) = reply else {
        panic!()
    };
    assert_eq!(
        eth.dst, CLIENT,
        "without an option the reply goes to the frame's source MAC"
    );
}

#[test]
fn ignores_a_solicitation_sent_to_another_group() {
    let other_group = solicited_node(&"2001:db8::1:200".parse().unwrap());
    assert_eq!(
        run(
            &announced(Interfaces::All),
            &ns(other_group, VIP6, Some(CLIENT))
        )
        .0,
        Verdict::Ignore(Ignored::NotForUs)
    );
}

#[test]
fn ignores_a_solicitation_for_an_address_not_owned() {
    let t: Ipv6Addr = "2001:db8::101".parse().unwrap();
    assert_eq!(
        run(
            &announced(Interfaces::All),
            &ns(solicited_node(&t), t, Some(CLIENT))
        )
        .0,
        Verdict::Ignore(Ignored::NotOwned)
    );
}

#[test]
fn defends_an_owned_address_against_a_dad_probe_and_reports_the_conflict() {
    let probe = bytes(&Frame::Ndisc {
        eth: EthernetRepr {
            dst: multicast_mac(&solicited_node(&VIP6)),
            src: OTHER,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: Ipv6Addr::UNSPECIFIED,
            dst: solicited_node(&VIP6),
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborSolicit {
            target: VIP6,
            source_lladdr: None,
        },
    });
    let (v, reply) = run(&announced(Interfaces::All), &probe);
    assert!(matches!(v, Verdict::Conflict { mac: OTHER, len, .. } if len > 0));
    let Some(Frame::Ndisc {
        ip,
        msg: NdiscRepr::NeighborAdvert { flags, .. },
        ..
    }) = reply
    else {
        panic!()
    };
    assert_eq!(ip.dst, ALL_NODES);
    assert!(!flags.solicited && flags.override_);
}

#[test]
fn reports_a_foreign_station_claiming_an_owned_address() {
    let a = announced(Interfaces::All);
    let garp = bytes(&Frame::Arp {
        eth: EthernetRepr {
            dst: Mac::broadcast(),
            src: OTHER,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr::gratuitous_request(OTHER, VIP4),
    });
    assert!(matches!(
        run(&a, &garp).0,
        Verdict::Conflict { mac: OTHER, .. }
    ));
    let na = foreign_na();
    assert!(matches!(
        run(&a, &na).0,
        Verdict::Conflict { mac: OTHER, .. }
    ));
}

#[test]
fn our_own_gratuitous_frames_are_not_conflicts() {
    let a = announced(Interfaces::All);
    announcement_frames(&eth0(), IpAddr::V4(VIP4), |f| {
        assert!(!matches!(run(&a, f).0, Verdict::Conflict { .. }))
    });
    announcement_frames(&eth0(), IpAddr::V6(VIP6), |f| {
        assert!(!matches!(run(&a, f).0, Verdict::Conflict { .. }))
    });
}

#[test]
fn malformed_frames_are_reported_not_answered() {
    let mut f = ns(solicited_node(&VIP6), VIP6, Some(CLIENT));
    f[14 + 7] = 64;
    assert!(matches!(
        run(&announced(Interfaces::All), &f).0,
        Verdict::Malformed(_)
    ));
}

#[test]
fn announcement_frames_are_gratuitous_request_reply_and_unsolicited_na() {
    let mut frames = Vec::new();
    announcement_frames(&eth0(), IpAddr::V4(VIP4), |f| {
        frames.push(Frame::parse(f).unwrap())
    });
    announcement_frames(&eth0(), IpAddr::V6(VIP6), |f| {
        frames.push(Frame::parse(f).unwrap())
    });
    let Frame::Arp { arp: req, eth } = &frames[0] else {
        panic!()
    };
    assert_eq!(
        (req.op, req.spa, req.tpa, eth.dst),
        (ArpOp::Request, VIP4, VIP4, Mac::broadcast())
    );
    let Frame::Arp { arp: rep, .. } = &frames[1] else {
        panic!()
    };
    assert_eq!(
        (rep.op, rep.tha),
        (ArpOp::Reply, OURS),
        "THA = SHA so Linux accepts it within locktime"
    );
    let Frame::Ndisc {
        ip,
        msg:
            NdiscRepr::NeighborAdvert {
                flags,
                target_lladdr,
                ..
            },
        ..
    } = &frames[2]
    else {
        panic!()
    };
    assert_eq!(
        (ip.dst, flags.override_, flags.solicited, *target_lladdr),
        (ALL_NODES, true, false, Some(OURS))
    );
}

#[test]
fn probes_follow_rfc_5227_and_dad_and_answers_are_recognised() {
    let mut out = [0u8; 128];
    let n = probe_frame(&eth0(), IpAddr::V4(VIP4), &mut out);
    let Frame::Arp { arp, .. } = Frame::parse(&out[..n]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (arp.spa, arp.tha, arp.tpa),
        (Ipv4Addr::UNSPECIFIED, Mac::zero(), VIP4)
    );
    // Our own probe is not an answer; a reply from another station claiming the address is.
    assert_eq!(answers_probe(&eth0(), IpAddr::V4(VIP4), &out[..n]), None);
    let claim = bytes(&Frame::Arp {
        eth: EthernetRepr {
            dst: OURS,
            src: OTHER,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr {
            op: ArpOp::Reply,
            sha: OTHER,
            spa: VIP4,
            tha: OURS,
            tpa: Ipv4Addr::UNSPECIFIED,
        },
    });
    assert_eq!(
        answers_probe(&eth0(), IpAddr::V4(VIP4), &claim),
        Some(OTHER)
    );
    let n = probe_frame(&eth0(), IpAddr::V6(VIP6), &mut out);
    let Frame::Ndisc { ip, .. } = Frame::parse(&out[..n]).unwrap() else {
        panic!()
    };
    assert!(ip.src.is_unspecified());
    let defence = foreign_na();
    assert_eq!(
        answers_probe(&eth0(), IpAddr::V6(VIP6), &defence),
        Some(OTHER)
    );
}

/// A frame the fuzzer found (l2_respond): a neighbour solicitation whose reply did not parse.
/// Every reply the responder writes must be a frame that parses.
#[test]
fn the_reply_to_a_solicitation_the_fuzzer_found_parses() {
    let frame = include_bytes!("fixtures/fuzz/ns-reply-did-not-parse.bin");
    let mut a = Announced::default();
    for ip in ["192.0.2.100", "192.0.2.3", "2001:db8::100", "2001:db8::3"] {
        a.insert(ip.parse::<IpAddr>().unwrap(), Interfaces::All);
    }
    let iface = Interface {
        index: 2,
        name: "eth0".into(),
        mac: Mac::new(2, 0, 0, 0, 0, 0x11),
        link_local: None,
    };
    // Its source is the multicast ffff:2001:db8::2: our advertisement would have gone to a
    // group as a solicited one. It is malformed (RFC 4291 §2.7) and gets no reply.
    let mut out = [0u8; lb_announce_l2::wire::MAX_FRAME_LEN];
    let v = respond(&a, &iface, frame, &mut out);
    assert!(
        matches!(v, Verdict::Malformed(WireError::MulticastSource(_))),
        "{v:?}"
    );
}
