//! One allocation for a cluster of standalone nodes, whatever order each node saw the changes in.
//!
//! ```text
//!  live members ─► allocator = the member first in election order for "allocator"
//!  allocator: claims = its ledger ▸ ledgers heard from the others ▸ its state file
//!             ─► converge (claims kept, the rest placed) ─► Ledger vN ─► every member
//!  others:    adopt the allocator's newest Ledger; announce only what it holds
//! ```
//!
//! Why one elected allocator: every node already derives the same allocator from the same live
//! set, a single decider cannot disagree with itself, and a node that restarts with a stale
//! state, or a new allocator after a failure or a partition, starts from the ledgers the others
//! hold, so an agreed address never moves. When two ledgers give one address to two services
//! (different edits on the two sides of a partition, or nodes that saw the file change in
//! different orders before they met), the allocator's own ledger wins and the other service
//! moves once; the decision says so in `moved`.
//!
//! The allocator keeps what its last decision left: an edit that touched some services only
//! is decided for those (and any left pending), not for every service
//! ([`Agreement::decide_services`]).
//!
//! Pure: the caller passes time, members and configuration, and carries ledgers between nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alloc::converge::{Input, input_of, inputs_from};
use crate::alloc::{
    Allocation, Allocator, Outcome, Placement, PoolAllocator, converge, converge_some,
};
use crate::config::Config;
use crate::objects::ServiceKey;
use crate::plan::election_hash;

/// The election key of the allocator role.
pub const ALLOCATOR_KEY: &str = "allocator";
/// A new allocator waits this long at most for the ledgers of the others before it decides.
pub const GATHER: Duration = Duration::from_millis(1500);

/// One allocator's decision: service → pool and addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The node that decided it.
    pub decided_by: String,
    /// Grows with every decision of that node: (its run's epoch, a sequence number).
    pub version: (u64, u64),
    /// Service key (`namespace/name`) → (pool, addresses).
    pub entries: BTreeMap<String, (String, Vec<IpAddr>)>,
}

/// What one allocator's decision over some services changed in its ledger: the ledger
/// `version` is the one at `base` with `set` entries put in and `gone` taken out. A member that
/// holds the ledger at `base` takes this instead of the ledger whole (a few entries rather
/// than 100,000); one that does not waits for the ledger whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerDelta {
    /// The node that decided it.
    pub decided_by: String,
    /// The version it applies to.
    pub base: (u64, u64),
    /// The version it makes.
    pub version: (u64, u64),
    /// Entries put in (added or changed).
    pub set: BTreeMap<String, (String, Vec<IpAddr>)>,
    /// Entries taken out.
    pub gone: Vec<String>,
}

impl LedgerDelta {
    /// Applies it to `ledger`, which must be at its base (else false, and nothing changed).
    fn apply(&self, ledger: &mut Ledger) -> bool {
        if ledger.decided_by != self.decided_by || ledger.version != self.base {
            return false;
        }
        for k in &self.gone {
            ledger.entries.remove(k);
        }
        for (k, v) in &self.set {
            ledger.entries.insert(k.clone(), v.clone());
        }
        ledger.version = self.version;
        true
    }
}

/// A ledger or a delta of one, as put back together from chunks ([`Reassembly`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A ledger whole.
    Ledger(Ledger),
    /// A delta of one.
    Delta(LedgerDelta),
}

/// How a delta's body begins (a ledger's begins with its first field).
const DELTA_BODY: &[u8] = b"{\"delta\":";

#[derive(Serialize, Deserialize)]
struct DeltaBody {
    delta: LedgerDelta,
}

/// A service that a decision moved off an address another ledger gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// The service (`namespace/name`).
    pub service: String,
    /// What the other ledger gave it.
    pub from: Vec<IpAddr>,
    /// What it holds now.
    pub to: Vec<IpAddr>,
    /// Why it moved.
    pub why: String,
}

/// The services whose addresses another ledger gave them and this decision did not keep:
/// `lost` holds what the other ledger gave each and why it lost it, `entries` the decision.
fn moved(
    lost: BTreeMap<String, (Vec<IpAddr>, String)>,
    entries: &BTreeMap<String, (String, Vec<IpAddr>)>,
) -> Vec<Moved> {
    lost.into_iter()
        .filter_map(|(svc, (from, why))| {
            let to = entries.get(&svc)?.1.clone();
            (to != from).then_some(Moved {
                service: svc,
                from,
                to,
                why,
            })
        })
        .collect()
}

/// The allocator among `members`: the first in election order, as L2 owners are chosen.
pub fn allocator(members: &BTreeSet<String>) -> Option<&String> {
    members
        .iter()
        .min_by_key(|m| election_hash(m, ALLOCATOR_KEY))
}

/// This node's side of the agreement.
#[derive(Clone, Debug)]
pub struct Agreement {
    me: String,
    epoch: u64,
    seq: u64,
    /// The ledger this node follows (its own when it is the allocator).
    current: Ledger,
    /// The newest ledger each member said it follows.
    heard: BTreeMap<String, Ledger>,
    /// When this node last became the allocator.
    leading_since: Option<Duration>,
    /// Claims heard for services this node's ledger did not hold then (a partition's other
    /// side, a node that saw a file first): weighed when the allocator decides them.
    remembered: BTreeMap<String, (Vec<IpAddr>, String)>,
    /// The state file's allocations (the weakest claims).
    saved: BTreeMap<String, Vec<IpAddr>>,
    /// The allocator after this node's last decision, for a decision over some services.
    kept: Option<KeptDecision>,
    /// The services whose entry in `current` changed since [`Agreement::take_changed`] last
    /// took them; None before the first take, or when too many did to list.
    changed: Option<BTreeSet<String>>,
    /// How `current` came from the version before, when a delta did it (a decision over some
    /// services, or a delta heard): what this node sends the members rather than the ledger.
    delta: Option<LedgerDelta>,
}

/// What a decision leaves for the next one over some services ([`Agreement::decide_services`]).
#[derive(Clone, Debug)]
struct KeptDecision {
    /// Holds every allocation of the ledger decided.
    alloc: PoolAllocator,
    /// The pools it was built from.
    pools: BTreeMap<String, crate::config::Pool>,
    /// The services left pending: served again with any change.
    pending: BTreeSet<ServiceKey>,
    /// The ledger decided (its version): a ledger adopted since makes the next decision whole.
    version: (u64, u64),
}

/// Claims remembered at most (one per service).
const REMEMBERED: usize = 200_000;

/// What hearing a ledger did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    /// This node now follows it.
    pub adopted: bool,
    /// The first ledger heard from that member.
    pub first: bool,
}

/// What a decision or an adoption changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The new ledger's version, when the decision changed the ledger: send
    /// [`Agreement::current`] to every member. (Not a copy: at 100,000 services a copy of the
    /// ledger cost more than a decision over one service.)
    pub ledger: Option<(u64, u64)>,
    /// Services moved off a contested address.
    pub moved: Vec<Moved>,
    /// The allocations that follow: every service's after a whole decision, the services
    /// decided again after [`Agreement::decide_services`].
    pub outcome: Outcome,
    /// Whether every service was decided (rather than the services an edit touched).
    pub whole: bool,
}

impl Agreement {
    /// `epoch` grows across runs of this node (its membership generation); `saved` is the
    /// state file.
    pub fn new(me: &str, epoch: u64, saved: BTreeMap<String, Vec<IpAddr>>) -> Agreement {
        Agreement {
            me: me.to_string(),
            epoch,
            seq: 0,
            current: Ledger::default(),
            heard: BTreeMap::new(),
            leading_since: None,
            remembered: BTreeMap::new(),
            saved,
            kept: None,
            changed: None,
            delta: None,
        }
    }

    /// The delta that made the ledger followed from the version before, if one did (see
    /// [`LedgerDelta`]); None after a whole decision or a ledger adopted whole.
    pub fn delta(&self) -> Option<&LedgerDelta> {
        self.delta.as_ref().filter(|d| {
            d.version == self.current.version && d.decided_by == self.current.decided_by
        })
    }

    /// A member sent a delta of the ledger it follows: applied to what this node holds of
    /// that member's ledger, and adopted as [`Agreement::hear`] adopts a ledger when this node
    /// follows its base. A delta whose base this node lacks changes nothing: the ledger whole
    /// comes later (the member sees this node follow another and repeats it).
    pub fn hear_delta(
        &mut self,
        from: &str,
        delta: LedgerDelta,
        members: &BTreeSet<String>,
    ) -> Heard {
        let first = !self.heard.contains_key(from);
        for (svc, (_, ips)) in &delta.set {
            if !self.current.entries.contains_key(svc) && self.remembered.len() < REMEMBERED {
                self.remembered
                    .entry(svc.clone())
                    .or_insert_with(|| (ips.clone(), format!("{from}'s ledger")));
            }
        }
        if let Some(l) = self.heard.get_mut(from) {
            delta.apply(l);
        }
        let adopt = allocator(members).is_some_and(|a| *a != self.me && *a == delta.decided_by)
            && self.current.decided_by == delta.decided_by
            && self.current.version == delta.base;
        if adopt {
            if let Some(c) = &mut self.changed {
                c.extend(delta.gone.iter().cloned());
                c.extend(delta.set.keys().cloned());
            }
            delta.apply(&mut self.current);
            self.delta = Some(delta);
        }
        Heard {
            adopted: adopt,
            first,
        }
    }

    /// The services whose entry in the ledger followed changed (added, moved or removed)
    /// since the last call; None on the first call or when more changed than are worth
    /// listing: the caller reads the ledger whole ([`Agreement::agreed`]). Otherwise
    /// [`Agreement::agreed_services`] over these and the services the configuration changed
    /// brings what it agreed up to date.
    pub fn take_changed(&mut self) -> Option<BTreeSet<ServiceKey>> {
        let keys = self.changed.replace(BTreeSet::new())?;
        Some(
            keys.iter()
                .filter_map(|k| k.split_once('/'))
                .map(|(ns, name)| ServiceKey::new(ns, name))
                .collect(),
        )
    }

    /// The ledger followed becomes one with `entries`: the entries that differ are noted as
    /// changed (a list past half the ledger is given up: reading it whole is as cheap).
    fn replacing(&mut self, entries: &BTreeMap<String, (String, Vec<IpAddr>)>) {
        let Some(changed) = &mut self.changed else {
            return;
        };
        changed.extend(crate::parts::differing(&self.current.entries, entries));
        if changed.len() > entries.len().max(self.current.entries.len()) / 2 + 64 {
            self.changed = None;
        }
    }

    /// The ledger this node follows.
    pub fn current(&self) -> &Ledger {
        &self.current
    }

    /// A member sent the ledger it follows. Returns true when this node adopted it.
    pub fn heard(&mut self, from: &str, ledger: Ledger, members: &BTreeSet<String>) -> bool {
        self.hear(from, ledger, members).adopted
    }

    /// [`Agreement::heard`], also saying whether `from` was heard for the first time (then
    /// it may not have this node's ledger either: send it).
    pub fn hear(&mut self, from: &str, ledger: Ledger, members: &BTreeSet<String>) -> Heard {
        let first = !self.heard.contains_key(from);
        let adopted = self.hear_inner(from, ledger, members);
        Heard { adopted, first }
    }

    fn hear_inner(&mut self, from: &str, ledger: Ledger, members: &BTreeSet<String>) -> bool {
        for (svc, (_, ips)) in &ledger.entries {
            if !self.current.entries.contains_key(svc) && self.remembered.len() < REMEMBERED {
                self.remembered
                    .entry(svc.clone())
                    .or_insert_with(|| (ips.clone(), format!("{from}'s ledger")));
            }
        }
        let newer = self
            .heard
            .get(from)
            .is_none_or(|l| (l.decided_by != ledger.decided_by) || l.version < ledger.version);
        if newer {
            self.heard.insert(from.to_string(), ledger.clone());
        }
        // Follow the allocator's newest decision, from whoever relays it.
        let Some(alloc) = allocator(members) else {
            return false;
        };
        if *alloc == self.me || ledger.decided_by != *alloc {
            return false;
        }
        let adopt =
            self.current.decided_by != ledger.decided_by || self.current.version < ledger.version;
        if adopt {
            self.replacing(&ledger.entries);
            self.current = ledger;
            self.delta = None;
        }
        adopt
    }

    /// Which ledger each member said it follows: member → (decider, version).
    pub fn followed(&self) -> BTreeMap<String, (String, (u64, u64))> {
        self.heard
            .iter()
            .map(|(n, l)| (n.clone(), (l.decided_by.clone(), l.version)))
            .collect()
    }

    /// Forgets what members that left said.
    pub fn retain_members(&mut self, members: &BTreeSet<String>) {
        self.heard.retain(|n, _| members.contains(n));
    }

    /// Whether this node is the allocator and has gathered the others' ledgers (all live
    /// members, or [`GATHER`] since it became the allocator).
    pub fn may_decide(&mut self, now: Duration, members: &BTreeSet<String>) -> bool {
        if allocator(members) != Some(&self.me) {
            self.leading_since = None;
            return false;
        }
        let since = *self.leading_since.get_or_insert(now);
        let all = members
            .iter()
            .filter(|m| **m != self.me)
            .all(|m| self.heard.contains_key(m));
        all || now >= since + GATHER
    }

    /// As the allocator: allocates `config`, keeping every claim it can (its own ledger
    /// first, then the others' by node name, then the state file), and returns the new
    /// ledger when it changed.
    pub fn decide(&mut self, config: &Config) -> Decision {
        let mut claims: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        // Who claimed an address first, and in which source: a claim loses to an earlier
        // source's. Within one source (one allocator's ledger, or the state file written from
        // one) services that share an address were given it together: the allocator checks
        // that they still may.
        let mut taken: BTreeMap<IpAddr, (String, usize)> = BTreeMap::new();
        let mut lost: BTreeMap<String, (Vec<IpAddr>, String)> = BTreeMap::new();
        let own = std::iter::once((&self.me, &self.current));
        let sources = own
            .chain(self.heard.iter())
            .map(|(n, l)| {
                (
                    n.clone(),
                    l.entries
                        .iter()
                        .map(|(k, (_, ips))| (k.clone(), ips.clone()))
                        .collect::<Vec<_>>(),
                )
            })
            .chain(std::iter::once((
                "claims heard earlier".to_string(),
                self.remembered
                    .iter()
                    .map(|(k, (v, _))| (k.clone(), v.clone()))
                    .collect(),
            )))
            .chain(std::iter::once((
                "the state file".to_string(),
                self.saved
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )));
        for (rank, (source, entries)) in sources.enumerate() {
            for (svc, ips) in entries {
                if claims.contains_key(&svc) || ips.is_empty() {
                    continue;
                }
                let earlier = ips
                    .iter()
                    .filter_map(|ip| taken.get(ip))
                    .find(|(holder, r)| *r < rank && *holder != svc);
                if let Some((holder, _)) = earlier {
                    lost.entry(svc.clone()).or_insert((
                        ips.clone(),
                        format!("{holder} holds it in the ledger this allocator kept (claim from {source})"),
                    ));
                    continue;
                }
                for ip in &ips {
                    taken.entry(*ip).or_insert_with(|| (svc.clone(), rank));
                }
                claims.insert(svc, ips);
            }
        }
        let pools: Vec<_> = config.pools.values().cloned().collect();
        let mut alloc = PoolAllocator::with_placement(&pools, Placement::Hashed);
        let mut inputs: Vec<Input> = inputs_from(config, None);
        for i in &mut inputs {
            if let Some(ips) = claims.get(&i.key.to_string()) {
                i.status_ips = ips.clone();
            }
        }
        let outcome = converge(&mut alloc, inputs);
        let pending = outcome.pending.keys().cloned().collect();
        let entries: BTreeMap<String, (String, Vec<IpAddr>)> = outcome
            .allocated
            .iter()
            .map(|(k, a)| (k.to_string(), (a.pool.clone(), a.ips.clone())))
            .collect();
        let moved = moved(lost, &entries);
        self.remembered.retain(|svc, _| !entries.contains_key(svc));
        let changed = self.current.decided_by != self.me || self.current.entries != entries;
        let ledger = changed.then(|| {
            self.replacing(&entries);
            self.delta = None;
            self.seq += 1;
            self.current = Ledger {
                decided_by: self.me.clone(),
                version: (self.epoch, self.seq),
                entries,
            };
            self.current.version
        });
        self.kept = Some(KeptDecision {
            alloc,
            pools: config.pools.clone(),
            pending,
            version: self.current.version,
        });
        Decision {
            ledger,
            moved,
            outcome,
            whole: true,
        }
    }

    /// [`Agreement::decide`] for a configuration that, since this node's last decision,
    /// changed only the services `touched` (their objects: added, edited or removed). Only
    /// those, and the services left pending, are allocated again, from the allocator the last
    /// decision kept; every other service keeps what the ledger gives it. A claim for a
    /// touched service comes from the same sources as in a whole decision (this node's ledger,
    /// the others', the claims heard earlier, the state file) and is kept unless another
    /// service holds its addresses. The decision is whole when nothing is kept, when the pools
    /// changed, or when this node has followed another ledger since.
    ///
    /// The outcome holds the services allocated again only.
    pub fn decide_services(&mut self, config: &Config, touched: &BTreeSet<ServiceKey>) -> Decision {
        let usable = self.kept.as_ref().is_some_and(|k| {
            self.current.decided_by == self.me
                && k.version == self.current.version
                && k.pools == config.pools
        });
        let Some(mut kept) = self.kept.take().filter(|_| usable) else {
            return self.decide(config);
        };
        let mut scope: BTreeSet<ServiceKey> = touched.clone();
        scope.extend(kept.pending.iter().cloned());
        let ours = |k: &ServiceKey| {
            config
                .services
                .get(k)
                .filter(|s| s.load_balancer && s.load_balancer_class.is_none())
        };
        let gone: Vec<ServiceKey> = scope
            .iter()
            .filter(|k| ours(k).is_none())
            .cloned()
            .collect();
        let mut lost: BTreeMap<String, (Vec<IpAddr>, String)> = BTreeMap::new();
        let mut inputs = Vec::new();
        for svc in scope.iter().filter_map(ours) {
            let mut input = input_of(svc, config);
            let key = svc.key.to_string();
            if kept.alloc.allocation(&svc.key).is_none()
                && let Some((ips, source)) = self.claim_of(&key)
            {
                let holder = ips
                    .iter()
                    .find_map(|ip| kept.alloc.holders(*ip).find(|h| *h != &svc.key).cloned());
                match holder {
                    Some(h) => {
                        lost.insert(
                            key,
                            (ips, format!("{h} holds it in the ledger this allocator kept (claim from {source})")),
                        );
                    }
                    None => input.status_ips = ips,
                }
            }
            inputs.push(input);
        }
        let outcome = converge_some(&mut kept.alloc, &gone, inputs);
        let mut entries = std::mem::take(&mut self.current.entries);
        let mut changed = false;
        let mut delta = LedgerDelta {
            decided_by: self.me.clone(),
            base: self.current.version,
            ..LedgerDelta::default()
        };
        for key in &scope {
            kept.pending.remove(key);
            let k = key.to_string();
            let was = match outcome.allocated.get(key) {
                Some(a) => entries.insert(k.clone(), (a.pool.clone(), a.ips.clone())),
                None => entries.remove(&k),
            };
            if was.as_ref() != entries.get(&k) {
                changed = true;
                match entries.get(&k) {
                    Some(v) => delta.set.insert(k.clone(), v.clone()),
                    None => {
                        delta.gone.push(k.clone());
                        None
                    }
                };
                if let Some(c) = &mut self.changed {
                    c.insert(k);
                }
            }
        }
        kept.pending.extend(outcome.pending.keys().cloned());
        let moved = moved(lost, &entries);
        self.remembered.retain(|svc, _| !entries.contains_key(svc));
        self.current.entries = entries;
        let ledger = changed.then(|| {
            self.seq += 1;
            self.current.version = (self.epoch, self.seq);
            delta.version = self.current.version;
            // A member at the version before takes the delta alone.
            self.delta = (self.current.decided_by == self.me).then_some(delta);
            self.current.version
        });
        kept.version = self.current.version;
        self.kept = Some(kept);
        Decision {
            ledger,
            moved,
            outcome,
            whole: false,
        }
    }

    /// The strongest claim on service `key` outside this node's ledger, as a whole decision
    /// weighs them: the others' ledgers by node name, the claims heard earlier, the state file.
    fn claim_of(&self, key: &str) -> Option<(Vec<IpAddr>, String)> {
        self.heard
            .iter()
            .find_map(|(n, l)| {
                l.entries
                    .get(key)
                    .filter(|(_, ips)| !ips.is_empty())
                    .map(|(_, ips)| (ips.clone(), n.clone()))
            })
            .or_else(|| {
                self.remembered
                    .get(key)
                    .filter(|(ips, _)| !ips.is_empty())
                    .map(|(ips, _)| (ips.clone(), "claims heard earlier".to_string()))
            })
            .or_else(|| {
                self.saved
                    .get(key)
                    .filter(|ips| !ips.is_empty())
                    .map(|ips| (ips.clone(), "the state file".to_string()))
            })
    }

    /// What this node may announce: the followed ledger's entries for services in `config`
    /// whose pool it knows. Services of `config` the ledger lacks are `unsure`: not announced
    /// until the allocator decides them.
    pub fn agreed(&self, config: &Config) -> (BTreeMap<ServiceKey, Allocation>, Vec<String>) {
        let mut out = BTreeMap::new();
        let mut unsure = Vec::new();
        for svc in config
            .services
            .values()
            .filter(|s| s.load_balancer && s.load_balancer_class.is_none())
        {
            let key = svc.key.to_string();
            match self.current.entries.get(&key) {
                Some((pool, ips)) if config.pools.contains_key(pool) => {
                    out.insert(
                        svc.key.clone(),
                        Allocation {
                            pool: pool.clone(),
                            ips: ips.clone(),
                        },
                    );
                }
                _ => unsure.push(key),
            }
        }
        (out, unsure)
    }

    /// [`Agreement::agreed`] kept up to date: `agreed` and `unsure` are what it gave for the
    /// configuration and ledger of an earlier call, and since then only `services` may have
    /// changed (their objects in `config`, their entries in the ledger followed: see
    /// [`Agreement::take_changed`]). Brings them to what [`Agreement::agreed`] gives now and
    /// returns the services whose allocation changed, each with the one it had.
    pub fn agreed_services(
        &self,
        config: &Config,
        services: &BTreeSet<ServiceKey>,
        agreed: &mut BTreeMap<ServiceKey, Allocation>,
        unsure: &mut BTreeSet<String>,
    ) -> Vec<(ServiceKey, Option<Allocation>)> {
        let mut out = Vec::new();
        for k in services {
            let key = k.to_string();
            unsure.remove(&key);
            let ours = config
                .services
                .get(k)
                .is_some_and(|s| s.load_balancer && s.load_balancer_class.is_none());
            let now = match self.current.entries.get(&key) {
                Some((pool, ips)) if ours && config.pools.contains_key(pool) => Some(Allocation {
                    pool: pool.clone(),
                    ips: ips.clone(),
                }),
                _ => {
                    if ours {
                        unsure.insert(key);
                    }
                    None
                }
            };
            let was = match &now {
                Some(a) => agreed.insert(k.clone(), a.clone()),
                None => agreed.remove(k),
            };
            if was != now {
                out.push((k.clone(), was));
            }
        }
        out
    }

    /// Services on which the live members' ledgers disagree with the one this node follows.
    pub fn disputed(&self, members: &BTreeSet<String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (n, l) in &self.heard {
            if !members.contains(n) || *n == self.me {
                continue;
            }
            for (k, v) in &l.entries {
                if self.current.entries.get(k) != Some(v) {
                    out.insert(k.clone());
                }
            }
            for k in self.current.entries.keys() {
                if !l.entries.contains_key(k) {
                    out.insert(k.clone());
                }
            }
        }
        out
    }
}

/// A ledger in datagram-sized chunks: `(version, index, count, bytes)` as JSON.
pub fn chunks(ledger: &Ledger, max: usize) -> Vec<Vec<u8>> {
    let body = serde_json::to_vec(ledger).unwrap_or_default();
    pieces(ledger.version, &body, max)
}

/// A delta in chunks, as [`chunks`] (its body says it is one).
pub fn delta_chunks(delta: &LedgerDelta, max: usize) -> Vec<Vec<u8>> {
    let body = serde_json::to_vec(&DeltaBody {
        delta: delta.clone(),
    })
    .unwrap_or_default();
    pieces(delta.version, &body, max)
}

fn pieces(version: (u64, u64), body: &[u8], max: usize) -> Vec<Vec<u8>> {
    let pieces: Vec<&[u8]> = body.chunks(max.max(1)).collect();
    let count = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut out = Vec::with_capacity(p.len() + 24);
            out.extend_from_slice(&version.0.to_be_bytes());
            out.extend_from_slice(&version.1.to_be_bytes());
            out.extend_from_slice(&(i as u32).to_be_bytes());
            out.extend_from_slice(&(count as u32).to_be_bytes());
            out.extend_from_slice(p);
            out
        })
        .collect()
}

/// A ledger being put back together: its version, its chunk count, the chunks so far.
type Partial = ((u64, u64), u32, BTreeMap<u32, Vec<u8>>);

/// Puts chunks back together, per sender; the newest version being assembled wins.
#[derive(Debug, Default)]
pub struct Reassembly {
    partial: BTreeMap<String, Partial>,
}

impl Reassembly {
    /// A chunk from `from`; the ledger when it completes one. Malformed chunks are `Err`.
    pub fn push(&mut self, from: &str, chunk: &[u8]) -> Result<Option<Ledger>, &'static str> {
        match self.push_any(from, chunk)? {
            Some(Received::Ledger(l)) => Ok(Some(l)),
            Some(Received::Delta(_)) => Err("a delta where a ledger was expected"),
            None => Ok(None),
        }
    }

    /// [`Reassembly::push`] for ledgers and deltas.
    pub fn push_any(&mut self, from: &str, chunk: &[u8]) -> Result<Option<Received>, &'static str> {
        if chunk.len() < 24 {
            return Err("short ledger chunk");
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&chunk[o..o + 8]);
            u64::from_be_bytes(b)
        };
        let u32_at = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&chunk[o..o + 4]);
            u32::from_be_bytes(b)
        };
        let version = (u64_at(0), u64_at(8));
        let (index, count) = (u32_at(16), u32_at(20));
        if count == 0 || index >= count || count > 100_000 {
            return Err("bad ledger chunk numbering");
        }
        let slot = self
            .partial
            .entry(from.to_string())
            .or_insert_with(|| (version, count, BTreeMap::new()));
        if slot.0 != version || slot.1 != count {
            *slot = (version, count, BTreeMap::new());
        }
        slot.2.insert(index, chunk[24..].to_vec());
        if slot.2.len() < count as usize {
            return Ok(None);
        }
        let body: Vec<u8> = std::mem::take(&mut slot.2)
            .into_values()
            .flatten()
            .collect();
        self.partial.remove(from);
        if body.starts_with(DELTA_BODY) {
            return serde_json::from_slice::<DeltaBody>(&body)
                .map(|b| Some(Received::Delta(b.delta)))
                .map_err(|_| "undecodable ledger delta");
        }
        serde_json::from_slice(&body)
            .map(|l| Some(Received::Ledger(l)))
            .map_err(|_| "undecodable ledger")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(services: &[&str]) -> Config {
        let mut y = String::from(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [203.0.113.0/31]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n",
        );
        for s in services {
            y.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: default}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n"
            ));
        }
        let l = crate::config::load_str(&y);
        assert!(l.is_valid(), "{:?}", l.errors);
        l.config
    }

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Where a service alone would be placed in the pool (what a lone node picks).
    fn alone(svc: &str) -> Vec<IpAddr> {
        let mut a = Agreement::new("x", 1, BTreeMap::new());
        let d = a.decide(&config(&[svc]));
        d.outcome.allocated.values().next().unwrap().ips.clone()
    }

    /// Runs the exchange until nothing changes: each node decides if it may, and every
    /// node's current ledger goes to every other.
    fn exchange(nodes: &mut [(Agreement, Config)], live: &BTreeSet<String>, now: Duration) {
        for _ in 0..10 {
            let mut changed = false;
            for (a, c) in nodes.iter_mut() {
                if a.may_decide(now, live) && a.decide(c).ledger.is_some() {
                    changed = true;
                }
            }
            let sent: Vec<(String, Ledger)> = nodes
                .iter()
                .map(|(a, _)| (a.me.clone(), a.current().clone()))
                .collect();
            for (a, _) in nodes.iter_mut() {
                for (from, l) in &sent {
                    if *from != a.me && a.heard(from, l.clone(), live) {
                        changed = true;
                    }
                }
            }
            if !changed {
                return;
            }
        }
        panic!("no agreement after 10 rounds");
    }

    fn agreed(a: &Agreement, c: &Config) -> BTreeMap<ServiceKey, Allocation> {
        a.agreed(c).0
    }

    /// Two names that a lone node would place on the same address of the 2-address pool.
    fn contesting_pair() -> (String, String) {
        let names: Vec<String> = (0..40).map(|i| format!("svc{i}")).collect();
        for a in &names {
            for b in &names {
                if a < b && alone(a) == alone(b) {
                    return (a.clone(), b.clone());
                }
            }
        }
        panic!("no contesting pair");
    }

    #[test]
    fn nodes_that_saw_different_files_first_agree_once_they_see_the_same() {
        let (alpha, beta) = contesting_pair();
        let live = members(&["node1", "node2"]);
        let mut nodes = vec![
            (
                Agreement::new("node1", 1, BTreeMap::new()),
                config(&[&alpha]),
            ),
            (
                Agreement::new("node2", 1, BTreeMap::new()),
                config(&[&beta]),
            ),
        ];
        exchange(&mut nodes, &live, Duration::from_secs(5));
        // A follower does not announce the service the allocator has not decided.
        let leader = allocator(&live).unwrap().clone();
        for (a, c) in &nodes {
            let (ok, unsure) = a.agreed(c);
            assert_eq!(ok.len() + unsure.len(), 1);
            if a.me != leader {
                assert_eq!(unsure.len(), 1, "{}", a.me);
            }
        }
        let both = config(&[&alpha, &beta]);
        for n in &mut nodes {
            n.1 = both.clone();
        }
        exchange(&mut nodes, &live, Duration::from_secs(6));
        let (a1, a2) = (agreed(&nodes[0].0, &both), agreed(&nodes[1].0, &both));
        assert_eq!(a1.len(), 2);
        assert_eq!(a1, a2);
        let ips: BTreeSet<IpAddr> = a1.values().flat_map(|a| a.ips.clone()).collect();
        assert_eq!(ips.len(), 2, "one address each");
    }

    #[test]
    fn a_contested_address_stays_with_the_allocators_ledger_and_the_other_service_moves_once() {
        let (alpha, beta) = contesting_pair();
        let both = config(&[&alpha, &beta]);
        let live = members(&["node1", "node2"]);
        let leader = allocator(&live).unwrap().clone();
        let other = if leader == "node1" { "node2" } else { "node1" };
        // Each side of a partition decided its own service onto the same address.
        let mut l = Agreement::new(&leader, 1, BTreeMap::new());
        l.decide(&config(&[&alpha]));
        let mut o = Agreement::new(other, 1, BTreeMap::new());
        o.decide(&config(&[&beta]));
        assert_eq!(
            l.current().entries[&format!("default/{alpha}")].1,
            o.current().entries[&format!("default/{beta}")].1,
            "the two sides contest one address"
        );
        assert!(!l.heard(other, o.current().clone(), &live));
        let d = l.decide(&both);
        assert!(d.ledger.is_some());
        let entries = &l.current().entries;
        assert_eq!(
            entries[&format!("default/{alpha}")].1,
            alone(&alpha),
            "kept"
        );
        assert_ne!(entries[&format!("default/{beta}")].1, alone(&beta), "moved");
        assert_eq!(d.moved.len(), 1);
        assert_eq!(d.moved[0].service, format!("default/{beta}"));
        // Deciding again moves nothing more.
        let again = l.decide(&both);
        assert_eq!(again.ledger, None);
        assert!(again.moved.is_empty() || again.moved.iter().all(|m| m.to == m.from));
    }

    #[test]
    fn a_new_allocator_with_no_state_adopts_the_clusters_allocation() {
        // The cluster agreed with an allocator that has since gone.
        let svcs: Vec<String> = (0..2).map(|i| format!("svc{i}")).collect();
        let refs: Vec<&str> = svcs.iter().map(String::as_str).collect();
        let c = config(&refs);
        let mut old = Agreement::new("old", 1, BTreeMap::new());
        old.decide(&c);
        // Make the stored ledger differ from what a fresh hashed placement would pick.
        let mut ledger = old.current().clone();
        let keys: Vec<String> = ledger.entries.keys().cloned().collect();
        let (a, b) = (
            ledger.entries[&keys[0]].clone(),
            ledger.entries[&keys[1]].clone(),
        );
        ledger.entries.insert(keys[0].clone(), b);
        ledger.entries.insert(keys[1].clone(), a);
        let live = members(&["fresh", "follower"]);
        let lead = allocator(&live).unwrap().clone();
        let follower = if lead == "fresh" { "follower" } else { "fresh" };
        let mut n = Agreement::new(&lead, 2, BTreeMap::new());
        assert!(
            !n.may_decide(Duration::ZERO, &live),
            "waits for the others' ledgers"
        );
        n.heard(follower, ledger.clone(), &live);
        assert!(n.may_decide(Duration::from_millis(1), &live));
        let d = n.decide(&c);
        assert!(d.ledger.is_some());
        assert_eq!(n.current().entries, ledger.entries, "no address moves");
    }

    /// A delta is taken only by a node that follows its base; one that does not keeps its
    /// ledger (and gets the ledger whole later).
    #[test]
    fn a_delta_is_taken_only_at_its_base() {
        let before = config(&["a"]);
        let mut a = Agreement::new("n1", 1, BTreeMap::new());
        a.decide(&before);
        let base = a.current().clone();
        let touched: BTreeSet<ServiceKey> = [ServiceKey::new("default", "b")].into();
        let d = a.decide_services(&config(&["a", "b"]), &touched);
        assert!(d.ledger.is_some() && !d.whole);
        let delta = a.delta().expect("a decision over some services").clone();
        assert_eq!(
            (delta.base, delta.version),
            (base.version, a.current().version)
        );
        assert_eq!(delta.set.len(), 1);
        let pair = ["n2", "n3", "n4", "n5"]
            .into_iter()
            .map(|f| members(&["n1", f]))
            .find(|m| allocator(m).map(String::as_str) == Some("n1"))
            .unwrap();
        let follower = pair.iter().find(|n| *n != "n1").unwrap().clone();
        let mut lacking = Agreement::new(&follower, 1, BTreeMap::new());
        assert!(!lacking.hear_delta("n1", delta.clone(), &pair).adopted);
        assert_eq!(lacking.current(), &Ledger::default());
        let mut at_base = Agreement::new(&follower, 1, BTreeMap::new());
        at_base.hear("n1", base, &pair);
        assert!(at_base.hear_delta("n1", delta.clone(), &pair).adopted);
        assert_eq!(at_base.current(), a.current());
        assert_eq!(at_base.delta(), Some(&delta), "relayed as it came");
        // Heard again: nothing to adopt.
        assert!(!at_base.hear_delta("n1", delta, &pair).adopted);
    }

    #[test]
    fn a_ledger_crosses_in_chunks_and_bad_chunks_are_refused() {
        let mut l = Ledger {
            decided_by: "node1".into(),
            version: (7, 3),
            entries: BTreeMap::new(),
        };
        for i in 0..200u8 {
            l.entries.insert(
                format!("default/svc{i}"),
                ("lan".into(), vec![IpAddr::from([203, 0, 113, i])]),
            );
        }
        let cs = chunks(&l, 1000);
        assert!(cs.len() > 3);
        let mut r = Reassembly::default();
        let mut got = None;
        for c in cs.iter().rev() {
            got = r.push("node1", c).unwrap();
        }
        assert_eq!(got, Some(l));
        assert!(r.push("x", b"short").is_err());
        let mut bad = cs[0].clone();
        bad[20..24].copy_from_slice(&0u32.to_be_bytes());
        assert!(r.push("x", &bad).is_err());
    }

    mod services {
        use super::*;
        use proptest::prelude::*;

        /// One service's state in a run: absent, or (LoadBalancer, asked address, sharing
        /// key, port).
        type Svc = Option<(bool, Option<u8>, Option<u8>, u16)>;

        fn yaml(svcs: &[Svc]) -> Config {
            let mut y = String::from(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [198.51.100.0/30]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: v6}\nspec: {addresses: [2001:db8::/126], autoAssign: false}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n",
            );
            for (i, s) in svcs.iter().enumerate() {
                let Some((lb, ip, share, port)) = s else {
                    continue;
                };
                let ty = if *lb { "LoadBalancer" } else { "ClusterIP" };
                let ann = share.map_or(String::new(), |k| {
                    format!(", annotations: {{metallb.universe.tf/allow-shared-ip: k{k}}}")
                });
                let ip = ip.map_or(String::new(), |o| {
                    format!(", loadBalancerIP: 198.51.100.{o}")
                });
                y.push_str(&format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default{ann}}}\nspec: {{type: {ty}, ports: [{{port: {port}}}]{ip}}}\n"
                ));
            }
            let l = crate::config::load_str(&y);
            assert!(l.is_valid(), "{:?}", l.errors);
            l.config
        }

        fn svc() -> impl Strategy<Value = Svc> {
            prop::option::weighted(
                0.8,
                (
                    prop::bool::weighted(0.85),
                    prop::option::weighted(0.3, 0u8..5),
                    prop::option::weighted(0.3, 0u8..2),
                    prop_oneof![Just(80u16), Just(81u16)],
                ),
            )
        }

        /// Services that share an address keep it from one whole decision to the next (the
        /// allocator checks they still may): it once counted the second as a claim on an
        /// address another service held, and moved it.
        #[test]
        fn shared_addresses_stay_from_one_whole_decision_to_the_next() {
            let config = yaml(&[
                None,
                Some((true, None, Some(0), 80)),
                Some((true, None, None, 80)),
                Some((true, None, Some(0), 81)),
                Some((true, None, Some(0), 80)),
            ]);
            let mut a = Agreement::new("n1", 1, BTreeMap::new());
            a.decide(&config);
            let first = a.current().entries.clone();
            let shared = first
                .values()
                .filter(|(_, ips)| first.values().filter(|(_, o)| o == ips).count() > 1);
            assert!(shared.count() >= 2, "{first:?}");
            assert_eq!(a.decide(&config).ledger, None);
            assert_eq!(a.current().entries, first);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// A decision over the services a run of edits touched (and those left pending)
            /// leaves every other service's entry as it was, and decides a ledger that a whole
            /// decision keeps as it is: every address still valid, every pending service
            /// still unable to get one. A whole decision keeps its own ledger too (shared
            /// addresses included), and a new version comes exactly when an entry changed.
            #[test]
            fn a_decision_over_the_touched_services_keeps_the_rest_and_is_kept_whole(
                first in prop::collection::vec(svc(), 6),
                edits in prop::collection::vec((0usize..6, svc(), prop::bool::weighted(0.2)), 1..12),
            ) {
                let mut state = first;
                let mut config = yaml(&state);
                let mut a = Agreement::new("n1", 1, BTreeMap::new());
                let mut w = a.clone();
                a.decide(&config);
                w.decide(&config);
                // What the allocator and a follower agreed, kept up to date change by change.
                let pair = ["n2", "n3", "n4", "n5"]
                    .into_iter()
                    .map(|f| members(&["n1", f]))
                    .find(|m| allocator(m).map(String::as_str) == Some("n1"))
                    .expect("a follower of n1");
                let mut f = Agreement::new(pair.iter().find(|n| *n != "n1").unwrap(), 1, BTreeMap::new());
                f.hear("n1", a.current().clone(), &pair);
                let mut kept: Vec<(BTreeMap<ServiceKey, Allocation>, BTreeSet<String>)> = Vec::new();
                for x in [&mut a, &mut f] {
                    prop_assert!(x.take_changed().is_none(), "the first take is whole");
                    let (agreed, unsure) = x.agreed(&config);
                    kept.push((agreed, unsure.into_iter().collect()));
                }
                prop_assert!(w.clone().decide(&config).ledger.is_none(), "a whole decision moved its own ledger");
                for (i, s, whole) in edits {
                    state[i] = s;
                    let next = yaml(&state);
                    let touched = next.services_changed_since(&config).expect("only services");
                    let before = a.current().entries.clone();
                    let mut scope: BTreeSet<String> =
                        touched.iter().map(ToString::to_string).collect();
                    scope.extend(a.kept.as_ref().unwrap().pending.iter().map(ToString::to_string));
                    // Now and then a whole decision: what it changed is listed too.
                    let d = if whole { a.decide(&next) } else { a.decide_services(&next, &touched) };
                    for (k, v) in &before {
                        if !scope.contains(k) && !whole {
                            prop_assert_eq!(a.current().entries.get(k), Some(v), "{} moved", k);
                        }
                    }
                    prop_assert_eq!(d.ledger.is_some(), before != a.current().entries);
                    let mut again = a.clone();
                    prop_assert!(again.decide(&next).ledger.is_none(), "a whole decision changed it");
                    prop_assert_eq!(&again.current().entries, &a.current().entries);
                    // The follower takes the allocator's delta when there is one (it holds the
                    // base: it followed every step), else the ledger whole; both through the
                    // chunks a node sends.
                    let mut r = Reassembly::default();
                    let sent = match a.delta() {
                        Some(d) if !whole => delta_chunks(d, 64),
                        _ => chunks(a.current(), 64),
                    };
                    let mut got = None;
                    for c in &sent {
                        got = r.push_any("n1", c).expect("well formed").or(got);
                    }
                    match got.expect("put back together") {
                        Received::Delta(d) => {
                            prop_assert!(f.hear_delta("n1", d, &pair).adopted || a.current() == f.current());
                        }
                        Received::Ledger(l) => {
                            f.hear("n1", l, &pair);
                        }
                    }
                    prop_assert_eq!(f.current(), a.current());
                    for (x, (agreed, unsure)) in [&mut a, &mut f].into_iter().zip(&mut kept) {
                        let mut scope = touched.clone();
                        scope.extend(x.take_changed().expect("the changes listed"));
                        let before = agreed.clone();
                        let moved = x.agreed_services(&next, &scope, agreed, unsure);
                        let (whole, whole_unsure) = x.agreed(&next);
                        prop_assert_eq!(&*agreed, &whole);
                        prop_assert_eq!(&*unsure, &whole_unsure.into_iter().collect::<BTreeSet<_>>());
                        let moved: Vec<ServiceKey> = moved
                            .into_iter()
                            .map(|(k, was)| {
                                assert_eq!(was.as_ref(), before.get(&k));
                                k
                            })
                            .collect();
                        prop_assert_eq!(moved, crate::parts::differing(&before, &whole));
                    }
                    // Whole decisions alone: each keeps what the last decided.
                    w.decide(&next);
                    let mut w2 = w.clone();
                    prop_assert!(w2.decide(&next).ledger.is_none(), "a whole decision moved its own ledger");
                    config = next;
                }
            }
        }
    }
}
