//! The controller's reconcile pass (lb-k8s `controller::Core::pass`): every watched object read
//! and validated again, then one allocation pass, as after any watch event. Measured at 1k and
//! 10k LoadBalancer services in two situations:
//!
//! - `restart`: a fresh controller (or a new leader) whose services all hold addresses in their
//!   status; it re-claims every one and writes nothing.
//! - `steady`: the same controller on its next event (one more service appears; it is
//!   allocated and then released again so every iteration sees the same state).
//!
//! Beside them, `read_only` is the same objects through `load_values` alone: the floor that
//! any level-triggered controller re-reading its cache pays, so the difference is the
//! allocator's share. Nothing leaves the process.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_k8s::controller::Core;
use serde_json::{Value, json};

const SIZES: [(usize, &str); 2] = [(1_000, "1k"), (10_000, "10k")];

/// A pool of 2001:db8:1::/112 and `n` services, each holding the address i.
fn objects(n: usize) -> Vec<Value> {
    let mut out = vec![json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "big", "namespace": "metallb-system"},
        "spec": {"addresses": ["2001:db8:1::/112"]}
    })];
    for i in 0..n {
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i:05}"), "namespace": "default",
                         "annotations": {"metallb.io/ip-allocated-from-pool": "big"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"},
            "status": {"loadBalancer": {"ingress": [{"ip": format!("2001:db8:1::{:x}", i + 1)}]}}
        }));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("controller_pass");
    g.sample_size(10);
    for (n, label) in SIZES {
        let objs = objects(n);
        g.bench_function(BenchmarkId::new("read_only", label), |b| {
            b.iter(|| black_box(lb_core::config::load_values(objs.clone())))
        });
        g.bench_function(BenchmarkId::new("restart", label), |b| {
            b.iter(|| {
                let mut core = Core::default();
                let pass = core.pass(objs.clone(), None);
                assert!(pass.writes.is_empty());
                black_box(pass)
            })
        });
        let mut core = Core::default();
        core.pass(objs.clone(), None);
        let mut with_new = objs.clone();
        with_new.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "new", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "ipFamilies": ["IPv6"]}
        }));
        g.bench_function(BenchmarkId::new("steady", label), |b| {
            b.iter(|| {
                let pass = core.pass(with_new.clone(), None);
                assert_eq!(pass.writes.len(), 1);
                // The next iteration starts from the same state: the new service goes again.
                core.pass(objs.clone(), None);
                black_box(pass)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
