//! The speaker's view of the cluster: what this node must announce, decided from watched
//! objects, and the status kinds (ServiceL2Status, ServiceBGPStatus) that say so.
//!
//! ```text
//!  watch Services, EndpointSlices, Nodes, metallb.io kinds, Secrets ─► Store
//!        Store + live members ─► Core::decide (pure) ─► Plan ─► announcers (lb-bin)
//!                                                        └────► StatusWriter ─► API
//! ```
//!
//! Addresses come from the Services' status (the controller's writes), never allocated here.
//! When the API server is unreachable the store keeps the last objects it saw, so the plan
//! stays what it was and only membership changes move announcements.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use lb_core::alloc::Allocation;
use lb_core::config::{Config, Severity, load_values};
use lb_core::objects::ServiceKey;
use lb_core::parts::{Names, Part};
use lb_core::plan::{How, Interfaces, Plan, PlanInput};
use serde_json::{Value, json};

use crate::controller::pool_annotation;
use crate::crds::{
    BFDProfile, BGPAdvertisement, Community, IPAddressPool, L2Advertisement,
    MetalLBServiceBGPStatus, MetalLBServiceL2Status, ServiceBGPStatus, ServiceL2Status,
    ServiceOnNode, v1beta2,
};
use crate::store::{Kind, Store};

/// Labels MetalLB puts on the status kinds.
pub const NODE_LABEL: &str = "metallb.io/node";
/// The label naming the service a status object is about.
pub const SERVICE_NAME_LABEL: &str = "metallb.io/service-name";
/// The label naming that service's namespace.
pub const SERVICE_NAMESPACE_LABEL: &str = "metallb.io/service-namespace";

/// `lb-bin speaker`'s settings that decide what is announced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// This node's name.
    pub node_name: String,
    /// Where the metallb.io objects and BGP password Secrets live.
    pub namespace: String,
    /// `--lb-class`: only services of this class (none: services with no class).
    pub lb_class: Option<String>,
    /// `--ignore-exclude-lb`: announce from nodes labelled exclude-from-external-load-balancers.
    pub ignore_exclude_label: bool,
}

impl Options {
    /// The speaker of `node_name`, reading the objects in `namespace`: services of no class,
    /// the exclude label honoured.
    pub fn new(node_name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Options {
            node_name: node_name.into(),
            namespace: namespace.into(),
            lb_class: None,
            ignore_exclude_label: false,
        }
    }
}

/// The fields of a Service the speaker decides from (and its status writer's events name):
/// the rest (cluster IPs, session affinity, node ports, managed fields) is not held.
pub const SERVICE_FIELDS: &[&str] = &[
    "metadata.labels",
    "metadata.annotations",
    "spec.type",
    "spec.ports[].port",
    "spec.ports[].protocol",
    "spec.selector",
    "spec.loadBalancerIP",
    "spec.loadBalancerClass",
    "spec.externalTrafficPolicy",
    "spec.ipFamilies",
    "spec.ipFamilyPolicy",
    "status.loadBalancer.ingress[].ip",
];

/// The fields of an EndpointSlice the speaker decides from: the service it names, and where
/// each endpoint runs and whether it can serve (not its addresses, ports, zones or hints).
pub const ENDPOINT_SLICE_FIELDS: &[&str] = &[
    "metadata.labels",
    "endpoints[].nodeName",
    "endpoints[].conditions.ready",
    "endpoints[].conditions.serving",
];

/// The fields of a Node the speaker decides from: labels, conditions (type and status, not
/// their heartbeat times) and addresses. Its images, capacity and heartbeats are not held, and
/// a heartbeat alone wakes no decision.
pub const NODE_FIELDS: &[&str] = &[
    "metadata.labels",
    "status.conditions[].type",
    "status.conditions[].status",
    "status.addresses",
];

/// What a decision reads of the metallb.io configuration kinds: their labels (pool
/// selectors), annotations and spec. Not their status: the controller writes each pool's use
/// there on every allocation, and that must not cost every speaker a whole decision.
const CONFIG_FIELDS: &[&str] = &["metadata.labels", "metadata.annotations", "spec"];

/// The kinds the speaker watches.
pub fn kinds(opts: &Options) -> Vec<Kind> {
    let ns = opts.namespace.as_str();
    vec![
        Kind::of::<Service>().keeping(SERVICE_FIELDS),
        Kind::of::<EndpointSlice>().keeping(ENDPOINT_SLICE_FIELDS),
        Kind::of::<Node>().keeping(NODE_FIELDS),
        Kind::of::<Namespace>(),
        Kind::of::<Secret>().in_namespace(ns),
        Kind::of::<IPAddressPool>()
            .in_namespace(ns)
            .keeping(CONFIG_FIELDS),
        Kind::of::<L2Advertisement>()
            .in_namespace(ns)
            .keeping(CONFIG_FIELDS),
        Kind::of::<BGPAdvertisement>()
            .in_namespace(ns)
            .keeping(CONFIG_FIELDS),
        Kind::of::<v1beta2::BGPPeer>()
            .in_namespace(ns)
            .keeping(CONFIG_FIELDS),
        Kind::of::<BFDProfile>()
            .in_namespace(ns)
            .keeping(CONFIG_FIELDS),
        Kind::of::<Community>()
            .in_namespace(ns)
            .keeping(CONFIG_FIELDS),
        Kind::of::<ServiceL2Status>()
            .in_namespace(ns)
            .with_labels(&format!("{NODE_LABEL}={}", opts.node_name)),
        Kind::of::<ServiceBGPStatus>()
            .in_namespace(ns)
            .with_labels(&format!("{NODE_LABEL}={}", opts.node_name)),
    ]
}

/// What one decision gives.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// What this node announces.
    pub plan: Plan,
    /// The configuration the plan was made from (the metallb.io part may be the previous one),
    /// without its Services and EndpointSlices: the [`Core`] keeps those.
    pub config: Config,
    /// Error findings of the newest objects, as text.
    pub config_errors: Vec<String>,
    /// The metallb.io objects have errors: the previous good ones are in force.
    pub stale: bool,
}

/// The speaker's memory between decisions: the last configuration without errors, and what
/// the last decision read (for [`Core::change`]).
#[derive(Debug, Default)]
pub struct Core {
    last_good: Option<Config>,
    kept: Option<Kept>,
}

/// True for findings about `metallb.io` objects (as opposed to Services and other v1 kinds).
fn is_metallb(object: &str) -> bool {
    [
        "IPAddressPool ",
        "L2Advertisement ",
        "BGPAdvertisement ",
        "BGPPeer ",
        "BFDProfile ",
        "Community ",
    ]
    .iter()
    .any(|k| object.starts_with(k))
}

/// The addresses the controller gave each service, read from their status.
pub fn allocations_from_status(
    config: &Config,
    lb_class: Option<&str>,
) -> BTreeMap<ServiceKey, Allocation> {
    config
        .services
        .values()
        .filter_map(|s| Some((s.key.clone(), allocation_from_status(config, s, lb_class)?)))
        .collect()
}

/// The addresses the controller gave one service (of our class), from its status: those in a
/// pool of `config`, from the pool its annotation names when it holds them.
fn allocation_from_status(
    config: &Config,
    s: &lb_core::objects::Service,
    lb_class: Option<&str>,
) -> Option<Allocation> {
    if !s.load_balancer || s.load_balancer_class.as_deref() != lb_class {
        return None;
    }
    let ips: Vec<IpAddr> = s
        .status_ips
        .iter()
        .copied()
        .filter(|ip| config.pools.values().any(|p| p.contains(*ip)))
        .collect();
    let first = *ips.first()?;
    let pool = s
        .annotations
        .get(&pool_annotation())
        .filter(|p| config.pools.get(*p).is_some_and(|p| p.contains(first)))
        .cloned()
        .or_else(|| {
            config
                .pools
                .values()
                .find(|p| p.contains(first))
                .map(|p| p.name.clone())
        })?;
    Some(Allocation { pool, ips })
}

/// The kinds a pass over a change serves from what is kept; a change of any other kind is a
/// whole decision.
const KEPT_KINDS: [&str; 3] = ["services", "endpointslices", "nodes"];

/// One service as kept: its object, its addresses (from its status), its EndpointSlices and
/// its part of the plan, in one place, so that planning it again costs one look-up.
#[derive(Debug)]
struct Entry {
    key: ServiceKey,
    /// The Service (none: only slices name it, or it was deleted and its part not yet
    /// planned again).
    service: Option<lb_core::objects::Service>,
    /// Its addresses, from its status (none: it has none of our class and pools).
    allocation: Option<Allocation>,
    /// The EndpointSlices that name it, by name.
    slices: BTreeMap<String, lb_core::objects::EndpointSlice>,
    /// Its part of the plan, and who won its layer 2 election (none: nothing to announce or
    /// say).
    part: Option<Part>,
}

impl Entry {
    fn new(key: ServiceKey) -> Entry {
        Entry {
            key,
            service: None,
            allocation: None,
            slices: BTreeMap::new(),
            part: None,
        }
    }

    /// Nothing is kept for the service any more.
    fn is_empty(&self) -> bool {
        self.service.is_none() && self.slices.is_empty() && self.part.is_none()
    }

    /// Its part, planned from what it holds.
    fn planned(&self, planner: &lb_core::Planner<'_>, names: &Names) -> Option<Part> {
        let (alloc, svc) = self.allocation.as_ref().zip(self.service.as_ref())?;
        let (plan, owner, standing) = planner.service_standing(alloc, svc, &self.slices());
        names.part(plan, owner, standing)
    }

    fn slices(&self) -> Vec<&lb_core::objects::EndpointSlice> {
        self.slices.values().collect()
    }
}

/// Every kept service's entry in a slot of its own (for as long as it lives), found by its
/// key; the index of winners names slots, so a lost node's services are planned again and
/// put in place without a search.
#[derive(Debug, Default)]
struct Entries {
    slots: Vec<Option<Box<Entry>>>,
    free: Vec<usize>,
    /// Hashed: a search of an ordered map of 100,000 string keys cost more than planning
    /// the service.
    at: HashMap<ServiceKey, usize>,
}

impl Entries {
    fn slot(&self, key: &ServiceKey) -> Option<usize> {
        self.at.get(key).copied()
    }

    fn get(&self, at: usize) -> Option<&Entry> {
        self.slots.get(at)?.as_deref()
    }

    fn get_mut(&mut self, at: usize) -> Option<&mut Entry> {
        self.slots.get_mut(at)?.as_deref_mut()
    }

    fn by_key(&self, key: &ServiceKey) -> Option<&Entry> {
        self.get(self.slot(key)?)
    }

    /// Service `key`'s slot, made when it has none.
    fn slot_or_new(&mut self, key: &ServiceKey) -> usize {
        if let Some(at) = self.slot(key) {
            return at;
        }
        let entry = Some(Box::new(Entry::new(key.clone())));
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = entry;
                at
            }
            None => {
                self.slots.push(entry);
                self.slots.len() - 1
            }
        };
        self.at.insert(key.clone(), at);
        at
    }

    /// Frees slot `at` if nothing is kept in its entry (its part is none: no index names
    /// it).
    fn tidy(&mut self, at: usize) {
        if let Some(e) = self.get(at).filter(|e| e.is_empty()) {
            let key = e.key.clone();
            self.at.remove(&key);
            self.slots[at] = None;
            self.free.push(at);
        }
    }

    /// Every entry with its slot.
    fn iter(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(at, e)| Some((at, e.as_deref()?)))
    }
}

/// What the last whole decision read, kept up to date by [`Core::change`], so that a change
/// of one Service, EndpointSlice or Node touches that object's part alone.
#[derive(Debug)]
struct Kept {
    /// The configuration in force, without its Services and EndpointSlices (in `entries`).
    config: Config,
    /// Every service named by a Service, an EndpointSlice or a kept part.
    entries: Entries,
    /// The service each slice named when read: (namespace, name) -> service.
    slice_service: BTreeMap<(String, String), String>,
    /// The services (their slots) whose layer 2 election each node won: a node that can no
    /// longer win moves these, found without a walk of every part.
    won: Won,
    /// The services (their slots) whose part's layer 2 election is not closed: the only ones
    /// a node that joins may take, so a join reads these entries alone.
    takeable: Bits,
    /// Error findings about Services, EndpointSlices and Nodes, by object.
    object_errors: BTreeMap<(String, String, String), Vec<String>>,
    /// Error findings about everything else, in load order.
    other_errors: Vec<String>,
    stale: bool,
    members: BTreeSet<String>,
    options: (String, Option<String>, bool),
}

/// Which services a walk of the kept entries plans again.
#[derive(Clone, Copy)]
enum Which<'a> {
    /// Every one.
    All,
    /// Those one of these new members may take (`Planner::may_take`), and these (read again).
    Taken(&'a [String], &'a BTreeSet<ServiceKey>),
}

/// A service decided again: its key and this node's part (its announcements).
pub type Decided = (ServiceKey, Vec<lb_core::Announcement>);

/// A new part put in an entry, for the index of winners.
struct Settled {
    /// The part changed its winner, or stayed (the index names its winner now, whatever a
    /// caller took from it).
    enters: bool,
    /// The winner it had, when it changed its winner: moved out of the replaced part, so that
    /// no count of a shared name is touched on another core.
    left: Option<Arc<str>>,
    /// The part's layer 2 election is not closed now: a node that joins may take it.
    takeable: bool,
    /// The service and this node's part now, when asked for.
    decided: Option<Decided>,
}

impl Settled {
    /// Puts `new` in `entry` (the replaced part is freed here).
    fn of(entry: &mut Entry, new: Option<Part>, keys: bool) -> Settled {
        let moved = owner(entry.part.as_ref()) != owner(new.as_ref());
        let changed = entry.part != new;
        let mut left = None;
        if changed {
            let old = std::mem::replace(&mut entry.part, new);
            if moved {
                left = old.and_then(|mut p| p.owner.take());
            }
        }
        Settled {
            enters: !changed || moved,
            left,
            takeable: entry
                .part
                .as_ref()
                .is_some_and(|p| p.standing != lb_core::Standing::Closed),
            decided: keys.then(|| {
                let part = entry.part.as_ref();
                let part = part.map(|p| p.plan.announcements.clone());
                (entry.key.clone(), part.unwrap_or_default())
            }),
        }
    }
}

/// The winner of a part's election.
fn owner(part: Option<&Part>) -> Option<&str> {
    part.and_then(|p| p.owner.as_deref())
}

/// The services (their slots) whose layer 2 election each node won, a bit per slot.
#[derive(Debug, Default)]
struct Won(HashMap<String, Bits>);

impl Won {
    /// Names slot `at` among the services `node` won.
    fn add(&mut self, node: &str, at: usize) {
        match self.0.get_mut(node) {
            Some(slots) => slots.insert(at),
            None => {
                let mut slots = Bits::default();
                slots.insert(at);
                self.0.insert(node.to_string(), slots);
            }
        }
    }

    /// Slot `at` is no longer among the services `node` won.
    fn remove(&mut self, node: &str, at: usize) {
        if let Some(slots) = self.0.get_mut(node) {
            slots.remove(at);
            if slots.len == 0 {
                self.0.remove(node);
            }
        }
    }

    /// The services `node` won, no longer named.
    fn take(&mut self, node: &str) -> Bits {
        self.0.remove(node).unwrap_or_default()
    }

    /// Puts what [`Settled::of`] did to the part in slot `at` in the index.
    fn settle(&mut self, at: usize, part: Option<&Part>, settled: &Settled) {
        if let Some(o) = &settled.left {
            self.remove(o, at);
        }
        if settled.enters
            && let Some(o) = owner(part)
        {
            self.add(o, at);
        }
    }
}

/// A set of slots: a bit each.
#[derive(Clone, Debug, Default)]
struct Bits {
    words: Vec<u64>,
    len: usize,
}

impl Bits {
    fn insert(&mut self, at: usize) {
        let (w, bit) = (at / 64, 1u64 << (at % 64));
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        if self.words[w] & bit == 0 {
            self.words[w] |= bit;
            self.len += 1;
        }
    }

    fn remove(&mut self, at: usize) {
        let (w, bit) = (at / 64, 1u64 << (at % 64));
        if let Some(word) = self.words.get_mut(w)
            && *word & bit != 0
        {
            *word &= !bit;
            self.len -= 1;
        }
    }

    /// Every slot in the set, lowest first.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

/// A kept part with its service, in the service's order.
#[derive(Clone, Copy)]
struct ByService<'k>(&'k ServiceKey, &'k Part);

impl PartialEq for ByService<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ByService<'_> {}

impl PartialOrd for ByService<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByService<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(other.0)
    }
}

impl Kept {
    fn config_errors(&self) -> Vec<String> {
        let mut out = self.other_errors.clone();
        out.extend(self.object_errors.values().flatten().cloned());
        out
    }

    /// The plan in force: every part, in service order.
    fn plan(&self) -> Plan {
        let parts: Vec<ByService<'_>> = self
            .entries
            .iter()
            .filter_map(|(_, e)| Some(ByService(&e.key, e.part.as_ref()?)))
            .collect();
        let mut plan = Plan::default();
        for ByService(_, part) in lb_core::par::sort_unstable(parts) {
            plan.announcements
                .extend(part.plan.announcements.iter().cloned());
            plan.skipped.extend(part.plan.skipped.iter().cloned());
        }
        plan
    }

    /// What this node announces for `key`.
    fn announcements(&self, key: &ServiceKey) -> Vec<lb_core::Announcement> {
        self.entries
            .by_key(key)
            .and_then(|e| e.part.as_ref())
            .map(|p| p.plan.announcements.clone())
            .unwrap_or_default()
    }

    fn add_slice(&mut self, slice: lb_core::objects::EndpointSlice) {
        let Some(svc) = slice.service.clone() else {
            return;
        };
        let ns = slice.namespace.clone();
        self.slice_service
            .insert((ns.clone(), slice.name.clone()), svc.clone());
        let at = self.entries.slot_or_new(&ServiceKey::new(ns, svc));
        if let Some(e) = self.entries.get_mut(at) {
            e.slices.insert(slice.name.clone(), slice);
        }
    }

    /// Forgets a slice; returns the service it named.
    fn remove_slice(&mut self, ns: &str, name: &str) -> Option<String> {
        let svc = self
            .slice_service
            .remove(&(ns.to_string(), name.to_string()))?;
        let key = ServiceKey::new(ns.to_string(), svc.clone());
        if let Some(at) = self.entries.slot(&key) {
            if let Some(e) = self.entries.get_mut(at) {
                e.slices.remove(name);
            }
            self.entries.tidy(at);
        }
        Some(svc)
    }

    /// Re-plans from what is kept the services `which` names (every one when a Node's decided
    /// fields changed: any service's owner or eligibility may have), in one walk of the
    /// entries; returns those whose part changed, each with this node's part, when `keys` asks
    /// for them.
    fn replan_all(
        &mut self,
        rules: lb_core::Rules,
        node: &str,
        which: Which<'_>,
        keys: bool,
    ) -> Vec<Decided> {
        let moved = self.walk(rules, node, which);
        self.put(moved, keys)
    }

    /// The parts that moved among the services `which` names, planned in one walk of the
    /// kept entries: each with its entry's slot.
    fn walk(
        &self,
        rules: lb_core::Rules,
        node: &str,
        which: Which<'_>,
    ) -> Vec<(usize, Option<Part>)> {
        let (planner, names) = self.planner(rules, node);
        let items: Vec<(usize, &Entry)> = match which {
            Which::All => self.entries.iter().collect(),
            // Only a service whose election is not closed may be taken; and those read again.
            Which::Taken(_, touched) => {
                let mut slots = self.takeable.clone();
                for at in touched.iter().filter_map(|k| self.entries.slot(k)) {
                    slots.insert(at);
                }
                let slots = slots.iter();
                slots
                    .filter_map(|at| Some((at, self.entries.get(at)?)))
                    .collect()
            }
        };
        // Each service is planned on its own: many on every core. A run returns only the
        // parts that moved (an unchanged one is dropped where it was made).
        lb_core::par::runs(&items, |run| {
            run.iter()
                .filter_map(|(at, entry)| {
                    if let Which::Taken(joined, touched) = which {
                        // A service without a part can be taken by no one.
                        let may = touched.contains(&entry.key)
                            || match (&entry.allocation, &entry.service, &entry.part) {
                                (Some(a), Some(s), Some(p)) => {
                                    let of = entry.slices();
                                    joined
                                        .iter()
                                        .any(|j| planner.may_take(j, a, s, &of, p.standing))
                                }
                                (_, _, Some(_)) => true,
                                (_, _, None) => false,
                            };
                        if !may {
                            return None;
                        }
                    }
                    let part = entry.planned(&planner, &names);
                    (part != entry.part).then_some((*at, part))
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// Re-plans the services in slots `slots` from what is kept (for a few among many: a
    /// walk of the entries reads every one); returns each, with this node's part.
    fn replan_some(&mut self, slots: &[usize], rules: lb_core::Rules, node: &str) -> Vec<Decided> {
        // Planned on every core from shared entries, then put in place.
        let planned: Vec<(usize, Option<Part>)> = {
            let (planner, names) = self.planner(rules, node);
            lb_core::par::runs(slots, |run| {
                run.iter()
                    .filter_map(|&at| Some((at, self.entries.get(at)?.planned(&planner, &names))))
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect()
        };
        self.put(planned, true)
    }

    /// Puts each new part in its slot's entry and its winner in the index of winners; returns
    /// each service, with this node's part, when `keys` asks for them. The entries are taken
    /// from their slots and their parts swapped on every core: freeing a replaced part, made
    /// long ago on any thread, cost as much as planning it. The index is kept on this thread.
    fn put(&mut self, moved: Vec<(usize, Option<Part>)>, keys: bool) -> Vec<Decided> {
        let mut taken: Vec<(usize, Box<Entry>, Option<Part>)> = moved
            .into_iter()
            .filter_map(|(at, new)| Some((at, self.entries.slots.get_mut(at)?.take()?, new)))
            .collect();
        let settled: Vec<Settled> = lb_core::par::runs_mut(&mut taken, |run| {
            run.iter_mut()
                .map(|(_, entry, new)| Settled::of(entry, new.take(), keys))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
        let mut out = Vec::with_capacity(if keys { settled.len() } else { 0 });
        for ((at, entry, _), settled) in taken.into_iter().zip(settled) {
            self.won.settle(at, entry.part.as_ref(), &settled);
            if settled.takeable {
                self.takeable.insert(at);
            } else {
                self.takeable.remove(at);
            }
            out.extend(settled.decided);
            self.entries.slots[at] = Some(entry);
            self.entries.tidy(at);
        }
        out
    }

    /// A planner over what is kept, and the names a part's owner is one of (every member and
    /// the planning node), shared.
    fn planner<'k>(
        &'k self,
        rules: lb_core::Rules,
        node: &'k str,
    ) -> (lb_core::Planner<'k>, Names) {
        let input = PlanInput::new(&self.config, &NO_ALLOCATIONS, &self.members, node, rules);
        (lb_core::Planner::new(input), Names::of(&self.members, node))
    }
}

/// The allocations a kept planner's input names: none (each entry holds its own, and the
/// planner is handed them).
static NO_ALLOCATIONS: BTreeMap<ServiceKey, Allocation> = BTreeMap::new();

/// Where an error finding belongs in [`Kept`]: the Service, EndpointSlice or Node it is
/// about.
fn kept_object(object: &str) -> Option<(String, String, String)> {
    let (kind, rest) = object.split_once(' ')?;
    let plural = match kind {
        "Service" => "services",
        "EndpointSlice" => "endpointslices",
        "Node" => "nodes",
        _ => return None,
    };
    let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
    let ns = if plural == "nodes" { "" } else { ns };
    Some((plural.to_string(), ns.to_string(), name.to_string()))
}

/// One object of a change: (plural, namespace, name) with the object now (`None`: deleted).
pub type ObjectChange = ((String, String, String), Option<Value>);

impl Core {
    /// What `node` announces, given every watched object and the live members.
    pub fn decide<V: std::borrow::Borrow<Value>>(
        &mut self,
        objects: impl IntoIterator<Item = V>,
        members: &BTreeSet<String>,
        opts: &Options,
    ) -> Decision {
        let loaded = load_values(objects);
        let broken = loaded
            .errors
            .iter()
            .any(|e| e.severity == Severity::Error && is_metallb(&e.object));
        let mut config = loaded.config;
        let stale = broken && self.last_good.is_some();
        match (&self.last_good, stale) {
            (Some(good), true) => {
                config.pools = good.pools.clone();
                config.l2_advertisements = good.l2_advertisements.clone();
                config.bgp_advertisements = good.bgp_advertisements.clone();
                config.peers = good.peers.clone();
                config.bfd_profiles = good.bfd_profiles.clone();
                config.communities = good.communities.clone();
            }
            _ => self.last_good = Some(config.clone()),
        }
        // The Services and EndpointSlices stay here; the decision carries the rest.
        let mut rest = config.clone_without_services();
        std::mem::swap(&mut rest, &mut config);
        // Each service is planned into what is kept (with the winner of its layer 2
        // election); the plan is their parts, in service order.
        let plan = self.keep(&loaded.errors, rest, stale, members, opts);
        Decision {
            plan,
            config,
            config_errors: self.config_errors(),
            stale,
        }
    }

    /// Keeps what a whole decision read, for the changes after it, and plans every service
    /// from it: returns the plan.
    fn keep(
        &mut self,
        errors: &[lb_core::ConfigError],
        mut config: Config,
        stale: bool,
        members: &BTreeSet<String>,
        opts: &Options,
    ) -> Plan {
        let slices = std::mem::take(&mut config.endpoint_slices);
        let services = std::mem::take(&mut config.services);
        let lb_class = opts.lb_class.as_deref();
        let mut entries = Entries::default();
        entries.slots.reserve(services.len());
        entries.at.reserve(services.len());
        for (key, svc) in services {
            entries.at.insert(key.clone(), entries.slots.len());
            entries.slots.push(Some(Box::new(Entry {
                allocation: allocation_from_status(&config, &svc, lb_class),
                service: Some(svc),
                ..Entry::new(key)
            })));
        }
        let mut kept = Kept {
            config,
            entries,
            slice_service: BTreeMap::new(),
            won: Won::default(),
            takeable: Bits::default(),
            object_errors: BTreeMap::new(),
            other_errors: Vec::new(),
            stale,
            members: members.clone(),
            options: options_key(opts),
        };
        for e in errors.iter().filter(|e| e.severity == Severity::Error) {
            match kept_object(&e.object) {
                Some(k) => kept.object_errors.entry(k).or_default().push(e.to_string()),
                None => kept.other_errors.push(e.to_string()),
            }
        }
        for slice in slices {
            kept.add_slice(slice);
        }
        let rules = lb_core::Rules::cluster(opts.ignore_exclude_label);
        kept.replan_all(rules, &opts.node_name, Which::All, false);
        let plan = kept.plan();
        self.kept = Some(kept);
        plan
    }

    /// A decision over a change of Services, EndpointSlices, Nodes and members alone, from
    /// what the last decision kept: each changed object is read alone and only the services
    /// it touches are planned again. A Node change that leaves what is decided from it
    /// (labels, NetworkUnavailable, addresses) as it was costs nothing. A node that can no
    /// longer win an election (it left the members, or its network went down) moves the
    /// services it had won, and those alone are planned again; any other change of a member's
    /// decided fields, a node that joins, or a change of this node plans every service again
    /// from what is kept. Any other kind, a change of options, or members that are none
    /// before or after (this node refused), needs a whole decision: `None` then.
    ///
    /// Returns the services whose part of the plan was decided again, each once, in no
    /// particular order, with this node's part of each (what [`Core::part`] gives: handed
    /// over here, the announcers' change needs no look-up); [`Core::plan`] and
    /// [`Core::config_errors`] give the whole result.
    pub fn change(
        &mut self,
        changes: Vec<ObjectChange>,
        members: &BTreeSet<String>,
        opts: &Options,
    ) -> Option<Vec<Decided>> {
        let kept = self.kept.as_mut()?;
        let members_moved = kept.members != *members;
        if kept.options != options_key(opts)
            || (members_moved && (members.is_empty() || kept.members.is_empty()))
        {
            return None;
        }
        let changes: Vec<ObjectChange> = changes
            .into_iter()
            .filter(|((plural, _, _), _)| !UNDECIDED_KINDS.contains(&plural.as_str()))
            .collect();
        if changes
            .iter()
            .any(|((plural, _, _), _)| !KEPT_KINDS.contains(&plural.as_str()))
        {
            return None;
        }
        let rules = lb_core::Rules::cluster(opts.ignore_exclude_label);
        let me = opts.node_name.as_str();
        // Nodes that can win no election any more: the services they won move, no other.
        let mut lost: BTreeSet<String> = BTreeSet::new();
        // A change after which any service's owner or eligibility may have moved: every
        // service is planned again from what is kept (no object is read again).
        let mut every = false;
        // New members, and members that became able to win: they move only the services one
        // of them may take.
        let mut joined: Vec<String> = Vec::new();
        // This node is a candidate whether or not it is among the members (a plan is for it).
        if members_moved {
            lost.extend(
                kept.members
                    .difference(members)
                    .filter(|n| *n != me)
                    .cloned(),
            );
            joined.extend(
                members
                    .difference(&kept.members)
                    .filter(|n| *n != me)
                    .cloned(),
            );
            kept.members = members.clone();
        }
        // A Node whose decided fields changed may change any service's owner or eligibility,
        // unless the plan reads it alike (a label no selector reads) or does not read it at
        // all (a node that is no member and not this one): then it is kept, and no part can
        // have moved. One that can no longer win moves only what it won; one that only became
        // able to win, only what it may take.
        let mut read = Vec::with_capacity(changes.len());
        for (key, value) in changes {
            let loaded = value.map(|v| load_values([v]));
            if key.0 == "nodes" {
                let now = loaded.as_ref().and_then(|l| l.config.nodes.get(&key.2));
                if now != kept.config.nodes.get(&key.2) {
                    let planned = kept.members.contains(&key.2) || key.2 == opts.node_name;
                    let after = now
                        .cloned()
                        .unwrap_or_else(|| lb_core::objects::Node::bare(&key.2));
                    let before = kept.config.node(&key.2);
                    if planned && !lb_core::plan::node_reads_alike(&kept.config, &before, &after) {
                        if key.2 != me && !lb_core::plan::node_can_win(&after, rules) {
                            lost.insert(key.2.clone());
                        } else if key.2 != me
                            && lb_core::plan::node_becomes_able(
                                &kept.config,
                                &before,
                                &after,
                                rules,
                            )
                        {
                            // Its network came back: as a node that joins.
                            joined.push(key.2.clone());
                        } else {
                            every = true;
                        }
                    }
                    match now {
                        Some(n) => kept.config.nodes.insert(key.2.clone(), n.clone()),
                        None => kept.config.nodes.remove(&key.2),
                    };
                }
            }
            read.push((key, loaded));
        }
        let lb_class = opts.lb_class.as_deref();
        let mut touched = BTreeSet::new();
        for (key, loaded) in read {
            kept.object_errors.remove(&key);
            let (plural, ns, name) = &key;
            if let Some(l) = &loaded {
                let errors = l.error_texts();
                if !errors.is_empty() {
                    kept.object_errors.insert(key.clone(), errors);
                }
            }
            match plural.as_str() {
                "services" => {
                    let svc_key = ServiceKey::new(ns.clone(), name.clone());
                    let svc = loaded.and_then(|l| l.config.services.into_values().next());
                    let allocation = svc
                        .as_ref()
                        .and_then(|svc| allocation_from_status(&kept.config, svc, lb_class));
                    let at = kept.entries.slot_or_new(&svc_key);
                    if let Some(entry) = kept.entries.get_mut(at) {
                        entry.service = svc;
                        entry.allocation = allocation;
                    }
                    kept.entries.tidy(at);
                    touched.insert(svc_key);
                }
                "endpointslices" => {
                    if let Some(svc) = kept.remove_slice(ns, name) {
                        touched.insert(ServiceKey::new(ns.clone(), svc));
                    }
                    if let Some(slice) =
                        loaded.and_then(|l| l.config.endpoint_slices.into_iter().next())
                    {
                        if let Some(svc) = &slice.service {
                            touched.insert(ServiceKey::new(ns.clone(), svc.clone()));
                        }
                        kept.add_slice(slice);
                    }
                }
                // A Node whose decided fields did not change: its errors alone may have.
                _ => {}
            }
        }
        // Members that join and leave at once, or with a Node change: every service.
        every |= !joined.is_empty() && !lost.is_empty();
        if every || !joined.is_empty() {
            let which = if every {
                Which::All
            } else {
                Which::Taken(&joined, &touched)
            };
            let mut changed = kept.replan_all(rules, me, which, true);
            // A service read again is the change's even when its part stayed.
            if !touched.is_empty() {
                let planned: HashSet<&ServiceKey> = changed.iter().map(|(k, _)| k).collect();
                let read: Vec<Decided> = touched
                    .into_iter()
                    .filter(|k| !planned.contains(k))
                    .map(|k| {
                        let part = kept.announcements(&k);
                        (k, part)
                    })
                    .collect();
                changed.extend(read);
            }
            return Some(changed);
        }
        // The services read again, and (taken from the index of winners) those each node
        // that can no longer win had won: every one of those moves (one that stays is put
        // back).
        let mut slots = Bits::default();
        for node in &lost {
            let won = kept.won.take(node);
            if slots.len == 0 {
                slots = won;
            } else {
                won.iter().for_each(|at| slots.insert(at));
            }
        }
        // A service read again that has no entry any more (deleted) has no part.
        let mut gone = Vec::new();
        for key in touched {
            match kept.entries.slot(&key) {
                Some(at) => slots.insert(at),
                None => gone.push((key, Vec::new())),
            }
        }
        // In slot order: the entries are read in the order they lie.
        let slots: Vec<usize> = slots.iter().collect();
        let mut decided = kept.replan_some(&slots, rules, me);
        decided.extend(gone);
        Some(decided)
    }

    /// One service's part of the plan in force: what this node announces for it.
    pub fn part(&self, key: &ServiceKey) -> Vec<lb_core::Announcement> {
        self.kept
            .as_ref()
            .map(|k| k.announcements(key))
            .unwrap_or_default()
    }

    /// The plan in force (the last decision's, with the changes since).
    pub fn plan(&self) -> Plan {
        self.kept.as_ref().map(Kept::plan).unwrap_or_default()
    }

    /// The error findings of the newest objects, as text.
    pub fn config_errors(&self) -> Vec<String> {
        self.kept
            .as_ref()
            .map(Kept::config_errors)
            .unwrap_or_default()
    }

    /// The metallb.io objects have errors: the previous good ones are in force.
    pub fn stale(&self) -> bool {
        self.kept.as_ref().is_some_and(|k| k.stale)
    }
}

/// The kinds the speaker watches for its status writer alone: no decision reads them.
const UNDECIDED_KINDS: [&str; 2] = ["servicel2statuses", "servicebgpstatuses"];

/// Whether [`Core::change`] may serve `changed` without a whole decision (only Services,
/// EndpointSlices, Nodes and the status kinds changed, and no kind was listed again).
pub fn decided_alone(changed: &crate::store::Changed) -> bool {
    !changed.relisted
        && changed.objects.keys().all(|(plural, _, _)| {
            KEPT_KINDS.contains(&plural.as_str()) || UNDECIDED_KINDS.contains(&plural.as_str())
        })
}

/// What of the options the decision depends on.
fn options_key(opts: &Options) -> (String, Option<String>, bool) {
    (
        opts.node_name.clone(),
        opts.lb_class.clone(),
        opts.ignore_exclude_label,
    )
}

/// The status objects this node should have, by service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantedStatuses {
    /// ServiceL2Status objects by service.
    pub l2: BTreeMap<ServiceKey, MetalLBServiceL2Status>,
    /// ServiceBGPStatus objects by service.
    pub bgp: BTreeMap<ServiceKey, MetalLBServiceBGPStatus>,
}

/// The status objects a plan implies (one per service and protocol on this node).
pub fn wanted_statuses(node: &str, plan: &Plan) -> WantedStatuses {
    let mut by_service: BTreeMap<&ServiceKey, Vec<&lb_core::Announcement>> = BTreeMap::new();
    for a in &plan.announcements {
        by_service.entry(&a.service).or_default().push(a);
    }
    let mut out = WantedStatuses::default();
    for (key, part) in by_service {
        out.set(key, service_statuses(node, key, part));
    }
    out
}

/// One service's status objects on this node: (layer 2, BGP), from its announcements.
pub type ServiceStatuses = (
    Option<MetalLBServiceL2Status>,
    Option<MetalLBServiceBGPStatus>,
);

impl WantedStatuses {
    /// Sets one service's status objects (`None`: it has none of that kind).
    pub fn set(&mut self, key: &ServiceKey, (l2, bgp): ServiceStatuses) {
        match l2 {
            Some(s) => self.l2.insert(key.clone(), s),
            None => self.l2.remove(key),
        };
        match bgp {
            Some(s) => self.bgp.insert(key.clone(), s),
            None => self.bgp.remove(key),
        };
    }
}

/// The status objects of one service, from its announcements on this node.
pub fn service_statuses<'a>(
    node: &str,
    key: &ServiceKey,
    part: impl IntoIterator<Item = &'a lb_core::Announcement>,
) -> ServiceStatuses {
    let mut l2: Option<BTreeSet<String>> = None;
    let mut bgp: Option<BTreeSet<String>> = None;
    for a in part {
        match &a.how {
            How::Layer2 { interfaces } => {
                let set = l2.get_or_insert_default();
                if let Interfaces::Only(names) = interfaces {
                    set.extend(names.iter().cloned());
                }
            }
            How::Bgp { routes } => {
                bgp.get_or_insert_default()
                    .extend(routes.iter().flat_map(|r| r.peers.iter().cloned()));
            }
        }
    }
    let service = || ServiceOnNode {
        node: Some(node.to_string()),
        service_name: Some(key.name.clone()),
        service_namespace: Some(key.namespace.clone()),
    };
    (
        l2.map(|ifaces| MetalLBServiceL2Status {
            service: service(),
            interfaces: ifaces
                .into_iter()
                .map(|name| crate::crds::InterfaceInfo { name })
                .collect(),
        }),
        bgp.map(|peers| MetalLBServiceBGPStatus {
            service: service(),
            peers: peers.into_iter().collect(),
        }),
    )
}

/// One existing status object of this node.
struct Existing {
    name: String,
    service: Option<ServiceKey>,
    status: Value,
}

fn existing(store: &Store, plural: &str) -> Vec<Existing> {
    store
        .of_kind(plural)
        .into_iter()
        .map(|o| existing_from(&o))
        .collect()
}

/// The objects `index` names for `keys`, as the store shows them.
fn existing_of(
    store: &Store,
    plural: &str,
    namespace: &str,
    index: &BTreeMap<(String, ServiceKey), String>,
    keys: &BTreeSet<ServiceKey>,
) -> Vec<Existing> {
    keys.iter()
        .filter_map(|k| index.get(&(plural.to_string(), k.clone())))
        .filter_map(|name| store.get(plural, namespace, name))
        .map(|o| existing_from(&o))
        .collect()
}

fn existing_from(o: &Value) -> Existing {
    let label = |k: &str| {
        o.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    Existing {
        name: o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        service: label(SERVICE_NAMESPACE_LABEL)
            .zip(label(SERVICE_NAME_LABEL))
            .map(|(ns, n)| ServiceKey::new(ns, n)),
        status: o.get("status").cloned().unwrap_or(Value::Null),
    }
}

/// Makes this node's status objects of one kind match `wanted`: creates the missing ones,
/// updates the changed ones and deletes the rest (and duplicates). Returns the writes made and
/// the first error; a failed write is retried by the next call.
#[allow(clippy::too_many_arguments)]
async fn sync_kind<K, S>(
    client: &Client,
    store: &Store,
    created: &mut BTreeMap<(String, ServiceKey), Instant>,
    index: &mut BTreeMap<(String, ServiceKey), String>,
    opts: &Options,
    prefix: &str,
    wanted: &BTreeMap<ServiceKey, S>,
    only: Option<&BTreeSet<ServiceKey>>,
) -> (usize, Option<kube::Error>)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    S: serde::Serialize + Sync,
{
    let (namespace, node) = (opts.namespace.as_str(), opts.node_name.as_str());
    let plural = K::plural(&()).to_string();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut writes = 0;
    let mut first_error = None;
    let mut note = |r: Result<(), kube::Error>, writes: &mut usize| {
        *writes += 1;
        if let Err(e) = r
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    };
    let mut seen: BTreeSet<ServiceKey> = BTreeSet::new();
    // All of this node's objects of the kind (and the index of them made again), or those
    // the index names for the services of `only`.
    let objects = match only {
        None => {
            let all = existing(store, &plural);
            index.retain(|(p, _), _| *p != plural);
            for e in &all {
                if let Some(k) = &e.service {
                    index
                        .entry((plural.clone(), k.clone()))
                        .or_insert_with(|| e.name.clone());
                }
            }
            all
        }
        Some(keys) => existing_of(store, &plural, namespace, index, keys),
    };
    for e in objects {
        if let Some(k) = &e.service {
            created.remove(&(plural.clone(), k.clone()));
        }
        let want = e.service.as_ref().and_then(|k| wanted.get(k));
        match (want, &e.service) {
            (Some(w), Some(k)) if seen.insert(k.clone()) => {
                let w = serde_json::to_value(w).unwrap_or(Value::Null);
                if w != e.status {
                    let r = api
                        .patch_status(
                            &e.name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({ "status": w })),
                        )
                        .await
                        .map(|_| ());
                    note(r, &mut writes);
                }
            }
            _ => {
                let r = api
                    .delete(&e.name, &DeleteParams::default())
                    .await
                    .map(|_| ());
                if r.is_ok()
                    && let Some(k) = &e.service
                    && index.get(&(plural.clone(), k.clone())) == Some(&e.name)
                {
                    index.remove(&(plural.clone(), k.clone()));
                }
                note(r, &mut writes);
            }
        }
    }
    let considered: Vec<(&ServiceKey, &S)> = match only {
        None => wanted.iter().collect(),
        Some(keys) => keys
            .iter()
            .filter_map(|k| wanted.get_key_value(k))
            .collect(),
    };
    for (k, w) in considered {
        // An object created a moment ago may not be in the store yet: do not create twice.
        let recent = created
            .get(&(plural.clone(), k.clone()))
            .is_some_and(|t| t.elapsed() < CREATE_GRACE);
        if seen.contains(k) || recent {
            continue;
        }
        let obj = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {
                "generateName": prefix,
                "namespace": namespace,
                "labels": {
                    NODE_LABEL: node,
                    SERVICE_NAME_LABEL: k.name,
                    SERVICE_NAMESPACE_LABEL: k.namespace,
                },
            },
            "spec": {},
        });
        let r = match serde_json::from_value::<K>(obj) {
            Ok(obj) => match api.create(&PostParams::default(), &obj).await {
                // The status subresource ignores status on create: set it after.
                Ok(obj) => {
                    created.insert((plural.clone(), k.clone()), Instant::now());
                    let name = obj.meta().name.clone().unwrap_or_default();
                    index.insert((plural.clone(), k.clone()), name.clone());
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": w })),
                    )
                    .await
                    .map(|_| ())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        note(r, &mut writes);
    }
    (writes, first_error)
}

/// How long an object this node created may take to show in the store.
const CREATE_GRACE: Duration = Duration::from_secs(10);

/// Writes this node's ServiceL2Status and ServiceBGPStatus objects.
#[derive(Debug, Default)]
pub struct StatusWriter {
    created: BTreeMap<(String, ServiceKey), Instant>,
    /// This node's object of each kind for each service, by name: made by every whole
    /// round, kept by this writer's creates and deletes.
    index: BTreeMap<(String, ServiceKey), String>,
}

impl StatusWriter {
    /// Makes this node's status objects match `wanted`. Returns the writes made and the first
    /// error; what failed is done by the next call.
    pub async fn sync(
        &mut self,
        client: &Client,
        store: &Store,
        opts: &Options,
        wanted: &WantedStatuses,
    ) -> (usize, Option<kube::Error>) {
        self.sync_over(client, store, opts, wanted, None).await
    }

    /// [`StatusWriter::sync`] for the status objects of the services of `keys` alone: what a
    /// change of a few services costs is theirs. The objects are found by what the last whole
    /// `sync` and this writer's own writes saw.
    pub async fn sync_some(
        &mut self,
        client: &Client,
        store: &Store,
        opts: &Options,
        wanted: &WantedStatuses,
        keys: &BTreeSet<ServiceKey>,
    ) -> (usize, Option<kube::Error>) {
        self.sync_over(client, store, opts, wanted, Some(keys))
            .await
    }

    async fn sync_over(
        &mut self,
        client: &Client,
        store: &Store,
        opts: &Options,
        wanted: &WantedStatuses,
        only: Option<&BTreeSet<ServiceKey>>,
    ) -> (usize, Option<kube::Error>) {
        let (n1, e1) = sync_kind::<ServiceL2Status, _>(
            client,
            store,
            &mut self.created,
            &mut self.index,
            opts,
            "l2-",
            &wanted.l2,
            only,
        )
        .await;
        let (n2, e2) = sync_kind::<ServiceBGPStatus, _>(
            client,
            store,
            &mut self.created,
            &mut self.index,
            opts,
            "bgp-",
            &wanted.bgp,
            only,
        )
        .await;
        (n1 + n2, e1.or(e2))
    }
}

/// Speaker events: `nodeAssigned` when this node starts announcing a service by a protocol,
/// once per change (MetalLB sends one per reconcile, its issue #2387).
pub struct AssignedEvents {
    recorder: kube::runtime::events::Recorder,
    said: BTreeSet<(ServiceKey, &'static str)>,
}

impl std::fmt::Debug for AssignedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssignedEvents")
            .field("said", &self.said)
            .finish_non_exhaustive()
    }
}

impl AssignedEvents {
    /// Writes `nodeAssigned` events from `node` through `client`.
    pub fn new(client: Client, node: &str) -> Self {
        AssignedEvents {
            recorder: kube::runtime::events::Recorder::new(
                client,
                kube::runtime::events::Reporter {
                    controller: "metallb-speaker".into(),
                    instance: Some(node.to_string()),
                },
            ),
            said: BTreeSet::new(),
        }
    }

    /// Sends an event for each (service, protocol) new in `wanted` (a service announced by a
    /// protocol has that protocol's status object); forgets those gone, so a service that
    /// comes back is told again. Returns the number of failed sends (retried by the next
    /// call).
    pub async fn update(&mut self, store: &Store, node: &str, wanted: &WantedStatuses) -> usize {
        self.update_over(store, node, wanted, None).await
    }

    /// [`AssignedEvents::update`] for the services of `keys` alone.
    pub async fn update_some(
        &mut self,
        store: &Store,
        node: &str,
        wanted: &WantedStatuses,
        keys: &BTreeSet<ServiceKey>,
    ) -> usize {
        self.update_over(store, node, wanted, Some(keys)).await
    }

    async fn update_over(
        &mut self,
        store: &Store,
        node: &str,
        wanted: &WantedStatuses,
        only: Option<&BTreeSet<ServiceKey>>,
    ) -> usize {
        let l2 = lb_core::Protocol::Layer2.name();
        let bgp = lb_core::Protocol::Bgp.name();
        let now: BTreeSet<(ServiceKey, &'static str)> = match only {
            None => wanted
                .l2
                .keys()
                .map(|k| (k.clone(), l2))
                .chain(wanted.bgp.keys().map(|k| (k.clone(), bgp)))
                .collect(),
            Some(keys) => keys
                .iter()
                .flat_map(|k| {
                    [
                        wanted.l2.contains_key(k).then(|| (k.clone(), l2)),
                        wanted.bgp.contains_key(k).then(|| (k.clone(), bgp)),
                    ]
                })
                .flatten()
                .collect(),
        };
        match only {
            None => self.said.retain(|k| now.contains(k)),
            Some(keys) => {
                for k in keys {
                    for p in [l2, bgp] {
                        let key = (k.clone(), p);
                        if !now.contains(&key) {
                            self.said.remove(&key);
                        }
                    }
                }
            }
        }
        let mut failed = 0;
        for (key, protocol) in now {
            if self.said.contains(&(key.clone(), protocol)) {
                continue;
            }
            let uid = store
                .get("services", &key.namespace, &key.name)
                .and_then(|o| o.pointer("/metadata/uid").cloned())
                .and_then(|v| v.as_str().map(str::to_string));
            let reference = k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                uid,
                ..Default::default()
            };
            let ev = kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Normal,
                reason: "nodeAssigned".into(),
                note: Some(format!(
                    "announcing from node \"{node}\" with protocol \"{protocol}\""
                )),
                action: "Announce".into(),
                secondary: None,
            };
            match self.recorder.publish(&ev, &reference).await {
                Ok(()) => {
                    self.said.insert((key, protocol));
                }
                Err(_) => failed += 1,
            }
        }
        failed
    }
}

/// What one round of [`ApiWriter`] achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The last wish handed in ([`ApiWriter::want`]) that a round has finished with.
    pub done: u64,
    /// Whether the last round left something unwritten (retried every second).
    pub pending: bool,
    /// Why, in words.
    pub error: Option<String>,
}

/// What the loop hands the writer: every status object, or a change of some services'.
enum Wish {
    Whole(WantedStatuses),
    Change(Vec<(ServiceKey, ServiceStatuses)>),
}

/// The speaker's writes to the API (its ServiceL2Status / ServiceBGPStatus objects and its
/// `nodeAssigned` events) on a task of their own, so that the decision loop never waits for
/// the API server: [`ApiWriter::want`] hands over the latest plan, [`ApiWriter::want_change`]
/// a change of some services (its cost is theirs), and both return at once. Wishes coalesce
/// (a round writes what all of them add up to), each round is bounded by a timeout, and what
/// failed is retried every second until it is written.
#[derive(Debug)]
pub struct ApiWriter {
    wishes: tokio::sync::mpsc::UnboundedSender<(u64, Wish)>,
    outcome: tokio::sync::watch::Receiver<WriteOutcome>,
    seq: u64,
    task: tokio::task::JoinHandle<()>,
}

/// How often a round that left something unwritten is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(1);

impl ApiWriter {
    /// Starts the task. `client` should have a read timeout; every round is also cut off after
    /// `timeout`. `metrics` counts the writes.
    pub fn spawn(
        client: Client,
        store: Store,
        opts: Options,
        node: String,
        timeout: Duration,
        metrics: crate::metrics::Metrics,
    ) -> ApiWriter {
        let (wishes, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Wish)>();
        let (out_tx, outcome) = tokio::sync::watch::channel(WriteOutcome::default());
        let task = tokio::spawn(async move {
            let mut writer = StatusWriter::default();
            let mut events = AssignedEvents::new(client.clone(), &node);
            let mut retry = false;
            // What every wish so far adds up to, and the last wish in it; nothing is written
            // before the first whole wish.
            let mut wanted: Option<WantedStatuses> = None;
            let mut seq = 0;
            // The services changed since the last round that wrote everything it was asked;
            // `None`: the next round goes over every object (a whole wish, or a failure).
            let mut dirty: Option<BTreeSet<ServiceKey>> = None;
            let take = |(n, wish): (u64, Wish),
                        wanted: &mut Option<WantedStatuses>,
                        dirty: &mut Option<BTreeSet<ServiceKey>>| {
                match wish {
                    Wish::Whole(w) => {
                        *wanted = Some(w);
                        *dirty = None;
                    }
                    Wish::Change(changes) => {
                        if let Some(w) = wanted {
                            for (key, statuses) in changes {
                                w.set(&key, statuses);
                                if let Some(d) = dirty {
                                    d.insert(key);
                                }
                            }
                        }
                    }
                }
                n
            };
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => seq = take(m, &mut wanted, &mut dirty),
                        None => return,
                    },
                    () = tokio::time::sleep(WRITE_RETRY), if retry => {}
                }
                while let Ok(m) = rx.try_recv() {
                    seq = take(m, &mut wanted, &mut dirty);
                }
                let Some(wish) = &wanted else {
                    continue;
                };
                let only = dirty.take();
                // One bound for the whole round, so that a hung server is reported within
                // `timeout`, whatever it hangs on.
                let round = async {
                    let ((writes, err), unsent) = match &only {
                        None => (
                            writer.sync(&client, &store, &opts, wish).await,
                            events.update(&store, &node, wish).await,
                        ),
                        Some(keys) => (
                            writer.sync_some(&client, &store, &opts, wish, keys).await,
                            events.update_some(&store, &node, wish, keys).await,
                        ),
                    };
                    (writes, err, unsent)
                };
                let mut errors = Vec::new();
                match tokio::time::timeout(timeout, round).await {
                    Ok((writes, err, unsent)) => {
                        if writes > 0 || err.is_some() {
                            metrics.update(err.is_none());
                        }
                        errors.extend(err.map(|e| format!("status objects: {e}")));
                        if unsent > 0 {
                            errors.push(format!("{unsent} event(s) not sent"));
                        }
                    }
                    Err(_) => {
                        metrics.update(false);
                        errors.push(format!("no answer within {timeout:?}"));
                    }
                }
                retry = !errors.is_empty();
                // What failed is tried again over every object; otherwise the next round
                // writes the services changed from here on.
                if !retry {
                    dirty = Some(BTreeSet::new());
                }
                let error = (!errors.is_empty()).then(|| errors.join("; "));
                if let Some(e) = &error {
                    tracing::warn!("writing to the API (retried every second): {e}");
                }
                out_tx.send_replace(WriteOutcome {
                    done: seq,
                    pending: retry,
                    error,
                });
            }
        });
        ApiWriter {
            wishes,
            outcome,
            seq: 0,
            task,
        }
    }

    /// Hands over what this node should show for `plan`; returns at once. A wish not yet
    /// written is replaced.
    pub fn want(&mut self, node: &str, plan: &Plan) {
        self.seq += 1;
        let _ = self
            .wishes
            .send((self.seq, Wish::Whole(wanted_statuses(node, plan))));
    }

    /// Hands over what this node should show for a change of some services: each one's
    /// announcements now (none: no status object). Returns at once; costs what changed.
    pub fn want_change(&mut self, node: &str, parts: &[(ServiceKey, Vec<lb_core::Announcement>)]) {
        self.seq += 1;
        let changes = parts
            .iter()
            .map(|(key, part)| (key.clone(), service_statuses(node, key, part)))
            .collect();
        let _ = self.wishes.send((self.seq, Wish::Change(changes)));
    }

    /// What the last finished round achieved.
    pub fn outcome(&self) -> WriteOutcome {
        self.outcome.borrow().clone()
    }

    /// Whether everything handed over so far is written.
    pub fn settled(&self) -> bool {
        let o = self.outcome.borrow();
        o.done == self.seq && !o.pending
    }

    /// On shutdown: removes this node's status objects (others announce now), waiting at most
    /// `within`; then stops the task.
    pub async fn clear(mut self, node: &str, within: Duration) -> bool {
        self.want(node, &Plan::default());
        let seq = self.seq;
        let mut outcome = self.outcome.clone();
        let done = tokio::time::timeout(within, outcome.wait_for(|o| o.done >= seq))
            .await
            .is_ok_and(|r| r.is_ok_and(|o| !o.pending));
        self.task.abort();
        done
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::Bits;

    proptest! {
        /// A set of slots holds what a set would, in order, with its count.
        #[test]
        fn bits_are_a_set(ops in proptest::collection::vec((any::<bool>(), 0usize..300), 0..200)) {
            let (mut bits, mut set) = (Bits::default(), BTreeSet::new());
            for (insert, at) in ops {
                if insert {
                    bits.insert(at);
                    set.insert(at);
                } else {
                    bits.remove(at);
                    set.remove(&at);
                }
                prop_assert_eq!(bits.len, set.len());
            }
            prop_assert_eq!(bits.iter().collect::<Vec<_>>(), set.into_iter().collect::<Vec<_>>());
        }
    }
}
