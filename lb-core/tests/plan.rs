//! One test per announcement rule (MetalLB's L2 owner election and its BGP advertisements).
//!
//! The L2 owners below were computed independently of this crate, with Python's hashlib:
//! `sorted(nodes, key=lambda n: sha256((n + "#" + ip).encode()).digest())`
//!   192.0.2.0 -> n2, n3, n1    192.0.2.1 -> n2, n1, n3    192.0.2.2 -> n1, n2, n3
//!   2001:db8:1:: -> n2, n3, n1

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use lb_core::Rules;
use lb_core::alloc::converge::inputs_from;
use lb_core::alloc::{Allocation, PoolAllocator, converge};
use lb_core::config::{Community, Config, load_str};
use lb_core::objects::ServiceKey;
use lb_core::plan::{How, Interfaces, MissingEndpoints, Plan, PlanInput, plan};

struct World {
    config: Config,
    allocations: BTreeMap<ServiceKey, Allocation>,
}

fn world(yaml: &str) -> World {
    let l = load_str(yaml);
    assert!(l.is_valid(), "{:?}", l.errors);
    let pools: Vec<_> = l.config.pools.values().cloned().collect();
    let mut a = PoolAllocator::new(&pools);
    let out = converge(&mut a, inputs_from(&l.config, None));
    World {
        config: l.config,
        allocations: out.allocated,
    }
}

const NODES: [&str; 3] = ["n1", "n2", "n3"];

impl World {
    fn plan_with(&self, node: &str, members: &[&str], missing: MissingEndpoints) -> Plan {
        let members: BTreeSet<String> = members.iter().map(|s| s.to_string()).collect();
        let mut rules = Rules::cluster(false);
        rules.missing_endpoints = missing;
        plan(&PlanInput::new(
            &self.config,
            &self.allocations,
            &members,
            node,
            rules,
        ))
    }

    fn plan(&self, node: &str) -> Plan {
        self.plan_with(node, &NODES, MissingEndpoints::ServeEverywhere)
    }

    /// Which nodes announce `ip` by L2.
    fn l2_owners(&self, ip: &str, members: &[&str]) -> Vec<String> {
        members
            .iter()
            .filter(|n| {
                self.plan_with(n, members, MissingEndpoints::ServeEverywhere)
                    .announcements
                    .iter()
                    .any(|a| a.ip.to_string() == ip && matches!(a.how, How::Layer2 { .. }))
            })
            .map(|n| n.to_string())
            .collect()
    }
}

const POOL: &str = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/29, 2001:db8:1::/64]}\n---\n";
const L2: &str =
    "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {}\n---\n";

fn svc(name: &str, ann: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: a, annotations: {{{ann}}}, labels: {{app: {name}}}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n{spec}---\n"
    )
}

fn node(name: &str, labels: &str, unavailable: bool) -> String {
    let status = if unavailable {
        "status: {conditions: [{type: NetworkUnavailable, status: 'True'}]}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n{status}---\n"
    )
}

fn slice(svc: &str, endpoints: &[(&str, bool)]) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|(n, ready)| {
            format!(
                "- {{addresses: [198.51.100.9], nodeName: {n}, conditions: {{ready: {ready}}}}}"
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-x, namespace: a, labels: {{kubernetes.io/service-name: {svc}}}}}\nendpoints:\n{}\n---\n",
        eps.join("\n")
    )
}

#[test]
fn l2_owner_is_the_first_member_in_sha256_node_hash_ip_order() {
    let w = world(
        &(POOL.to_string() + L2 + &svc("s0", "", "") + &svc("s1", "", "") + &svc("s2", "", "")),
    );
    assert_eq!(w.l2_owners("192.0.2.0", &NODES), ["n2"]);
    assert_eq!(w.l2_owners("192.0.2.1", &NODES), ["n2"]);
    assert_eq!(w.l2_owners("192.0.2.2", &NODES), ["n1"]);
}

#[test]
fn l2_owner_moves_to_the_next_in_hash_order_when_the_owner_leaves() {
    let w = world(&(POOL.to_string() + L2 + &svc("s0", "", "")));
    assert_eq!(w.l2_owners("192.0.2.0", &["n1", "n3"]), ["n3"]);
    assert_eq!(w.l2_owners("192.0.2.0", &["n1"]), ["n1"]);
}

#[test]
fn dual_stack_addresses_are_announced_from_the_node_of_the_first_address() {
    let w = world(
        &(POOL.to_string()
            + L2
            + &svc(
                "d",
                "",
                "  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv4, IPv6]\n",
            )),
    );
    assert_eq!(w.l2_owners("192.0.2.0", &NODES), ["n2"]);
    assert_eq!(w.l2_owners("2001:db8:1::", &NODES), ["n2"]);
}

#[test]
fn services_sharing_an_ip_land_on_one_node() {
    let shared = "metallb.io/allow-shared-ip: k";
    let w = world(
        &(POOL.to_string()
            + L2
            + &svc("s1", shared, "  ports: [{port: 80}]\n")
            + &svc("s2", shared, "  ports: [{port: 443}]\n")),
    );
    assert_eq!(w.allocations.len(), 2);
    let p = w.plan("n2");
    let services: BTreeSet<String> = p
        .announcements
        .iter()
        .map(|a| a.service.name.clone())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["s1".to_string(), "s2".to_string()])
    );
    assert!(w.plan("n1").announcements.is_empty() && w.plan("n3").announcements.is_empty());
}

#[test]
fn exclude_label_and_network_unavailable_nodes_never_announce() {
    let y = POOL.to_string()
        + L2
        + &svc("s0", "", "")
        + &node(
            "n2",
            "node.kubernetes.io/exclude-from-external-load-balancers: ''",
            false,
        )
        + &node("n3", "", true);
    let w = world(&y);
    assert_eq!(w.l2_owners("192.0.2.0", &NODES), ["n1"]);
    let skip = &w.plan("n2").skipped;
    assert!(
        skip.iter()
            .any(|s| s.reason.contains("announced by node n1")),
        "{skip:?}"
    );
}

#[test]
fn advertisement_node_selectors_limit_candidates() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {nodeSelectors: [{matchLabels: {kubernetes.io/hostname: n3}}]}\n---\n";
    let w = world(&(POOL.to_string() + ad + &svc("s0", "", "")));
    assert_eq!(
        w.l2_owners("192.0.2.0", &NODES),
        ["n3"],
        "members without Node objects carry their host-name label"
    );
}

#[test]
fn preferred_node_selectors_outrank_the_hash() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {preferredNodeSelectors: [{weight: 10, preference: {matchLabels: {zone: b}}}]}\n---\n";
    let y = POOL.to_string() + ad + &svc("s0", "", "") + &node("n1", "zone: b", false);
    assert_eq!(world(&y).l2_owners("192.0.2.0", &NODES), ["n1"]);
}

#[test]
fn advertisement_for_another_pool_announces_nothing() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: other}\nspec: {addresses: [198.51.100.0/24]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [other]}\n---\n";
    let w = world(&(POOL.to_string() + ad + &svc("s0", "metallb.io/address-pool: p", "")));
    assert!(w.l2_owners("192.0.2.0", &NODES).is_empty());
}

#[test]
fn pool_selectors_pick_advertised_pools_by_label() {
    let y = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, labels: {ad: yes}}\nspec: {addresses: [192.0.2.0/29]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPoolSelectors: [{matchLabels: {ad: yes}}]}\n---\n".to_string() + &svc("s0", "", "");
    assert_eq!(world(&y).l2_owners("192.0.2.0", &NODES), ["n2"]);
}

#[test]
fn l2_interfaces_are_the_union_of_ads_and_empty_means_all() {
    let ads = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: a}\nspec: {interfaces: [eth1]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: b}\nspec: {interfaces: [eth0]}\n---\n";
    let w = world(&(POOL.to_string() + ads + &svc("s0", "", "")));
    let a = &w.plan("n2").announcements[0];
    assert_eq!(
        a.how,
        How::Layer2 {
            interfaces: Interfaces::Only(["eth0".to_string(), "eth1".to_string()].into())
        }
    );
    let w = world(&(POOL.to_string() + ads + L2 + &svc("s0", "", "")));
    assert_eq!(
        w.plan("n2").announcements[0].how,
        How::Layer2 {
            interfaces: Interfaces::All
        }
    );
}

#[test]
fn shared_ip_with_service_selector_advertisement_is_not_announced() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {serviceSelectors: [{matchLabels: {app: s0}}]}\n---\n";
    let w = world(&(POOL.to_string() + ad + &svc("s0", "metallb.io/allow-shared-ip: k", "")));
    assert!(w.l2_owners("192.0.2.0", &NODES).is_empty());
    let w = world(&(POOL.to_string() + ad + &svc("s0", "", "")));
    assert_eq!(w.l2_owners("192.0.2.0", &NODES), ["n2"]);
}

#[test]
fn cluster_policy_needs_a_serving_endpoint_somewhere() {
    let y = POOL.to_string() + L2 + &svc("s0", "", "") + &slice("s0", &[("n1", false)]);
    assert!(world(&y).l2_owners("192.0.2.0", &NODES).is_empty());
    let y = POOL.to_string() + L2 + &svc("s0", "", "") + &slice("s0", &[("n1", true)]);
    assert_eq!(
        world(&y).l2_owners("192.0.2.0", &NODES),
        ["n2"],
        "Cluster: any node may announce"
    );
}

#[test]
fn local_policy_elects_only_among_nodes_with_a_ready_local_endpoint() {
    let local = "  externalTrafficPolicy: Local\n";
    let y = POOL.to_string()
        + L2
        + &svc("s0", "", local)
        + &slice("s0", &[("n1", true), ("n3", true), ("n2", false)]);
    assert_eq!(world(&y).l2_owners("192.0.2.0", &NODES), ["n3"]);
}

#[test]
fn without_endpoint_slices_kubernetes_mode_announces_nothing() {
    let w = world(&(POOL.to_string() + L2 + &svc("s0", "", "")));
    assert!(
        w.plan_with("n2", &NODES, MissingEndpoints::NoEndpoints)
            .announcements
            .is_empty()
    );
}

const PEERS: &str = "apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: ibgp}
spec: {myASN: 64512, peerASN: 64512, peerAddress: 192.0.2.254}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: ebgp}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.253}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: v6}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 2001:db8::1}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: only-n3}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.252, nodeSelectors: [{matchLabels: {kubernetes.io/hostname: n3}}]}
---
";

/// (prefix, peers, localPref, communities)
type Route = (String, Vec<String>, Option<u32>, Vec<Community>);

fn routes(p: &Plan, ip: &str) -> Vec<Route> {
    p.announcements
        .iter()
        .filter(|a| a.ip.to_string() == ip)
        .flat_map(|a| match &a.how {
            How::Bgp { routes } => routes.clone(),
            How::Layer2 { .. } => vec![],
        })
        .map(|r| (r.prefix.to_string(), r.peers, r.local_pref, r.communities))
        .collect()
}

#[test]
fn bgp_every_eligible_node_announces_to_its_peers_with_local_pref_only_for_ibgp() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {localPref: 150, communities: [\"64500:1\"]}\n---\n";
    let w = world(&(POOL.to_string() + PEERS + ad + &svc("s0", "", "")));
    let c = vec![Community::Legacy((64500 << 16) | 1)];
    for n in ["n1", "n2"] {
        assert_eq!(
            routes(&w.plan(n), "192.0.2.0"),
            [
                (
                    "192.0.2.0/32".to_string(),
                    vec!["ebgp".to_string()],
                    None,
                    c.clone()
                ),
                (
                    "192.0.2.0/32".to_string(),
                    vec!["ibgp".to_string()],
                    Some(150),
                    c.clone()
                ),
            ]
        );
    }
    let n3 = routes(&w.plan("n3"), "192.0.2.0");
    assert_eq!(n3[0].1, ["ebgp", "only-n3"], "peer node selectors");
}

#[test]
fn bgp_aggregation_and_communities_merge_across_advertisements() {
    let ads = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {communities: [\"64500:1\"], peers: [ebgp]}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b}\nspec: {communities: [\"large:64500:2:3\"], peers: [ebgp]}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: c}\nspec: {aggregationLength: 29, peers: [ebgp]}\n---\n";
    let w = world(&(POOL.to_string() + PEERS + ads + &svc("s0", "", "")));
    let r = routes(&w.plan("n1"), "192.0.2.0");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, "192.0.2.0/29");
    assert_eq!((r[1].0.as_str(), r[1].3.len()), ("192.0.2.0/32", 2));
}

#[test]
fn bgp_ipv6_prefixes_go_only_to_sessions_that_carry_ipv6() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {}\n---\n";
    let w = world(&(POOL.to_string() + PEERS + ad + &svc("s0", "", "  ipFamilies: [IPv6]\n")));
    let r = routes(&w.plan("n1"), "2001:db8:1::");
    assert_eq!(
        r,
        [(
            "2001:db8:1::/128".to_string(),
            vec!["v6".to_string()],
            None,
            vec![]
        )]
    );
}

#[test]
fn bgp_advertisement_node_selectors_and_exclusions_limit_speakers() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {nodeSelectors: [{matchLabels: {rack: r1}}]}\n---\n";
    let y = POOL.to_string()
        + PEERS
        + ad
        + &svc("s0", "", "")
        + &node("n1", "rack: r1", false)
        + &node(
            "n2",
            "rack: r1, node.kubernetes.io/exclude-from-external-load-balancers: ''",
            false,
        );
    let w = world(&y);
    assert!(!routes(&w.plan("n1"), "192.0.2.0").is_empty());
    assert!(routes(&w.plan("n2"), "192.0.2.0").is_empty());
    assert!(routes(&w.plan("n3"), "192.0.2.0").is_empty());
}

#[test]
fn bgp_local_policy_announces_only_from_nodes_with_local_endpoints() {
    let ad = "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {}\n---\n";
    let y = POOL.to_string()
        + PEERS
        + ad
        + &svc("s0", "", "  externalTrafficPolicy: Local\n")
        + &slice("s0", &[("n2", true)]);
    let w = world(&y);
    assert!(routes(&w.plan("n1"), "192.0.2.0").is_empty());
    assert!(!routes(&w.plan("n2"), "192.0.2.0").is_empty());
}

#[test]
fn plan_is_deterministic() {
    let y = POOL.to_string()
        + PEERS
        + L2
        + "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: a}\nspec: {}\n---\n"
        + &svc("s0", "", "")
        + &svc("s1", "", "");
    assert_eq!(world(&y).plan("n2"), world(&y).plan("n2"));
}

/// MetalLB config.go (around 775–816) and speaker/layer2_controller.go (around 124, 202–213):
/// an L2Advertisement's preferredNodeSelectors score only the nodes its own nodeSelectors
/// select, and the scores of several advertisements add up.
#[test]
fn preferred_node_selectors_score_only_the_nodes_their_advertisement_selects_and_add_up() {
    let ad = |name: &str, nodes: &str, preferred: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: {name}}}\nspec: {{nodeSelectors: [{nodes}], preferredNodeSelectors: [{preferred}]}}\n---\n"
        )
    };
    // Ad "a" selects zone a and prefers fast nodes; n1 is fast but in zone b, where ad "b"
    // (no preference) selects it: its weight must not count for n1. By hash, n2 owns .0.
    let y = POOL.to_string()
        + &ad(
            "a",
            "{matchLabels: {zone: a}}",
            "{weight: 50, preference: {matchLabels: {fast: 'yes'}}}",
        )
        + &ad("b", "{matchLabels: {zone: b}}", "")
        + &svc("s0", "", "")
        + &node("n1", "zone: b, fast: 'yes'", false)
        + &node("n2", "zone: a", false)
        + &node("n3", "zone: a", false);
    assert_eq!(world(&y).l2_owners("192.0.2.0", &NODES), ["n2"]);
    // Two ads selecting n1 prefer it by 30 and 40: 70 beats n3's 60 from a third ad.
    let y = POOL.to_string()
        + &ad(
            "c",
            "",
            "{weight: 30, preference: {matchLabels: {fast: 'yes'}}}",
        )
        + &ad(
            "d",
            "",
            "{weight: 40, preference: {matchLabels: {gpu: 'yes'}}}",
        )
        + &ad(
            "e",
            "",
            "{weight: 60, preference: {matchLabels: {big: 'yes'}}}",
        )
        + &svc("s0", "", "")
        + &node("n1", "fast: 'yes', gpu: 'yes'", false)
        + &node("n3", "big: 'yes'", false);
    assert_eq!(world(&y).l2_owners("192.0.2.0", &NODES), ["n1"]);
}

/// MetalLB config.go (around 995): advertisements with serviceSelectors are not checked for a
/// localPref conflict at load time; speaker/bgp_controller.go (around 161–171): a service to
/// which conflicting advertisements apply is not announced by BGP ("conflictingAdvertisements"),
/// and a service to which only one applies is announced with its localPref.
#[test]
fn a_local_pref_conflict_between_service_selected_advertisements_is_decided_per_service() {
    let ad = |name: &str, pref: u32, apps: &str| {
        format!(
            "apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: {name}}}\nspec: {{localPref: {pref}, peers: [ibgp], serviceSelectors: [{{matchExpressions: [{{key: app, operator: In, values: [{apps}]}}]}}]}}\n---\n"
        )
    };
    let y = POOL.to_string()
        + PEERS
        + &ad("hundred", 100, "s0")
        + &ad("two-hundred", 200, "s0, s1")
        + &svc("s0", "", "")
        + &svc("s1", "", "");
    assert!(load_str(&y).is_valid(), "not a configuration error");
    let w = world(&y);
    let p = w.plan("n1");
    let s0 = w.allocations[&ServiceKey::new("a", "s0")].ips[0].to_string();
    let s1 = w.allocations[&ServiceKey::new("a", "s1")].ips[0].to_string();
    assert!(
        routes(&p, &s0).is_empty(),
        "s0 has two localPrefs: not announced"
    );
    assert!(
        p.skipped
            .iter()
            .any(|s| s.service == ServiceKey::new("a", "s0")
                && s.reason.contains("conflictingAdvertisements")),
        "{:?}",
        p.skipped
    );
    assert_eq!(
        routes(&p, &s1),
        [(
            format!("{s1}/32"),
            vec!["ibgp".to_string()],
            Some(200),
            vec![]
        )]
    );
}

/// A plan of many services is made on every core, in runs put back in service order: it must
/// be the services' parts, planned one at a time, in service order.
/// 2,600 services over one pool of both families, L2 and BGP, some ETP Local with slices on
/// one node; nodes `n1`-`n3`, each with its host-name label, and `extra` (YAML) as well.
fn many_services(extra: &str) -> World {
    let mut yaml = String::from(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [198.51.100.0/24, 203.0.113.0/24, 192.0.2.0/24, 2001:db8:1::/64]}\n---\n",
    );
    yaml.push_str(L2);
    yaml.push_str("apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: b}\nspec: {}\n---\n");
    yaml.push_str("apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.254}\n---\n");
    for n in NODES {
        yaml.push_str(&node(n, &format!("kubernetes.io/hostname: {n}"), false));
    }
    // More than one thread's worth (2,048); IPv4 for a quarter only (the /24s hold 762).
    for i in 0..2600 {
        let name = format!("s{i}");
        let local = i % 8 == 1 || i % 8 == 3;
        let spec = match (i % 4 == 3, local) {
            (true, true) => "  externalTrafficPolicy: Local\n",
            (true, false) => "",
            (false, true) => "  ipFamilies: [IPv6]\n  externalTrafficPolicy: Local\n",
            (false, false) => "  ipFamilies: [IPv6]\n",
        };
        yaml.push_str(&svc(&name, "", spec));
        if local && i % 3 != 0 {
            yaml.push_str(&slice(&name, &[(NODES[i % 3], true), ("n9", false)]));
        }
    }
    yaml.push_str(extra);
    world(&yaml)
}

#[test]
fn a_plan_made_on_several_cores_is_the_services_parts_in_order() {
    let w = many_services("");
    assert_eq!(w.allocations.len(), 2600);
    let members: BTreeSet<String> = NODES.iter().map(|s| s.to_string()).collect();
    let mut rules = Rules::cluster(false);
    rules.missing_endpoints = MissingEndpoints::ServeEverywhere;
    for n in NODES {
        let input = PlanInput::new(&w.config, &w.allocations, &members, n, rules);
        let whole = plan(&input);
        let planner = lb_core::plan::Planner::new(input);
        let mut parts = Plan::default();
        for key in w.allocations.keys() {
            let slices: Vec<_> = w
                .config
                .endpoint_slices
                .iter()
                .filter(|s| s.namespace == key.namespace && s.service.as_ref() == Some(&key.name))
                .collect();
            let p = planner.service(key, &slices);
            parts.announcements.extend(p.announcements);
            parts.skipped.extend(p.skipped);
        }
        parts.announcements.sort();
        assert!(!whole.announcements.is_empty() && !whole.skipped.is_empty());
        assert_eq!(whole, parts, "node {n}");
    }
}

/// The winner `service_elected` names is the node that announces the service by layer 2 (the
/// planning node, or the one its skip names), the same whoever plans; and a node that can no
/// longer win (it leaves the members, or its network goes down) moves only the services it
/// had won: what the speaker re-plans after a failover.
#[test]
fn a_node_that_can_no_longer_win_moves_only_what_it_won() {
    use lb_core::plan::{How, Planner, node_can_win};
    let w = many_services("");
    let mut rules = Rules::cluster(false);
    rules.missing_endpoints = MissingEndpoints::ServeEverywhere;
    let slices_of = |key: &ServiceKey| -> Vec<&lb_core::objects::EndpointSlice> {
        w.config
            .endpoint_slices
            .iter()
            .filter(|s| s.namespace == key.namespace && s.service.as_ref() == Some(&key.name))
            .collect()
    };
    // Each service's winner, as every node plans it, among `members` over `config`.
    let winners = |config: &Config, members: &[&str]| {
        let members: BTreeSet<String> = members.iter().map(|s| s.to_string()).collect();
        let mut out: BTreeMap<ServiceKey, Option<String>> = BTreeMap::new();
        for n in members.iter() {
            let input = PlanInput::new(config, &w.allocations, &members, n, rules);
            let planner = Planner::new(input);
            for (key, alloc) in &w.allocations {
                let svc = &config.services[key];
                let (part, owner) = planner.service_elected(alloc, svc, &slices_of(key));
                let announced = part
                    .announcements
                    .iter()
                    .any(|a| matches!(a.how, How::Layer2 { .. }));
                let named = part.skipped.iter().find_map(|s| {
                    s.reason
                        .strip_prefix("announced by node ")
                        .map(str::to_string)
                });
                let expected = if announced { Some(n.clone()) } else { named };
                assert_eq!(
                    owner.map(str::to_string),
                    expected,
                    "{key:?} planned by {n}"
                );
                let first = out.entry(key.clone()).or_insert_with(|| expected.clone());
                assert_eq!(
                    *first, expected,
                    "{key:?}: every node names the same winner"
                );
            }
        }
        out
    };
    let all = winners(&w.config, &NODES);
    let won = |node: &str| all.values().filter(|o| o.as_deref() == Some(node)).count();
    assert!(NODES.iter().all(|n| won(n) > 100), "{all:?}");
    for gone in NODES {
        // `gone` leaves the members.
        let rest: Vec<&str> = NODES.iter().copied().filter(|n| *n != gone).collect();
        // `gone`'s network goes down.
        let mut down = w.config.clone();
        let mut node = down.node(gone);
        node.network_unavailable = true;
        assert!(!node_can_win(&node, rules));
        let mut excluded = w.config.node(gone);
        excluded.labels.insert(
            "node.kubernetes.io/exclude-from-external-load-balancers".into(),
            String::new(),
        );
        assert!(!node_can_win(&excluded, rules));
        assert!(node_can_win(&excluded, Rules::cluster(true)));
        down.nodes.insert(gone.to_string(), node);
        for after in [winners(&w.config, &rest), winners(&down, &NODES)] {
            for (key, before) in &all {
                if before.as_deref() != Some(gone) {
                    assert_eq!(&after[key], before, "{key:?} moved when {gone} went");
                } else {
                    assert_ne!(after[key].as_deref(), Some(gone), "{key:?}");
                }
            }
        }
    }
}

/// A Node change the plan reads alike (a label no selector reads) needs no plan again; one
/// that any selector reads (an advertisement's, a preferred one's, a peer's), or a change of
/// usability, does.
#[test]
fn a_node_reads_alike_unless_a_selector_or_its_usability_reads_the_change() {
    use lb_core::objects::Node;
    use lb_core::plan::node_reads_alike;
    let config = load_str(
        "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {nodeSelectors: [{matchLabels: {zone: a}}], preferredNodeSelectors: [{weight: 10, preference: {matchLabels: {disk: ssd}}}]}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {nodeSelectors: [{matchLabels: {bgp: 'yes'}}]}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 192.0.2.1, nodeSelectors: [{matchLabels: {rack: r1}}]}\n",
    )
    .config;
    let node = |labels: &[(&str, &str)]| {
        let mut n = Node::bare("n1");
        for (k, v) in labels {
            n.labels.insert(k.to_string(), v.to_string());
        }
        n
    };
    let base = node(&[
        ("zone", "a"),
        ("bgp", "yes"),
        ("rack", "r1"),
        ("disk", "hdd"),
    ]);
    let alike = |after: &Node| node_reads_alike(&config, &base, after);
    let mut other = base.clone();
    other.labels.insert("team".into(), "x".into());
    other.addresses.push("198.51.100.7".parse().unwrap());
    assert!(alike(&other), "a label nothing reads, an address");
    for (k, v) in [
        ("zone", "b"),
        ("disk", "ssd"),
        ("bgp", "no"),
        ("rack", "r2"),
    ] {
        let mut n = base.clone();
        n.labels.insert(k.into(), v.into());
        assert!(!alike(&n), "{k}={v}");
    }
    let mut n = base.clone();
    n.network_unavailable = true;
    assert!(!alike(&n), "network unavailable");
    let mut n = base.clone();
    n.labels.insert(
        "node.kubernetes.io/exclude-from-external-load-balancers".into(),
        String::new(),
    );
    assert!(!alike(&n), "excluded");

    // A node that only becomes able to win moves only what it may take; any other change
    // that a selector reads does not count as that.
    use lb_core::plan::node_becomes_able;
    let rules = Rules::cluster(false);
    let able = |before: &Node, after: &Node| node_becomes_able(&config, before, after, rules);
    let mut down = base.clone();
    down.network_unavailable = true;
    assert!(able(&down, &base), "its network came back");
    assert!(!able(&base, &down), "its network went down");
    assert!(!able(&base, &other), "it could win before");
    let mut excluded = base.clone();
    excluded.labels.insert(
        "node.kubernetes.io/exclude-from-external-load-balancers".into(),
        String::new(),
    );
    assert!(able(&excluded, &base), "the exclude label went away");
    let mut moved = base.clone();
    moved.labels.insert("zone".into(), "b".into());
    assert!(!able(&down, &moved), "back, and in another zone");
    let mut still_down = down.clone();
    still_down.labels.insert("team".into(), "x".into());
    assert!(!able(&down, &still_down), "still down");
}

/// `Parts::members_changed` after any run of member changes (nodes leave and join, the
/// planning node among them, none left) keeps the plan a whole pass makes, and names every
/// service whose part changed and no other. Each step is checked against a whole plan.
#[test]
fn kept_parts_follow_member_changes_as_a_whole_plan_would() {
    use lb_core::parts::Parts;
    use proptest::prelude::*;
    let w = many_services("");
    let all: Vec<&str> = NODES.iter().copied().chain(["n4"]).collect();
    let set = |mask: u8| -> BTreeSet<String> {
        all.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.to_string())
            .collect()
    };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    let steps = (
        0..NODES.len(),
        any::<bool>(),
        proptest::collection::vec(0u8..16, 1..5),
    );
    runner
        .run(&steps, |(me, standalone, masks)| {
            let me = NODES[me];
            let rules = if standalone {
                Rules::standalone()
            } else {
                Rules::cluster(false)
            };
            let mut before = set(0b0111);
            let first = PlanInput::new(&w.config, &w.allocations, &before, me, rules);
            let mut parts = Parts::plan_all(&first);
            prop_assert_eq!(parts.plan(), plan(&first));
            for mask in masks {
                let after = set(mask);
                let input = PlanInput::new(&w.config, &w.allocations, &after, me, rules);
                let old = parts.clone();
                let changed = parts.members_changed(&input, &before);
                for (k, announced) in &changed {
                    prop_assert_eq!(announced, &parts.announcements(k));
                }
                let changed: BTreeSet<ServiceKey> = changed.into_iter().map(|(k, _)| k).collect();
                prop_assert_eq!(parts.plan(), plan(&input), "{:?} -> {:?}", before, after);
                let differ: BTreeSet<ServiceKey> = w
                    .allocations
                    .keys()
                    .filter(|k| old.get(k) != parts.get(k))
                    .cloned()
                    .collect();
                prop_assert_eq!(&changed, &differ, "{:?} -> {:?}", before, after);
                before = after;
            }
            Ok(())
        })
        .unwrap();
}

/// `Parts::services_changed` after any run of service edits (objects changed, added and
/// removed, their EndpointSlices edited, their allocations moved or dropped), fed what
/// `Config::services_changed_since` and the allocations' difference name, keeps the plan a
/// whole pass makes, and names every service whose part changed and no other. Each step is
/// checked against a whole plan. An edit outside services and slices is not served so.
#[test]
fn kept_parts_follow_service_edits_as_a_whole_plan_would() {
    use lb_core::objects::{Endpoint, TrafficPolicy};
    use lb_core::parts::{Parts, differing};
    use proptest::prelude::*;
    let w = many_services("");
    let keys: Vec<ServiceKey> = w.allocations.keys().cloned().collect();
    let members: BTreeSet<String> = NODES.iter().map(|s| s.to_string()).collect();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
    // Each step edits a few services: (which, how).
    let steps = (
        0..NODES.len(),
        any::<bool>(),
        proptest::collection::vec(
            proptest::collection::vec((0..keys.len(), 0u8..8), 1..6),
            1..5,
        ),
    );
    runner
        .run(&steps, |(me, standalone, steps)| {
            let me = NODES[me];
            let rules = if standalone {
                Rules::standalone()
            } else {
                Rules::cluster(false)
            };
            let mut config = w.config.clone();
            let mut allocations = w.allocations.clone();
            let first = PlanInput::new(&config, &allocations, &members, me, rules);
            let mut parts = Parts::plan_all(&first);
            for edits in steps {
                let (was_config, was_allocations) = (config.clone(), allocations.clone());
                for (i, how) in edits {
                    let key = &keys[i];
                    let slices_of = |c: &mut Config| -> Vec<usize> {
                        (0..c.endpoint_slices.len())
                            .filter(|j| {
                                let s = &c.endpoint_slices[*j];
                                s.namespace == key.namespace
                                    && s.service.as_ref() == Some(&key.name)
                            })
                            .collect()
                    };
                    match how {
                        0 => {
                            if let Some(s) = config.services.get_mut(key) {
                                s.traffic_policy = match s.traffic_policy {
                                    TrafficPolicy::Local => TrafficPolicy::Cluster,
                                    TrafficPolicy::Cluster => TrafficPolicy::Local,
                                };
                            }
                        }
                        1 => {
                            config.services.remove(key);
                        }
                        2 => {
                            // A new service like this one, with its own address.
                            let mut s = config
                                .services
                                .get(key)
                                .cloned()
                                .unwrap_or_else(|| w.config.services[key].clone());
                            s.key.name.push_str("-copy");
                            let mut a = w.allocations[key].clone();
                            for ip in &mut a.ips {
                                if let std::net::IpAddr::V6(v6) = ip {
                                    *ip = std::net::IpAddr::V6(
                                        (u128::from(*v6) ^ 0xffff_0000).into(),
                                    );
                                }
                            }
                            allocations.insert(s.key.clone(), a);
                            config.services.insert(s.key.clone(), s);
                        }
                        3 => {
                            // Moved: another service's address.
                            let other = &keys[(i + 7) % keys.len()];
                            let a = w.allocations[other].clone();
                            allocations.insert(key.clone(), a);
                        }
                        4 => {
                            allocations.remove(key);
                        }
                        5 => {
                            for j in slices_of(&mut config).into_iter().rev() {
                                config.endpoint_slices.remove(j);
                            }
                        }
                        6 => {
                            for j in slices_of(&mut config) {
                                let eps = &mut config.endpoint_slices[j].endpoints;
                                for e in eps.iter_mut() {
                                    e.ready = Some(!e.ready.unwrap_or(true));
                                }
                            }
                        }
                        _ => {
                            // A slice on a node that has none of this service's endpoints.
                            let mut s = config
                                .endpoint_slices
                                .first()
                                .cloned()
                                .expect("the world has slices");
                            s.namespace.clone_from(&key.namespace);
                            s.name = format!("{}-extra", key.name);
                            s.service = Some(key.name.clone());
                            s.endpoints = vec![Endpoint {
                                node: Some(NODES[(i + 1) % NODES.len()].to_string()),
                                ..s.endpoints[0].clone()
                            }];
                            config.endpoint_slices.push(s);
                        }
                    }
                }
                let touched = config
                    .services_changed_since(&was_config)
                    .expect("only services and slices changed");
                let mut touched: BTreeSet<ServiceKey> = touched;
                touched.extend(differing(&was_allocations, &allocations));
                let input = PlanInput::new(&config, &allocations, &members, me, rules);
                let old = parts.clone();
                let changed = parts.services_changed(&input, &touched);
                for (k, announced) in &changed {
                    prop_assert_eq!(announced, &parts.announcements(k));
                }
                let changed: BTreeSet<ServiceKey> = changed.into_iter().map(|(k, _)| k).collect();
                prop_assert_eq!(parts.plan(), plan(&input));
                let differ: BTreeSet<ServiceKey> = old
                    .iter()
                    .map(|(k, _)| k)
                    .chain(parts.iter().map(|(k, _)| k))
                    .filter(|k| old.get(k) != parts.get(k))
                    .cloned()
                    .collect();
                prop_assert_eq!(&changed, &differ);
            }
            Ok(())
        })
        .unwrap();

    // Anything but services and slices: no service list serves it.
    let mut other = w.config.clone();
    other.nodes.remove(NODES[0]);
    assert_eq!(other.services_changed_since(&w.config), None);
    let mut other = w.config.clone();
    other.l2_advertisements.clear();
    assert_eq!(other.services_changed_since(&w.config), None);
    assert_eq!(
        w.config.services_changed_since(&w.config),
        Some(BTreeSet::new())
    );
}
