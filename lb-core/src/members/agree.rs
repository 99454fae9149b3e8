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
//! Pure: the caller passes time, members and configuration, and carries ledgers between nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alloc::converge::{Input, inputs_from};
use crate::alloc::{Allocation, Outcome, Placement, PoolAllocator, converge};
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
    /// The new ledger, to send to every member.
    pub ledger: Option<Ledger>,
    /// Services moved off a contested address.
    pub moved: Vec<Moved>,
    /// The allocations that follow.
    pub outcome: Outcome,
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
            self.current = ledger;
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
        let mut taken: BTreeMap<IpAddr, String> = BTreeMap::new();
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
        for (source, entries) in sources {
            for (svc, ips) in entries {
                if claims.contains_key(&svc) || ips.is_empty() {
                    continue;
                }
                if let Some(holder) = ips.iter().find_map(|ip| taken.get(ip)) {
                    if holder != &svc {
                        lost.entry(svc.clone()).or_insert((
                            ips.clone(),
                            format!("{} holds it in the ledger this allocator kept (claim from {source})", holder),
                        ));
                    }
                    continue;
                }
                for ip in &ips {
                    taken.insert(*ip, svc.clone());
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
        let entries: BTreeMap<String, (String, Vec<IpAddr>)> = outcome
            .allocated
            .iter()
            .map(|(k, a)| (k.to_string(), (a.pool.clone(), a.ips.clone())))
            .collect();
        let moved = lost
            .into_iter()
            .filter_map(|(svc, (from, why))| {
                let to = entries.get(&svc)?.1.clone();
                (to != from).then_some(Moved {
                    service: svc,
                    from,
                    to,
                    why,
                })
            })
            .collect();
        self.remembered.retain(|svc, _| !entries.contains_key(svc));
        let changed = self.current.decided_by != self.me || self.current.entries != entries;
        let ledger = changed.then(|| {
            self.seq += 1;
            self.current = Ledger {
                decided_by: self.me.clone(),
                version: (self.epoch, self.seq),
                entries,
            };
            self.current.clone()
        });
        Decision {
            ledger,
            moved,
            outcome,
        }
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
    let pieces: Vec<&[u8]> = body.chunks(max.max(1)).collect();
    let count = pieces.len();
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut out = Vec::with_capacity(p.len() + 24);
            out.extend_from_slice(&ledger.version.0.to_be_bytes());
            out.extend_from_slice(&ledger.version.1.to_be_bytes());
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
        serde_json::from_slice(&body)
            .map(Some)
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
        let entries = &d.ledger.unwrap().entries;
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
        assert_eq!(
            d.ledger.unwrap().entries,
            ledger.entries,
            "no address moves"
        );
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
}
