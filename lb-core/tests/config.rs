//! One test per configuration rule (MetalLB's kinds, their validation and the service annotations).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use lb_core::config::{Community, PeerAsn, PeerTarget, Severity, load_str};
use std::time::Duration;

fn errors(yaml: &str) -> Vec<String> {
    load_str(yaml)
        .errors
        .iter()
        .filter(|e| e.severity == Severity::Error)
        .map(|e| e.to_string())
        .collect()
}

fn warnings(yaml: &str) -> Vec<String> {
    load_str(yaml)
        .errors
        .iter()
        .filter(|e| e.severity == Severity::Warning)
        .map(|e| e.to_string())
        .collect()
}

fn pool(name: &str, addresses: &[&str]) -> String {
    let list: Vec<String> = addresses.iter().map(|a| format!("  - {a}")).collect();
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: {name}\n  namespace: metallb-system\nspec:\n  addresses:\n{}\n",
        list.join("\n")
    )
}

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

#[test]
fn reversed_range_error_names_kind_object_field_and_value() {
    let e = errors(&pool("main", &["192.0.2.0/28", "192.0.2.9-192.0.2.1"]));
    assert_eq!(
        e,
        [
            r#"IPAddressPool metallb-system/main: spec.addresses[1]: "192.0.2.9-192.0.2.1": range start is after its end"#
        ]
    );
}

#[test]
fn bad_object_is_left_out_and_the_rest_keeps_working() {
    let l = load_str(&docs(&[
        pool("bad", &["nonsense"]),
        pool("good", &["192.0.2.0/24"]),
    ]));
    assert!(!l.is_valid());
    assert!(l.config.pools.contains_key("good"));
    assert!(!l.config.pools.contains_key("bad"));
}

#[test]
fn pool_needs_at_least_one_address() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: []}\n",
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("spec.addresses: at least one"), "{e:?}");
}

#[test]
fn overlapping_pools_are_rejected_and_the_later_name_is_reported() {
    let e = errors(&docs(&[
        pool("b", &["192.0.2.128/25"]),
        pool("a", &["192.0.2.0/24"]),
    ]));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("IPAddressPool metallb-system/b: spec.addresses[0]"),
        "{e:?}"
    );
    assert!(e[0].contains("overlaps IPAddressPool a"));
}

#[test]
fn ranges_overlapping_within_one_pool_are_rejected() {
    let e = errors(&pool("p", &["192.0.2.0/24", "192.0.2.10-192.0.2.20"]));
    assert!(
        e[0].contains("overlaps spec.addresses[0] of the same pool"),
        "{e:?}"
    );
}

#[test]
fn pools_mix_ipv4_and_ipv6_cidrs_and_ranges() {
    let l = load_str(&pool(
        "dual",
        &["192.0.2.0/24", "2001:db8:1::10-2001:db8:1::20"],
    ));
    assert!(l.is_valid(), "{:?}", l.errors);
    let p = &l.config.pools["dual"];
    assert_eq!(p.ranges.len(), 2);
    assert!(p.auto_assign, "autoAssign defaults to true");
    assert!(!p.avoid_buggy_ips);
}

#[test]
fn unknown_spec_field_is_reported_with_its_path() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/24], autoAsign: false}\n",
    );
    assert!(
        e[0].contains("spec.autoAsign") || e[0].contains("unknown field `autoAsign`"),
        "{e:?}"
    );
}

#[test]
fn wrong_type_is_reported_with_its_path() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec:\n  addresses: [192.0.2.0/24]\n  serviceAllocation: {priority: high}\n",
    );
    assert!(e[0].contains("spec.serviceAllocation.priority"), "{e:?}");
    // A Service is read whole, and its metadata on its own: their paths too (a path is
    // tracked on a second read, once the first has met an error).
    let e = errors(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: b}\nspec: {type: LoadBalancer, ports: [{port: 80}, {port: x}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: c, namespace: b, labels: [x]}\n",
    );
    assert!(
        e.iter()
            .any(|e| e.contains("spec.ports[1].port: invalid type: string \"x\", expected u16")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e.contains("metadata.labels: invalid type: sequence, expected a map")),
        "{e:?}"
    );
}

#[test]
fn duplicate_namespaces_in_service_allocation_are_rejected() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec:\n  addresses: [192.0.2.0/24]\n  serviceAllocation: {namespaces: [a, b, a]}\n",
    );
    assert!(
        e[0].contains("spec.serviceAllocation.namespaces[2]: \"a\": duplicate namespace"),
        "{e:?}"
    );
}

#[test]
fn invalid_label_selector_operator_names_its_field() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec:\n  addresses: [192.0.2.0/24]\n  serviceAllocation:\n    serviceSelectors:\n    - matchExpressions: [{key: a, operator: Is, values: [b]}]\n",
    );
    assert!(
        e[0].contains("spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator"),
        "{e:?}"
    );
}

#[test]
fn duplicate_names_of_one_kind_are_rejected() {
    let e = errors(&docs(&[
        pool("p", &["192.0.2.0/25"]),
        pool("p", &["192.0.2.128/25"]),
    ]));
    assert!(
        e.iter()
            .any(|e| e.contains("another IPAddressPool has this name")),
        "{e:?}"
    );
}

/// Of two objects of one kind and name, the first in the file is read, the second refused:
/// also when a long file is parsed on several threads and the two are in different runs.
#[test]
fn of_two_objects_with_one_name_the_first_in_the_file_is_read() {
    for filler in [0, 3000] {
        let mut d = vec![pool("p", &["192.0.2.0/25"])];
        for i in 0..filler {
            d.push(format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{type: LoadBalancer}}\n",
                i % 7
            ));
        }
        d.push(pool("p", &["192.0.2.128/25"]));
        d.push(pool("o", &["198.51.100.0/24"]));
        let l = load_str(&docs(&d));
        let p = &l.config.pools["p"];
        assert_eq!(p.ranges.len(), 1);
        assert!(
            p.ranges[0].contains("192.0.2.1".parse().unwrap()),
            "{filler}: {:?}",
            p.ranges
        );
        assert_eq!(l.config.services.len(), filler);
        let e: Vec<String> = l.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("another IPAddressPool has this name"),
            "{e:?}"
        );
    }
}

const COMMUNITIES: &str = "apiVersion: metallb.io/v1beta1\nkind: Community\nmetadata: {name: c1}\nspec:\n  communities:\n  - {name: no-export, value: \"65535:65281\"}\n  - {name: big, value: \"large:64500:1:2\"}\n";

#[test]
fn community_aliases_resolve_in_bgp_advertisements() {
    let y = docs(&[
        COMMUNITIES.to_string(),
        pool("p", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: ad}\nspec:\n  communities: [no-export, big, \"64500:7\"]\n".into(),
    ]);
    let l = load_str(&y);
    assert!(l.is_valid(), "{:?}", l.errors);
    let c: Vec<Community> = l.config.bgp_advertisements[0]
        .communities
        .iter()
        .copied()
        .collect();
    assert!(c.contains(&Community::Legacy(0xffff_ff01)));
    assert!(c.contains(&Community::Large(64500, 1, 2)));
    assert!(c.contains(&Community::Legacy((64500 << 16) | 7)));
}

#[test]
fn duplicate_community_alias_across_objects_is_rejected() {
    let second = COMMUNITIES.replace("c1", "c2");
    let e = errors(&docs(&[COMMUNITIES.to_string(), second]));
    assert!(e.iter().any(|e| e.starts_with("Community metallb-system/c2: spec.communities[0].name: \"no-export\": duplicate community alias")), "{e:?}");
}

#[test]
fn unknown_community_alias_and_malformed_community_are_errors() {
    let y = docs(&[
        pool("p", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: ad}\nspec: {communities: [nosuch]}\n".into(),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: ad2}\nspec: {communities: [\"70000:1\"]}\n".into(),
    ]);
    let e = errors(&y);
    assert!(
        e.iter().any(|e| e.contains(
            "ad: spec.communities[0]: \"nosuch\": no Community object defines this alias"
        )),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e.contains("ad2: spec.communities[0]: \"70000:1\": not a community")),
        "{e:?}"
    );
}

#[test]
fn more_than_63_communities_are_rejected() {
    let list: Vec<String> = (0..64).map(|i| format!("\"64500:{i}\"")).collect();
    let y = format!(
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: ad}}\nspec: {{communities: [{}]}}\n",
        list.join(",")
    );
    assert!(errors(&y).iter().any(|e| e.contains("at most 63")));
}

#[test]
fn aggregation_length_shorter_than_pool_prefix_is_rejected() {
    let y = docs(&[
        pool("p", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: wide}\nspec: {aggregationLength: 16, ipAddressPools: [p]}\n".into(),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: ok}\nspec: {aggregationLength: 24, ipAddressPools: [p]}\n".into(),
    ]);
    let e = errors(&y);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("BGPAdvertisement metallb-system/wide: spec.aggregationLength: \"16\": aggregation length is shorter than the prefix length 24"), "{e:?}");
}

#[test]
fn aggregation_length_v6_is_checked_against_ipv6_ranges() {
    let y = docs(&[
        pool("p", &["2001:db8:1::/64"]),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: wide}\nspec: {aggregationLengthV6: 48}\n".into(),
    ]);
    assert!(errors(&y)[0].contains("spec.aggregationLengthV6"));
}

#[test]
fn aggregation_length_out_of_range_is_rejected() {
    let y = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {aggregationLength: 33}\n";
    assert!(errors(y)[0].contains("spec.aggregationLength: \"33\": must be between 1 and 32"));
}

#[test]
fn conflicting_local_prefs_for_the_same_prefixes_are_rejected() {
    let y = docs(&[
        pool("p", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {localPref: 100}\n".into(),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b}\nspec: {localPref: 200}\n".into(),
    ]);
    let e = errors(&y);
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("BGPAdvertisement metallb-system/b: spec.localPref: \"200\": conflicts with localPref 100 of BGPAdvertisement a"), "{e:?}");
}

#[test]
fn different_local_prefs_on_different_aggregations_or_peers_do_not_conflict() {
    let y = docs(&[
        pool("p", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {localPref: 100, peers: [r1]}\n".into(),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b}\nspec: {localPref: 200, peers: [r2]}\n".into(),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: c}\nspec: {localPref: 300, aggregationLength: 24, peers: [r1]}\n".into(),
    ]);
    assert!(errors(&y).is_empty(), "{:?}", errors(&y));
}

#[test]
fn service_selectors_need_default_aggregation_lengths() {
    let y = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec:\n  aggregationLength: 24\n  serviceSelectors: [{matchLabels: {a: b}}]\n";
    assert!(errors(y).iter().any(|e| e.contains("spec.serviceSelectors: serviceSelectors may only be used with the default aggregation lengths")));
}

/// MetalLB config.go (setL2AdvertisementsToPools, setBGPAdvertisementsToPools): a name with no
/// pool is skipped; the advertisement keeps serving the pools it names that exist.
#[test]
fn advertisement_naming_a_missing_pool_skips_that_name_and_serves_the_others() {
    let y = docs(&[
        pool("lan", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [ghost, lan]}\n".into(),
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: only-ghost}\nspec: {ipAddressPools: [ghost]}\n".into(),
    ]);
    let l = load_str(&y);
    assert!(l.is_valid(), "{:?}", errors(&y));
    assert_eq!(l.config.l2_advertisements.len(), 2);
    assert!(warnings(&y).iter().any(|w| w.contains(
        "L2Advertisement metallb-system/l2: spec.ipAddressPools[0]: \"ghost\": no valid IPAddressPool has this name"
    )));
    let lan = &l.config.pools["lan"];
    let serving: Vec<&str> = l
        .config
        .l2_advertisements
        .iter()
        .filter(|a| a.pools.selects(lan))
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        serving,
        ["l2"],
        "the ad naming only a missing pool serves nothing"
    );
}

#[test]
fn advertisement_naming_an_unknown_peer_is_a_warning() {
    let y = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {peers: [ghost]}\n";
    let l = load_str(y);
    assert!(l.is_valid());
    assert_eq!(l.config.bgp_advertisements.len(), 1);
    assert!(warnings(y)[0].contains("spec.peers[0]"));
}

#[test]
fn preferred_node_selector_weight_must_be_1_to_100() {
    let y = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec:\n  preferredNodeSelectors:\n  - {weight: 0, preference: {matchLabels: {a: b}}}\n";
    assert!(errors(y)[0].contains(
        "spec.preferredNodeSelectors[0].weight: \"0\": weight must be between 1 and 100"
    ));
}

#[test]
fn l2_advertisement_fields_are_read() {
    let y = docs(&[
        pool("p", &["192.0.2.0/24"]),
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec:\n  ipAddressPools: [p]\n  interfaces: [eth0]\n  nodeSelectors: [{matchLabels: {kubernetes.io/hostname: n1}}]\n  preferredNodeSelectors: [{weight: 50, preference: {matchLabels: {zone: a}}}]\n".into(),
    ]);
    let l = load_str(&y);
    assert!(l.is_valid(), "{:?}", l.errors);
    let ad = &l.config.l2_advertisements[0];
    assert_eq!(ad.interfaces, ["eth0"]);
    assert_eq!(ad.node_selectors.len(), 1);
    assert_eq!(ad.preferred[0].0, 50);
}

fn peer(api: &str, spec: &str) -> String {
    format!("apiVersion: metallb.io/{api}\nkind: BGPPeer\nmetadata: {{name: r1}}\nspec:\n{spec}")
}

#[test]
fn bgp_peer_v1beta2_fields_are_read_with_defaults() {
    let l = load_str(&peer(
        "v1beta2",
        "  myASN: 64512\n  peerASN: 64512\n  peerAddress: 192.0.2.1\n  holdTime: 9s\n",
    ));
    assert!(l.is_valid(), "{:?}", l.errors);
    let p = &l.config.peers["r1"];
    assert_eq!(p.port, 179);
    assert_eq!(p.peer_asn, PeerAsn::Fixed(64512));
    assert!(p.is_ibgp());
    assert_eq!(p.hold_time, Some(Duration::from_secs(9)));
    assert_eq!(
        p.keepalive_time,
        Some(Duration::from_secs(3)),
        "keepalive derived as hold/3"
    );
    assert_eq!(p.target, PeerTarget::Address("192.0.2.1".parse().unwrap()));
}

#[test]
fn bgp_peer_v1beta1_is_read_but_rejects_v1beta2_only_fields() {
    let ok = load_str(&peer(
        "v1beta1",
        "  myASN: 64512\n  peerASN: 64500\n  peerAddress: 192.0.2.1\n  nodeSelectors: [{matchLabels: {a: b}}]\n",
    ));
    assert!(ok.is_valid(), "{:?}", ok.errors);
    let e = errors(&peer(
        "v1beta1",
        "  myASN: 64512\n  peerASN: 64500\n  peerAddress: 192.0.2.1\n  enableGracefulRestart: true\n",
    ));
    assert!(
        e[0].contains("spec.enableGracefulRestart: this field exists only in metallb.io/v1beta2"),
        "{e:?}"
    );
}

#[test]
fn bgp_peer_my_asn_zero_or_missing_is_rejected() {
    assert!(
        errors(&peer(
            "v1beta2",
            "  myASN: 0\n  peerASN: 1\n  peerAddress: 192.0.2.1\n"
        ))[0]
            .contains("spec.myASN: \"0\": an AS number cannot be 0")
    );
    assert!(
        errors(&peer("v1beta2", "  peerASN: 1\n  peerAddress: 192.0.2.1\n"))[0]
            .contains("myASN is required")
    );
}

#[test]
fn bgp_peer_asn_and_dynamic_asn_are_exclusive() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  dynamicASN: external\n  peerAddress: 192.0.2.1\n",
    ));
    assert!(e[0].contains("set peerASN or dynamicASN, not both"));
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  dynamicASN: sideways\n  peerAddress: 192.0.2.1\n",
    ));
    assert!(e[0].contains("spec.dynamicASN: \"sideways\": must be internal or external"));
    let l = load_str(&peer(
        "v1beta2",
        "  myASN: 1\n  dynamicASN: internal\n  peerAddress: 192.0.2.1\n",
    ));
    assert!(l.config.peers["r1"].is_ibgp());
}

#[test]
fn bgp_peer_address_and_interface_are_exclusive() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  interface: eth0\n",
    ));
    assert!(e[0].contains("set peerAddress or interface, not both"));
    let e = errors(&peer("v1beta2", "  myASN: 1\n  peerASN: 2\n"));
    assert!(e[0].contains("one of peerAddress and interface is required"));
}

#[test]
fn bgp_peer_port_must_be_1_to_16384() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  peerPort: 20000\n",
    ));
    assert!(e[0].contains("spec.peerPort: \"20000\": must be between 1 and 16384"));
}

#[test]
fn bgp_peer_hold_time_must_be_zero_or_at_least_3s() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 2s\n",
    ));
    assert!(e[0].contains("spec.holdTime: \"2s\": must be 0 or at least 3s"));
    assert!(
        errors(&peer(
            "v1beta2",
            "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 0s\n"
        ))
        .is_empty()
    );
}

#[test]
fn bgp_peer_keepalive_may_not_exceed_hold_time() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 30s\n  keepaliveTime: 1m\n",
    ));
    assert!(e[0].contains("spec.keepaliveTime: \"1m\": must be shorter than holdTime"));
    let l = load_str(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  keepaliveTime: 10s\n",
    ));
    assert_eq!(
        l.config.peers["r1"].hold_time,
        Some(Duration::from_secs(30)),
        "hold derived as 3x keepalive"
    );
}

#[test]
fn bgp_timers_follow_rfc_4271_whatever_field_gives_them() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  keepaliveTime: 500ms\n",
    ));
    assert!(
        e[0].contains("spec.keepaliveTime: \"500ms\": gives a hold time (3x) under 3s"),
        "{e:?}"
    );
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 9s\n  keepaliveTime: 9s\n",
    ));
    assert!(e[0].contains("spec.keepaliveTime: \"9s\": must be shorter than holdTime"));
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 0s\n  keepaliveTime: 3s\n",
    ));
    assert!(e[0].contains("must be 0 when holdTime is 0"), "{e:?}");
    let short = peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 9s\n  keepaliveTime: 500ms\n",
    );
    assert!(errors(&short).is_empty(), "{:?}", errors(&short));
    let w = warnings(&short);
    assert!(w.iter().any(|w| w.contains("1s is used")), "{w:?}");
}

#[test]
fn bgp_peer_connect_time_is_whole_seconds() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  connectTime: 1500ms\n",
    ));
    assert!(e[0].contains("spec.connectTime: \"1500ms\": must be whole seconds"));
}

#[test]
fn bgp_peer_router_id_must_be_ipv4() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  routerID: 2001:db8::1\n",
    ));
    assert!(e[0].contains("spec.routerID"));
}

#[test]
fn bgp_peer_password_and_secret_are_exclusive_and_secret_resolves() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  password: x\n  passwordSecret: {name: s}\n",
    ));
    assert!(e[0].contains("set password or passwordSecret, not both"));
    let y = docs(&[
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: metallb-system}\ntype: kubernetes.io/basic-auth\ndata: {password: c2VjcmV0}\n".into(),
        peer("v1beta2", "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  passwordSecret: {name: s}\n"),
    ]);
    let l = load_str(&y);
    assert!(l.is_valid(), "{:?}", l.errors);
    assert_eq!(
        l.config.password_for(&l.config.peers["r1"]).as_deref(),
        Some("secret")
    );
}

/// MetalLB passwordFromSecretForPeer (internal/config/config.go around 514–522).
#[test]
fn bgp_peer_password_secret_missing_of_another_type_or_without_password_is_an_error() {
    let with = |secret: &str| {
        docs(&[
            secret.to_string(),
            peer(
                "v1beta2",
                "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  passwordSecret: {name: s}\n",
            ),
        ])
    };
    let cases = [
        ("", "the Secret is not present"),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: metallb-system}\ntype: Opaque\ndata: {password: c2VjcmV0}\n",
            "the Secret is of type Opaque; kubernetes.io/basic-auth is expected",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: metallb-system}\ndata: {password: c2VjcmV0}\n",
            "the Secret is of type Opaque",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: metallb-system}\ntype: kubernetes.io/basic-auth\ndata: {username: dQ==}\n",
            "the Secret has no password key",
        ),
    ];
    for (secret, why) in cases {
        let y = if secret.is_empty() {
            peer(
                "v1beta2",
                "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  passwordSecret: {name: s}\n",
            )
        } else {
            with(secret)
        };
        let e = errors(&y);
        assert!(
            e.iter().any(|e| e.contains("spec.passwordSecret: \"metallb-system/s\"") && e.contains(why)),
            "{why}: {e:?}"
        );
    }
}

#[test]
fn bgp_peer_password_never_shows_in_debug_output() {
    let l = load_str(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  password: hunter2\n",
    ));
    assert!(!format!("{:?}", l.config).contains("hunter2"));
}

#[test]
fn bgp_peer_bfd_profile_must_exist() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  bfdProfile: fast\n",
    ));
    assert!(e[0].contains("spec.bfdProfile: \"fast\": no valid BFDProfile has this name"));
}

#[test]
fn ebgp_multihop_on_an_ibgp_peer_is_rejected() {
    let e = errors(&peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 1\n  peerAddress: 192.0.2.1\n  ebgpMultiHop: true\n",
    ));
    assert!(e[0].contains("spec.ebgpMultiHop"));
}

#[test]
fn bfd_profile_ranges_are_enforced() {
    let y = "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: f}\nspec: {receiveInterval: 5, detectMultiplier: 300, minimumTtl: 255}\n";
    let e = errors(y);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("spec.receiveInterval: \"5\": must be between 10 and 60000"));
    let l = load_str(
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: f}\nspec: {}\n",
    );
    let p = &l.config.bfd_profiles["f"];
    assert_eq!(
        (p.receive_interval, p.transmit_interval, p.detect_multiplier),
        (300, 300, 3)
    );
}

#[test]
fn bfd_echo_mode_on_a_peer_with_ipv6_prefixes_is_rejected() {
    let y = docs(&[
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: echo}\nspec: {echoMode: true}\n".into(),
        pool("v6", &["2001:db8:1::/64"]),
        peer("v1beta2", "  myASN: 1\n  peerASN: 2\n  peerAddress: 2001:db8::1\n  bfdProfile: echo\n"),
        "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {}\n".into(),
    ]);
    let e = errors(&y);
    assert!(
        e.iter().any(|e| e.contains(
            "BGPPeer metallb-system/r1: spec.bfdProfile: \"echo\": a BFD profile with echoMode"
        )),
        "{e:?}"
    );
}

#[test]
fn yaml_syntax_error_costs_only_its_own_document() {
    let y = format!(
        "{}---\nkind: [unclosed\n---\n{}",
        pool("a", &["192.0.2.0/25"]),
        pool("b", &["192.0.2.128/25"])
    );
    let l = load_str(&y);
    assert_eq!(l.config.pools.len(), 2);
    assert!(
        l.errors[0].to_string().starts_with("document 2 (line"),
        "{:?}",
        l.errors
    );
}

#[test]
fn missing_name_kind_and_unknown_kinds_are_reported() {
    let e = errors(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nspec: {addresses: [192.0.2.0/24]}\n",
    );
    assert!(e[0].contains("metadata.name"));
    let e = errors("just: a map\n");
    assert!(e[0].contains("apiVersion and kind are required"));
    let w = warnings("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n");
    assert!(w[0].contains("not read; ignored"));
}

#[test]
fn list_documents_are_expanded() {
    let y = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: {name: p}\n  spec: {addresses: [192.0.2.0/24]}\n";
    assert!(load_str(y).config.pools.contains_key("p"));
}

#[test]
fn services_nodes_and_endpoint_slices_are_read() {
    let y = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop, annotations: {metallb.io/allow-shared-ip: k}}
spec:
  type: LoadBalancer
  ports: [{port: 80}, {port: 53, protocol: UDP}]
  externalTrafficPolicy: Local
  selector: {app: web}
  ipFamilyPolicy: PreferDualStack
  ipFamilies: [IPv6, IPv4]
status: {loadBalancer: {ingress: [{ip: 2001:db8:1::1}]}}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {zone: a}}
status: {conditions: [{type: NetworkUnavailable, status: 'True'}, {type: Ready, status: 'True'}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abc, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [198.51.100.5], nodeName: n1, conditions: {ready: false, serving: true}}
";
    let l = load_str(y);
    assert!(l.is_valid(), "{:?}", l.errors);
    let svc = l.config.services.values().next().unwrap();
    assert_eq!(svc.key.to_string(), "shop/web");
    assert_eq!(svc.ports.len(), 2);
    assert_eq!(svc.ports[0].protocol, "TCP", "protocol defaults to TCP");
    assert_eq!(svc.status_ips.len(), 1);
    assert!(l.config.nodes["n1"].network_unavailable);
    let ep = &l.config.endpoint_slices[0].endpoints[0];
    assert!(ep.can_serve(), "terminating but serving endpoints count");
}

#[test]
fn service_with_invalid_fields_is_reported() {
    let y = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: LoadBalancer, externalTrafficPolicy: Sometimes, ipFamilies: [IPv5]}\n";
    let e = errors(y);
    assert!(
        e[0].starts_with("Service default/s: spec.externalTrafficPolicy"),
        "{e:?}"
    );
    assert!(e[1].contains("spec.ipFamilies[0]"));
}

#[test]
fn go_durations_parse() {
    for (s, secs) in [
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("0", 0.0),
    ] {
        let l = load_str(&peer(
            "v1beta2",
            &format!("  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: \"{s}\"\n"),
        ));
        if secs >= 3.0 || secs == 0.0 {
            assert_eq!(
                l.config.peers["r1"].hold_time.unwrap().as_secs_f64(),
                secs,
                "{s}"
            );
        }
    }
    assert!(
        errors(&peer(
            "v1beta2",
            "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  holdTime: 10 seconds\n"
        ))[0]
            .contains("not a duration")
    );
}

#[test]
fn legacy_annotation_prefix_is_read_and_warned_about() {
    let y = "apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {metallb.universe.tf/address-pool: p, metallb.universe.tf/other: x}}\nspec: {type: LoadBalancer}\n";
    let l = load_str(y);
    assert!(l.is_valid());
    let w = warnings(y);
    assert_eq!(w.len(), 1, "only the annotations MetalLB reads: {w:?}");
    assert!(w[0].contains("metadata.annotations.metallb.universe.tf/address-pool: deprecated prefix; write metallb.io/address-pool"));
}

#[test]
fn disable_mp_is_accepted_with_a_deprecation_warning() {
    let y = peer(
        "v1beta2",
        "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  disableMP: true\n",
    );
    assert!(load_str(&y).is_valid());
    assert!(warnings(&y)[0].contains("spec.disableMP: deprecated"));
}

/// MetalLB validateDuplicate and validateLabelSelectorDuplicate (internal/config/config.go
/// around 1220–1269): a list entry given twice is an error naming the object and the entry.
#[test]
fn duplicates_in_advertisements_peers_and_pools_are_refused_naming_the_duplicate() {
    let ad = |kind: &str, spec: &str| {
        docs(&[
            pool("lan", &["192.0.2.0/24"]),
            format!(
                "apiVersion: metallb.io/v1beta1\nkind: {kind}\nmetadata: {{name: ad}}\nspec:\n{spec}"
            ),
        ])
    };
    let sel = "{matchLabels: {a: b}}";
    let cases: Vec<(String, &str)> = vec![
        (
            ad("L2Advertisement", "  ipAddressPools: [lan, lan]\n"),
            "L2Advertisement metallb-system/ad: spec.ipAddressPools[1]: \"lan\": duplicate definition",
        ),
        (
            ad("BGPAdvertisement", "  ipAddressPools: [lan, lan]\n"),
            "BGPAdvertisement metallb-system/ad: spec.ipAddressPools[1]",
        ),
        (
            ad("BGPAdvertisement", "  peers: [r1, r1]\n"),
            "spec.peers[1]: \"r1\": duplicate definition",
        ),
        (
            ad(
                "BGPAdvertisement",
                "  communities: [\"64512:1\", \"64512:1\"]\n",
            ),
            "spec.communities[1]: \"64512:1\": duplicate definition",
        ),
        (
            ad(
                "L2Advertisement",
                &format!("  ipAddressPoolSelectors: [{sel}, {sel}]\n"),
            ),
            "spec.ipAddressPoolSelectors[1]: duplicate definition of this selector",
        ),
        (
            ad(
                "L2Advertisement",
                &format!("  nodeSelectors: [{sel}, {sel}]\n"),
            ),
            "spec.nodeSelectors[1]: duplicate definition of this selector",
        ),
        (
            ad(
                "BGPAdvertisement",
                &format!("  nodeSelectors: [{sel}, {sel}]\n"),
            ),
            "spec.nodeSelectors[1]: duplicate definition of this selector",
        ),
        (
            ad(
                "BGPAdvertisement",
                &format!("  ipAddressPoolSelectors: [{sel}, {sel}]\n"),
            ),
            "spec.ipAddressPoolSelectors[1]",
        ),
        (
            peer(
                "v1beta2",
                &format!(
                    "  myASN: 1\n  peerASN: 2\n  peerAddress: 192.0.2.1\n  nodeSelectors: [{sel}, {sel}]\n"
                ),
            ),
            "BGPPeer metallb-system/r1: spec.nodeSelectors[1]: duplicate definition of this selector",
        ),
        (
            format!(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p}}\nspec:\n  addresses: [192.0.2.0/24]\n  serviceAllocation:\n    namespaceSelectors: [{sel}, {sel}]\n"
            ),
            "IPAddressPool metallb-system/p: spec.serviceAllocation.namespaceSelectors[1]: duplicate definition of this selector",
        ),
        (
            format!(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p}}\nspec:\n  addresses: [192.0.2.0/24]\n  serviceAllocation:\n    serviceSelectors: [{sel}, {sel}]\n"
            ),
            "spec.serviceAllocation.serviceSelectors[1]: duplicate definition of this selector",
        ),
        (
            ad(
                "L2Advertisement",
                "  nodeSelectors:\n  - matchExpressions: [{key: a, operator: In, values: [x, y, x]}]\n",
            ),
            "spec.nodeSelectors[0].matchExpressions[0].values[2]: \"x\": duplicate definition",
        ),
        (
            ad(
                "L2Advertisement",
                "  nodeSelectors:\n  - matchExpressions: [{key: a, operator: In, values: [x, y]}, {key: a, operator: In, values: [y, x]}]\n",
            ),
            "spec.nodeSelectors[0].matchExpressions[1]: \"a\": duplicate definition of this match expression",
        ),
    ];
    for (yaml, want) in &cases {
        let e = errors(yaml);
        assert!(e.iter().any(|e| e.contains(want)), "want {want:?} in {e:?}");
    }
    // Equal selectors written in another order are still duplicates; different ones are not.
    let reordered = ad(
        "L2Advertisement",
        "  nodeSelectors:\n  - matchExpressions: [{key: a, operator: In, values: [x, y]}]\n  - matchExpressions: [{key: a, operator: In, values: [y, x]}]\n",
    );
    assert!(
        errors(&reordered)
            .iter()
            .any(|e| e.contains("spec.nodeSelectors[1]"))
    );
    let distinct = ad(
        "L2Advertisement",
        "  nodeSelectors: [{matchLabels: {a: b}}, {matchLabels: {a: c}}]\n",
    );
    assert!(errors(&distinct).is_empty(), "{:?}", errors(&distinct));
}

#[test]
fn communities_of_every_advertisement_of_a_pool_must_fit_one_update() {
    // Each advertisement is within MetalLB's 63, but a route carries the union of all of them.
    let ad = |n: usize| {
        let list: Vec<String> = (0..63)
            .map(|i| format!("\"{}:{}\"", 64512, n * 63 + i))
            .collect();
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: ad{n}}}\nspec: {{ipAddressPools: [p], communities: [{}]}}\n",
            list.join(", ")
        )
    };
    let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [198.51.100.0/28]}\n".to_string();
    let mut parts = vec![pool.clone()];
    parts.extend((0..10).map(ad));
    assert!(errors(&docs(&parts)).is_empty(), "630 communities fit");
    let mut parts = vec![pool];
    parts.extend((0..16).map(ad));
    let e = errors(&docs(&parts));
    assert!(
        e.iter()
            .any(|e| e.contains("more than a 4096-octet UPDATE holds")
                && e.contains("IPAddressPool p")),
        "{e:?}"
    );
}

/// An unnumbered peer is served with no word; a BFD profile on one is a warning that says the
/// session runs without BFD.
#[test]
fn an_unnumbered_peer_is_valid_and_only_its_bfd_profile_is_warned_about() {
    let plain = peer("v1beta2", "  myASN: 1\n  peerASN: 2\n  interface: eth0\n");
    assert!(load_str(&plain).is_valid());
    assert_eq!(warnings(&plain), Vec::<String>::new());
    let with_bfd = format!(
        "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: fast, namespace: metallb-system}}\nspec: {{}}\n---\n{}",
        peer(
            "v1beta2",
            "  myASN: 1\n  peerASN: 2\n  interface: eth0\n  bfdProfile: fast\n"
        )
    );
    assert!(load_str(&with_bfd).is_valid());
    let w = warnings(&with_bfd);
    assert!(
        w.len() == 1 && w[0].contains("spec.bfdProfile") && w[0].contains("without it"),
        "{w:?}"
    );
}

/// An object that begins on its document marker's line (`--- {…}`, which `kubectl` accepts)
/// is read; a comment there is not an object. Before, what followed `--- ` was dropped.
#[test]
fn an_object_on_the_document_marker_line_is_read() {
    let l = load_str(concat!(
        "--- # pools\n",
        "--- {apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: {name: a, namespace: metallb-system}, spec: {addresses: [192.0.2.0/28]}}\n",
        "--- apiVersion: metallb.io/v1beta1\n",
        "kind: IPAddressPool\n",
        "metadata: {name: b, namespace: metallb-system}\n",
        "spec:\n",
        "  addresses: [broken]\n",
    ));
    assert!(l.config.pools.contains_key("a"), "{:?}", l.errors);
    let e: Vec<String> = l.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            r#"IPAddressPool metallb-system/b: spec.addresses[0]: "broken": not a CIDR or an address range (write a single address as 192.0.2.1/32)"#
        ],
    );
}
