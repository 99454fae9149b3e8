//! The controller's reconcile pass (lb-k8s `controller::Core`), at 1k, 10k and 100k
//! LoadBalancer services, in the same run:
//!
//! - `whole`: the pass every watch event used to run, and every resync still runs: every
//!   watched object read and validated again (from the watch cache's shared objects, not
//!   copies), then one allocation pass. The event is one new
//!   service, which is allocated (then released again, untimed, so every iteration sees the
//!   same state).
//! - `change`: the same event served by `Core::change` from what the last pass kept: the new
//!   service alone is read, allocated and decided. This is the time from the event to the
//!   decided status write.
//! - `restart` (1k, 10k): a fresh controller (or a new leader) whose services all hold
//!   addresses in their status; it re-claims every one and writes nothing.
//! - `read_only` (1k, 10k): the same objects through `load_values` alone.
//!
//! Nothing leaves the process.

/// On mimalloc with `--features mimalloc`, as in `lb-bin`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_core::objects::ServiceKey;
use lb_k8s::controller::Core;
use serde_json::{Value, json};

const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (10_000, "10k"), (100_000, "100k")];

/// A pool of 2001:db8:1::/108 and `n` services, each holding the address i.
fn objects(n: usize) -> Vec<Value> {
    let mut out = vec![json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "big", "namespace": "metallb-system"},
        "spec": {"addresses": ["2001:db8:1::/108"]}
    })];
    for i in 0..n {
        out.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i:05}"), "namespace": "default",
                         "annotations": {"metallb.io/ip-allocated-from-pool": "big"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}],
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack"},
            "status": {"loadBalancer": {"ingress": [{"ip": format!("2001:db8:1::{:x}:{:x}", (i + 1) >> 16, (i + 1) & 0xffff)}]}}
        }));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("controller_pass");
    g.sample_size(10);
    for (n, label) in SIZES {
        let objs = objects(n);
        if n <= 10_000 {
            g.bench_function(BenchmarkId::new("read_only", label), |b| {
                b.iter(|| black_box(lb_core::config::load_values(&objs)))
            });
            g.bench_function(BenchmarkId::new("restart", label), |b| {
                b.iter(|| {
                    let mut core = Core::default();
                    let pass = core.pass(&objs, None);
                    assert!(pass.writes.is_empty());
                    black_box(pass)
                })
            });
        }
        let mut core = Core::default();
        core.pass(&objs, None);
        let new = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "new", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], "ipFamilies": ["IPv6"]}
        });
        let mut with_new = objs.clone();
        with_new.push(new.clone());
        g.bench_function(BenchmarkId::new("whole", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let pass = core.pass(&with_new, None);
                    spent += started.elapsed();
                    assert_eq!(pass.writes.len(), 1);
                    // The next iteration starts from the same state: the new service goes.
                    core.pass(&objs, None);
                }
                spent
            })
        });
        let key = ServiceKey::new("default", "new");
        g.bench_function(BenchmarkId::new("change", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let changed = vec![(key.clone(), Some(new.clone()))];
                    let started = Instant::now();
                    let pass = core.change(changed, None).expect("kept");
                    spent += started.elapsed();
                    assert_eq!(pass.writes.len(), 1);
                    core.change(vec![(key.clone(), None)], None).expect("kept");
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
