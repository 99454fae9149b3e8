//! The speaker's decision (lb-k8s `speaker::Core`) at 1k, 10k and 100k LoadBalancer services
//! holding addresses (an L2 pool and a BGP pool, 3 nodes, every tenth service
//! `externalTrafficPolicy: Local` with one EndpointSlice), in the same run:
//!
//! - `whole`: `Core::decide`, what every watch event used to cost: every watched object read
//!   and validated again, then the whole plan.
//! - `change`: one Service's event (it gets its address) served by `Core::change` from what
//!   the last decision kept: the time from the event to the decided announcement change.
//! - `slice`: the same for one EndpointSlice's event (its endpoint moves to another node).
//! - `applied`: one Service's event to the announcers' change: `Core::change` (it hands over
//!   the service's part), `Runtime::apply_change` handing each announcer its difference.
//! - `applied_whole`: the same event applied as the loop did before: `Core::change`, then the
//!   whole plan (`Core::plan`) handed to `Runtime::apply`.
//! - `node`: node3's network becomes unavailable (and available again): every service is
//!   planned again from what was kept, and those whose part changed are applied as a change
//!   (before this, a whole decision).
//! - `node_label`: node3 gets a label no selector reads (and another value of it, in turn): the
//!   plan reads the Node alike, so no service is planned again.
//! - `node_down`: node3's network becomes unavailable (timed; it comes back untimed): a node that
//!   can no longer win moves only the services whose layer 2 election it had won, and those
//!   alone are planned again and applied.
//! - `leave`: node3 leaves the members (timed; it rejoins untimed), what a failover is: the
//!   same, from the same kept winners (before this, a whole decision: `whole`).
//! - `join`: node3 rejoins the members (timed): a walk of what was kept finds the services it
//!   may take (`Planner::may_take`), those alone are planned again, and those whose part moved
//!   are applied.
//!
//! The announcers are tables by address (what the real ones keep; they need raw sockets and
//! peers, which a bench must not touch: `benches/l2-takeover.sh` times the layer 2 one in a
//! namespace). Nothing leaves the process.

/// On mimalloc with `--features mimalloc`, as in `lb-bin`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_benches::{SIZES, Table};
use lb_core::{Announcer, Protocol, Runtime};
use lb_k8s::speaker::{Core, Options};
use serde_json::{Value, json};

fn v4(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn service(i: usize, with_ip: bool) -> Value {
    let ipv6 = i % 10 == 5;
    let ip = if ipv6 {
        format!("2001:db8:1::{:x}:{:x}", i >> 16, i & 0xffff)
    } else {
        v4(i)
    };
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "default",
                     "annotations": {"metallb.io/ip-allocated-from-pool": if ipv6 { "bgp" } else { "l2" }}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                 "externalTrafficPolicy": if i.is_multiple_of(10) { "Local" } else { "Cluster" },
                 "ipFamilies": [if ipv6 { "IPv6" } else { "IPv4" }]},
    });
    if with_ip {
        v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
    }
    v
}

/// Node `n` with the label `rack: r{rack}`, which no selector reads.
fn labelled_node(n: usize, rack: u8) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": format!("node{n}"), "labels": {"rack": format!("r{rack}")}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn node(n: usize, unavailable: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": format!("node{n}")},
           "status": {"conditions": [{"type": "Ready", "status": "True"},
                                     {"type": "NetworkUnavailable",
                                      "status": if unavailable { "True" } else { "False" }}]}})
}

fn slice(i: usize, node: usize) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("svc-{i}-x"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
           "addressType": "IPv4",
           "endpoints": [{"addresses": ["192.0.2.10"], "nodeName": format!("node{node}"),
                          "conditions": {"ready": true}}]})
}

fn objects(n: usize) -> Vec<Value> {
    let mut out = vec![
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "l2", "namespace": "metallb-system"},
               "spec": {"addresses": ["10.0.0.0/8"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "bgp", "namespace": "metallb-system"},
               "spec": {"addresses": ["2001:db8:1::/64"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "l2", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["l2"]}}),
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
               "metadata": {"name": "router", "namespace": "metallb-system"},
               "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1"}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "bgp", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["bgp"]}}),
    ];
    for node in 1..=3 {
        out.push(json!({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": format!("node{node}")},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    for i in 0..n {
        out.push(service(i, true));
        if i.is_multiple_of(10) {
            out.push(slice(i, 1 + i % 3));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("speaker_decision");
    g.sample_size(10);
    let opts = Options::new("node1", "metallb-system");
    let members: BTreeSet<String> = (1..=3).map(|n| format!("node{n}")).collect();
    for (n, label) in SIZES {
        let objs = objects(n);
        let mut core = Core::default();
        g.bench_function(BenchmarkId::new("whole", label), |b| {
            b.iter(|| black_box(core.decide(&objs, &members, &opts)))
        });
        core.decide(&objs, &members, &opts);
        // Service 7 loses its address and gets it again: the change measured is the second.
        let key = (
            "services".to_string(),
            "default".to_string(),
            "svc-7".to_string(),
        );
        g.bench_function(BenchmarkId::new("change", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let change = vec![(key.clone(), Some(service(7, false)))];
                    core.change(change, &members, &opts).expect("kept");
                    let change = vec![(key.clone(), Some(service(7, true)))];
                    let started = Instant::now();
                    let touched = core.change(change, &members, &opts).expect("kept");
                    spent += started.elapsed();
                    assert_eq!(touched.len(), 1);
                }
                spent
            })
        });
        // Service 10's one endpoint moves between node2 and node1.
        let key = (
            "endpointslices".to_string(),
            "default".to_string(),
            "svc-10-x".to_string(),
        );
        g.bench_function(BenchmarkId::new("slice", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    let change = vec![(key.clone(), Some(slice(10, 1 + (i % 2) as usize)))];
                    let started = Instant::now();
                    let touched = core.change(change, &members, &opts).expect("kept");
                    spent += started.elapsed();
                    assert_eq!(touched.len(), 1);
                }
                spent
            })
        });
        // Service 7 again, to the announcers: applied as a change, and whole as before.
        let key = (
            "services".to_string(),
            "default".to_string(),
            "svc-7".to_string(),
        );
        let l2 = Table::new(Protocol::Layer2);
        let bgp = Table::new(Protocol::Bgp);
        let mut runtime =
            Runtime::new("node1", vec![l2.clone() as Arc<dyn Announcer>, bgp.clone()]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let d = core.decide(&objs, &members, &opts);
        rt.block_on(runtime.apply(&d.plan, &BTreeSet::new(), 0));
        let announced = d.plan.announcements.len();
        let change_applied = |core: &mut Core, runtime: &mut Runtime, with_ip: bool| {
            let change = vec![(key.clone(), Some(service(7, with_ip)))];
            let touched = core.change(change, &members, &opts).expect("kept");
            rt.block_on(runtime.apply_change(touched, &BTreeSet::new(), 0))
        };
        g.bench_function(BenchmarkId::new("applied", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    change_applied(&mut core, &mut runtime, false);
                    let started = Instant::now();
                    let applied = change_applied(&mut core, &mut runtime, true);
                    spent += started.elapsed();
                    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
                }
                spent
            })
        });
        assert_eq!(l2.len() + bgp.len(), announced);
        g.bench_function(BenchmarkId::new("applied_whole", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    change_applied(&mut core, &mut runtime, false);
                    let change = vec![(key.clone(), Some(service(7, true)))];
                    let started = Instant::now();
                    core.change(change, &members, &opts).expect("kept");
                    let plan = core.plan();
                    let applied = rt.block_on(runtime.apply(&plan, &BTreeSet::new(), 0));
                    spent += started.elapsed();
                    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
                }
                spent
            })
        });
        assert_eq!(l2.len() + bgp.len(), announced);
        let key = ("nodes".to_string(), String::new(), "node3".to_string());
        let mut down = false;
        g.bench_function(BenchmarkId::new("node", label), |b| {
            b.iter(|| {
                down = !down;
                let change = vec![(key.clone(), Some(node(3, down)))];
                let touched = core.change(change, &members, &opts).expect("kept");
                let n = touched.len();
                let applied = rt.block_on(runtime.apply_change(touched, &BTreeSet::new(), 0));
                assert!(applied.errors.is_empty(), "{:?}", applied.errors);
                n
            })
        });
        // node3 as the `node` bench left it (up or down) becomes up and labelled.
        core.change(
            vec![(key.clone(), Some(labelled_node(3, 0)))],
            &members,
            &opts,
        )
        .expect("kept");
        let mut rack = 0;
        g.bench_function(BenchmarkId::new("node_label", label), |b| {
            b.iter(|| {
                rack = (rack + 1) % 2;
                let change = vec![(key.clone(), Some(labelled_node(3, rack)))];
                let touched = core.change(change, &members, &opts).expect("kept");
                assert!(touched.is_empty(), "{} services moved", touched.len());
                touched.len()
            })
        });
        // The change of node3 or of the members, to the announcers; returns how many services
        // were planned again.
        let moved = |core: &mut Core,
                     runtime: &mut Runtime,
                     change: Vec<lb_k8s::speaker::ObjectChange>,
                     members: &BTreeSet<String>| {
            let touched = core.change(change, members, &opts).expect("kept");
            let n = touched.len();
            let applied = rt.block_on(runtime.apply_change(touched, &BTreeSet::new(), 0));
            assert!(applied.errors.is_empty(), "{:?}", applied.errors);
            n
        };
        let down = |down: bool| vec![(key.clone(), Some(node(3, down)))];
        g.bench_function(BenchmarkId::new("node_down", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    moved(&mut core, &mut runtime, down(false), &members);
                    let started = Instant::now();
                    let n = moved(&mut core, &mut runtime, down(true), &members);
                    spent += started.elapsed();
                    assert!(n > 0);
                }
                spent
            })
        });
        moved(&mut core, &mut runtime, down(false), &members);
        let without: BTreeSet<String> = members.iter().filter(|m| *m != "node3").cloned().collect();
        g.bench_function(BenchmarkId::new("leave", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let n = moved(&mut core, &mut runtime, Vec::new(), &without);
                    spent += started.elapsed();
                    assert!(n > 0);
                    moved(&mut core, &mut runtime, Vec::new(), &members);
                }
                spent
            })
        });
        g.bench_function(BenchmarkId::new("join", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    moved(&mut core, &mut runtime, Vec::new(), &without);
                    let started = Instant::now();
                    let n = moved(&mut core, &mut runtime, Vec::new(), &members);
                    spent += started.elapsed();
                    assert!(n > 0);
                }
                spent
            })
        });
        // What the announcers hold is the plan in force, after all of it.
        assert_eq!(l2.len() + bgp.len(), core.plan().announcements.len());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
