//! The speaker's decision over a change (`Core::change`) against a whole decision: after any
//! sequence of changes to Services, EndpointSlices and Nodes, each served from what the Core
//! kept (or by a whole decision when it says one is needed), the plan and the configuration
//! errors are exactly what a fresh speaker decides from every object.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use lb_core::objects::ServiceKey;
use lb_k8s::speaker::{Core, ObjectChange, Options};
use proptest::prelude::*;
use serde_json::{Value, json};

type Key = (String, String, String);

#[derive(Clone, Debug)]
enum Op {
    /// Service i: its address (an index into the pools' addresses; past them, none), ETP
    /// Local, the BGP pool's address instead of the L2 one, a protocol that is none.
    Service(usize, usize, bool, bool, bool),
    DeleteService(usize),
    /// Slice j of service i, with endpoints on these nodes, ready or not.
    Slice(usize, usize, Vec<usize>, bool),
    DeleteSlice(usize),
    /// Node n gets an annotation (nothing the speaker decides from) and a rack label (no
    /// selector reads it), or a zone label. Node 4 is no member.
    NodeAnnotation(usize, u8),
    NodeZone(usize, bool),
    /// Node n's network becomes unavailable (or available again), or the Node goes.
    NodeUnavailable(usize, bool),
    DeleteNode(usize),
    /// The members become these nodes (bit n: node n + 1; node1 is the planning node): a
    /// node leaves or joins, or this one does.
    Members(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..5usize, any::<bool>(), any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(i, a, l, b, bad)| Op::Service(i, a, l, b, bad)),
        1 => (0..6usize).prop_map(Op::DeleteService),
        3 => (0..5usize, 0..6usize, prop::collection::vec(0..3usize, 0..3), any::<bool>())
            .prop_map(|(j, i, n, r)| Op::Slice(j, i, n, r)),
        1 => (0..5usize).prop_map(Op::DeleteSlice),
        2 => (0..4usize, any::<u8>()).prop_map(|(n, v)| Op::NodeAnnotation(n, v)),
        1 => (0..4usize, any::<bool>()).prop_map(|(n, z)| Op::NodeZone(n, z)),
        1 => (0..4usize, any::<bool>()).prop_map(|(n, u)| Op::NodeUnavailable(n, u)),
        1 => (0..4usize).prop_map(Op::DeleteNode),
        2 => prop_oneof![4 => Just(0b0111u8), 6 => 1..16u8, 1 => Just(0u8)].prop_map(Op::Members),
    ]
}

fn node_name(n: usize) -> String {
    format!("node{}", n + 1)
}

fn node(n: usize, zone_a: bool, note: u8) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": node_name(n),
                        "labels": {"zone": if zone_a { "a" } else { "b" }, "bgp": "yes",
                                   "rack": (note % 4).to_string()},
                        "annotations": {"note": note.to_string()}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}],
                      "addresses": [{"type": "InternalIP", "address": format!("198.51.100.{}", n + 10)}]}})
}

fn metallb() -> Vec<Value> {
    vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "l2", "namespace": "metallb-system"},
               "spec": {"addresses": ["192.0.2.0/28"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "bgp", "namespace": "metallb-system"},
               "spec": {"addresses": ["203.0.113.0/28"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "l2", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["l2"], "nodeSelectors": [{"matchLabels": {"zone": "a"}}]}}),
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
               "metadata": {"name": "router", "namespace": "metallb-system"},
               "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "bgp", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["bgp"], "nodeSelectors": [{"matchLabels": {"bgp": "yes"}}]}}),
    ]
}

fn service(i: usize, addr: usize, local: bool, bgp: bool, bad: bool) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("s{i}"), "namespace": "default"},
        "spec": {"type": "LoadBalancer",
                 "ports": [{"port": 80, "protocol": if bad { "ICMP" } else { "TCP" }}],
                 "externalTrafficPolicy": if local { "Local" } else { "Cluster" }},
    });
    // Addresses 0-3 are distinct per service; 4 means none.
    if addr < 4 {
        let ip = if bgp {
            format!("203.0.113.{}", i * 2 + addr % 2)
        } else {
            format!("192.0.2.{}", i * 2 + addr % 2)
        };
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    v
}

fn slice(j: usize, i: usize, nodes: &[usize], ready: bool) -> Value {
    let endpoints: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({"addresses": ["198.51.100.200"], "nodeName": node_name(*n),
                        "conditions": {"ready": ready}})
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("e{j}"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": format!("s{i}")}},
           "addressType": "IPv4", "endpoints": endpoints})
}

fn all(cluster: &BTreeMap<Key, Value>) -> Vec<Value> {
    metallb()
        .into_iter()
        .chain(cluster.values().cloned())
        .collect()
}

/// Each service's announcements in `plan`.
fn parts(plan: &lb_core::Plan) -> BTreeMap<ServiceKey, Vec<lb_core::Announcement>> {
    let mut out: BTreeMap<ServiceKey, Vec<lb_core::Announcement>> = BTreeMap::new();
    for a in &plan.announcements {
        out.entry(a.service.clone()).or_default().push(a.clone());
    }
    out
}

fn key(plural: &str, ns: &str, name: String) -> Key {
    (plural.to_string(), ns.to_string(), name)
}

/// Serves each step (its changes in one batch, as the speaker's loop gathers the events
/// that came in during a pass) from what the Core kept, and checks it against a whole
/// decision.
fn check(steps: &[Vec<Op>]) -> Result<(), TestCaseError> {
    let opts = Options::new("node1", "metallb-system");
    let mut members: BTreeSet<String> = (0..3).map(node_name).collect();
    let mut cluster: BTreeMap<Key, Value> = BTreeMap::new();
    let mut zones = [true; 4];
    for n in 0..3 {
        cluster.insert(key("nodes", "", node_name(n)), node(n, true, 0));
    }
    // Every service starts with an address and ready endpoints on every member: each has
    // an owner from the start, so a change of owners shows.
    for i in 0..6 {
        let name = format!("s{i}");
        cluster.insert(
            key("services", "default", name),
            service(i, i % 4, false, i % 3 == 2, false),
        );
    }
    for j in 0..5 {
        cluster.insert(
            key("endpointslices", "default", format!("e{j}")),
            slice(j, j, &[0, 1, 2], true),
        );
    }
    let mut core = Core::default();
    core.decide(all(&cluster), &members, &opts);
    let mut whole = 0;
    for step in steps {
        let was_refused = members.is_empty();
        // One event per object: the newest.
        let mut change: BTreeMap<Key, Option<Value>> = BTreeMap::new();
        for op in step {
            let (k, v) = match op {
                Op::Service(i, a, l, b, bad) => (
                    key("services", "default", format!("s{i}")),
                    Some(service(*i, *a, *l, *b, *bad)),
                ),
                Op::DeleteService(i) => (key("services", "default", format!("s{i}")), None),
                Op::Slice(j, i, n, r) => (
                    key("endpointslices", "default", format!("e{j}")),
                    Some(slice(*j, *i, n, *r)),
                ),
                Op::DeleteSlice(j) => (key("endpointslices", "default", format!("e{j}")), None),
                Op::NodeAnnotation(n, note) => (
                    key("nodes", "", node_name(*n)),
                    Some(node(*n, zones[*n], *note)),
                ),
                Op::NodeZone(n, z) => {
                    zones[*n] = *z;
                    (key("nodes", "", node_name(*n)), Some(node(*n, *z, 0)))
                }
                Op::NodeUnavailable(n, u) => {
                    let mut v = node(*n, zones[*n], 0);
                    v["status"]["conditions"] = json!([
                        {"type": "Ready", "status": "True"},
                        {"type": "NetworkUnavailable", "status": if *u { "True" } else { "False" }}
                    ]);
                    (key("nodes", "", node_name(*n)), Some(v))
                }
                Op::DeleteNode(n) => (key("nodes", "", node_name(*n)), None),
                Op::Members(bits) => {
                    members = (0..4)
                        .filter(|n| bits & (1 << n) != 0)
                        .map(node_name)
                        .collect();
                    continue;
                }
            };
            match &v {
                Some(v) => cluster.insert(k.clone(), v.clone()),
                None => cluster.remove(&k),
            };
            change.insert(k, v);
        }
        let change: Vec<ObjectChange> = change.into_iter().collect();
        let before = parts(&core.plan());
        match core.change(change, &members, &opts) {
            // Members that are none (this node refused) before or after are a whole
            // decision.
            None if was_refused || members.is_empty() => {
                core.decide(all(&cluster), &members, &opts);
            }
            None => {
                whole += 1;
                core.decide(all(&cluster), &members, &opts);
            }
            // What the speaker applies is the services returned, with their parts: every
            // service whose announcements changed must be among them, each once, and each
            // part must be the one in force.
            Some(decided) => {
                let after = parts(&core.plan());
                let touched: BTreeMap<_, _> = decided.iter().map(|(k, p)| (k, p)).collect();
                prop_assert_eq!(
                    touched.len(),
                    decided.len(),
                    "a service twice after {:?}",
                    step
                );
                for svc in before.keys().chain(after.keys()) {
                    if before.get(svc) != after.get(svc) {
                        prop_assert!(
                            touched.contains_key(svc),
                            "{:?} not returned after {:?}",
                            svc,
                            step
                        );
                    }
                }
                for (svc, part) in &decided {
                    prop_assert_eq!(part, &core.part(svc), "{:?}'s part after {:?}", svc, step);
                }
            }
        }
        let fresh = Core::default().decide(all(&cluster), &members, &opts);
        prop_assert_eq!(&core.plan(), &fresh.plan, "after {:?}", step);
        prop_assert_eq!(
            core.config_errors(),
            fresh.config_errors,
            "after {:?}",
            step
        );
    }
    // No change of a Service, an EndpointSlice, a Node or the members needs a whole
    // decision.
    prop_assert_eq!(whole, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_change_served_from_what_is_kept_plans_as_a_whole_decision(
        ops in prop::collection::vec(op(), 1..30),
    ) {
        let steps: Vec<Vec<Op>> = ops.into_iter().map(|op| vec![op]).collect();
        check(&steps)?;
    }

    /// Several changes at once: a node that comes back or joins while a service changes, a
    /// node that leaves while another comes back.
    #[test]
    fn a_batch_of_changes_served_from_what_is_kept_plans_as_a_whole_decision(
        steps in prop::collection::vec(prop::collection::vec(op(), 2..5), 1..12),
    ) {
        check(&steps)?;
    }
}
