//! The `metallb.io` custom resources, field for field as MetalLB defines them, so that existing
//! objects and manifests apply unchanged. Validation lives in the schema the API server enforces
//! (enums, ranges, defaults, CEL rules where MetalLB has them, and a few XOR rules that MetalLB
//! checks in its admission webhook, which we do not run); cross-object rules (overlapping
//! pools, unknown references) are checked by [`lb_core::config`] when the objects are read.
//!
//! BGPPeer is served at v1beta2 (storage) and v1beta1; the API server stores v1beta1 objects
//! as v1beta2 with no conversion webhook (the "None" strategy), which is sound because every
//! v1beta1 field has the same name and meaning in v1beta2, except `nodeSelectors`, whose
//! v1beta1 shape is a subset of a LabelSelector.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::crd::merge_crds;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_true() -> Option<bool> {
    Some(true)
}

/// IPAddressPool: addresses services may be given.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    namespaced,
    status = "IPAddressPoolStatus",
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Avoid Buggy IPs","type":"boolean","jsonPath":".spec.avoidBuggyIPs"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDRs (`192.0.2.0/24`) or ranges (`192.0.2.10-192.0.2.20`), IPv4 and IPv6 mixed.
    #[schemars(length(min = 1))]
    pub addresses: Vec<String>,
    /// False: only services that ask for this pool or one of its addresses get one.
    #[serde(default = "default_true", skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Skip IPv4 addresses ending in .0 and .255.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Which namespaces and services may use the pool, and its priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which services a pool serves, and its priority among pools.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower is preferred; 0 ranks after every positive priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces admitted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces admitted by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services admitted by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// What the controller writes about a pool.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// IPv4 addresses held by services.
    #[serde(rename = "assignedIPv4")]
    pub assigned_ipv4: i64,
    /// IPv6 addresses held by services.
    #[serde(rename = "assignedIPv6")]
    pub assigned_ipv6: i64,
    /// IPv4 addresses free.
    #[serde(rename = "availableIPv4")]
    pub available_ipv4: i64,
    /// IPv6 addresses free.
    #[serde(rename = "availableIPv6")]
    pub available_ipv6: i64,
}

/// L2Advertisement: announce pools' addresses by ARP / NDP.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    namespaced,
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"IPAddressPool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors","priority":10}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces"}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":10}"#
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools announced, by name (with the selectors: none means every pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools announced, by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce; none means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces answered on; none means every suitable one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Services announced; none means every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Nodes preferred as owners, by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// A soft preference for the nodes that announce.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct PreferredNodeSelector {
    /// The weight (higher wins).
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// The nodes it prefers.
    pub preference: LabelSelector,
}

fn default_aggregation_v4() -> Option<i32> {
    Some(32)
}

fn default_aggregation_v6() -> Option<i32> {
    Some(128)
}

/// BGPAdvertisement: announce pools' addresses to BGP peers.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    namespaced,
    printcolumn = r#"{"name":"IPAddressPools","type":"string","jsonPath":".spec.ipAddressPools"}"#,
    printcolumn = r#"{"name":"IPAddressPool Selectors","type":"string","jsonPath":".spec.ipAddressPoolSelectors","priority":10}"#,
    printcolumn = r#"{"name":"Peers","type":"string","jsonPath":".spec.peers"}"#,
    printcolumn = r#"{"name":"Node Selectors","type":"string","jsonPath":".spec.nodeSelectors","priority":10}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.serviceSelectors) || size(self.serviceSelectors) == 0 || ((!has(self.aggregationLength) || self.aggregationLength == 32) && (!has(self.aggregationLengthV6) || self.aggregationLengthV6 == 128))"
).message("serviceSelectors can only be used with the default aggregation lengths"))]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// The IPv4 prefix length announced (32: each address).
    #[serde(
        default = "default_aggregation_v4",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 32))]
    pub aggregation_length: Option<i32>,
    /// The IPv6 prefix length announced (128: each address).
    #[serde(
        default = "default_aggregation_v6",
        rename = "aggregationLengthV6",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// Sent to iBGP peers only; 0 means unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// `AS:value`, `large:G:L1:L2`, or the name of a Community alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 63))]
    pub communities: Vec<String>,
    /// Pools announced, by name (with the selectors: none means every pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools announced, by label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce; none means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Peers announced to; none means every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Services announced; none means every service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// `dynamicASN`: peer with whatever AS the router has, of this kind.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum DynamicAsnMode {
    /// The peer's AS equals ours.
    #[serde(rename = "internal")]
    Internal,
    /// The peer's AS differs from ours.
    #[serde(rename = "external")]
    External,
}

fn default_peer_port() -> Option<u16> {
    Some(179)
}

/// A reference to a `kubernetes.io/basic-auth` Secret holding the BGP password.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct SecretReference {
    /// The Secret's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Secret's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

pub mod v1beta2 {
    //! BGPPeer v1beta2, the storage version.
    use super::*;

    /// BGPPeer: a BGP session from the selected nodes.
    #[derive(
        CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq,
    )]
    #[kube(
        group = "metallb.io",
        version = "v1beta2",
        kind = "BGPPeer",
        plural = "bgppeers",
        namespaced,
        printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
        printcolumn = r#"{"name":"ASN","type":"string","jsonPath":".spec.peerASN"}"#,
        printcolumn = r#"{"name":"BFD Profile","type":"string","jsonPath":".spec.bfdProfile"}"#,
        printcolumn = r#"{"name":"Multi Hops","type":"string","jsonPath":".spec.ebgpMultiHop"}"#
    )]
    #[x_kube(validation = Rule::new("has(self.peerASN) != has(self.dynamicASN)").message("exactly one of peerASN and dynamicASN must be set"))]
    #[x_kube(validation = Rule::new("has(self.peerAddress) != has(self.interface)").message("exactly one of peerAddress and interface must be set"))]
    #[x_kube(validation = Rule::new("!has(self.password) || !has(self.passwordSecret)").message("password and passwordSecret are exclusive"))]
    #[serde(rename_all = "camelCase")]
    pub struct BGPPeerSpec {
        /// Our AS.
        #[serde(rename = "myASN")]
        pub my_asn: u32,
        /// The peer's AS (or use dynamicASN).
        #[serde(rename = "peerASN", default, skip_serializing_if = "Option::is_none")]
        pub peer_asn: Option<u32>,
        /// Accept whatever AS the peer says, internal or external, instead of peerASN.
        #[serde(
            rename = "dynamicASN",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub dynamic_asn: Option<DynamicAsnMode>,
        /// The AS the peer sees us as, if it differs from myASN.
        #[serde(rename = "localASN", default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = 4294967295u32))]
        pub local_asn: Option<u32>,
        /// The peer's address (or use interface).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer_address: Option<String>,
        /// Unnumbered peering on this interface.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interface: Option<String>,
        /// The address to connect from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub source_address: Option<String>,
        /// The peer's TCP port (179).
        #[serde(default = "default_peer_port", skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = 16384))]
        pub peer_port: Option<u16>,
        /// A Go duration (`90s`): 0 or at least 3 s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hold_time: Option<String>,
        /// A Go duration: the longest wait between KEEPALIVEs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keepalive_time: Option<String>,
        /// A Go duration: the wait between connection attempts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[x_kube(validation = Rule::new("duration(self).getSeconds() >= 1 && duration(self).getSeconds() <= 65535").message("connect time should be between 1 second to 65535"))]
        #[x_kube(validation = Rule::new("duration(self).getMilliseconds() % 1000 == 0").message("connect time should contain a whole number of seconds"))]
        pub connect_time: Option<String>,
        /// Our BGP identifier (an IPv4 address).
        #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
        pub router_id: Option<String>,
        /// Nodes that peer; none means every node.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub node_selectors: Vec<LabelSelector>,
        /// TCP-MD5 password, inline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// A Secret of type kubernetes.io/basic-auth holding the TCP-MD5 password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password_secret: Option<SecretReference>,
        /// The BFDProfile the session uses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bfd_profile: Option<String>,
        /// Announce graceful restart (RFC 4724).
        #[serde(default)]
        #[x_kube(validation = Rule::new("self == oldSelf").message("EnableGracefulRestart cannot be changed after creation"))]
        pub enable_graceful_restart: bool,
        /// The peer is more than one hop away.
        #[serde(default)]
        pub ebgp_multi_hop: bool,
        /// A VRF to peer from (not supported by this build; the peer is reported).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vrf: Option<String>,
        /// Deprecated: use dualStackAddressFamily.
        #[serde(rename = "disableMP", default)]
        pub disable_mp: bool,
        /// Carry IPv4 and IPv6 prefixes over this one session.
        #[serde(default)]
        pub dual_stack_address_family: bool,
    }
}

pub mod v1beta1 {
    //! BGPPeer v1beta1, served for old manifests.
    use super::*;

    /// The v1beta1 node selector: a LabelSelector without its schema's shared type.
    #[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct NodeSelector {
        /// Labels that must match exactly.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub match_labels: BTreeMap<String, String>,
        /// Label requirements.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub match_expressions: Vec<MatchExpression>,
    }

    /// One label requirement.
    #[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
    pub struct MatchExpression {
        /// The label.
        pub key: String,
        /// In, NotIn, Exists or DoesNotExist.
        pub operator: String,
        /// The values for In and NotIn.
        #[schemars(length(min = 1))]
        pub values: Vec<String>,
    }

    /// BGPPeer: a BGP session from the selected nodes.
    #[derive(
        CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq,
    )]
    #[kube(
        group = "metallb.io",
        version = "v1beta1",
        kind = "BGPPeer",
        plural = "bgppeers",
        namespaced,
        deprecated = "metallb.io v1beta1 BGPPeer is deprecated, consider using v1beta2",
        printcolumn = r#"{"name":"Address","type":"string","jsonPath":".spec.peerAddress"}"#,
        printcolumn = r#"{"name":"ASN","type":"string","jsonPath":".spec.peerASN"}"#,
        printcolumn = r#"{"name":"BFD Profile","type":"string","jsonPath":".spec.bfdProfile"}"#,
        printcolumn = r#"{"name":"Multi Hops","type":"string","jsonPath":".spec.ebgpMultiHop"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct BGPPeerSpec {
        /// Our AS.
        #[serde(rename = "myASN")]
        pub my_asn: u32,
        /// The peer's AS.
        #[serde(rename = "peerASN")]
        pub peer_asn: u32,
        /// The peer's address.
        pub peer_address: String,
        /// The address to connect from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub source_address: Option<String>,
        /// The peer's TCP port (179).
        #[serde(default = "default_peer_port", skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = 16384))]
        pub peer_port: Option<u16>,
        /// A Go duration: how long the peer may be silent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hold_time: Option<String>,
        /// A Go duration: the longest wait between KEEPALIVEs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keepalive_time: Option<String>,
        /// Our BGP identifier (an IPv4 address).
        #[serde(rename = "routerID", default, skip_serializing_if = "Option::is_none")]
        pub router_id: Option<String>,
        /// Nodes that peer; none means every node.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub node_selectors: Vec<NodeSelector>,
        /// TCP-MD5 password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// The BFDProfile the session uses.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bfd_profile: Option<String>,
        /// The peer is more than one hop away.
        #[serde(default)]
        pub ebgp_multi_hop: bool,
    }
}

/// BFDProfile: BFD timers for the peers that name it.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    namespaced,
    printcolumn = r#"{"name":"Passive Mode","type":"boolean","jsonPath":".spec.passiveMode"}"#,
    printcolumn = r#"{"name":"Transmit Interval","type":"integer","jsonPath":".spec.transmitInterval"}"#,
    printcolumn = r#"{"name":"Receive Interval","type":"integer","jsonPath":".spec.receiveInterval"}"#,
    printcolumn = r#"{"name":"Multiplier","type":"integer","jsonPath":".spec.detectMultiplier"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// Packets missed before the session is declared down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u32>,
    /// Milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// Echo mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Wait for the peer to start the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// The least TTL of packets accepted (multihop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
}

/// Community: named aliases for BGP communities.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    namespaced
)]
pub struct CommunitySpec {
    /// Aliases for communities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// A named community.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct CommunityAlias {
    /// The alias.
    pub name: String,
    /// `AS:value` or `large:G:L1:L2`.
    pub value: String,
}

/// Which service on which node a status object speaks of; fixed once written.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceOnNode {
    /// The node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("Value is immutable"))]
    pub node: Option<String>,
    /// The service's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("Value is immutable"))]
    pub service_name: Option<String>,
    /// The service's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("Value is immutable"))]
    pub service_namespace: Option<String>,
}

/// ServiceL2Status: which node announces a service by layer 2, and on which interfaces.
#[derive(
    CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq,
)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    namespaced,
    status = "MetalLBServiceL2Status",
    printcolumn = r#"{"name":"Allocated Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Service Name","type":"string","jsonPath":".status.serviceName"}"#,
    printcolumn = r#"{"name":"Service Namespace","type":"string","jsonPath":".status.serviceNamespace"}"#
)]
pub struct ServiceL2StatusSpec {}

/// The status of a ServiceL2Status.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetalLBServiceL2Status {
    /// Which service on which node.
    #[serde(flatten)]
    pub service: ServiceOnNode,
    /// Interfaces the address is answered on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// An interface name.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// The interface.
    pub name: String,
}

/// ServiceBGPStatus: which node advertises a service, to which configured peers.
#[derive(
    CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq,
)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    plural = "servicebgpstatuses",
    namespaced,
    status = "MetalLBServiceBGPStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Service Name","type":"string","jsonPath":".status.serviceName"}"#,
    printcolumn = r#"{"name":"Service Namespace","type":"string","jsonPath":".status.serviceNamespace"}"#
)]
pub struct ServiceBGPStatusSpec {}

/// The status of a ServiceBGPStatus.
#[derive(KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetalLBServiceBGPStatus {
    /// Which service on which node.
    #[serde(flatten)]
    pub service: ServiceOnNode,
    /// The configured peers the service is advertised to (not their session state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// ConfigurationState (MetalLB 0.15.3+): status only. Each component reports whether its
/// configuration validates: `controller`, and `speaker-<node>` for each speaker, labelled
/// `metallb.io/component-type` (and `metallb.io/node-name` for speakers).
#[derive(CustomResource, JsonSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "ConfigurationState",
    plural = "configurationstates",
    namespaced,
    status = "ConfigurationStateStatus",
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.result"}"#,
    printcolumn = r#"{"name":"ErrorSummary","type":"string","jsonPath":".status.errorSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct ConfigurationStateSpec {}

/// A configuration's validation result.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ConfigurationResult {
    /// The configuration is valid.
    Valid,
    /// The configuration has errors.
    Invalid,
    /// Not reported yet.
    #[default]
    Unknown,
}

/// The status of a ConfigurationState.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStateStatus {
    /// The validation result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ConfigurationResult>,
    /// The configuration errors, one a line; empty when the result is Valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_summary: Option<String>,
    /// The conditions of the reconcilers of this component (`configReconcilerValid`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
}

/// Every CRD, in a fixed order (BGPPeer with both versions, v1beta2 stored).
pub fn all() -> Result<Vec<CustomResourceDefinition>, kube::core::crd::MergeError> {
    Ok(vec![
        BFDProfile::crd(),
        BGPAdvertisement::crd(),
        merge_crds(
            vec![v1beta1::BGPPeer::crd(), v1beta2::BGPPeer::crd()],
            "v1beta2",
        )?,
        Community::crd(),
        ConfigurationState::crd(),
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        ServiceBGPStatus::crd(),
        ServiceL2Status::crd(),
    ])
}

/// Why the CRDs could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdError {
    /// The versions of a kind do not merge into one CRD.
    #[error("merging CRD versions: {0}")]
    Merge(#[from] kube::core::crd::MergeError),
    /// A CRD does not serialize as YAML.
    #[error("writing a CRD as YAML: {0}")]
    Yaml(#[from] serde_saphyr::ser::Error),
}

/// [`all`] as multi-document YAML, as `lb-bin crds` prints it and `deploy/01-crds.yaml` holds
/// it.
pub fn yaml() -> Result<String, CrdError> {
    let mut out = String::new();
    for crd in all()? {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
