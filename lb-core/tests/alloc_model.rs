//! Model-based property test: random sequences of allocate / assign-this-IP / release /
//! change-pools / restart-and-recover, run against `PoolAllocator` and against a reference model
//! that does the obvious thing (scan every pool address from the lowest, check every holder).
//!
//! Checked after every step: both hold the same addresses for every service; an address serves
//! two services only when the sharing rules allow it; every address lies in a pool that admits
//! its service; after a restart every service keeps its addresses; and the same sequence run
//! twice gives the same results.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use lb_core::alloc::converge::Input;
use lb_core::alloc::{Allocator, PoolAllocator, Request, converge};
use lb_core::config::{Pool, PoolAllocation};
use lb_core::ip::IpRange;
use lb_core::objects::{Port, ServiceKey};
use proptest::prelude::*;

const SERVICES: usize = 6;
const NAMESPACES: [&str; 2] = ["a", "b"];

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

/// Pool sets the sequence switches between: (name, first, last, namespaces it is pinned to).
type PoolSpec = (&'static str, u8, u8, Option<&'static str>);
const POOL_SETS: [&[PoolSpec]; 3] = [
    &[("p1", 0, 3, None), ("p2", 8, 9, Some("b"))],
    &[("p1", 2, 5, None), ("p3", 0, 1, None)],
    &[("p0", 0, 15, None)],
];

fn pools(set: usize) -> Vec<Pool> {
    POOL_SETS[set]
        .iter()
        .map(|&(name, lo, hi, ns)| {
            let mut p = Pool::new(name, vec![IpRange::new(ip(lo), ip(hi)).unwrap()]);
            p.allocation = ns.map(|n| PoolAllocation::for_namespaces([n]));
            p
        })
        .collect()
}

#[derive(Clone, Debug)]
struct Params {
    sharing_key: Option<&'static str>,
    backend: &'static str,
    ports: Vec<u16>,
}

#[derive(Clone, Debug)]
enum Op {
    Allocate(usize, Params),
    Assign(usize, Params, u8),
    Release(usize),
    ChangePools(usize),
    Restart,
}

fn params() -> impl Strategy<Value = Params> {
    (
        prop_oneof![Just(None), Just(Some("k1")), Just(Some("k2"))],
        prop_oneof![Just(""), Just("app=x")],
        prop::sample::subsequence(vec![80u16, 443, 53], 0..=2),
    )
        .prop_map(|(sharing_key, backend, ports)| Params {
            sharing_key,
            backend,
            ports,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..SERVICES, params()).prop_map(|(s, p)| Op::Allocate(s, p)),
        2 => (0..SERVICES, params(), 0u8..16).prop_map(|(s, p, i)| Op::Assign(s, p, i)),
        2 => (0..SERVICES).prop_map(Op::Release),
        1 => (0..POOL_SETS.len()).prop_map(Op::ChangePools),
        1 => Just(Op::Restart),
    ]
}

fn key(s: usize) -> ServiceKey {
    ServiceKey::new(NAMESPACES[s % 2], format!("s{s}"))
}

fn request(s: usize, p: &Params) -> Request {
    let mut r = Request::simple(key(s));
    r.sharing_key = p.sharing_key.map(str::to_string);
    r.backend_key = p.backend.to_string();
    r.ports = p
        .ports
        .iter()
        .map(|&port| Port {
            protocol: "TCP".into(),
            port,
        })
        .collect();
    r
}

/// The reference model: a map of holders and a linear scan.
#[derive(Clone, Debug, Default)]
struct Model {
    set: usize,
    held: BTreeMap<usize, (String, u8, Params)>,
}

impl Model {
    fn pool_of(&self, last: u8) -> Option<PoolSpec> {
        POOL_SETS[self.set]
            .iter()
            .copied()
            .find(|&(_, lo, hi, _)| (lo..=hi).contains(&last))
    }

    fn admits(pool: PoolSpec, s: usize) -> bool {
        pool.3.is_none_or(|ns| ns == NAMESPACES[s % 2])
    }

    fn compatible(&self, s: usize, p: &Params, last: u8) -> bool {
        self.held
            .iter()
            .filter(|(o, (_, l, _))| **o != s && *l == last)
            .all(|(_, (_, _, q))| {
                p.sharing_key.is_some()
                    && p.sharing_key == q.sharing_key
                    && p.backend == q.backend
                    && p.ports.iter().all(|x| !q.ports.contains(x))
            })
    }

    fn assign(&mut self, s: usize, p: &Params, last: u8) -> bool {
        match self.pool_of(last) {
            Some(pool) if Self::admits(pool, s) && self.compatible(s, p, last) => {
                self.held.insert(s, (pool.0.to_string(), last, p.clone()));
                true
            }
            _ => false,
        }
    }

    fn allocate(&mut self, s: usize, p: &Params) {
        if let Some((_, last, _)) = self.held.get(&s).cloned()
            && self.assign(s, p, last)
        {
            return;
        }
        self.held.remove(&s);
        // Pinned pools first, then the rest; each group in name order.
        let mut order: Vec<PoolSpec> = POOL_SETS[self.set].to_vec();
        order.sort_by_key(|&(name, _, _, ns)| (ns.is_none(), name));
        for pool in order.into_iter().filter(|&pool| Self::admits(pool, s)) {
            if let Some(last) = (pool.1..=pool.2).find(|&l| self.compatible(s, p, l)) {
                self.held.insert(s, (pool.0.to_string(), last, p.clone()));
                return;
            }
        }
    }

    fn change_pools(&mut self, set: usize) {
        self.set = set;
        let held = std::mem::take(&mut self.held);
        for (s, (_, last, p)) in held {
            if let Some(pool) = self.pool_of(last).filter(|&pool| Self::admits(pool, s)) {
                self.held.insert(s, (pool.0.to_string(), last, p));
            }
        }
    }
}

/// Runs the ops on a fresh allocator; returns what every service holds after each step.
/// What every service holds: pool and addresses.
type Holdings = BTreeMap<ServiceKey, (String, Vec<IpAddr>)>;

fn run(ops: &[Op]) -> Result<Vec<Holdings>, TestCaseError> {
    let mut alloc = PoolAllocator::new(&pools(0));
    let mut model = Model::default();
    let mut trace = Vec::new();
    for op in ops {
        match op {
            Op::Allocate(s, p) => {
                let _ = alloc.allocate(&request(*s, p));
                model.allocate(*s, p);
            }
            Op::Assign(s, p, last) => {
                let ok = alloc.assign(&request(*s, p), &[ip(*last)]).is_ok();
                prop_assert_eq!(ok, model.assign(*s, p, *last), "assign {:?}", op);
            }
            Op::Release(s) => {
                alloc.release(&key(*s));
                model.held.remove(s);
            }
            Op::ChangePools(set) => {
                alloc.set_pools(&pools(*set));
                model.change_pools(*set);
            }
            Op::Restart => {
                let before = snapshot(&alloc);
                let mut fresh = PoolAllocator::new(&pools(model.set));
                let inputs = model
                    .held
                    .iter()
                    .map(|(s, (_, last, p))| Input {
                        key: key(*s),
                        request: Ok(request(*s, p)),
                        status_ips: vec![ip(*last)],
                    })
                    .collect();
                let out = converge(&mut fresh, inputs);
                prop_assert!(
                    out.pending.is_empty() && out.cleared.is_empty(),
                    "{:?}",
                    out
                );
                prop_assert_eq!(&snapshot(&fresh), &before, "restart changed addresses");
                alloc = fresh;
            }
        }
        let ours = snapshot(&alloc);
        let theirs: Holdings = model
            .held
            .iter()
            .map(|(s, (pool, last, _))| (key(*s), (pool.clone(), vec![ip(*last)])))
            .collect();
        prop_assert_eq!(&ours, &theirs, "after {:?}", op);
        check_invariants(&model)?;
        trace.push(ours);
    }
    Ok(trace)
}

fn snapshot(a: &PoolAllocator) -> Holdings {
    a.services()
        .into_iter()
        .filter_map(|k| a.allocation(&k).map(|al| (k, (al.pool, al.ips))))
        .collect()
}

/// Invariants on the (already proven equal) state.
fn check_invariants(m: &Model) -> Result<(), TestCaseError> {
    for (s, (pool, last, p)) in &m.held {
        let home = m.pool_of(*last);
        prop_assert!(
            home.is_some_and(|h| h.0 == pool),
            "address outside its pool"
        );
        prop_assert!(
            home.is_some_and(|h| Model::admits(h, *s)),
            "pool does not admit"
        );
        for (o, (_, l, q)) in &m.held {
            if o != s && l == last {
                prop_assert!(p.sharing_key.is_some() && p.sharing_key == q.sharing_key);
                prop_assert!(p.backend == q.backend);
                prop_assert!(p.ports.iter().all(|x| !q.ports.contains(x)));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn allocator_matches_the_reference_model(ops in prop::collection::vec(op(), 1..60)) {
        let first = run(&ops)?;
        let second = run(&ops)?;
        prop_assert_eq!(first, second, "same inputs, different outputs");
    }
}
