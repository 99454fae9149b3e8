//! Allocation cost per operation at 1k, 64k and 1M allocated services, in an IPv4 /8 and an
//! IPv6 /64 pool, with MetalLB's first-fit linear scan measured beside it at 1k and 64k.
//!
//! One iteration allocates one more service and releases it again, so the fill level stays put.
//! "sequential" fills the pool from its start (MetalLB's own pattern); "scattered" fills it with
//! addresses spread by a fixed pseudo-random sequence, so the used set is N separate runs and
//! the lowest-free lookup has to search among them.
//!
//! The addresses are arithmetic only: nothing is sent anywhere.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_benches::FirstFitScan;
use lb_core::alloc::{Allocator, PoolAllocator, Request};
use lb_core::config::Pool;
use lb_core::ip::{Family, IpRange, from_u128};
use lb_core::objects::ServiceKey;

const FILLS: [(usize, &str); 3] = [(1_000, "1k"), (64_000, "64k"), (1_000_000, "1M")];

fn pool(cidr: &str) -> Pool {
    Pool::new("bench", vec![IpRange::parse(cidr).expect("cidr")])
}

fn request(i: usize, family: Family) -> Request {
    let mut r = Request::simple(ServiceKey::new("bench", format!("svc-{i}")));
    r.families = vec![family];
    r
}

/// splitmix64: a fixed, well-spread sequence.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn filled(cidr: &str, family: Family, n: usize, scattered: bool) -> PoolAllocator {
    let p = pool(cidr);
    let range = p.ranges[0];
    let mut a = PoolAllocator::new(&[p]);
    for i in 0..n {
        let req = request(i, family);
        if scattered {
            // Leave the first address of every 8 free of the spread, so the sequence never
            // collides with itself, and start above the pool's first address.
            let span = range.size().min(1 << 62) / 8;
            let v = range.start() + 8 * (1 + u128::from(mix(i as u64)) % (span - 1)) + 1;
            let ip: IpAddr = from_u128(family, v);
            if a.assign(&req, &[ip]).is_err() {
                a.allocate(&req).expect("pool has room");
            }
        } else {
            a.allocate(&req).expect("pool has room");
        }
    }
    a
}

fn bench_ours(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc+release");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (cidr, family, fam) in [
        ("10.0.0.0/8", Family::V4, "ipv4-/8"),
        ("2001:db8::/64", Family::V6, "ipv6-/64"),
    ] {
        for scattered in [false, true] {
            let layout = if scattered { "scattered" } else { "sequential" };
            for (n, label) in FILLS {
                let mut a = filled(cidr, family, n, scattered);
                let req = request(usize::MAX, family);
                g.bench_function(
                    BenchmarkId::new(format!("ours/{fam}/{layout}"), label),
                    |b| {
                        b.iter(|| {
                            let got = a.allocate(black_box(&req)).expect("room");
                            a.release(&req.key);
                            black_box(got)
                        })
                    },
                );
            }
        }
    }
    // MetalLB's algorithm, same pools, same operation. 1M is left out: each operation would scan
    // a million addresses.
    for (cidr, fam) in [("10.0.0.0/8", "ipv4-/8"), ("2001:db8::/64", "ipv6-/64")] {
        for (n, label) in &FILLS[..2] {
            let mut s = FirstFitScan::new(IpRange::parse(cidr).expect("cidr"));
            let range = s.range();
            for i in 0..*n {
                let ip = from_u128(range.family(), range.start() + i as u128);
                s.take(&ServiceKey::new("bench", format!("svc-{i}")), ip);
            }
            let key = ServiceKey::new("bench", "probe");
            g.bench_function(
                BenchmarkId::new(format!("first-fit-scan/{fam}/sequential"), label),
                |b| {
                    b.iter(|| {
                        let got = s.allocate(black_box(&key));
                        s.release(&key);
                        black_box(got)
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_assign(c: &mut Criterion) {
    let mut g = c.benchmark_group("assign+release");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for (n, label) in FILLS {
        let mut a = filled("2001:db8::/64", Family::V6, n, true);
        let req = request(usize::MAX, Family::V6);
        let ip: IpAddr = "2001:db8::ffff:ffff:ffff".parse().expect("ip");
        g.bench_function(BenchmarkId::new("ours/ipv6-/64/scattered", label), |b| {
            b.iter(|| {
                let got = a.assign(black_box(&req), &[ip]).expect("free");
                a.release(&req.key);
                black_box(got)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_ours, bench_assign);
criterion_main!(benches);
