//! [`PoolAllocator`]: MetalLB's allocation rules over O(log n) structures.
//!
//! Hash maps here are only looked up, never iterated for a decision; everything that orders a
//! choice (pools, shareable IPs, services on a pool change) is a `BTreeMap`/`BTreeSet` or sorted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use super::index::{IndexSpace, Occupancy};
use super::{
    AllocError, Allocation, Allocator, PoolUsage, Request, SharingConflict, families_text,
};
use crate::config::Pool;
use crate::ip::{Family, from_u128, is_buggy, to_u128};
use crate::objects::{FamilyPolicy, Port, ServiceKey};
use crate::selector::Labels;

#[derive(Clone, Debug)]
struct FamilyState {
    space: IndexSpace,
    /// Index bounds of the pool's ranges of this family, in address order.
    ranges: Vec<(u128, u128)>,
    used: Occupancy,
}

#[derive(Clone, Debug)]
struct PoolState {
    pool: Pool,
    families: [FamilyState; 2],
}

fn slot(f: Family) -> usize {
    match f {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl PoolState {
    fn new(pool: Pool) -> Self {
        let family = |f: Family| {
            let space = if f == Family::V4 && pool.avoid_buggy_ips {
                IndexSpace::Skip254
            } else {
                IndexSpace::Plain
            };
            FamilyState {
                space,
                ranges: pool
                    .ranges
                    .iter()
                    .filter(|r| r.family() == f)
                    .filter_map(|r| space.bounds(r))
                    .collect(),
                used: Occupancy::default(),
            }
        };
        PoolState {
            families: [family(Family::V4), family(Family::V6)],
            pool,
        }
    }

    fn lowest_free(&self, f: Family) -> Option<IpAddr> {
        let fs = &self.families[slot(f)];
        fs.ranges
            .iter()
            .find_map(|&(lo, hi)| fs.used.first_free(lo, hi))
            .map(|i| from_u128(f, fs.space.value_of(i)))
    }

    fn set_used(&mut self, ip: IpAddr, used: bool) {
        let fs = &mut self.families[slot(Family::of(ip))];
        if let Some(i) = fs.space.index_of(to_u128(ip)) {
            if used {
                fs.used.insert(i);
            } else {
                fs.used.remove(i);
            }
        }
    }
}

/// What a service holds, with what the sharing rules compare.
#[derive(Clone, Debug)]
struct Holder {
    alloc: Allocation,
    sharing_key: Option<String>,
    backend_key: String,
    ports: Vec<Port>,
    /// Namespace labels and service labels, for re-checking pool admission when pools change;
    /// boxed and absent when both are empty, since most services carry none that matter.
    labels: Option<Box<(Labels, Labels)>>,
}

impl Holder {
    fn admitted_by(&self, key: &ServiceKey, pool: &Pool) -> bool {
        let empty = Labels::new();
        let (ns_labels, labels) = match &self.labels {
            Some(b) => (&b.0, &b.1),
            None => (&empty, &empty),
        };
        pool.allocation
            .as_ref()
            .is_none_or(|a| a.admits(&key.namespace, ns_labels, labels))
    }
}

/// The allocator. See the module docs of [`crate::alloc`].
#[derive(Clone, Debug, Default)]
pub struct PoolAllocator {
    pools: BTreeMap<String, PoolState>,
    /// Per family: range start -> (range end, pool name), to find an address's pool.
    ranges: [BTreeMap<u128, (u128, String)>; 2],
    ip_users: HashMap<IpAddr, Vec<ServiceKey>>,
    holders: HashMap<ServiceKey, Holder>,
    /// Sharing key -> the IPs whose holders use it.
    shared: HashMap<String, BTreeSet<IpAddr>>,
}

impl PoolAllocator {
    pub fn new(pools: &[Pool]) -> Self {
        let mut a = PoolAllocator::default();
        a.set_pools(pools);
        a
    }

    /// The pool an address belongs to.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        let v = to_u128(ip);
        self.ranges[slot(Family::of(ip))]
            .range(..=v)
            .next_back()
            .filter(|(_, (end, _))| *end >= v)
            .map(|(_, (_, pool))| pool.as_str())
    }

    /// Number of runs in the occupancy sets: the part of memory that grows with fragmentation.
    pub fn occupancy_runs(&self) -> usize {
        self.pools
            .values()
            .flat_map(|p| p.families.iter())
            .map(|f| f.used.runs())
            .sum()
    }

    fn sharing_ok(&self, ip: IpAddr, req: &Request) -> Result<(), (ServiceKey, SharingConflict)> {
        let Some(users) = self.ip_users.get(&ip) else {
            return Ok(());
        };
        for user in users.iter().filter(|u| **u != req.key) {
            let Some(h) = self.holders.get(user) else {
                continue;
            };
            let conflict = if req.sharing_key.is_none() {
                Some(SharingConflict::NoKey)
            } else if h.sharing_key != req.sharing_key {
                Some(SharingConflict::DifferentKey)
            } else if h.backend_key != req.backend_key {
                Some(SharingConflict::DifferentBackends)
            } else {
                req.ports
                    .iter()
                    .find(|p| h.ports.contains(p))
                    .map(|p| SharingConflict::PortInUse(p.clone()))
            };
            if let Some(why) = conflict {
                return Err((user.clone(), why));
            }
        }
        Ok(())
    }

    /// The lowest address of family `f` in the pool that the service may take: free, or already
    /// used by services it may share with.
    fn find_ip(&self, ps: &PoolState, f: Family, req: &Request) -> Option<IpAddr> {
        let free = ps.lowest_free(f);
        let shareable = req
            .sharing_key
            .as_ref()
            .and_then(|k| self.shared.get(k))
            .and_then(|ips| {
                ips.iter().copied().find(|&ip| {
                    Family::of(ip) == f
                        && self.pool_of(ip) == Some(ps.pool.name.as_str())
                        && !(ps.pool.avoid_buggy_ips && is_buggy(ip))
                        && self.sharing_ok(ip, req).is_ok()
                })
            });
        match (free, shareable) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pools an automatic allocation may use, best first: pools whose `serviceAllocation`
    /// admits the service by priority then name, then the unrestricted pools by name.
    fn candidate_pools(&self, req: &Request) -> Vec<String> {
        let ns = req.key.namespace.as_str();
        let mut pinned: Vec<&PoolState> = self
            .pools
            .values()
            .filter(|p| p.pool.auto_assign)
            .filter(|p| {
                p.pool
                    .allocation
                    .as_ref()
                    .is_some_and(|a| a.admits(ns, &req.namespace_labels, &req.labels))
            })
            .collect();
        // Stable: equal priorities stay in name order.
        pinned.sort_by_key(|p| p.pool.allocation.as_ref().map(|a| a.priority_rank()));
        let fallback = self
            .pools
            .values()
            .filter(|p| p.pool.auto_assign && p.pool.allocation.is_none());
        pinned
            .into_iter()
            .chain(fallback)
            .map(|p| p.pool.name.clone())
            .collect()
    }

    fn admits(&self, pool: &str, req: &Request) -> Result<(), AllocError> {
        let ps = self
            .pools
            .get(pool)
            .ok_or_else(|| AllocError::UnknownPool(pool.to_string()))?;
        match &ps.pool.allocation {
            Some(a) if !a.admits(&req.key.namespace, &req.namespace_labels, &req.labels) => {
                Err(AllocError::PoolNotAllowed(pool.to_string()))
            }
            _ => Ok(()),
        }
    }

    fn attach(&mut self, key: &ServiceKey, holder: Holder) {
        for &ip in &holder.alloc.ips {
            let users = self.ip_users.entry(ip).or_default();
            if users.is_empty()
                && let Some(ps) = self.pools.get_mut(&holder.alloc.pool)
            {
                ps.set_used(ip, true);
            }
            users.push(key.clone());
            if let Some(k) = &holder.sharing_key {
                self.shared.entry(k.clone()).or_default().insert(ip);
            }
        }
        self.holders.insert(key.clone(), holder);
    }

    fn detach(&mut self, key: &ServiceKey) -> Option<Holder> {
        let holder = self.holders.remove(key)?;
        for &ip in &holder.alloc.ips {
            let now_free = match self.ip_users.get_mut(&ip) {
                Some(users) => {
                    users.retain(|u| u != key);
                    users.is_empty()
                }
                None => false,
            };
            if !now_free {
                continue;
            }
            self.ip_users.remove(&ip);
            if let Some(ps) = self.pools.get_mut(&holder.alloc.pool) {
                ps.set_used(ip, false);
            }
            if let Some(k) = &holder.sharing_key
                && let Some(set) = self.shared.get_mut(k)
            {
                set.remove(&ip);
                if set.is_empty() {
                    self.shared.remove(k);
                }
            }
        }
        Some(holder)
    }

    fn commit(&mut self, req: &Request, pool: &str, ips: Vec<IpAddr>) -> Allocation {
        let alloc = Allocation {
            pool: pool.to_string(),
            ips,
        };
        self.attach(
            &req.key,
            Holder {
                alloc: alloc.clone(),
                sharing_key: req.sharing_key.clone(),
                backend_key: req.backend_key.clone(),
                ports: req.ports.clone(),
                labels: (!req.namespace_labels.is_empty() || !req.labels.is_empty())
                    .then(|| Box::new((req.namespace_labels.clone(), req.labels.clone()))),
            },
        );
        alloc
    }
}

impl Allocator for PoolAllocator {
    fn set_pools(&mut self, pools: &[Pool]) -> Vec<(ServiceKey, Allocation)> {
        self.pools = pools
            .iter()
            .map(|p| (p.name.clone(), PoolState::new(p.clone())))
            .collect();
        self.ranges = Default::default();
        for p in pools {
            for r in &p.ranges {
                self.ranges[slot(r.family())].insert(r.start(), (r.end(), p.name.clone()));
            }
        }
        let mut keys: Vec<ServiceKey> = self.holders.keys().cloned().collect();
        keys.sort();
        let mut released = Vec::new();
        for key in keys {
            let Some(h) = self.holders.get(&key) else {
                continue;
            };
            let homes: BTreeSet<Option<&str>> =
                h.alloc.ips.iter().map(|ip| self.pool_of(*ip)).collect();
            let home = match homes.into_iter().collect::<Vec<_>>()[..] {
                [Some(p)] => Some(p.to_string()),
                _ => None,
            };
            // The address must still be usable in its (new) pool, by this service.
            let fits = |pool: &str| {
                let p = &self.pools[pool].pool;
                !(p.avoid_buggy_ips && h.alloc.ips.iter().any(|ip| is_buggy(*ip)))
                    && h.admitted_by(&key, p)
            };
            match home {
                Some(pool) if fits(&pool) => {
                    if let Some(h) = self.holders.get_mut(&key) {
                        h.alloc.pool = pool;
                    }
                }
                _ => {
                    if let Some(h) = self.detach(&key) {
                        released.push((key, h.alloc));
                    }
                }
            }
        }
        // The pool states are new: mark every address still held.
        let held: Vec<(IpAddr, String)> = self
            .ip_users
            .keys()
            .filter_map(|ip| self.pool_of(*ip).map(|p| (*ip, p.to_string())))
            .collect();
        for (ip, pool) in held {
            if let Some(ps) = self.pools.get_mut(&pool) {
                ps.set_used(ip, true);
            }
        }
        released
    }

    fn allocate(&mut self, req: &Request) -> Result<Allocation, AllocError> {
        if let Some(h) = self.holders.get(&req.key) {
            let ips = h.alloc.ips.clone();
            if let Ok(mut current) = self.assign(req, &ips) {
                if req.policy == FamilyPolicy::PreferDualStack && current.ips.len() == 1 {
                    // The missing family may have become available in the same pool.
                    let missing = Family::of(current.ips[0]).other();
                    let extra = self
                        .pools
                        .get(&current.pool)
                        .and_then(|ps| self.find_ip(ps, missing, req));
                    if let Some(extra) = extra {
                        let mut both = vec![current.ips[0], extra];
                        both.sort_by_key(|ip| Family::of(*ip) != req.primary());
                        if let Ok(a) = self.assign(req, &both) {
                            current = a;
                        }
                    }
                }
                return Ok(current);
            }
            self.detach(&req.key);
        }
        if !req.requested_ips.is_empty() {
            return self.assign(req, &req.requested_ips);
        }
        let candidates = match &req.pool {
            Some(name) => {
                self.admits(name, req)?;
                vec![name.clone()]
            }
            None => self.candidate_pools(req),
        };
        if candidates.is_empty() {
            return Err(AllocError::NoPool);
        }
        let mut fallback: Option<(String, IpAddr)> = None;
        for name in &candidates {
            let ps = &self.pools[name];
            let picks: Vec<Option<IpAddr>> = req
                .families
                .iter()
                .map(|&f| self.find_ip(ps, f, req))
                .collect();
            if picks.iter().all(Option::is_some) {
                let ips = picks.into_iter().flatten().collect();
                return Ok(self.commit(req, name, ips));
            }
            if req.policy == FamilyPolicy::PreferDualStack && fallback.is_none() {
                fallback = picks
                    .into_iter()
                    .flatten()
                    .next()
                    .map(|ip| (name.clone(), ip));
            }
        }
        if let Some((name, ip)) = fallback {
            return Ok(self.commit(req, &name, vec![ip]));
        }
        Err(AllocError::Exhausted {
            families: families_text(&req.families),
            pools: candidates
                .iter()
                .map(|p| format!("IPAddressPool {p}"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    fn assign(&mut self, req: &Request, ips: &[IpAddr]) -> Result<Allocation, AllocError> {
        if ips.is_empty() {
            return self.allocate(req);
        }
        req.check_ips(ips)?;
        if !req.requested_ips.is_empty() && !same_set(&req.requested_ips, ips) {
            return Err(AllocError::NotRequested(ips.to_vec()));
        }
        let mut pool: Option<String> = None;
        for &ip in ips {
            let p = self.pool_of(ip).ok_or(AllocError::NotInPool(ip))?;
            match &pool {
                Some(first) if first != p => {
                    return Err(AllocError::MixedPools(first.clone(), p.to_string()));
                }
                _ => pool = Some(p.to_string()),
            }
            if let Some(requested) = &req.pool
                && requested != p
            {
                return Err(AllocError::WrongPool {
                    ip,
                    actual: p.to_string(),
                    requested: requested.clone(),
                });
            }
        }
        let pool = pool.unwrap_or_default();
        self.admits(&pool, req)?;
        if self.pools[&pool].pool.avoid_buggy_ips
            && let Some(&ip) = ips.iter().find(|ip| is_buggy(**ip))
        {
            return Err(AllocError::BuggyIp { ip, pool });
        }
        let old = self.detach(&req.key);
        for &ip in ips {
            if let Err((holder, why)) = self.sharing_ok(ip, req) {
                if let Some(old) = old {
                    self.attach(&req.key, old);
                }
                return Err(AllocError::InUse { ip, holder, why });
            }
        }
        Ok(self.commit(req, &pool, ips.to_vec()))
    }

    fn release(&mut self, key: &ServiceKey) -> Option<Allocation> {
        self.detach(key).map(|h| h.alloc)
    }

    fn allocation(&self, key: &ServiceKey) -> Option<Allocation> {
        self.holders.get(key).map(|h| h.alloc.clone())
    }

    fn services(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.holders.keys().cloned().collect();
        keys.sort();
        keys
    }

    fn usage(&self, pool: &str) -> Option<PoolUsage> {
        let ps = self.pools.get(pool)?;
        Some(PoolUsage {
            ipv4_in_use: ps.families[0].used.len(),
            ipv6_in_use: ps.families[1].used.len(),
            ipv4_total: ps.pool.size(Family::V4),
            ipv6_total: ps.pool.size(Family::V6),
        })
    }
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|ip| b.contains(ip))
}
