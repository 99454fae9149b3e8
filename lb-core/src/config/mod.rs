//! The configuration model: every `metallb.io` kind, validated, plus the Kubernetes objects the
//! decisions read (Services, Nodes, Namespaces, EndpointSlices, Secrets).
//!
//! ```text
//!  YAML text ──► load::documents ──► per-kind raw spec (serde, path-aware)
//!                                       │ validate: one object at a time, then across objects
//!                                       ▼
//!                        Config (only the objects that passed) + Vec<ConfigError>
//! ```
//!
//! A bad object is reported with its kind, namespace/name and field, and left out; the rest of
//! the configuration keeps working.

mod load;
pub(crate) mod raw;
#[cfg(feature = "yaml")]
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::ip::{Family, IpRange};
use crate::objects::{EndpointSlice, NAMESPACE_NAME_LABEL, Namespace, Node, Service, ServiceKey};
use crate::selector::{Labels, Selector, any_matches};

pub use load::{DEFAULT_METALLB_NAMESPACE, Loaded, load_values};
#[cfg(feature = "yaml")]
pub use load::{DocumentCache, Reloaded, load_str, load_str_cached, reload_str};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    /// The object was left out of the configuration.
    Error,
    /// The object was kept; something in it deserves a look.
    Warning,
}

/// A problem found in one object, naming the object and the field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct ConfigError {
    /// Whether the object was left out.
    pub severity: Severity,
    /// `Kind namespace/name`, or a document position when the object has no name yet.
    pub object: String,
    /// Dotted path of the field, `spec.addresses[1]`; empty for the whole object.
    pub field: String,
    /// The offending value, quoted in the message.
    pub value: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.object)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        if let Some(v) = &self.value {
            write!(f, ": {v:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// `IPAddressPool.spec.serviceAllocation`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolAllocation {
    /// `serviceAllocation.priority`: lower numbers are tried first.
    pub priority: i32,
    /// `serviceAllocation.namespaces`: namespaces admitted by name.
    pub namespaces: BTreeSet<String>,
    /// `serviceAllocation.namespaceSelectors`.
    pub namespace_selectors: Vec<Selector>,
    /// `serviceAllocation.serviceSelectors`.
    pub service_selectors: Vec<Selector>,
}

impl PoolAllocation {
    /// Admits only the namespaces `names`, at priority 0.
    pub fn for_namespaces(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        PoolAllocation {
            priority: 0,
            namespaces: names.into_iter().map(Into::into).collect(),
            namespace_selectors: Vec::new(),
            service_selectors: Vec::new(),
        }
    }

    /// Whether a service in a namespace with these labels, itself with these labels, may draw from
    /// the pool. With neither namespaces nor namespace selectors, every namespace is admitted.
    /// The namespace's name label (`kubernetes.io/metadata.name`), which Kubernetes always
    /// sets, is implied: `namespace_labels` need not carry it.
    pub fn admits(&self, namespace: &str, namespace_labels: &Labels, labels: &Labels) -> bool {
        let ns_ok = (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.contains(namespace)
            || (!self.namespace_selectors.is_empty() && {
                let named = namespace_labels
                    .get(NAMESPACE_NAME_LABEL)
                    .map(String::as_str)
                    == Some(namespace);
                let labels = if named {
                    std::borrow::Cow::Borrowed(namespace_labels)
                } else {
                    let mut l = namespace_labels.clone();
                    l.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
                    std::borrow::Cow::Owned(l)
                };
                self.namespace_selectors.iter().any(|s| s.matches(&labels))
            });
        ns_ok && any_matches(&self.service_selectors, labels)
    }

    /// The sort key of MetalLB's priority order: a lower number first, 0 (unset) last.
    pub fn priority_rank(&self) -> (bool, i32) {
        (self.priority == 0, self.priority)
    }
}

/// A validated `IPAddressPool`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// The pool's labels (for advertisements' `ipAddressPoolSelectors`).
    pub labels: Labels,
    /// The address ranges, sorted.
    pub ranges: Vec<IpRange>,
    /// `autoAssign`: whether services that name no pool get addresses from it.
    pub auto_assign: bool,
    /// `avoidBuggyIPs`: skip addresses ending in .0 and .255.
    pub avoid_buggy_ips: bool,
    /// `serviceAllocation`, if any.
    pub allocation: Option<PoolAllocation>,
}

impl Pool {
    /// A pool built in code: `ranges` sorted, auto-assigned, no selectors, the `.0`/`.255`
    /// addresses usable (as MetalLB's defaults).
    pub fn new(name: impl Into<String>, mut ranges: Vec<IpRange>) -> Pool {
        ranges.sort();
        Pool {
            name: name.into(),
            labels: Labels::new(),
            ranges,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }

    /// Whether the pool has addresses of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }

    /// Whether `ip` is in one of the pool's ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Usable addresses of a family (IPv6 saturates), less the buggy ones when avoided.
    pub fn size(&self, family: Family) -> u128 {
        self.ranges
            .iter()
            .filter(|r| r.family() == family)
            .map(|r| {
                if self.avoid_buggy_ips && family == Family::V4 {
                    crate::alloc::index::IndexSpace::Skip254.range_len(r)
                } else {
                    r.size()
                }
            })
            .fold(0u128, u128::saturating_add)
    }
}

/// Which pools an advertisement covers: by name, by label, or (neither set) all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSelection {
    /// Pools named (`ipAddressPools`).
    pub names: BTreeSet<String>,
    /// Pools selected by label (`ipAddressPoolSelectors`).
    pub selectors: Vec<Selector>,
}

impl PoolSelection {
    /// Whether `pool` is selected; an empty selection selects every pool.
    pub fn selects(&self, pool: &Pool) -> bool {
        (self.names.is_empty() && self.selectors.is_empty())
            || self.names.contains(&pool.name)
            || self.selectors.iter().any(|s| s.matches(&pool.labels))
    }
}

/// A validated `L2Advertisement`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct L2Advertisement {
    /// The advertisement's name.
    pub name: String,
    /// The pools it announces.
    pub pools: PoolSelection,
    /// `nodeSelectors`: the nodes that may announce; empty means all.
    pub node_selectors: Vec<Selector>,
    /// Empty means every interface.
    pub interfaces: Vec<String>,
    /// `serviceSelectors`: the services it applies to; empty means all.
    pub service_selectors: Vec<Selector>,
    /// `preferredNodeSelectors`: (weight, selector).
    pub preferred: Vec<(u32, Selector)>,
}

/// A BGP community: legacy (RFC 1997) or large (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Community {
    /// A 32-bit community (`A:B`).
    Legacy(u32),
    /// A large community (`large:G:L1:L2`).
    Large(u32, u32, u32),
}

impl Community {
    /// Parses `A:B` (16-bit halves) or `large:G:L1:L2` (32-bit parts).
    pub fn parse(s: &str) -> Option<Community> {
        if let Some(rest) = s.strip_prefix("large:") {
            let parts: Vec<&str> = rest.split(':').collect();
            if let [g, a, b] = parts[..] {
                return Some(Community::Large(
                    g.parse().ok()?,
                    a.parse().ok()?,
                    b.parse().ok()?,
                ));
            }
            return None;
        }
        let (hi, lo) = s.split_once(':')?;
        let hi: u16 = hi.parse().ok()?;
        let lo: u16 = lo.parse().ok()?;
        Some(Community::Legacy((u32::from(hi) << 16) | u32::from(lo)))
    }

    /// True for text that is shaped like a community value rather than an alias name.
    fn looks_like_value(s: &str) -> bool {
        s.starts_with("large:") || s.contains(':')
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Community::Legacy(v) => write!(f, "{}:{}", v >> 16, v & 0xffff),
            Community::Large(g, a, b) => write!(f, "large:{g}:{a}:{b}"),
        }
    }
}

impl Serialize for Community {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A validated `BGPAdvertisement`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BgpAdvertisement {
    /// The advertisement's name.
    pub name: String,
    /// The pools it announces.
    pub pools: PoolSelection,
    /// `aggregationLength`: the IPv4 prefix length announced (32 announces each address).
    pub aggregation_length: u8,
    /// `aggregationLengthV6`.
    pub aggregation_length_v6: u8,
    /// `localPref`, for iBGP peers.
    pub local_pref: Option<u32>,
    /// `communities`, resolved from Community objects.
    pub communities: BTreeSet<Community>,
    /// `nodeSelectors`: the nodes that may announce; empty means all.
    pub node_selectors: Vec<Selector>,
    /// Names of BGPPeers; empty means every peer.
    pub peers: BTreeSet<String>,
    /// `serviceSelectors`: the services it applies to; empty means all.
    pub service_selectors: Vec<Selector>,
}

impl BgpAdvertisement {
    /// The prefix length announced for addresses of `family`.
    pub fn aggregation_for(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.aggregation_length,
            Family::V6 => self.aggregation_length_v6,
        }
    }

    /// Whether the advertisement goes to `peer` (its `peers` list is empty or names it).
    pub fn targets_peer(&self, peer: &str) -> bool {
        self.peers.is_empty() || self.peers.contains(peer)
    }
}

/// The remote AS of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PeerAsn {
    /// `peerASN`.
    Fixed(u32),
    /// `dynamicASN: internal`: whatever the peer says, equal to ours.
    Internal,
    /// `dynamicASN: external`: whatever the peer says, different from ours.
    External,
}

/// Where a peer is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerTarget {
    /// A neighbour address.
    Address(IpAddr),
    /// BGP unnumbered over this interface.
    Interface(String),
}

/// A TCP-MD5 password, inline or in a Secret. Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Password {
    /// `password`, inline.
    Plain(String),
    /// `passwordSecret`: a Secret of type `kubernetes.io/basic-auth`.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Plain(<redacted>)"),
            Password::Secret { namespace, name } => write!(f, "Secret({namespace}/{name})"),
        }
    }
}

/// A validated `BGPPeer` (either served version).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BgpPeer {
    /// The peer's name.
    pub name: String,
    /// `myASN`.
    pub my_asn: u32,
    /// The remote AS.
    pub peer_asn: PeerAsn,
    /// `localASN`: our AS as the peer sees it, if it differs from `myASN`.
    pub local_asn: Option<u32>,
    /// Where the peer is reached.
    pub target: PeerTarget,
    /// `sourceAddress`.
    pub source_address: Option<IpAddr>,
    /// `peerPort` (179).
    pub port: u16,
    /// `holdTime`.
    pub hold_time: Option<Duration>,
    /// `keepaliveTime`.
    pub keepalive_time: Option<Duration>,
    /// `connectTime`: how long to wait between connection attempts.
    pub connect_time: Option<Duration>,
    /// `routerID`.
    pub router_id: Option<Ipv4Addr>,
    /// `nodeSelectors`: the nodes that peer; empty means all.
    pub node_selectors: Vec<Selector>,
    /// The TCP-MD5 password, if any.
    pub password: Option<Password>,
    /// `bfdProfile`.
    pub bfd_profile: Option<String>,
    /// `enableGracefulRestart`.
    pub graceful_restart: bool,
    /// `ebgpMultiHop`.
    pub ebgp_multihop: bool,
    /// `vrf` (rejected by this build; kept for reports).
    pub vrf: Option<String>,
    /// `disableMP`: one session per family.
    pub disable_mp: bool,
    /// `dualStackAddressFamily`: both families over this session.
    pub dual_stack_address_family: bool,
}

impl BgpPeer {
    /// iBGP: the peer is in our AS (after `localASN`, if set).
    pub fn is_ibgp(&self) -> bool {
        let ours = self.local_asn.unwrap_or(self.my_asn);
        match self.peer_asn {
            PeerAsn::Fixed(asn) => asn == ours,
            PeerAsn::Internal => true,
            PeerAsn::External => false,
        }
    }

    /// Whether prefixes of `family` go over this session: the session's own family, or both with
    /// `dualStackAddressFamily` or an unnumbered session.
    pub fn carries(&self, family: Family) -> bool {
        match &self.target {
            PeerTarget::Interface(_) => true,
            PeerTarget::Address(ip) => self.dual_stack_address_family || Family::of(*ip) == family,
        }
    }
}

/// A validated `BFDProfile` (intervals in milliseconds).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BfdProfile {
    /// The profile's name.
    pub name: String,
    /// `receiveInterval`.
    pub receive_interval: u32,
    /// `transmitInterval`.
    pub transmit_interval: u32,
    /// `detectMultiplier`.
    pub detect_multiplier: u32,
    /// `echoInterval`.
    pub echo_interval: u32,
    /// `echoMode`.
    pub echo_mode: bool,
    /// `passiveMode`.
    pub passive_mode: bool,
    /// `minimumTtl`.
    pub minimum_ttl: u32,
}

/// The whole validated configuration and the cluster objects read with it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// IPAddressPools by name.
    pub pools: BTreeMap<String, Pool>,
    /// L2Advertisements.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// BGPAdvertisements.
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// BGPPeers by name.
    pub peers: BTreeMap<String, BgpPeer>,
    /// BFDProfiles by name.
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
    /// Community aliases from `Community` objects.
    pub communities: BTreeMap<String, Community>,
    /// Services (from the file or the API).
    pub services: BTreeMap<ServiceKey, Service>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Secret data (decoded), by (namespace, name).
    pub secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// Each Secret's `type` (`Opaque` when unset), by (namespace, name).
    pub secret_types: BTreeMap<(String, String), String>,
}

impl Config {
    /// The labels of a namespace's Namespace object (none without one). The name label is not
    /// added: [`PoolAllocation::admits`] implies it.
    pub fn namespace_object_labels(&self, namespace: &str) -> Labels {
        self.namespaces
            .get(namespace)
            .map(|n| n.labels.clone())
            .unwrap_or_default()
    }

    /// Labels of a namespace: those of its Namespace object, plus the name label Kubernetes
    /// always sets, so selectors on `kubernetes.io/metadata.name` work with no Namespace object.
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self
            .namespaces
            .get(namespace)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
        labels
    }

    /// A copy of everything but the Services and EndpointSlices (the bulk of a large
    /// cluster), for a caller that keeps those apart.
    pub fn clone_without_services(&self) -> Config {
        Config {
            pools: self.pools.clone(),
            l2_advertisements: self.l2_advertisements.clone(),
            bgp_advertisements: self.bgp_advertisements.clone(),
            peers: self.peers.clone(),
            bfd_profiles: self.bfd_profiles.clone(),
            communities: self.communities.clone(),
            services: BTreeMap::new(),
            nodes: self.nodes.clone(),
            namespaces: self.namespaces.clone(),
            endpoint_slices: Vec::new(),
            secrets: self.secrets.clone(),
            secret_types: self.secret_types.clone(),
        }
    }

    /// The services a plan over `self` can read differently than over `before`: those added,
    /// gone or changed, and those whose EndpointSlices changed. None when anything else a plan
    /// reads changed (a pool, an advertisement, a peer, a Node, a Namespace, a Secret...):
    /// that can move any service. Sliced objects that name no service are read by no plan.
    pub fn services_changed_since(&self, before: &Config) -> Option<BTreeSet<ServiceKey>> {
        let same_rest = self.pools == before.pools
            && self.l2_advertisements == before.l2_advertisements
            && self.bgp_advertisements == before.bgp_advertisements
            && self.peers == before.peers
            && self.bfd_profiles == before.bfd_profiles
            && self.communities == before.communities
            && self.nodes == before.nodes
            && self.namespaces == before.namespaces
            && self.secrets == before.secrets
            && self.secret_types == before.secret_types;
        if !same_rest {
            return None;
        }
        let mut out: BTreeSet<ServiceKey> =
            crate::parts::differing(&before.services, &self.services)
                .into_iter()
                .collect();
        fn by_service(c: &Config) -> BTreeMap<ServiceKey, Vec<&EndpointSlice>> {
            let mut by: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
            for s in &c.endpoint_slices {
                if let Some(svc) = &s.service {
                    by.entry(ServiceKey::new(&s.namespace, svc))
                        .or_default()
                        .push(s);
                }
            }
            by
        }
        out.extend(crate::parts::differing(
            &by_service(before),
            &by_service(self),
        ));
        Some(out)
    }

    /// The Node object of a member, or a bare one carrying only the host-name label.
    pub fn node(&self, name: &str) -> Node {
        self.nodes
            .get(name)
            .cloned()
            .unwrap_or_else(|| Node::bare(name))
    }

    /// The TCP-MD5 password of a peer, looking up its Secret when it names one.
    pub fn password_for(&self, peer: &BgpPeer) -> Option<String> {
        match peer.password.as_ref()? {
            Password::Plain(p) => Some(p.clone()),
            Password::Secret { namespace, name } => self
                .secrets
                .get(&(namespace.clone(), name.clone()))
                .and_then(|d| d.get("password").cloned()),
        }
    }
}
