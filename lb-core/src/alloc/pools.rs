//! [`PoolAllocator`]: MetalLB's allocation rules over O(log n) structures.
//!
//! Hash maps here are only looked up, never iterated for a decision; everything that orders a
//! choice (pools, shareable IPs, services on a pool change) is a `BTreeMap`/`BTreeSet` or sorted.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::index::{IndexSpace, Occupancy};
use super::{
    AllocError, Allocation, Allocator, PoolUsage, Request, SharingConflict, families_text,
};
use crate::config::Pool;
use crate::ip::{Family, from_u128, is_buggy, to_u128};
use crate::objects::{FamilyPolicy, NAMESPACE_NAME_LABEL, Port, ServiceKey};
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

    /// The first free address of family `f` at or after the position `seed` picks (modulo
    /// the family's size), wrapping around once.
    fn hashed_free(&self, f: Family, seed: u128) -> Option<IpAddr> {
        let fs = &self.families[slot(f)];
        let total = fs.ranges.iter().fold(0u128, |n, &(lo, hi)| {
            n.saturating_add(hi - lo).saturating_add(1)
        });
        if total == 0 {
            return None;
        }
        let mut off = seed % total;
        let mut start = 0;
        for (r, &(lo, hi)) in fs.ranges.iter().enumerate() {
            let n = (hi - lo).saturating_add(1);
            if off < n {
                start = r;
                break;
            }
            off -= n;
        }
        let (lo0, hi0) = fs.ranges[start];
        let pos = lo0 + off;
        let after = std::iter::once((pos, hi0)).chain(fs.ranges[start + 1..].iter().copied());
        let before = fs.ranges[..start]
            .iter()
            .copied()
            .chain((pos > lo0).then(|| (lo0, pos - 1)));
        after
            .chain(before)
            .find_map(|(lo, hi)| fs.used.first_free(lo, hi))
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

/// A service's slot in the slab.
type Id = u32;

/// One or two addresses, inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ips {
    ips: [IpAddr; 2],
    len: u8,
}

impl Ips {
    /// At most two addresses are kept; requests are checked to hold no more.
    fn new(ips: &[IpAddr]) -> Self {
        let unspecified = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        let mut out = Ips {
            ips: [unspecified; 2],
            len: 0,
        };
        for (slot, ip) in out.ips.iter_mut().zip(ips) {
            *slot = *ip;
            out.len += 1;
        }
        out
    }

    fn as_slice(&self) -> &[IpAddr] {
        &self.ips[..usize::from(self.len)]
    }
}

/// What a service holds, with what the sharing rules compare. Kept compact: this is most of
/// the memory per allocated address.
#[derive(Clone, Debug)]
struct Holder {
    key: ServiceKey,
    pool: Arc<str>,
    ips: Ips,
    sharing_key: Option<Arc<str>>,
    backend_key: Box<str>,
    ports: Box<[Port]>,
    /// Namespace labels (but the name label, which the key implies) and service labels, for
    /// re-checking pool admission when pools change; absent when both are empty, since most
    /// services carry none that matter.
    labels: Option<Box<(Labels, Labels)>>,
}

impl Holder {
    fn admitted_by(&self, pool: &Pool) -> bool {
        let Some(a) = &pool.allocation else {
            return true;
        };
        let empty = Labels::new();
        let (ns_labels, labels) = match &self.labels {
            Some(b) => (&b.0, &b.1),
            None => (&empty, &empty),
        };
        // The name label the holder does not keep is implied by `admits`.
        a.admits(&self.key.namespace, ns_labels, labels)
    }

    fn allocation(&self) -> Allocation {
        Allocation {
            pool: self.pool.to_string(),
            ips: self.ips.as_slice().to_vec(),
        }
    }
}

/// How a fresh address is picked in a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placement {
    /// The lowest free address, as MetalLB does.
    #[default]
    Lowest,
    /// The first free address at or after a position given by a hash of the service's key (of
    /// its sharing key, if it has one). Independent nodes that allocate from the same file
    /// then agree unless two services' positions collide, and a new service takes an address
    /// no other service was going to take unless it collides.
    Hashed,
}

/// The hasher of the allocator's large tables: foldhash, seeded at random per process (a
/// pass over 100,000 services spent a tenth of its allocation time in SipHash).
type Seeded = foldhash::fast::RandomState;

/// The allocator. See the module docs of [`crate::alloc`].
#[derive(Clone, Debug, Default)]
pub struct PoolAllocator {
    placement: Placement,
    pools: BTreeMap<Arc<str>, PoolState>,
    /// Per family: range start -> (range end, pool name), to find an address's pool.
    ranges: [BTreeMap<u128, (u128, Arc<str>)>; 2],
    /// Services by key, and their holders in a slab addressed by id.
    ids: HashMap<ServiceKey, Id, Seeded>,
    slots: Vec<Option<Holder>>,
    free_slots: Vec<Id>,
    /// The first holder of each used address; further holders of a shared one in `more_users`.
    ip_users: HashMap<IpAddr, Id, Seeded>,
    more_users: HashMap<IpAddr, Vec<Id>>,
    /// Sharing key -> the addresses whose holders use it.
    shared: HashMap<Arc<str>, BTreeSet<IpAddr>>,
}

impl PoolAllocator {
    /// An allocator over `pools` that hands out each pool's lowest free address.
    pub fn new(pools: &[Pool]) -> Self {
        PoolAllocator::with_placement(pools, Placement::Lowest)
    }

    /// An allocator over `pools` that places addresses as `placement` says.
    pub fn with_placement(pools: &[Pool], placement: Placement) -> Self {
        let mut a = PoolAllocator {
            placement,
            ..PoolAllocator::default()
        };
        a.set_pools(pools);
        a
    }

    /// The pool an address belongs to.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Arc<str>> {
        let v = to_u128(ip);
        self.ranges[slot(Family::of(ip))]
            .range(..=v)
            .next_back()
            .filter(|(_, (end, _))| *end >= v)
            .map(|(_, (_, pool))| pool)
    }

    /// Number of runs in the occupancy sets: the part of memory that grows with fragmentation.
    pub fn occupancy_runs(&self) -> usize {
        self.pools
            .values()
            .flat_map(|p| p.families.iter())
            .map(|f| f.used.runs())
            .sum()
    }

    /// The services that hold an address (more than one when they share it).
    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = &ServiceKey> {
        self.users(ip).map(|h| &h.key)
    }

    fn holder(&self, id: Id) -> Option<&Holder> {
        self.slots.get(id as usize).and_then(Option::as_ref)
    }

    fn holder_of(&self, key: &ServiceKey) -> Option<&Holder> {
        self.ids.get(key).and_then(|&id| self.holder(id))
    }

    /// Every holder of an address.
    fn users(&self, ip: IpAddr) -> impl Iterator<Item = &Holder> {
        let first = self.ip_users.get(&ip).copied();
        let more = self.more_users.get(&ip).into_iter().flatten().copied();
        first
            .into_iter()
            .chain(more)
            .filter_map(|id| self.holder(id))
    }

    fn sharing_ok(&self, ip: IpAddr, req: &Request) -> Result<(), (ServiceKey, SharingConflict)> {
        for h in self.users(ip).filter(|h| h.key != req.key) {
            let conflict = if req.sharing_key.is_none() {
                Some(SharingConflict::NoKey)
            } else if h.sharing_key.as_deref() != req.sharing_key.as_deref() {
                Some(SharingConflict::DifferentKey)
            } else if *h.backend_key != *req.backend_key {
                Some(SharingConflict::DifferentBackends)
            } else {
                req.ports
                    .iter()
                    .find(|p| h.ports.contains(p))
                    .map(|p| SharingConflict::PortInUse(p.clone()))
            };
            if let Some(why) = conflict {
                return Err((h.key.clone(), why));
            }
        }
        Ok(())
    }

    /// The lowest address of family `f` in the pool that the service may take: free, or already
    /// used by services it may share with.
    fn find_ip(&self, ps: &PoolState, f: Family, req: &Request) -> Option<IpAddr> {
        let free = match self.placement {
            Placement::Lowest => ps.lowest_free(f),
            Placement::Hashed => ps.hashed_free(f, placement_seed(req)),
        };
        let shareable = req
            .sharing_key
            .as_deref()
            .and_then(|k| self.shared.get(k))
            .and_then(|ips| {
                ips.iter().copied().find(|&ip| {
                    Family::of(ip) == f
                        && self.pool_of(ip).is_some_and(|p| **p == *ps.pool.name)
                        && !(ps.pool.avoid_buggy_ips && is_buggy(ip))
                        && self.sharing_ok(ip, req).is_ok()
                })
            });
        match (free, shareable, self.placement) {
            (Some(a), Some(b), Placement::Lowest) => Some(a.min(b)),
            // Services that share go where their group already is.
            (a, Some(b), Placement::Hashed) => Some(b).or(a),
            (a, b, _) => a.or(b),
        }
    }

    /// Pools an automatic allocation may use, best first: pools whose `serviceAllocation`
    /// admits the service by priority then name, then the unrestricted pools by name.
    fn candidate_pools(&self, req: &Request) -> Vec<Arc<str>> {
        let ns = req.key.namespace.as_str();
        let mut pinned: Vec<(&Arc<str>, &PoolState)> = self
            .pools
            .iter()
            .filter(|(_, p)| p.pool.auto_assign)
            .filter(|(_, p)| {
                p.pool
                    .allocation
                    .as_ref()
                    .is_some_and(|a| a.admits(ns, &req.namespace_labels, &req.labels))
            })
            .collect();
        // Stable: equal priorities stay in name order.
        pinned.sort_by_key(|(_, p)| p.pool.allocation.as_ref().map(|a| a.priority_rank()));
        let fallback = self
            .pools
            .iter()
            .filter(|(_, p)| p.pool.auto_assign && p.pool.allocation.is_none());
        pinned
            .into_iter()
            .chain(fallback)
            .map(|(name, _)| name.clone())
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

    fn attach(&mut self, holder: Holder) {
        let id = match self.free_slots.pop() {
            Some(id) => id,
            None => {
                self.slots.push(None);
                // More than 4 billion services would not fit in memory long before this.
                (self.slots.len() - 1) as Id
            }
        };
        for &ip in holder.ips.as_slice() {
            match self.ip_users.entry(ip) {
                Entry::Vacant(v) => {
                    v.insert(id);
                    if let Some(ps) = self.pools.get_mut(&holder.pool) {
                        ps.set_used(ip, true);
                    }
                }
                Entry::Occupied(_) => self.more_users.entry(ip).or_default().push(id),
            }
            if let Some(k) = &holder.sharing_key {
                self.shared.entry(k.clone()).or_default().insert(ip);
            }
        }
        self.ids.insert(holder.key.clone(), id);
        self.slots[id as usize] = Some(holder);
    }

    fn detach(&mut self, key: &ServiceKey) -> Option<Holder> {
        let id = self.ids.remove(key)?;
        let holder = self.slots.get_mut(id as usize)?.take()?;
        self.free_slots.push(id);
        for &ip in holder.ips.as_slice() {
            if let Some(more) = self.more_users.get_mut(&ip) {
                // Shared: drop this holder and promote another as the first if needed.
                more.retain(|&u| u != id);
                if self.ip_users.get(&ip) == Some(&id)
                    && let Some(next) = more.pop()
                {
                    self.ip_users.insert(ip, next);
                }
                if more.is_empty() {
                    self.more_users.remove(&ip);
                }
                continue;
            }
            if self.ip_users.get(&ip) != Some(&id) {
                continue;
            }
            self.ip_users.remove(&ip);
            if let Some(ps) = self.pools.get_mut(&holder.pool) {
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

    fn commit(&mut self, req: &Request, pool: &Arc<str>, ips: &[IpAddr]) -> Allocation {
        // Share one copy of each sharing key among its holders.
        let sharing_key = req.sharing_key.as_deref().map(|k| {
            self.shared
                .get_key_value(k)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| Arc::from(k))
        });
        let holder = Holder {
            key: req.key.clone(),
            pool: pool.clone(),
            ips: Ips::new(ips),
            sharing_key,
            backend_key: req.backend_key.as_str().into(),
            ports: req.ports.clone().into_boxed_slice(),
            labels: {
                // The namespace's name label is implied by the key: not held for each service.
                let mut ns_labels = req.namespace_labels.clone();
                if ns_labels.get(NAMESPACE_NAME_LABEL) == Some(&req.key.namespace) {
                    ns_labels.remove(NAMESPACE_NAME_LABEL);
                }
                (!ns_labels.is_empty() || !req.labels.is_empty())
                    .then(|| Box::new((ns_labels, req.labels.clone())))
            },
        };
        let alloc = holder.allocation();
        self.attach(holder);
        alloc
    }
}

impl Allocator for PoolAllocator {
    fn reserve_for(&mut self, services: usize) {
        // A service takes a key, a slot and (most often) one address.
        let more = services.saturating_sub(self.ids.len());
        self.ids.reserve(more);
        self.ip_users.reserve(more);
        self.slots
            .reserve(more.saturating_sub(self.free_slots.len()));
    }

    fn set_pools(&mut self, pools: &[Pool]) -> Vec<(ServiceKey, Allocation)> {
        self.pools = pools
            .iter()
            .map(|p| (Arc::from(p.name.as_str()), PoolState::new(p.clone())))
            .collect();
        self.ranges = Default::default();
        for (name, ps) in &self.pools {
            for r in &ps.pool.ranges {
                self.ranges[slot(r.family())].insert(r.start(), (r.end(), name.clone()));
            }
        }
        let mut keys: Vec<ServiceKey> = self.ids.keys().cloned().collect();
        keys.sort();
        let mut released = Vec::new();
        for key in keys {
            let Some(h) = self.holder_of(&key) else {
                continue;
            };
            let homes: BTreeSet<Option<&Arc<str>>> = h
                .ips
                .as_slice()
                .iter()
                .map(|ip| self.pool_of(*ip))
                .collect();
            // The addresses must sit in one pool that still takes them for this service.
            let home = match homes.into_iter().collect::<Vec<_>>()[..] {
                [Some(p)] => {
                    let pool = &self.pools[p].pool;
                    let buggy =
                        pool.avoid_buggy_ips && h.ips.as_slice().iter().any(|ip| is_buggy(*ip));
                    (!buggy && h.admitted_by(pool)).then(|| p.clone())
                }
                _ => None,
            };
            match home {
                Some(pool) => {
                    if let Some(h) = self
                        .ids
                        .get(&key)
                        .and_then(|&id| self.slots[id as usize].as_mut())
                    {
                        h.pool = pool;
                    }
                }
                None => {
                    if let Some(h) = self.detach(&key) {
                        released.push((key, h.allocation()));
                    }
                }
            }
        }
        // The pool states are new: mark every address still held.
        let held: Vec<(IpAddr, Arc<str>)> = self
            .ip_users
            .keys()
            .filter_map(|ip| self.pool_of(*ip).map(|p| (*ip, p.clone())))
            .collect();
        for (ip, pool) in held {
            if let Some(ps) = self.pools.get_mut(&pool) {
                ps.set_used(ip, true);
            }
        }
        released
    }

    fn allocate(&mut self, req: &Request) -> Result<Allocation, AllocError> {
        if let Some(h) = self.holder_of(&req.key) {
            let ips = h.ips;
            if let Ok(mut current) = self.assign(req, ips.as_slice()) {
                if req.policy == FamilyPolicy::PreferDualStack
                    && req.families.len() == 2
                    && current.ips.len() == 1
                {
                    // The missing family may have become available in the same pool.
                    let missing = Family::of(current.ips[0]).other();
                    let extra = self
                        .pools
                        .get(current.pool.as_str())
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
                let name = self
                    .pools
                    .get_key_value(name.as_str())
                    .map(|(k, _)| k.clone());
                name.into_iter().collect()
            }
            None => self.candidate_pools(req),
        };
        if candidates.is_empty() {
            return Err(AllocError::NoPool);
        }
        // MetalLB's Allocate (internal/allocator/allocator.go): the pools pinned to the service
        // first, then the unrestricted ones; within each, the first pool with every family, else
        // (PreferDualStack) the first holding the primary family, else the first holding the
        // other one.
        let (pinned, open): (Vec<&Arc<str>>, Vec<&Arc<str>>) = candidates
            .iter()
            .partition(|n| self.pools[n.as_ref()].pool.allocation.is_some());
        let prefer = req.policy == FamilyPolicy::PreferDualStack && req.families.len() == 2;
        for stage in [pinned, open] {
            let mut primary: Option<(Arc<str>, IpAddr)> = None;
            let mut secondary: Option<(Arc<str>, IpAddr)> = None;
            for name in stage {
                let ps = &self.pools[name.as_ref()];
                let picks: Vec<Option<IpAddr>> = req
                    .families
                    .iter()
                    .map(|&f| self.find_ip(ps, f, req))
                    .collect();
                if picks.iter().all(Option::is_some) {
                    let ips: Vec<IpAddr> = picks.into_iter().flatten().collect();
                    return Ok(self.commit(req, name, &ips));
                }
                if prefer {
                    if primary.is_none() {
                        primary = picks[0].map(|ip| (name.clone(), ip));
                    }
                    if secondary.is_none() {
                        secondary = picks[1].map(|ip| (name.clone(), ip));
                    }
                }
            }
            if let Some((name, ip)) = primary.or(secondary) {
                return Ok(self.commit(req, &name, &[ip]));
            }
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
        let mut pool: Option<Arc<str>> = None;
        for &ip in ips {
            let p = self.pool_of(ip).ok_or(AllocError::NotInPool(ip))?.clone();
            if let Some(first) = &pool
                && *first != p
            {
                return Err(AllocError::MixedPools(first.to_string(), p.to_string()));
            }
            if let Some(requested) = &req.pool
                && **requested != *p
            {
                return Err(AllocError::WrongPool {
                    ip,
                    actual: p.to_string(),
                    requested: requested.clone(),
                });
            }
            pool = Some(p);
        }
        let Some(pool) = pool else {
            return Err(AllocError::NoPool);
        };
        self.admits(&pool, req)?;
        if self.pools[&pool].pool.avoid_buggy_ips
            && let Some(&ip) = ips.iter().find(|ip| is_buggy(**ip))
        {
            return Err(AllocError::BuggyIp {
                ip,
                pool: pool.to_string(),
            });
        }
        let old = self.detach(&req.key);
        for &ip in ips {
            if let Err((holder, why)) = self.sharing_ok(ip, req) {
                if let Some(old) = old {
                    self.attach(old);
                }
                return Err(AllocError::InUse { ip, holder, why });
            }
        }
        Ok(self.commit(req, &pool, ips))
    }

    fn release(&mut self, key: &ServiceKey) -> Option<Allocation> {
        self.detach(key).map(|h| h.allocation())
    }

    fn allocation(&self, key: &ServiceKey) -> Option<Allocation> {
        self.holder_of(key).map(Holder::allocation)
    }

    fn services(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.ids.keys().cloned().collect();
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

/// The position a service's fresh address is looked for from (see [`Placement::Hashed`]).
fn placement_seed(req: &Request) -> u128 {
    use sha2::{Digest, Sha256};
    let name = match &req.sharing_key {
        Some(k) => format!("sharing-key/{k}"),
        None => req.key.to_string(),
    };
    let d = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|ip| b.contains(ip))
}
