//! Heap bytes per allocated address: 1M services allocated in an IPv6 /64 pool (sequential and
//! scattered), with MetalLB's first-fit scan structure measured beside it. A counting global
//! allocator sees every byte the allocators keep; the requests themselves are built and dropped
//! outside the measured window.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use lb_benches::{Counting, FirstFitScan, LIVE};
use lb_core::alloc::{Allocator, PoolAllocator, Request};
use lb_core::config::Pool;
use lb_core::ip::{Family, IpRange, from_u128};
use lb_core::objects::ServiceKey;

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 1_000_000;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn requests() -> Vec<Request> {
    (0..N)
        .map(|i| {
            let mut r = Request::simple(ServiceKey::new("bench", format!("svc-{i}")));
            r.families = vec![Family::V6];
            r
        })
        .collect()
}

#[allow(clippy::print_stdout)]
fn main() {
    // `cargo test --benches` runs bench binaries too: stay quick there.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let range = IpRange::parse("2001:db8::/64").expect("cidr");
    let pool = Pool::new("v6", vec![range]);
    println!("heap bytes per allocated address, {N} services in {range}:");
    for scattered in [false, true] {
        let reqs = requests();
        let before = live();
        let mut a = PoolAllocator::new(std::slice::from_ref(&pool));
        for (i, r) in reqs.iter().enumerate() {
            if scattered {
                let ip: IpAddr =
                    from_u128(Family::V6, range.start() + 2 * (i as u128) * 0x1_0000 + 1);
                a.assign(r, &[ip]).expect("free");
            } else {
                a.allocate(r).expect("room");
            }
        }
        let bytes = live() - before;
        println!(
            "  ours ({:10}): {:6.1} bytes/address ({} occupancy runs)",
            if scattered { "scattered" } else { "sequential" },
            bytes as f64 / N as f64,
            a.occupancy_runs()
        );
        drop(a);
    }
    let keys: Vec<ServiceKey> = (0..N)
        .map(|i| ServiceKey::new("bench", format!("svc-{i}")))
        .collect();
    let before = live();
    let mut s = FirstFitScan::new(range);
    for (i, k) in keys.iter().enumerate() {
        s.take(k, from_u128(Family::V6, range.start() + i as u128));
    }
    let bytes = live() - before;
    println!(
        "  first-fit scan baseline: {:6.1} bytes/address",
        bytes as f64 / N as f64
    );
}
