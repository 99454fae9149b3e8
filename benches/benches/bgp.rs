//! UPDATE encoding and decoding, ours beside netgauze-bgp-pkt on the same messages: 1, 100 and
//! 1,000 IPv4 /32s and 1,000 IPv6 /128s with the attributes a load balancer sends (ORIGIN,
//! AS_PATH, NEXT_HOP or MP_REACH_NLRI, COMMUNITIES, LARGE_COMMUNITIES). 1,000 prefixes take
//! more than one 4096-byte UPDATE; both sides handle the same message list. "pack" is our
//! builder going from the prefix list to bytes, splitting included.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use lb_announce_bgp::packet::{AsPath, Context, Message, Origin, PathAttributes, UpdateBuilder};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;

fn attrs() -> PathAttributes {
    PathAttributes {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence(&[64512])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 10)),
        communities: vec![(64512 << 16) | 100],
        large_communities: vec![(64512, 1, 1)],
        ..Default::default()
    }
}

fn prefixes(n: u32, v6: bool) -> Vec<IpNetwork> {
    (0..n)
        .map(|i| {
            if v6 {
                IpNetwork::V6(
                    Ipv6Network::new(
                        Ipv6Addr::from((0x2001_0db8_0001u128 << 80) | u128::from(i)),
                        128,
                    )
                    .expect("prefix"),
                )
            } else {
                // 198.18.0.0/15: arithmetic only.
                IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from(0xc612_0000 + i), 32).expect("prefix"),
                )
            }
        })
        .collect()
}

fn theirs(bytes: &[u8]) -> BgpMessage {
    let mut cur = SliceReader::new(bytes);
    BgpMessage::parse(&mut cur, &mut BgpParsingContext::default()).expect("netgauze reads it")
}

fn bench(c: &mut Criterion) {
    let ctx = Context::default();
    let builder = UpdateBuilder::new(ctx);
    let nh: Ipv6Addr = "2001:db8::10".parse().expect("ip");
    let mut g = c.benchmark_group("update");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (n, v6, label) in [
        (1, false, "ipv4-1"),
        (100, false, "ipv4-100"),
        (1000, false, "ipv4-1000"),
        (1000, true, "ipv6-1000"),
    ] {
        let list = prefixes(n, v6);
        let wire: Vec<Vec<u8>> = builder.announce(&attrs(), &list, &[nh]);
        let ours: Vec<Message> = wire
            .iter()
            .map(|b| Message::decode(b, &ctx).expect("decodes").message)
            .collect();
        let their_msgs: Vec<BgpMessage> = wire.iter().map(|b| theirs(b)).collect();
        // Both encoders must write the same bytes for the comparison to mean anything.
        for (m, b) in their_msgs.iter().zip(&wire) {
            let mut out = Vec::new();
            m.write(&mut out).expect("writes");
            assert_eq!(&out, b, "netgauze writes other bytes");
        }
        let mut buf = Vec::with_capacity(8192);
        g.bench_function(BenchmarkId::new("encode/ours", label), |x| {
            x.iter(|| {
                buf.clear();
                for m in &ours {
                    m.encode(&ctx, &mut buf);
                }
                black_box(buf.len())
            })
        });
        g.bench_function(BenchmarkId::new("encode/netgauze", label), |x| {
            x.iter(|| {
                buf.clear();
                for m in &their_msgs {
                    m.write(&mut buf).expect("writes");
                }
                black_box(buf.len())
            })
        });
        g.bench_function(BenchmarkId::new("pack/ours", label), |x| {
            x.iter(|| black_box(builder.announce(black_box(&attrs()), &list, &[nh])))
        });
        g.bench_function(BenchmarkId::new("decode/ours", label), |x| {
            x.iter(|| {
                for b in &wire {
                    black_box(Message::decode(black_box(b), &ctx).expect("decodes"));
                }
            })
        });
        g.bench_function(BenchmarkId::new("decode/netgauze", label), |x| {
            x.iter(|| {
                for b in &wire {
                    black_box(theirs(black_box(b)));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
