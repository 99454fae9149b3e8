//! `plan`: for one node, the announcements it must make, from the configuration, the
//! allocations and the live members. A pure function: every node computes its own part alone
//! and all nodes agree on L2 owners because they share the hash order.
//!
//! ```text
//!  allocations ─┐
//!  config ──────┼─► per service: pool ─► ads (pool, service selectors) ─► eligible nodes
//!  members ─────┘        (endpoints, exclude label, NetworkUnavailable, ad node selectors)
//!                        L2:  owner = min by (preferred score desc, sha256(node#firstIP))
//!                        BGP: this node, per peer: prefix/aggregation, communities, localPref
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::alloc::{Allocation, annotation};
use crate::announce::Protocol;
use crate::config::{BgpAdvertisement, Community, Config, L2Advertisement, Pool};
use crate::ip::{Family, mask};
use crate::objects::{EndpointSlice, Node, Service, ServiceKey, TrafficPolicy};
use crate::selector::any_matches;

/// MetalLB's L2 election order: `sha256(node + "#" + ip)`, lowest first.
pub fn election_hash(node: &str, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(b"#");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The owner of `key` among `members` in the election order (no preferences).
pub fn owner_of<'a, I: IntoIterator<Item = &'a String>>(members: I, key: &str) -> Option<String> {
    members
        .into_iter()
        .min_by_key(|m| election_hash(m, key))
        .cloned()
}

/// What to do for a service that no EndpointSlice names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingEndpoints {
    /// Standalone hosts serve locally: every node counts as having a ready endpoint.
    ServeEverywhere,
    /// Kubernetes: no slice means no endpoints.
    NoEndpoints,
}

/// Everything `plan` reads.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PlanInput<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// Every service's addresses.
    pub allocations: &'a BTreeMap<ServiceKey, Allocation>,
    /// Live members; nodes without a Node object are taken with only their host-name label.
    pub members: &'a BTreeSet<String>,
    /// The node to plan for.
    pub node: &'a str,
    /// What a service without EndpointSlices gets.
    pub missing_endpoints: MissingEndpoints,
    /// Announce from nodes labelled `exclude-from-external-load-balancers` too.
    pub ignore_exclude_label: bool,
}

impl<'a> PlanInput<'a> {
    /// What `plan` reads to plan for `node`, under `rules`.
    pub fn new(
        config: &'a Config,
        allocations: &'a BTreeMap<ServiceKey, Allocation>,
        members: &'a BTreeSet<String>,
        node: &'a str,
        rules: crate::runtime::Rules,
    ) -> Self {
        PlanInput {
            config,
            allocations,
            members,
            node,
            missing_endpoints: rules.missing_endpoints,
            ignore_exclude_label: rules.ignore_exclude_label,
        }
    }
}

/// Interfaces an L2 announcement goes out on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interfaces {
    /// Every interface.
    All,
    /// Only these (`interfaces` of the L2Advertisements).
    Only(BTreeSet<String>),
}

impl Interfaces {
    /// Both sets of interfaces: an address announced through two advertisements goes out on
    /// the union of their interfaces.
    pub fn union(self, other: Interfaces) -> Interfaces {
        match (self, other) {
            (Interfaces::Only(mut a), Interfaces::Only(b)) => {
                a.extend(b);
                Interfaces::Only(a)
            }
            _ => Interfaces::All,
        }
    }

    /// Whether `name` is among them.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Interfaces::All => true,
            Interfaces::Only(set) => set.contains(name),
        }
    }
}

impl Serialize for Interfaces {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Interfaces::All => s.collect_seq(["*"]),
            Interfaces::Only(set) => s.collect_seq(set),
        }
    }
}

/// One BGP route: a prefix with its attributes, to these peers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpRoute {
    /// The prefix announced (the address, or its aggregate).
    #[serde(serialize_with = "display")]
    pub prefix: IpNetwork,
    /// The peers it goes to.
    pub peers: Vec<String>,
    /// `localPref`, for iBGP peers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities attached.
    pub communities: Vec<Community>,
}

fn display<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// How an address is announced.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "protocol")]
pub enum How {
    /// By ARP and NDP.
    #[serde(rename = "layer2")]
    Layer2 {
        /// The interfaces to answer on.
        interfaces: Interfaces,
    },
    /// By BGP.
    #[serde(rename = "bgp")]
    Bgp {
        /// The routes, one per advertisement that applies.
        routes: Vec<BgpRoute>,
    },
}

/// One address of one service that this node announces.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Announcement {
    /// The service.
    pub service: ServiceKey,
    /// The address.
    pub ip: IpAddr,
    /// How it is announced.
    #[serde(flatten)]
    pub how: How,
}

/// The plan of one node: what it announces, and why it announces nothing for the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// What this node announces, in a stable order.
    pub announcements: Vec<Announcement>,
    /// Per service and protocol: why this node does not announce it.
    pub skipped: Vec<Skip>,
}

/// Why this node does not announce a service by one protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The service.
    pub service: ServiceKey,
    /// The protocol.
    pub protocol: Protocol,
    /// Why not, in words (shown in `plan` and `/status`).
    pub reason: String,
}

/// Where a service's endpoints can serve.
enum Serving<'s> {
    Everywhere,
    /// The names borrowed from the endpoints (a copy of each cost more than the look-ups).
    Nodes {
        any: bool,
        nodes: BTreeSet<&'s str>,
    },
}

impl Serving<'_> {
    fn anywhere(&self) -> bool {
        match self {
            Serving::Everywhere => true,
            Serving::Nodes { any, .. } => *any,
        }
    }

    fn on(&self, node: &str) -> bool {
        match self {
            Serving::Everywhere => true,
            Serving::Nodes { nodes, .. } => nodes.contains(node),
        }
    }
}

/// The EndpointSlices of each service, by (namespace, service name): made once a pass, so
/// that finding a service's slices costs a look-up, not a scan of every slice.
pub(crate) type SlicesByService<'a> = HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>;

pub(crate) fn slices_by_service(config: &Config) -> SlicesByService<'_> {
    let mut by: SlicesByService<'_> = HashMap::new();
    for s in &config.endpoint_slices {
        if let Some(svc) = &s.service {
            by.entry((s.namespace.as_str(), svc.as_str()))
                .or_default()
                .push(s);
        }
    }
    by
}

fn serving<'s>(input: &PlanInput<'_>, slices: &[&'s EndpointSlice]) -> Serving<'s> {
    if slices.is_empty() && input.missing_endpoints == MissingEndpoints::ServeEverywhere {
        return Serving::Everywhere;
    }
    let mut any = false;
    let mut nodes = BTreeSet::new();
    for ep in slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.can_serve())
    {
        any = true;
        if let Some(n) = &ep.node {
            nodes.insert(n.as_str());
        }
    }
    Serving::Nodes { any, nodes }
}

fn node_usable(input: &PlanInput<'_>, node: &Node) -> Result<(), &'static str> {
    usable(input.ignore_exclude_label, node)
}

fn usable(ignore_exclude_label: bool, node: &Node) -> Result<(), &'static str> {
    if node.network_unavailable {
        return Err("the node's network is unavailable (NetworkUnavailable)");
    }
    if !ignore_exclude_label && node.excluded_from_load_balancers() {
        return Err("the node is labelled node.kubernetes.io/exclude-from-external-load-balancers");
    }
    Ok(())
}

/// Every allocated service with its allocation, in key order. Both maps are in key order, so
/// one walk pairs them: a lookup in each for every service compares string keys down maps of
/// 100,000 entries, a cache miss at every level, and grew faster than the services.
pub(crate) fn allocated_services<'a>(
    input: &PlanInput<'a>,
) -> Vec<(&'a ServiceKey, &'a Allocation, &'a Service)> {
    let mut services = input.config.services.iter().peekable();
    let mut out = Vec::with_capacity(input.allocations.len());
    for (key, alloc) in input.allocations {
        while services.next_if(|(k, _)| *k < key).is_some() {}
        if let Some((_, svc)) = services.next_if(|(k, _)| *k == key) {
            out.push((key, alloc, svc));
        }
    }
    out
}

/// The BGP peers whose node selectors take `node`: the sessions that node runs.
pub fn peers_of<'a>(config: &'a Config, node: &Node) -> Vec<&'a crate::config::BgpPeer> {
    config
        .peers
        .values()
        .filter(|p| any_matches(&p.node_selectors, &node.labels))
        .collect()
}

/// Whether a plan over `config` reads node `before` and node `after` (two versions of one
/// Node) alike: the same answer from every node selector that reads a node's labels (the
/// advertisements', their preferred ones', the peers'), the same usability. A Node change
/// that reads alike changes no service's part, whatever the services: a label nothing selects
/// on, its addresses (membership reads them, planning does not).
pub fn node_reads_alike(config: &Config, before: &Node, after: &Node) -> bool {
    let (a, b) = (&before.labels, &after.labels);
    let same = |selectors: &[crate::selector::Selector]| {
        any_matches(selectors, a) == any_matches(selectors, b)
    };
    before.network_unavailable == after.network_unavailable
        && before.excluded_from_load_balancers() == after.excluded_from_load_balancers()
        && config.l2_advertisements.iter().all(|ad| {
            same(&ad.node_selectors)
                && ad
                    .preferred
                    .iter()
                    .all(|(_, sel)| sel.matches(a) == sel.matches(b))
        })
        && config
            .bgp_advertisements
            .iter()
            .all(|ad| same(&ad.node_selectors))
        && config.peers.values().all(|p| same(&p.node_selectors))
}

/// Whether `node` may win any service's layer 2 election under `rules`: false when its
/// network is unavailable or it is excluded from load balancers. A node that turns unable to
/// win moves only the services it had won ([`Planner::service_elected`] tells which).
pub fn node_can_win(node: &Node, rules: crate::runtime::Rules) -> bool {
    usable(rules.ignore_exclude_label, node).is_ok()
}

/// Whether a change of one Node from `before` to `after` only makes it able to win elections
/// (its network came back, or the exclude label went away) while the plan reads it alike
/// otherwise. Such a node moves only the services it may take, as a node that joins does
/// ([`Planner::may_take`]).
pub fn node_becomes_able(
    config: &Config,
    before: &Node,
    after: &Node,
    rules: crate::runtime::Rules,
) -> bool {
    if node_can_win(before, rules) || !node_can_win(after, rules) {
        return false;
    }
    let mut usable_before = before.clone();
    usable_before.network_unavailable = after.network_unavailable;
    let exclude = crate::objects::EXCLUDE_LB_LABEL;
    match after.labels.get(exclude) {
        Some(v) => usable_before.labels.insert(exclude.to_string(), v.clone()),
        None => usable_before.labels.remove(exclude),
    };
    node_reads_alike(config, &usable_before, after)
}

/// What `input.node` announces: see the module docs for the rules.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let planner = Planner::new(*input);
    let slices = slices_by_service(input.config);
    let services = allocated_services(input);
    let part = |services: &[(&ServiceKey, &Allocation, &Service)]| {
        let mut out = Plan::default();
        for (key, alloc, svc) in services {
            let mine = slices
                .get(&(key.namespace.as_str(), key.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            planner.service_with(alloc, svc, mine, &mut out);
        }
        out
    };
    // Services are planned independently: many are planned on every core, in contiguous runs
    // put back in service order (the plan reads the same either way).
    let mut parts = crate::par::runs(&services, part).into_iter();
    let mut out = parts.next().unwrap_or_default();
    for p in parts {
        out.announcements.extend(p.announcements);
        out.skipped.extend(p.skipped);
    }
    out.announcements.sort();
    out
}

/// [`plan`] one service at a time, for a caller that keeps each service's part and re-plans
/// only the services a change touches. The parts, in service order, make the whole plan.
#[derive(Clone, Debug)]
pub struct Planner<'a> {
    input: PlanInput<'a>,
    /// Every live member and the planning node itself, with their labels, once.
    nodes: Vec<Node>,
    /// The planning node's place in `nodes`.
    me: usize,
}

impl<'a> Planner<'a> {
    /// A planner over `input` (the nodes are looked up once, here).
    pub fn new(input: PlanInput<'a>) -> Self {
        let mut names: BTreeSet<&str> = input.members.iter().map(String::as_str).collect();
        names.insert(input.node);
        let nodes: Vec<Node> = names.into_iter().map(|n| input.config.node(n)).collect();
        let me = nodes.iter().position(|n| n.name == input.node).unwrap_or(0);
        Planner { input, nodes, me }
    }

    /// The part of the plan about service `key`, whose EndpointSlices are `slices`: its
    /// announcements (sorted) and why it is skipped. Empty when the service has no allocation
    /// in the input, or its pool is not in the configuration.
    pub fn service(&self, key: &ServiceKey, slices: &[&EndpointSlice]) -> Plan {
        let mut out = Plan::default();
        self.service_into(key, slices, &mut out);
        out.announcements.sort();
        out
    }

    /// [`Planner::service`] for a caller that walks its own maps in key order and holds the
    /// service's allocation and object already (a lookup of each, for every service of a
    /// large cluster, costs more than planning it).
    pub fn service_of(&self, alloc: &Allocation, svc: &Service, slices: &[&EndpointSlice]) -> Plan {
        self.service_elected(alloc, svc, slices).0
    }

    /// [`Planner::service_of`], and the node that won the service's layer 2 election (None
    /// when no L2Advertisement applies to it or no node is eligible). A node that stops being
    /// eligible (it leaves, or its network goes down) moves only the services it won: a caller
    /// that keeps the winners re-plans those alone.
    pub fn service_elected(
        &self,
        alloc: &Allocation,
        svc: &Service,
        slices: &[&EndpointSlice],
    ) -> (Plan, Option<&str>) {
        let (plan, owner, _) = self.service_standing(alloc, svc, slices);
        (plan, owner)
    }

    /// [`Planner::service_elected`], and where the election stands: what a caller keeps to
    /// tell, when a node joins, which services it may take ([`Planner::may_take`]).
    pub fn service_standing(
        &self,
        alloc: &Allocation,
        svc: &Service,
        slices: &[&EndpointSlice],
    ) -> (Plan, Option<&str>, Standing) {
        let mut out = Plan::default();
        let (owner, standing) = self.service_with(alloc, svc, slices, &mut out);
        out.announcements.sort();
        (out, owner, standing)
    }

    /// Whether `node`, one of this planner's members that was not one when the service's
    /// election stood at `standing`, changes that election: it is open, or `node` is
    /// eligible and outranks the winner. A service it does not take keeps its part (BGP parts
    /// read only the planning node), so a node that joins moves only these.
    pub fn may_take(
        &self,
        node: &str,
        alloc: &Allocation,
        svc: &Service,
        slices: &[&EndpointSlice],
        standing: Standing,
    ) -> bool {
        let winner = match standing {
            Standing::Closed => return false,
            Standing::Open => return true,
            Standing::Won { score, hash } => (score, hash),
        };
        let Some(joined) = self.nodes.iter().find(|n| n.name == node) else {
            return false;
        };
        let input = &self.input;
        let Some(pool) = input.config.pools.get(&alloc.pool) else {
            return false;
        };
        let Some(first) = alloc.ips.first() else {
            return false;
        };
        let ads = l2_ads(input.config, svc, pool);
        let serving = serving(input, slices);
        l2_rank(input, &ads, joined, svc, &serving, &first.to_string())
            .is_some_and(|rank| beats(rank, winner))
    }

    fn service_into(&self, key: &ServiceKey, slices: &[&EndpointSlice], out: &mut Plan) {
        let input = &self.input;
        let (Some(alloc), Some(svc)) = (input.allocations.get(key), input.config.services.get(key))
        else {
            return;
        };
        self.service_with(alloc, svc, slices, out);
    }

    /// [`Planner::service_into`] with the service's allocation and object at hand; returns
    /// the winner of its layer 2 election and where the election stands.
    fn service_with(
        &self,
        alloc: &Allocation,
        svc: &Service,
        slices: &[&EndpointSlice],
        out: &mut Plan,
    ) -> (Option<&str>, Standing) {
        let input = &self.input;
        let Some(pool) = input.config.pools.get(&alloc.pool) else {
            return (None, Standing::Closed);
        };
        if alloc.ips.is_empty() {
            return (None, Standing::Closed);
        }
        let serving = serving(input, slices);
        let (owner, standing) = plan_l2(input, &self.nodes, svc, pool, alloc, &serving, out);
        plan_bgp(input, &self.nodes[self.me], svc, pool, alloc, &serving, out);
        (owner.map(|n| n.name.as_str()), standing)
    }
}

fn skip(out: &mut Plan, key: &ServiceKey, protocol: Protocol, reason: impl Into<String>) {
    out.skipped.push(Skip {
        service: key.clone(),
        protocol,
        reason: reason.into(),
    });
}

/// Where a service's layer 2 election stands, as far as a node that joins the members can
/// change it (see [`Planner::may_take`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No node can win it, whoever the members are: no L2Advertisement applies, its shared
    /// IP cannot be announced by one, or no endpoint serves it.
    Closed,
    /// A node could win it, but no member (nor the planning node) is eligible.
    Open,
    /// Won, with the winner's rank: the sum of its preferred weights, then its election hash
    /// (a higher score wins, then the lower hash).
    Won {
        /// The winner's preference score.
        score: u32,
        /// The winner's election hash.
        hash: [u8; 32],
    },
}

/// The L2Advertisements that apply to service `svc` of `pool`.
fn l2_ads<'c>(config: &'c Config, svc: &Service, pool: &Pool) -> Vec<&'c L2Advertisement> {
    config
        .l2_advertisements
        .iter()
        .filter(|ad| ad.pools.selects(pool) && any_matches(&ad.service_selectors, &svc.labels))
        .collect()
}

/// Why no node can win the election among `ads` (not none) for `svc`, if none can.
fn l2_closed(ads: &[&L2Advertisement], svc: &Service, serving: &Serving) -> Option<&'static str> {
    if shares_ip(svc) && ads.iter().any(|ad| !ad.service_selectors.is_empty()) {
        return Some("a shared IP cannot be announced by an L2Advertisement with serviceSelectors");
    }
    if !serving.anywhere() {
        return Some("no serving endpoint");
    }
    None
}

/// `node`'s rank in the election among `ads` (its preference score and hash of `first_ip`),
/// or None when it is not eligible.
fn l2_rank(
    input: &PlanInput<'_>,
    ads: &[&L2Advertisement],
    node: &Node,
    svc: &Service,
    serving: &Serving,
    first_ip: &str,
) -> Option<(u32, [u8; 32])> {
    let mut selecting = ads
        .iter()
        .filter(|ad| any_matches(&ad.node_selectors, &node.labels))
        .peekable();
    if selecting.peek().is_none()
        || node_usable(input, node).is_err()
        || (svc.traffic_policy == TrafficPolicy::Local && !serving.on(&node.name))
    {
        return None;
    }
    // Only the advertisements that select this node score it (MetalLB's layer2_controller);
    // their weights add up.
    let score: u32 = selecting
        .flat_map(|ad| &ad.preferred)
        .filter(|(_, sel)| sel.matches(&node.labels))
        .map(|(w, _)| *w)
        .sum();
    Some((score, election_hash(&node.name, first_ip)))
}

/// Whether rank `a` beats rank `b`: a higher score, then the lower hash.
fn beats(a: (u32, [u8; 32]), b: (u32, [u8; 32])) -> bool {
    (std::cmp::Reverse(a.0), a.1) < (std::cmp::Reverse(b.0), b.1)
}

/// Plans a service's layer 2 part; returns the winner of its election (whatever node it is)
/// and where the election stands.
fn plan_l2<'n>(
    input: &PlanInput<'_>,
    nodes: &'n [Node],
    svc: &Service,
    pool: &Pool,
    alloc: &Allocation,
    serving: &Serving,
    out: &mut Plan,
) -> (Option<&'n Node>, Standing) {
    let ads = l2_ads(input.config, svc, pool);
    if ads.is_empty() {
        return (None, Standing::Closed);
    }
    let k = &svc.key;
    if let Some(why) = l2_closed(&ads, svc, serving) {
        skip(out, k, Protocol::Layer2, why);
        return (None, Standing::Closed);
    }
    let first_ip = alloc.ips[0].to_string();
    let mut best: Option<((u32, [u8; 32]), &Node)> = None;
    for node in nodes {
        let Some(rank) = l2_rank(input, &ads, node, svc, serving, &first_ip) else {
            continue;
        };
        if best.is_none_or(|(b, _)| beats(rank, b)) {
            best = Some((rank, node));
        }
    }
    let Some(((score, hash), owner)) = best else {
        skip(out, k, Protocol::Layer2, "no eligible node");
        return (None, Standing::Open);
    };
    let standing = Standing::Won { score, hash };
    if owner.name != input.node {
        skip(
            out,
            k,
            Protocol::Layer2,
            format!("announced by node {}", owner.name),
        );
        return (Some(owner), standing);
    }
    // The owner is this node: its labels choose the interfaces.
    let me = owner;
    let mut interfaces = BTreeSet::new();
    let mut all = false;
    for ad in ads
        .iter()
        .filter(|ad| any_matches(&ad.node_selectors, &me.labels))
    {
        all |= ad.interfaces.is_empty();
        interfaces.extend(ad.interfaces.iter().cloned());
    }
    let interfaces = if all {
        Interfaces::All
    } else {
        Interfaces::Only(interfaces)
    };
    for ip in &alloc.ips {
        out.announcements.push(Announcement {
            service: k.clone(),
            ip: *ip,
            how: How::Layer2 {
                interfaces: interfaces.clone(),
            },
        });
    }
    (Some(owner), standing)
}

fn shares_ip(svc: &Service) -> bool {
    svc.annotations.keys().any(|k| {
        k.strip_suffix(annotation::ALLOW_SHARED_IP)
            .is_some_and(|p| p == annotation::PREFIX || p == annotation::LEGACY_PREFIX)
    })
}

/// Two advertisements that apply to one service on this node and would put different LOCAL_PREFs
/// on the same prefix to the same peer: MetalLB's speaker then does not announce the service
/// by BGP ("conflictingAdvertisements"). An unset localPref is none, not 0.
fn local_pref_conflict(ads: &[&BgpAdvertisement], pool: &Pool) -> Option<String> {
    for (i, a) in ads.iter().enumerate() {
        for b in &ads[i + 1..] {
            let (Some(x), Some(y)) = (a.local_pref, b.local_pref) else {
                continue;
            };
            let same_prefix = Family::BOTH
                .iter()
                .any(|&f| pool.has_family(f) && a.aggregation_for(f) == b.aggregation_for(f));
            let same_peer = a.peers.is_empty()
                || b.peers.is_empty()
                || a.peers.intersection(&b.peers).next().is_some();
            if x != y && same_prefix && same_peer {
                return Some(format!(
                    "conflictingAdvertisements: BGPAdvertisements {} and {} set localPref {x} and {y} for the same prefixes",
                    a.name, b.name
                ));
            }
        }
    }
    None
}

fn plan_bgp(
    input: &PlanInput<'_>,
    me: &Node,
    svc: &Service,
    pool: &Pool,
    alloc: &Allocation,
    serving: &Serving,
    out: &mut Plan,
) {
    let k = &svc.key;
    let ads: Vec<&BgpAdvertisement> = input
        .config
        .bgp_advertisements
        .iter()
        .filter(|ad| ad.pools.selects(pool) && any_matches(&ad.service_selectors, &svc.labels))
        .collect();
    if ads.is_empty() {
        return;
    }
    let ads: Vec<&BgpAdvertisement> = ads
        .into_iter()
        .filter(|ad| any_matches(&ad.node_selectors, &me.labels))
        .collect();
    if ads.is_empty() {
        return skip(
            out,
            k,
            Protocol::Bgp,
            "no BGPAdvertisement selects this node",
        );
    }
    if let Some(why) = local_pref_conflict(&ads, pool) {
        return skip(out, k, Protocol::Bgp, why);
    }
    if let Err(why) = node_usable(input, me) {
        return skip(out, k, Protocol::Bgp, why);
    }
    let local_ok = match svc.traffic_policy {
        TrafficPolicy::Local => serving.on(input.node),
        TrafficPolicy::Cluster => serving.anywhere(),
    };
    if !local_ok {
        let why = match svc.traffic_policy {
            TrafficPolicy::Local => {
                "no serving endpoint on this node (externalTrafficPolicy: Local)"
            }
            TrafficPolicy::Cluster => "no serving endpoint",
        };
        return skip(out, k, Protocol::Bgp, why);
    }
    let peers = peers_of(input.config, me);
    for ip in &alloc.ips {
        let family = Family::of(*ip);
        // (prefix, peer) -> (localPref, communities), merged across ads.
        let mut per_peer: BTreeMap<(IpNetwork, String), (Option<u32>, BTreeSet<Community>)> =
            BTreeMap::new();
        for ad in &ads {
            let prefix = mask(*ip, ad.aggregation_for(family));
            for peer in peers
                .iter()
                .filter(|p| ad.targets_peer(&p.name) && p.carries(family))
            {
                let entry = per_peer.entry((prefix, peer.name.clone())).or_default();
                if peer.is_ibgp() && entry.0.is_none() {
                    entry.0 = ad.local_pref;
                }
                entry.1.extend(ad.communities.iter().copied());
            }
        }
        // Group peers that get the same prefix with the same attributes.
        let mut routes: BTreeMap<(IpNetwork, Option<u32>, Vec<Community>), Vec<String>> =
            BTreeMap::new();
        for ((prefix, peer), (lp, comms)) in per_peer {
            routes
                .entry((prefix, lp, comms.into_iter().collect()))
                .or_default()
                .push(peer);
        }
        if routes.is_empty() {
            skip(
                out,
                k,
                Protocol::Bgp,
                format!("no BGPPeer of this node takes {family} prefixes"),
            );
            continue;
        }
        out.announcements.push(Announcement {
            service: k.clone(),
            ip: *ip,
            how: How::Bgp {
                routes: routes
                    .into_iter()
                    .map(|((prefix, local_pref, communities), peers)| BgpRoute {
                        prefix,
                        peers,
                        local_pref,
                        communities,
                    })
                    .collect(),
            },
        });
    }
}
