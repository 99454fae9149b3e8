//! The `metallb.io` kinds exactly as written in YAML. Specs reject unknown fields so that a typo
//! is reported with its path instead of being silently dropped.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::selector::RawSelector;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpAddressPoolSpec {
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub auto_assign: Option<bool>,
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    #[serde(default)]
    pub service_allocation: Option<ServiceAllocation>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAllocation {
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub namespace_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub service_selectors: Vec<RawSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L2AdvertisementSpec {
    #[serde(default)]
    pub ip_address_pools: Vec<String>,
    #[serde(default)]
    pub ip_address_pool_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub node_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub service_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferredNodeSelector {
    pub weight: i64,
    pub preference: RawSelector,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpAdvertisementSpec {
    #[serde(default)]
    pub aggregation_length: Option<i64>,
    #[serde(default, rename = "aggregationLengthV6")]
    pub aggregation_length_v6: Option<i64>,
    #[serde(default)]
    pub local_pref: Option<u32>,
    #[serde(default)]
    pub communities: Vec<String>,
    #[serde(default)]
    pub ip_address_pools: Vec<String>,
    #[serde(default)]
    pub ip_address_pool_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub node_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub peers: Vec<String>,
    #[serde(default)]
    pub service_selectors: Vec<RawSelector>,
}

/// BGPPeer spec: the v1beta2 fields; a v1beta1 object is read through the same type and checked
/// to use only the fields v1beta1 has.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    #[serde(default, rename = "myASN")]
    pub my_asn: Option<u64>,
    #[serde(default, rename = "peerASN")]
    pub peer_asn: Option<u64>,
    #[serde(default, rename = "dynamicASN")]
    pub dynamic_asn: Option<String>,
    #[serde(default, rename = "localASN")]
    pub local_asn: Option<u64>,
    #[serde(default)]
    pub peer_address: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub source_address: Option<String>,
    #[serde(default)]
    pub peer_port: Option<i64>,
    #[serde(default)]
    pub hold_time: Option<String>,
    #[serde(default)]
    pub keepalive_time: Option<String>,
    #[serde(default)]
    pub connect_time: Option<String>,
    #[serde(default, rename = "routerID")]
    pub router_id: Option<String>,
    #[serde(default)]
    pub node_selectors: Vec<RawSelector>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_secret: Option<SecretReference>,
    #[serde(default)]
    pub bfd_profile: Option<String>,
    #[serde(default)]
    pub enable_graceful_restart: bool,
    #[serde(default)]
    pub ebgp_multi_hop: bool,
    #[serde(default)]
    pub vrf: Option<String>,
    #[serde(default, rename = "disableMP")]
    pub disable_mp: bool,
    #[serde(default)]
    pub dual_stack_address_family: bool,
}

impl BgpPeerSpec {
    /// The v1beta2-only fields this spec sets, by their YAML names.
    pub fn v1beta2_only_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let checks: [(&'static str, bool); 9] = [
            ("dynamicASN", self.dynamic_asn.is_some()),
            ("localASN", self.local_asn.is_some()),
            ("interface", self.interface.is_some()),
            ("connectTime", self.connect_time.is_some()),
            ("passwordSecret", self.password_secret.is_some()),
            ("vrf", self.vrf.is_some()),
            ("enableGracefulRestart", self.enable_graceful_restart),
            ("disableMP", self.disable_mp),
            ("dualStackAddressFamily", self.dual_stack_address_family),
        ];
        for (name, set) in checks {
            if set {
                out.push(name);
            }
        }
        out
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretReference {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdProfileSpec {
    #[serde(default)]
    pub receive_interval: Option<i64>,
    #[serde(default)]
    pub transmit_interval: Option<i64>,
    #[serde(default)]
    pub detect_multiplier: Option<i64>,
    #[serde(default)]
    pub echo_interval: Option<i64>,
    #[serde(default)]
    pub echo_mode: bool,
    #[serde(default)]
    pub passive_mode: bool,
    #[serde(default)]
    pub minimum_ttl: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunitySpec {
    #[serde(default)]
    pub communities: Vec<CommunityAlias>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunityAlias {
    pub name: String,
    pub value: String,
}

/// A `v1` Secret, for BGP passwords given by `passwordSecret`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSecret {
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
}
