//! The controller's pass over a change (`Core::change`) against its whole pass: after any
//! sequence of Service changes served one at a time (their status writes applied, and their
//! echoes seen by the next pass, as the run loop does), the cluster is where a whole pass
//! would leave it: a whole pass of the same controller, and of a fresh one (a new leader),
//! writes nothing, and no address is given twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use lb_core::objects::ServiceKey;
use lb_k8s::controller::{Core, Pass, pool_annotation};
use proptest::prelude::*;
use serde_json::{Value, json};

/// What a step makes of one service's spec and annotations.
#[derive(Clone, Debug)]
struct Spec {
    load_balancer: bool,
    /// `metallb.io/address-pool`: a, b or one that does not exist.
    pool: Option<&'static str>,
    /// `metallb.io/loadBalancerIPs`: an address (in a pool or not), or text that is none.
    ip: Option<&'static str>,
    /// The legacy-prefixed pool annotation instead of ours.
    legacy: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, Spec),
    Delete(usize),
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::bool::weighted(0.85),
        prop::option::weighted(0.3, prop::sample::select(vec!["a", "b", "nope"])),
        prop::option::weighted(
            0.2,
            prop::sample::select(vec![
                "192.0.2.1",
                "192.0.2.2",
                "198.51.100.0",
                "203.0.113.9",
                "not-an-ip",
            ]),
        ),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(load_balancer, pool, ip, legacy)| Spec {
            load_balancer,
            pool,
            ip,
            legacy,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..8usize, spec()).prop_map(|(i, s)| Op::Set(i, s)),
        1 => (0..8usize).prop_map(Op::Delete),
    ]
}

fn key(i: usize) -> ServiceKey {
    ServiceKey::new(
        if i.is_multiple_of(3) {
            "team"
        } else {
            "default"
        },
        format!("s{i}"),
    )
}

/// Pool a holds 4 addresses and b 2, for the namespace labelled gold (team) alone: with 8
/// services, some wait for an address.
fn others() -> Vec<Value> {
    vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "a", "namespace": "metallb-system"},
               "spec": {"addresses": ["192.0.2.0/30"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "b", "namespace": "metallb-system"},
               "spec": {"addresses": ["198.51.100.0/31"],
                        "serviceAllocation": {"namespaceSelectors": [{"matchLabels": {"tier": "gold"}}]}}}),
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team", "labels": {"tier": "gold"}}}),
    ]
}

/// The object `spec` makes, keeping the status and pool annotation of `old`.
fn service(k: &ServiceKey, spec: &Spec, old: Option<&Value>) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(p) = spec.pool {
        let prefix = if spec.legacy {
            "metallb.universe.tf"
        } else {
            "metallb.io"
        };
        annotations.insert(format!("{prefix}/address-pool"), json!(p));
    }
    if let Some(ip) = spec.ip {
        annotations.insert("metallb.io/loadBalancerIPs".into(), json!(ip));
    }
    let anno = pool_annotation();
    if let Some(p) = old.and_then(|o| {
        o.pointer(&format!(
            "/metadata/annotations/{}",
            anno.replace('/', "~1")
        ))
    }) {
        annotations.insert(anno, p.clone());
    }
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": k.name, "namespace": k.namespace, "annotations": annotations},
        "spec": {"type": if spec.load_balancer { "LoadBalancer" } else { "ClusterIP" },
                 "ports": [{"port": 80, "protocol": "TCP"}]},
    });
    if let Some(status) = old.and_then(|o| o.get("status")) {
        v["status"] = status.clone();
    }
    v
}

/// Applies a pass's status writes as the API server would (a merge patch of the status and
/// the pool annotation); returns the services written.
fn apply(cluster: &mut BTreeMap<ServiceKey, Value>, pass: &Pass) -> Vec<ServiceKey> {
    let mut written = Vec::new();
    for w in &pass.writes {
        let Some(obj) = cluster.get_mut(&w.key) else {
            continue;
        };
        let ingress: Vec<Value> = w
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        obj["status"] = json!({"loadBalancer": {"ingress": ingress}});
        let annotations = obj["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations");
        match &w.pool {
            Some(p) => annotations.insert(pool_annotation(), json!(p)),
            None => annotations.remove(&pool_annotation()),
        };
        written.push(w.key.clone());
    }
    written
}

fn all(cluster: &BTreeMap<ServiceKey, Value>) -> Vec<Value> {
    others()
        .into_iter()
        .chain(cluster.values().cloned())
        .collect()
}

fn ips(v: &Value) -> Vec<String> {
    v.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i["ip"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `ops` one change at a time; returns the cluster and the controller.
fn run(ops: &[Op]) -> (BTreeMap<ServiceKey, Value>, Core) {
    let mut cluster: BTreeMap<ServiceKey, Value> = BTreeMap::new();
    let mut core = Core::default();
    let first = core.pass(all(&cluster), None);
    assert!(first.writes.is_empty());
    // The echoes of the last pass's writes: the next pass sees them, as the run loop's does.
    let mut echoes: Vec<ServiceKey> = Vec::new();
    for op in ops {
        let touched = match op {
            Op::Set(i, s) => {
                let k = key(*i);
                let v = service(&k, s, cluster.get(&k));
                cluster.insert(k.clone(), v);
                k
            }
            Op::Delete(i) => {
                cluster.remove(&key(*i));
                key(*i)
            }
        };
        let keys: BTreeSet<ServiceKey> = echoes.drain(..).chain([touched]).collect();
        let changed = keys
            .into_iter()
            .map(|k| {
                let v = cluster.get(&k).cloned();
                (k, v)
            })
            .collect();
        let pass = core.change(changed, None).expect("a whole pass was run");
        echoes = apply(&mut cluster, &pass);
    }
    let changed = echoes
        .into_iter()
        .map(|k| {
            let v = cluster.get(&k).cloned();
            (k, v)
        })
        .collect();
    let pass = core.change(changed, None).expect("kept");
    assert!(
        pass.writes.is_empty(),
        "an echo decided a write: {:?}",
        pass.writes
    );
    (cluster, core)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn changes_served_one_at_a_time_leave_what_a_whole_pass_would(
        ops in prop::collection::vec(op(), 1..30),
    ) {
        let (cluster, mut core) = run(&ops);
        let again = core.pass(all(&cluster), None);
        prop_assert!(again.writes.is_empty(), "the same controller's whole pass wrote {:?}", again.writes);
        let fresh = Core::default().pass(all(&cluster), None);
        prop_assert!(fresh.writes.is_empty(), "a new leader's whole pass wrote {:?}", fresh.writes);
        let mut seen = BTreeSet::new();
        for (k, v) in &cluster {
            for ip in ips(v) {
                prop_assert!(seen.insert(ip.clone()), "{ip} given twice (again to {k})");
            }
        }
    }
}

/// The case that needs the retry: a full pool, a service waiting, one holder deleted.
#[test]
fn a_deleted_holder_frees_its_address_for_a_waiting_service() {
    let spec = Spec {
        load_balancer: true,
        pool: Some("b"),
        ip: None,
        legacy: false,
    };
    // Services 0, 3 and 6 are in the team namespace, whose pool b holds two addresses.
    let ops: Vec<Op> = [0, 3, 6]
        .into_iter()
        .map(|i| Op::Set(i, spec.clone()))
        .chain([Op::Delete(0)])
        .collect();
    let (cluster, _) = run(&ops);
    assert_eq!(ips(&cluster[&key(3)]), vec!["198.51.100.1".to_string()]);
    assert_eq!(ips(&cluster[&key(6)]), vec!["198.51.100.0".to_string()]);
}
