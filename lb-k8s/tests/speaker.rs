//! The speaker's decisions from watched objects (scripted API server, no cluster): traffic
//! policies, node selectors, the exclude label, the status kinds, and an API outage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;

use std::collections::BTreeSet;
use std::net::IpAddr;

use api::{FakeApi, eventually, lb_service, pool};
use lb_core::plan::{How, Plan};
use lb_k8s::speaker::{Core, Options, StatusWriter, kinds, wanted_statuses};
use lb_k8s::store::Store;
use serde_json::{Value, json};

const NODES: [&str; 3] = ["node1", "node2", "node3"];

fn opts(node: &str) -> Options {
    Options::new(node, "metallb-system")
}

fn node(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": labels},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn allocated(namespace: &str, name: &str, ip: &str, local: bool, pool: &str) -> Value {
    let mut s = lb_service(namespace, name, &[80]);
    s["spec"]["externalTrafficPolicy"] = json!(if local { "Local" } else { "Cluster" });
    s["metadata"]["annotations"] = json!({"metallb.io/ip-allocated-from-pool": pool});
    s["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    s
}

fn slice(namespace: &str, service: &str, nodes: &[&str]) -> Value {
    let endpoints: Vec<Value> = nodes
        .iter()
        .map(|n| json!({"addresses": ["198.51.100.200"], "nodeName": n, "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-abc"), "namespace": namespace,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "endpoints": endpoints})
}

/// A cluster: three nodes (node3 labelled exclude-from-external-load-balancers), an L2 pool
/// advertised from zone a, a BGP pool advertised from nodes with `bgp: "yes"`.
fn cluster(api: &FakeApi) {
    api.put("nodes", node("node1", json!({"zone": "a", "bgp": "yes"})));
    api.put("nodes", node("node2", json!({"zone": "a", "bgp": "yes"})));
    api.put(
        "nodes",
        node(
            "node3",
            json!({"zone": "a", "bgp": "yes",
                   "node.kubernetes.io/exclude-from-external-load-balancers": ""}),
        ),
    );
    api.put("ipaddresspools", pool("l2", &["192.0.2.0/28"]));
    api.put("ipaddresspools", pool("bgp", &["203.0.113.0/28"]));
    api.put(
        "l2advertisements",
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "l2", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["l2"], "nodeSelectors": [{"matchLabels": {"zone": "a"}}]}}),
    );
    api.put(
        "bgppeers",
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
               "metadata": {"name": "router", "namespace": "metallb-system"},
               "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.51.100.1"}}),
    );
    api.put(
        "bgpadvertisements",
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "bgp", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["bgp"], "nodeSelectors": [{"matchLabels": {"bgp": "yes"}}]}}),
    );
    // ETP Cluster with endpoints on node3 only; ETP Local with endpoints on node2 only.
    api.put(
        "services",
        allocated("default", "cluster", "192.0.2.1", false, "l2"),
    );
    api.put("endpointslices", slice("default", "cluster", &["node3"]));
    api.put(
        "services",
        allocated("default", "local", "192.0.2.2", true, "l2"),
    );
    api.put("endpointslices", slice("default", "local", &["node2"]));
    api.put(
        "services",
        allocated("default", "bgp-cluster", "203.0.113.1", false, "bgp"),
    );
    api.put(
        "endpointslices",
        slice("default", "bgp-cluster", &["node3"]),
    );
    api.put(
        "services",
        allocated("default", "bgp-local", "203.0.113.2", true, "bgp"),
    );
    api.put("endpointslices", slice("default", "bgp-local", &["node1"]));
    // Allocated but with no endpoints at all: nobody announces it.
    api.put(
        "services",
        allocated("default", "idle", "192.0.2.3", false, "l2"),
    );
    api.put("endpointslices", slice("default", "idle", &[]));
}

async fn watching(client: kube::Client, o: &Options) -> (Store, Vec<tokio::task::JoinHandle<()>>) {
    let store = Store::default();
    let tasks = kinds(o)
        .into_iter()
        .map(|k| store.spawn_watch(client.clone(), k))
        .collect();
    assert!(
        eventually(5, || store.synced()).await,
        "the store lists every kind"
    );
    (store, tasks)
}

/// (service name, protocol) pairs a plan announces.
fn announced(p: &Plan) -> BTreeSet<(String, &'static str)> {
    p.announcements
        .iter()
        .map(|a| {
            let proto = match a.how {
                How::Layer2 { .. } => "l2",
                How::Bgp { .. } => "bgp",
            };
            (a.service.name.clone(), proto)
        })
        .collect()
}

fn members() -> BTreeSet<String> {
    NODES.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_follow_traffic_policy_node_selectors_and_the_exclude_label() {
    let (api, client) = FakeApi::start();
    cluster(&api);
    let (store, tasks) = watching(client, &opts("node1")).await;
    let objects = store.values();
    let plans: Vec<Plan> = NODES
        .iter()
        .map(|n| {
            Core::default()
                .decide(objects.clone(), &members(), &opts(n))
                .plan
        })
        .collect();
    let by_node: Vec<BTreeSet<(String, &str)>> = plans.iter().map(announced).collect();

    // ETP Local: only node2 has a local endpoint.
    let local: Vec<bool> = by_node
        .iter()
        .map(|s| s.contains(&("local".into(), "l2")))
        .collect();
    assert_eq!(local, [false, true, false]);
    // ETP Cluster: one owner, among the nodes the advertisement selects and that are not
    // excluded; node3's endpoint still counts as "an endpoint somewhere".
    let cluster: Vec<bool> = by_node
        .iter()
        .map(|s| s.contains(&("cluster".into(), "l2")))
        .collect();
    assert_eq!(cluster.iter().filter(|b| **b).count(), 1, "{by_node:?}");
    assert!(!cluster[2], "node3 carries the exclude label");
    // BGP, ETP Cluster: every selected node that is not excluded advertises.
    let bgp_cluster: Vec<bool> = by_node
        .iter()
        .map(|s| s.contains(&("bgp-cluster".into(), "bgp")))
        .collect();
    assert_eq!(bgp_cluster, [true, true, false]);
    // BGP, ETP Local: only node1 has the endpoint.
    let bgp_local: Vec<bool> = by_node
        .iter()
        .map(|s| s.contains(&("bgp-local".into(), "bgp")))
        .collect();
    assert_eq!(bgp_local, [true, false, false]);
    assert!(by_node.iter().all(|s| !s.iter().any(|(n, _)| n == "idle")));

    // --ignore-exclude-lb makes node3 a candidate again.
    let mut o3 = opts("node3");
    o3.ignore_exclude_label = true;
    let p3 = announced(
        &Core::default()
            .decide(objects.clone(), &members(), &o3)
            .plan,
    );
    assert!(p3.contains(&("bgp-cluster".into(), "bgp")));

    // A node selector change takes node2 out of the L2 advertisement: its Local service has
    // no candidate left, and the cluster service moves to node1.
    api.put("nodes", node("node2", json!({"zone": "b", "bgp": "yes"})));
    assert!(
        eventually(5, || {
            let p = Core::default()
                .decide(store.values(), &members(), &opts("node2"))
                .plan;
            !announced(&p).contains(&("local".into(), "l2"))
        })
        .await
    );
    let p1 = Core::default()
        .decide(store.values(), &members(), &opts("node1"))
        .plan;
    assert!(announced(&p1).contains(&("cluster".into(), "l2")));
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_objects_say_what_this_node_announces_and_go_when_it_stops() {
    let (api, client) = FakeApi::start();
    cluster(&api);
    let o = opts("node2");
    let (store, tasks) = watching(client.clone(), &o).await;
    let mut core = Core::default();
    let mut writer = StatusWriter::default();
    let d = core.decide(store.values(), &members(), &o);
    let wanted = wanted_statuses("node2", &d.plan);
    assert!(wanted.l2.keys().any(|k| k.name == "local"));
    let (_, err) = writer.sync(&client, &store, &o, &wanted).await;
    assert!(err.is_none(), "{err:?}");
    assert!(
        eventually(5, || {
            let (l2, bgp) = (
                store.of_kind("servicel2statuses"),
                store.of_kind("servicebgpstatuses"),
            );
            l2.len() == wanted.l2.len()
                && bgp.len() == wanted.bgp.len()
                && l2.iter().chain(&bgp).all(|o| o.get("status").is_some())
        })
        .await
    );
    let l2 = api.list("servicel2statuses");
    let local = l2
        .iter()
        .find(|s| s.pointer("/metadata/labels/metallb.io~1service-name") == Some(&json!("local")))
        .expect("a ServiceL2Status for the Local service");
    assert_eq!(
        local.pointer("/metadata/labels/metallb.io~1node"),
        Some(&json!("node2"))
    );
    assert_eq!(
        local.get("status"),
        Some(&json!({"node": "node2", "serviceName": "local", "serviceNamespace": "default"}))
    );
    assert!(
        local
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("l2-")
    );
    let bgp = api.list("servicebgpstatuses");
    assert!(bgp.iter().any(|s| {
        s.pointer("/status/serviceName") == Some(&json!("bgp-cluster"))
            && s.pointer("/status/peers") == Some(&json!(["router"]))
    }));

    // Syncing again with nothing new writes nothing.
    api.clear_writes();
    let (n, _) = writer.sync(&client, &store, &o, &wanted).await;
    assert_eq!(n, 0, "{:#?}", api.writes());

    // The Local service loses its endpoint on node2: its status object goes.
    api.put("endpointslices", slice("default", "local", &["node1"]));
    assert!(
        eventually(5, || {
            let d = core.decide(store.values(), &members(), &o);
            !announced(&d.plan).contains(&("local".into(), "l2"))
        })
        .await
    );
    let d = core.decide(store.values(), &members(), &o);
    let wanted = wanted_statuses("node2", &d.plan);
    let (_, err) = writer.sync(&client, &store, &o, &wanted).await;
    assert!(err.is_none());
    assert!(
        api.list("servicel2statuses")
            .iter()
            .all(|s| s.pointer("/status/serviceName") != Some(&json!("local")))
    );
    for t in tasks {
        t.abort();
    }
}

/// A round over some services (`sync_some`, what a change costs) writes their objects alone,
/// found by what earlier rounds and its own creates saw: another service's object deleted
/// behind its back is left to the next whole round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_over_some_services_writes_theirs_alone() {
    let (api, client) = FakeApi::start();
    cluster(&api);
    let o = opts("node2");
    let (store, tasks) = watching(client.clone(), &o).await;
    let mut core = Core::default();
    let mut writer = StatusWriter::default();
    let d = core.decide(store.values(), &members(), &o);
    let wanted = wanted_statuses("node2", &d.plan);
    let (_, err) = writer.sync(&client, &store, &o, &wanted).await;
    assert!(err.is_none(), "{err:?}");
    // Every object shows in the store, with its status (written after the create).
    let total = wanted.l2.len() + wanted.bgp.len();
    assert!(
        eventually(5, || {
            let (l2, bgp) = (
                store.of_kind("servicel2statuses"),
                store.of_kind("servicebgpstatuses"),
            );
            l2.len() + bgp.len() == total
                && l2.iter().chain(&bgp).all(|o| o.get("status").is_some())
        })
        .await
    );
    // A round that sees what it created stops waiting for it to show.
    let (n, _) = writer.sync(&client, &store, &o, &wanted).await;
    assert_eq!(n, 0);
    let local: BTreeSet<_> = wanted
        .l2
        .keys()
        .filter(|k| k.name == "local")
        .cloned()
        .collect();
    assert_eq!(local.len(), 1);
    let l2_of = |name: &str| {
        api.list("servicel2statuses")
            .into_iter()
            .filter(|s| s.pointer("/status/serviceName") == Some(&json!(name)))
            .collect::<Vec<_>>()
    };
    // Another service's object goes behind the writer's back.
    let other = api
        .list("servicebgpstatuses")
        .into_iter()
        .next()
        .expect("a ServiceBGPStatus");
    let other_name = other["metadata"]["name"].as_str().unwrap().to_string();
    api.remove("servicebgpstatuses", "metallb-system", &other_name);
    // The Local service loses its endpoint on node2: a round over it deletes its object.
    let mut gone = wanted.clone();
    gone.l2.retain(|k, _| k.name != "local");
    api.clear_writes();
    let (n, err) = writer.sync_some(&client, &store, &o, &gone, &local).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(n, 1, "{:#?}", api.writes());
    assert!(l2_of("local").is_empty());
    // It comes back: created, and the next round over it finds what it created.
    let (n, err) = writer.sync_some(&client, &store, &o, &wanted, &local).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(n, 1);
    assert_eq!(l2_of("local").len(), 1);
    let created = l2_of("local")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(5, || store
            .get("servicel2statuses", "metallb-system", &created)
            .is_some())
        .await
    );
    let (n, _) = writer.sync_some(&client, &store, &o, &gone, &local).await;
    assert_eq!(n, 1);
    assert!(l2_of("local").is_empty());
    assert!(
        eventually(5, || store
            .get("servicel2statuses", "metallb-system", &created)
            .is_none())
        .await
    );
    // Nothing above touched the other service's object; a whole round puts it back.
    assert!(
        api.get("servicebgpstatuses", "metallb-system", &other_name)
            .is_none()
    );
    assert_eq!(api.list("servicebgpstatuses").len(), wanted.bgp.len() - 1);
    assert!(
        eventually(5, || store.of_kind("servicebgpstatuses").len()
            == wanted.bgp.len() - 1)
        .await
    );
    api.clear_writes();
    let (_, err) = writer.sync(&client, &store, &o, &wanted).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(api.list("servicebgpstatuses").len(), wanted.bgp.len());
    assert_eq!(l2_of("local").len(), 1, "{:#?}", api.writes());
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_stays_while_the_api_server_is_down_and_a_broken_object_changes_nothing() {
    let (api, client) = FakeApi::start();
    cluster(&api);
    let o = opts("node2");
    let (store, tasks) = watching(client.clone(), &o).await;
    let mut core = Core::default();
    let before = core.decide(store.values(), &members(), &o).plan;
    assert!(!before.announcements.is_empty());

    api.set_down(true);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let during = core.decide(store.values(), &members(), &o).plan;
    assert_eq!(before.announcements, during.announcements);
    // Membership still moves announcements while the API is away: without node1, node2 owns
    // the cluster service (if it did not already).
    let without_1: BTreeSet<String> = ["node2", "node3"].iter().map(|s| s.to_string()).collect();
    let p = core.decide(store.values(), &without_1, &o).plan;
    assert!(announced(&p).contains(&("cluster".into(), "l2")));
    api.set_down(false);

    // An invalid pool (overlapping another) is refused; the previous pools stay in force.
    api.put("ipaddresspools", pool("clash", &["192.0.2.0/24"]));
    assert!(
        eventually(10, || {
            store
                .of_kind("ipaddresspools")
                .iter()
                .any(|p| p.pointer("/metadata/name") == Some(&json!("clash")))
        })
        .await
    );
    let d = core.decide(store.values(), &members(), &o);
    assert!(!d.config_errors.is_empty());
    assert!(d.stale);
    let ips = |p: &Plan| -> BTreeSet<IpAddr> { p.announcements.iter().map(|a| a.ip).collect() };
    assert_eq!(ips(&d.plan), ips(&before));
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_assigned_is_sent_once_per_change_not_per_pass() {
    let (api, client) = FakeApi::start();
    cluster(&api);
    let o = opts("node2");
    let (store, tasks) = watching(client.clone(), &o).await;
    let mut core = Core::default();
    let mut events = lb_k8s::speaker::AssignedEvents::new(client.clone(), "node2");
    let count = |api: &FakeApi, name: &str| {
        api.writes()
            .iter()
            .filter(|w| {
                // A repeat within minutes is a PATCH of the event's series (kube's recorder).
                (w.method == "POST" || w.method == "PATCH")
                    && w.path.contains("/events")
                    && w.body.get("reason") == Some(&json!("nodeAssigned"))
                    && w.body.pointer("/regarding/name") == Some(&json!(name))
            })
            .count()
    };
    for _ in 0..5 {
        let d = core.decide(store.values(), &members(), &o);
        let wanted = wanted_statuses("node2", &d.plan);
        assert_eq!(events.update(&store, "node2", &wanted).await, 0);
    }
    assert_eq!(count(&api, "local"), 1);
    assert_eq!(count(&api, "bgp-cluster"), 1);
    let note = api
        .writes()
        .iter()
        .find(|w| w.body.pointer("/regarding/name") == Some(&json!("local")))
        .and_then(|w| w.body.get("note").cloned());
    assert_eq!(
        note,
        Some(json!(
            "announcing from node \"node2\" with protocol \"layer2\""
        ))
    );
    // The service leaves this node and comes back: that is a change, told again.
    let none = wanted_statuses("node2", &Plan::default());
    events.update(&store, "node2", &none).await;
    let d = core.decide(store.values(), &members(), &o);
    let wanted = wanted_statuses("node2", &d.plan);
    events.update(&store, "node2", &wanted).await;
    assert_eq!(count(&api, "local"), 2);
    for t in tasks {
        t.abort();
    }
}
