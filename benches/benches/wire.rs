//! Layer 2 packet work: encoding an ARP reply and a Neighbor Advertisement (checksum included),
//! ours beside smoltcp's wire types writing the same bytes; and parse-and-respond to an ARP
//! request and a Neighbor Solicitation with 1 and with 100,000 announced addresses.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_announce_l2::responder::{Announced, Interface, Verdict, respond};
use lb_announce_l2::wire::ndisc::{multicast_mac, solicited_node};
use lb_announce_l2::wire::{
    ArpOp, ArpRepr, EtherType, EthernetRepr, Frame, Ipv6Repr, MAX_FRAME_LEN, Mac, NaFlags,
    NdiscRepr,
};
use lb_core::plan::Interfaces;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire as smol;

const OURS: Mac = Mac(0x02, 0, 0, 0, 0, 0x11);
const CLIENT: Mac = Mac(0x02, 0, 0, 0, 0, 0x02);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

fn eth(m: Mac) -> smol::EthernetAddress {
    smol::EthernetAddress(m.octets())
}

fn ours_arp_reply() -> Frame {
    Frame::Arp {
        eth: EthernetRepr {
            dst: CLIENT,
            src: OURS,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr {
            op: ArpOp::Reply,
            sha: OURS,
            spa: VIP4,
            tha: CLIENT,
            tpa: CLIENT4,
        },
    }
}

fn ours_na() -> Frame {
    Frame::Ndisc {
        eth: EthernetRepr {
            dst: CLIENT,
            src: OURS,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: VIP6,
            dst: CLIENT6,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited: true,
                override_: true,
            },
            target: VIP6,
            target_lladdr: Some(OURS),
        },
    }
}

fn smol_arp_reply(buf: &mut [u8]) -> usize {
    let mut frame = smol::EthernetFrame::new_unchecked(&mut *buf);
    smol::EthernetRepr {
        src_addr: eth(OURS),
        dst_addr: eth(CLIENT),
        ethertype: smol::EthernetProtocol::Arp,
    }
    .emit(&mut frame);
    let mut pkt = smol::ArpPacket::new_unchecked(frame.payload_mut());
    smol::ArpRepr::EthernetIpv4 {
        operation: smol::ArpOperation::Reply,
        source_hardware_addr: eth(OURS),
        source_protocol_addr: VIP4,
        target_hardware_addr: eth(CLIENT),
        target_protocol_addr: CLIENT4,
    }
    .emit(&mut pkt);
    42
}

fn smol_na(buf: &mut [u8]) -> usize {
    let mut frame = smol::EthernetFrame::new_unchecked(&mut *buf);
    smol::EthernetRepr {
        src_addr: eth(OURS),
        dst_addr: eth(CLIENT),
        ethertype: smol::EthernetProtocol::Ipv6,
    }
    .emit(&mut frame);
    let icmp = smol::Icmpv6Repr::Ndisc(smol::NdiscRepr::NeighborAdvert {
        flags: smol::NdiscNeighborFlags::SOLICITED | smol::NdiscNeighborFlags::OVERRIDE,
        target_addr: VIP6,
        lladdr: Some(eth(OURS).into()),
    });
    let ip = smol::Ipv6Repr {
        src_addr: VIP6,
        dst_addr: CLIENT6,
        next_header: smol::IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let mut ip_pkt = smol::Ipv6Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut ip_pkt);
    let mut icmp_pkt = smol::Icmpv6Packet::new_unchecked(ip_pkt.payload_mut());
    icmp.emit(
        &VIP6,
        &CLIENT6,
        &mut icmp_pkt,
        &ChecksumCapabilities::default(),
    );
    86
}

fn encode(c: &mut Criterion) {
    // Both encoders must write the same frames, or the comparison means nothing.
    let (mut a, mut b) = ([0u8; 128], [0u8; 128]);
    let (n, m) = (ours_arp_reply().emit(&mut a), smol_arp_reply(&mut b));
    assert_eq!(&a[..n], &b[..m], "ARP replies differ");
    let (n, m) = (ours_na().emit(&mut a), smol_na(&mut b));
    assert_eq!(&a[..n], &b[..m], "NAs differ");

    let mut g = c.benchmark_group("encode");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let mut buf = [0u8; 128];
    let arp = ours_arp_reply();
    g.bench_function("arp-reply/ours", |x| {
        x.iter(|| black_box(&arp).emit(black_box(&mut buf)))
    });
    g.bench_function("arp-reply/smoltcp", |x| {
        x.iter(|| smol_arp_reply(black_box(&mut buf)))
    });
    let na = ours_na();
    g.bench_function("na-with-checksum/ours", |x| {
        x.iter(|| black_box(&na).emit(black_box(&mut buf)))
    });
    g.bench_function("na-with-checksum/smoltcp", |x| {
        x.iter(|| smol_na(black_box(&mut buf)))
    });
    g.finish();
}

fn announced(n: u32) -> Announced {
    let mut a = Announced::default();
    a.insert(IpAddr::V4(VIP4), Interfaces::All);
    a.insert(IpAddr::V6(VIP6), Interfaces::All);
    for i in 1..n {
        // Spread over 198.18.0.0/15 and 2001:db8:1::/64: arithmetic only.
        a.insert(IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)), Interfaces::All);
        a.insert(
            IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0001_0000_0000_0000_0000_0000u128 + u128::from(i),
            )),
            Interfaces::All,
        );
    }
    a
}

fn respond_bench(c: &mut Criterion) {
    let iface = Interface {
        index: 2,
        name: "eth0".into(),
        mac: OURS,
        link_local: None,
    };
    let frame = |f: Frame| {
        let mut b = vec![0u8; f.buffer_len()];
        f.emit(&mut b);
        b
    };
    let arp_request = frame(Frame::Arp {
        eth: EthernetRepr {
            dst: Mac::broadcast(),
            src: CLIENT,
            ethertype: EtherType::ARP,
        },
        arp: ArpRepr {
            op: ArpOp::Request,
            sha: CLIENT,
            spa: CLIENT4,
            tha: Mac::zero(),
            tpa: VIP4,
        },
    });
    let group = solicited_node(&VIP6);
    let ns = frame(Frame::Ndisc {
        eth: EthernetRepr {
            dst: multicast_mac(&group),
            src: CLIENT,
            ethertype: EtherType::IPV6,
        },
        ip: Ipv6Repr {
            src: CLIENT6,
            dst: group,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborSolicit {
            target: VIP6,
            source_lladdr: Some(CLIENT),
        },
    });
    let mut g = c.benchmark_group("parse+respond");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (n, label) in [(1, "1"), (100_000, "100k")] {
        let a = announced(n);
        let mut out = [0u8; MAX_FRAME_LEN];
        assert!(matches!(
            respond(&a, &iface, &arp_request, &mut out),
            Verdict::Reply { .. }
        ));
        assert!(matches!(
            respond(&a, &iface, &ns, &mut out),
            Verdict::Reply { .. }
        ));
        g.bench_function(BenchmarkId::new("arp-request", label), |x| {
            x.iter(|| respond(black_box(&a), &iface, black_box(&arp_request), &mut out))
        });
        g.bench_function(BenchmarkId::new("neighbor-solicitation", label), |x| {
            x.iter(|| respond(black_box(&a), &iface, black_box(&ns), &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, encode, respond_bench);
criterion_main!(benches);
