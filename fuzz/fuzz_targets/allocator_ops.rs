//! Arbitrary sequences of allocator operations over small pools; after each step the
//! allocator's own view must be consistent: every held address is in the pool it names, that
//! pool admits the service, and addresses are shared only as the sharing rules allow.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use lb_core::alloc::{Allocator, Placement, PoolAllocator, Request};
use lb_core::config::{Pool, PoolAllocation};
use lb_core::ip::{Family, IpRange};
use lb_core::objects::{FamilyPolicy, Port, ServiceKey};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct PoolSpec {
    first: u8,
    len: u8,
    v6: bool,
    pinned_to_b: bool,
    avoid_buggy: bool,
}

#[derive(Arbitrary, Debug)]
struct Svc {
    id: u8,
    sharing: Option<u8>,
    local: bool,
    ports: Vec<u8>,
    family: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate(Svc),
    Assign(Svc, u8, bool),
    Release(u8),
    SetPools(Vec<PoolSpec>),
}

fn addr(v6: bool, last: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last)))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }
}

fn pools(specs: &[PoolSpec]) -> Vec<Pool> {
    let mut out: Vec<Pool> = Vec::new();
    for (i, s) in specs.iter().take(4).enumerate() {
        let last = s.first.saturating_add(s.len % 16);
        let Ok(range) = IpRange::new(addr(s.v6, s.first), addr(s.v6, last)) else {
            continue;
        };
        // Pools never overlap in a valid config.
        if out.iter().any(|p| p.ranges.iter().any(|r| r.overlaps(&range))) {
            continue;
        }
        let mut pool = Pool::new(format!("p{i}"), vec![range]);
        pool.avoid_buggy_ips = s.avoid_buggy;
        pool.allocation = s
            .pinned_to_b
            .then(|| PoolAllocation::for_namespaces(["b"]));
        out.push(pool);
    }
    out
}

fn request(s: &Svc) -> Request {
    let ns = if s.id % 2 == 0 { "a" } else { "b" };
    let mut r = Request::simple(ServiceKey::new(ns, format!("s{}", s.id % 8)));
    r.sharing_key = s.sharing.map(|k| format!("k{}", k % 2));
    r.backend_key = if s.local { "app=x".into() } else { String::new() };
    r.ports = s
        .ports
        .iter()
        .take(3)
        .map(|p| Port {
            protocol: "TCP".into(),
            port: u16::from(p % 4),
        })
        .collect();
    (r.families, r.policy) = match s.family % 4 {
        0 => (vec![Family::V4], FamilyPolicy::SingleStack),
        1 => (vec![Family::V6], FamilyPolicy::SingleStack),
        2 => (vec![Family::V4, Family::V6], FamilyPolicy::PreferDualStack),
        _ => (vec![Family::V6, Family::V4], FamilyPolicy::RequireDualStack),
    };
    r
}

fuzz_target!(|input: (bool, Vec<Op>)| {
    let (hashed, ops) = input;
    let placement = if hashed { Placement::Hashed } else { Placement::Lowest };
    let mut current = pools(&[]);
    let mut a = PoolAllocator::with_placement(&current, placement);
    let mut params: std::collections::BTreeMap<ServiceKey, Request> = Default::default();
    for op in ops.iter().take(64) {
        match op {
            Op::Allocate(s) => {
                let r = request(s);
                if a.allocate(&r).is_ok() {
                    params.insert(r.key.clone(), r);
                }
            }
            Op::Assign(s, last, v6) => {
                let r = request(s);
                if a.assign(&r, &[addr(*v6, *last)]).is_ok() {
                    params.insert(r.key.clone(), r);
                }
            }
            Op::Release(id) => {
                for ns in ["a", "b"] {
                    a.release(&ServiceKey::new(ns, format!("s{}", id % 8)));
                }
            }
            Op::SetPools(specs) => {
                current = pools(specs);
                a.set_pools(&current);
            }
        }
        check(&a, &current, &params);
    }
});

fn check(a: &PoolAllocator, pools: &[Pool], params: &std::collections::BTreeMap<ServiceKey, Request>) {
    let held: Vec<(ServiceKey, lb_core::alloc::Allocation)> = a
        .services()
        .into_iter()
        .filter_map(|k| a.allocation(&k).map(|al| (k, al)))
        .collect();
    for (k, al) in &held {
        let pool = pools.iter().find(|p| p.name == al.pool).expect("held pool exists");
        for ip in &al.ips {
            assert!(pool.contains(*ip), "{k} holds {ip} outside {}", pool.name);
            assert!(!(pool.avoid_buggy_ips && lb_core::ip::is_buggy(*ip)), "buggy ip held");
        }
        if let Some(alloc) = &pool.allocation {
            assert!(alloc.namespaces.contains(&k.namespace), "{k} in a pool that does not admit it");
        }
        let me = &params[k];
        for (o, other) in &held {
            if o == k || !other.ips.iter().any(|ip| al.ips.contains(ip)) {
                continue;
            }
            let them = &params[o];
            assert!(me.sharing_key.is_some() && me.sharing_key == them.sharing_key, "{k} and {o} share without a common key");
            assert_eq!(me.backend_key, them.backend_key);
            assert!(me.ports.iter().all(|p| !them.ports.contains(p)), "{k} and {o} share a port");
        }
    }
}
