//! lb-core's own minimal model of the Kubernetes objects it reads: `v1` Service, Node, Namespace
//! and `discovery.k8s.io/v1` EndpointSlice. lb-k8s translates the real API types into these;
//! standalone mode parses them from YAML with the raw forms below.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::ip::Family;
use crate::selector::Labels;

/// The label Kubernetes puts on every namespace with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The label a node carries with its host name; synthesized for members with no Node object.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Nodes with this label never announce (unless the operator says to ignore it).
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The EndpointSlice label naming its service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A service's identity: namespace and name. Ordered, so every iteration is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceKey {
    /// The key of service `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `spec.externalTrafficPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TrafficPolicy {
    /// Any node may announce; traffic is spread over every node.
    Cluster,
    /// Only nodes with a ready endpoint of the service announce.
    Local,
}

/// `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FamilyPolicy {
    /// One family.
    SingleStack,
    /// Both families where the cluster has them, else one.
    PreferDualStack,
    /// Both families, or nothing.
    RequireDualStack,
}

/// A service port as the sharing rules see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Port {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

impl Port {
    /// A TCP port.
    pub fn tcp(port: u16) -> Port {
        Port {
            protocol: "TCP".into(),
            port,
        }
    }
}

/// What lb-core needs of a `v1` Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `spec.type == LoadBalancer`.
    pub load_balancer: bool,
    /// `spec.loadBalancerClass`: a service with another class is left to another controller.
    pub load_balancer_class: Option<String>,
    /// `spec.loadBalancerIP` (deprecated upstream, still honoured).
    pub load_balancer_ip: Option<String>,
    /// `spec.ports`.
    pub ports: Vec<Port>,
    /// What services sharing an address must agree on (MetalLB's backend key): `spec.selector`
    /// rendered `key=value,…` in key order when `externalTrafficPolicy` is Local, empty for
    /// Cluster (see [`backend_key`]). The selector itself decides nothing else, and a map of
    /// it for each service was half of a large cluster's memory.
    pub backend_key: String,
    /// `spec.externalTrafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    /// `spec.ipFamilies`; empty means "the cluster default", IPv4.
    pub ip_families: Vec<Family>,
    /// `spec.ipFamilyPolicy`.
    pub family_policy: FamilyPolicy,
    /// The addresses in `status.loadBalancer.ingress`: what the service held before.
    pub status_ips: Vec<IpAddr>,
}

/// A Service's backend key (see [`Service::backend_key`]): its pod selector rendered
/// `key=value,…` for `externalTrafficPolicy: Local`, empty for Cluster.
pub fn backend_key(policy: TrafficPolicy, selector: &Labels) -> String {
    match policy {
        TrafficPolicy::Cluster => String::new(),
        TrafficPolicy::Local => selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// What lb-core needs of a `v1` Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// The `NetworkUnavailable` condition is True.
    pub network_unavailable: bool,
    /// Its `InternalIP` addresses (all its addresses when none is typed `InternalIP`): the
    /// only addresses its membership datagrams may come from.
    pub addresses: Vec<IpAddr>,
}

impl Node {
    /// A node known only by name (a live member with no Node object): it carries the host-name
    /// label so that `nodeSelectors` on `kubernetes.io/hostname` still work.
    pub fn bare(name: &str) -> Self {
        Node {
            name: name.to_string(),
            labels: [(HOSTNAME_LABEL.to_string(), name.to_string())].into(),
            network_unavailable: false,
            addresses: Vec::new(),
        }
    }

    /// Whether the node carries the `exclude-from-external-load-balancers` label.
    pub fn excluded_from_load_balancers(&self) -> bool {
        self.labels.contains_key(EXCLUDE_LB_LABEL)
    }
}

/// What lb-core needs of a Namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's name.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Labels,
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `nodeName`.
    pub node: Option<String>,
    /// `conditions.ready`.
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
}

impl Endpoint {
    /// MetalLB's rule: ready unset or true, or serving true (so terminating-but-serving counts).
    pub fn can_serve(&self) -> bool {
        self.ready.unwrap_or(true) || self.serving == Some(true)
    }
}

/// What lb-core needs of a `discovery.k8s.io/v1` EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSlice {
    /// The slice's namespace.
    pub namespace: String,
    /// The slice's name.
    pub name: String,
    /// From the `kubernetes.io/service-name` label.
    pub service: Option<String>,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
}

// ---- raw YAML forms -------------------------------------------------------------------------

/// `metadata` as written; every field we do not use is ignored, as Kubernetes objects carry many.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawService {
    #[serde(default)]
    pub spec: RawServiceSpec,
    #[serde(default)]
    pub status: Option<RawServiceStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub ports: Vec<RawServicePort>,
    #[serde(default)]
    pub selector: Labels,
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    #[serde(default)]
    pub load_balancer_class: Option<String>,
    #[serde(default)]
    pub external_traffic_policy: Option<String>,
    #[serde(default)]
    pub ip_families: Vec<String>,
    #[serde(default)]
    pub ip_family_policy: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawServicePort {
    #[serde(default)]
    pub protocol: Option<String>,
    pub port: u16,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawServiceStatus {
    #[serde(default)]
    pub load_balancer: Option<RawLbStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawLbStatus {
    #[serde(default)]
    pub ingress: Vec<RawIngress>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawIngress {
    #[serde(default)]
    pub ip: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawNode {
    #[serde(default)]
    pub status: RawNodeStatus,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawNodeStatus {
    #[serde(default)]
    pub conditions: Vec<RawCondition>,
    #[serde(default)]
    pub addresses: Vec<RawNodeAddress>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawNodeAddress {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub address: String,
}

impl RawNodeStatus {
    /// The `InternalIP` addresses, or every address when none is typed `InternalIP`.
    pub fn internal_ips(&self) -> Vec<IpAddr> {
        let parse = |typed: bool| -> Vec<IpAddr> {
            self.addresses
                .iter()
                .filter(|a| !typed || a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect()
        };
        let internal = parse(true);
        if internal.is_empty() {
            parse(false)
        } else {
            internal
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEndpointSlice {
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawEndpoint {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub conditions: RawEndpointConditions,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RawEndpointConditions {
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub serving: Option<bool>,
}
