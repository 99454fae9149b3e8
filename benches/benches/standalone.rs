//! A standalone node's pass when the members change, at 1k, 10k and 100k services (the plan
//! bench's file, `lb_benches::services_yaml`: an IPv4 L2 pool, an IPv6 BGP pool, 3 Nodes,
//! every tenth service `externalTrafficPolicy: Local` with one EndpointSlice), planned for
//! node1 under the standalone rules (a service without slices is served on every node), in
//! the same run:
//!
//! - `whole`: what every pass did before, and still does for a new configuration or ledger:
//!   the agreed allocations followed from the ledger, every service planned, the whole plan
//!   handed to the announcers (`Runtime::apply`). (The state file's save, a no-op when the
//!   allocations did not change, is lb-bin's and not timed.)
//! - `leave`: node3 leaves the members (timed; it rejoins untimed), what a failover is:
//!   `Parts::members_changed` re-plans the services node3 had won, and `Runtime::apply_change`
//!   hands each announcer its difference.
//! - `join`: node3 rejoins (timed): it may win any election, so every service is planned
//!   again, and those whose part moved are applied as a change.
//! - `edit`: one EndpointSlice edited in the file (read already; the reading is the plan
//!   bench's): the configurations compared (`Config::services_changed_since`), the ledger
//!   followed and compared with the allocations in force, the changed service planned
//!   (`Parts::services_changed`) and applied as a change.
//!
//! The announcers are tables by address (`lb_benches::Table`); nothing leaves the process.
//!
//! And the allocator's decision after one service was added to the file (group
//! `standalone_decide`, same sizes, same run):
//!
//! - `whole`: `Agreement::decide`, what the allocator did on every reload before: every
//!   service's claim gathered from the ledgers and the state file, every service allocated
//!   afresh, the ledger built and compared.
//! - `services`: `Agreement::decide_services` with the one service touched: it alone (and any
//!   left pending) allocated from the allocator the last decision kept, the ledger edited in
//!   place. The service is removed again untimed.
//!
//! And a standalone reload of one port edited, to the allocations followed (group
//! `standalone_reload`, see `bench_reload`).

/// On mimalloc with `--features mimalloc`, as in `lb-bin`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lb_benches::{SIZES, Table};
use lb_core::members::agree::Agreement;
use lb_core::parts::{Parts, differing};
use lb_core::{Announcer, PlanInput, Protocol, Rules, Runtime};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("standalone_members");
    g.sample_size(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let members: BTreeSet<String> = (1..=3).map(|n| format!("node{n}")).collect();
    let without: BTreeSet<String> = members.iter().filter(|m| *m != "node3").cloned().collect();
    for (n, label) in SIZES {
        let loaded = lb_core::load_str(&lb_benches::services_yaml(n));
        assert!(loaded.is_valid(), "{:?}", loaded.errors.first());
        let config = loaded.config;
        // node1 allocates alone, as the cluster's allocator would.
        let mut agreement = Agreement::new("node1", 1, BTreeMap::new());
        let decided = agreement.decide(&config);
        assert!(decided.ledger.is_some());
        let (agreed, unsure) = agreement.agreed(&config);
        assert!(
            unsure.is_empty() && agreed.len() == n,
            "{} unsure",
            unsure.len()
        );
        let (l2, bgp) = (Table::new(Protocol::Layer2), Table::new(Protocol::Bgp));
        let mut runtime = Runtime::new(
            "node1",
            vec![
                l2.clone() as Arc<dyn Announcer>,
                bgp.clone() as Arc<dyn Announcer>,
            ],
        );
        let input =
            |members| PlanInput::new(&config, &agreed, members, "node1", Rules::standalone());
        g.bench_function(BenchmarkId::new("whole", label), |b| {
            b.iter(|| {
                let (agreed, _) = agreement.agreed(&config);
                let plan = lb_core::plan(&PlanInput::new(
                    &config,
                    &agreed,
                    &members,
                    "node1",
                    Rules::standalone(),
                ));
                let applied = rt.block_on(runtime.apply(&plan, &BTreeSet::new(), 0));
                assert!(applied.errors.is_empty(), "{:?}", applied.errors);
                black_box(plan.announcements.len())
            })
        });
        let mut parts = Parts::plan_all(&input(&members));
        let whole = parts.plan();
        let announced = whole.announcements.len();
        rt.block_on(runtime.apply(&whole, &BTreeSet::new(), 0));
        assert_eq!(l2.len() + bgp.len(), announced);
        // The members change to `after` from `before`; returns how many services moved.
        let mut change = |parts: &mut Parts, before, after| {
            let moved = parts.members_changed(&input(after), before);
            let n = moved.len();
            let applied = rt.block_on(runtime.apply_change(moved, &BTreeSet::new(), 0));
            assert!(applied.errors.is_empty(), "{:?}", applied.errors);
            n
        };
        g.bench_function(BenchmarkId::new("leave", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let moved = change(&mut parts, &members, &without);
                    spent += started.elapsed();
                    assert!(moved > 0);
                    change(&mut parts, &without, &members);
                }
                spent
            })
        });
        g.bench_function(BenchmarkId::new("join", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    change(&mut parts, &members, &without);
                    let started = Instant::now();
                    let moved = change(&mut parts, &without, &members);
                    spent += started.elapsed();
                    assert!(moved > 0);
                }
                spent
            })
        });
        // One EndpointSlice edited: svc3's endpoint (ETP Local) moves from node1 to node2, so
        // node1 stops announcing it. Timed: what a standalone node's services pass does with
        // the file read (`Parts::services_changed`, as `lb-bin` serves it): the
        // configurations compared, the ledger followed and compared with the allocations in
        // force, the changed services planned, the difference applied. It moves back untimed.
        let mut edited = config.clone();
        edited
            .endpoint_slices
            .iter_mut()
            .find(|s| s.namespace == "ns3" && s.service.as_deref() == Some("svc3"))
            .expect("svc3 has a slice")
            .endpoints[0]
            .node = Some("node2".into());
        let mut edit = |parts: &mut Parts, from: &lb_core::Config, to: &lb_core::Config| {
            let mut touched = to
                .services_changed_since(from)
                .expect("only a slice changed");
            let (now, _) = agreement.agreed(to);
            touched.extend(differing(&agreed, &now));
            let input = PlanInput::new(to, &now, &members, "node1", Rules::standalone());
            let changed = parts.services_changed(&input, &touched);
            let n = changed.len();
            let applied = rt.block_on(runtime.apply_change(changed, &BTreeSet::new(), 0));
            assert!(applied.errors.is_empty(), "{:?}", applied.errors);
            n
        };
        g.bench_function(BenchmarkId::new("edit", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let moved = edit(&mut parts, &config, &edited);
                    spent += started.elapsed();
                    assert_eq!(moved, 1);
                    edit(&mut parts, &edited, &config);
                }
                spent
            })
        });
        // What the announcers hold is the plan in force, after all of it.
        assert_eq!(parts.plan(), lb_core::plan(&input(&members)));
        assert_eq!(l2.len() + bgp.len(), announced);
    }
    g.finish();
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("standalone_decide");
    g.sample_size(10);
    for (n, label) in SIZES {
        let loaded = lb_core::load_str(&lb_benches::services_yaml(n));
        assert!(loaded.is_valid(), "{:?}", loaded.errors.first());
        let config = loaded.config;
        let mut agreement = Agreement::new("node1", 1, BTreeMap::new());
        assert!(agreement.decide(&config).ledger.is_some());
        // One more service, a copy of the first under a new name.
        let mut added = config.clone();
        let mut svc = config.services.values().next().expect("services").clone();
        svc.key.name = "added".into();
        let key = svc.key.clone();
        added.services.insert(key.clone(), svc);
        let touched: BTreeSet<_> = [key.clone()].into();
        let entry = key.to_string();
        g.bench_function(BenchmarkId::new("whole", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let d = agreement.decide(&added);
                    spent += started.elapsed();
                    assert!(d.ledger.is_some());
                    assert!(agreement.decide(&config).ledger.is_some());
                }
                spent
            })
        });
        g.bench_function(BenchmarkId::new("services", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let d = agreement.decide_services(&added, &touched);
                    spent += started.elapsed();
                    assert!(d.ledger.is_some());
                    assert!(agreement.current().entries.contains_key(&entry));
                    let back = agreement.decide_services(&config, &touched);
                    assert!(back.ledger.is_some());
                }
                spent
            })
        });
        assert_eq!(agreement.current().entries.len(), n);
    }
    g.finish();
}

/// One port edited in the file, to the allocations followed: the reload and the follow of a
/// standalone node before and after they became changes. Same sizes, same run:
///
/// - `whole`: the file read again through the document cache (only the edited document
///   parsed, every object copied and validated), compared with the configuration in force
///   (`==`, then `services_changed_since`), the allocations rebuilt from the ledger
///   (`Agreement::agreed`) and compared with those in force.
/// - `in_place`: `reload_str`, which changes the configuration in force by the edited Service
///   alone, then `Agreement::agreed_services` over the service it touched and the ledger's
///   changes (none).
///
/// The file is edited back untimed.
fn bench_reload(c: &mut Criterion) {
    use lb_core::config::{DocumentCache, Reloaded, load_str_cached, reload_str};
    let mut g = c.benchmark_group("standalone_reload");
    g.sample_size(10);
    for (n, label) in SIZES {
        let text = lb_benches::services_yaml(n);
        let edited = text.replacen("ports: [{port: 80}]", "ports: [{port: 81}]", 1);
        assert_ne!(text, edited);
        let mut agreement = Agreement::new("node1", 1, BTreeMap::new());
        let mut cache = DocumentCache::default();
        let config = load_str_cached(&text, &mut cache).config;
        cache.taken();
        assert!(agreement.decide(&config).ledger.is_some());
        assert!(agreement.take_changed().is_none());
        let (agreed, unsure) = agreement.agreed(&config);
        g.bench_function(BenchmarkId::new("whole", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let l = load_str_cached(&edited, &mut cache);
                    assert!(l.is_valid() && l.config != config);
                    let touched = l.config.services_changed_since(&config);
                    let (now, _) = agreement.agreed(&l.config);
                    let moved = differing(&agreed, &now);
                    spent += started.elapsed();
                    assert_eq!(touched.map(|t| t.len()), Some(1));
                    assert!(moved.is_empty());
                    black_box(l);
                    load_str_cached(&text, &mut cache);
                }
                spent
            })
        });
        // The cache holds the whole read's documents, and the configuration in force is theirs.
        cache.taken();
        let mut config = config;
        let (mut agreed, mut unsure): (_, BTreeSet<String>) =
            (agreed, unsure.into_iter().collect());
        let mut change = |to: &str, config: &mut lb_core::Config| {
            let Reloaded::Services { touched, .. } = reload_str(to, &mut cache, config) else {
                panic!("a port edited is a change of one service");
            };
            let mut scope = touched.clone();
            scope.extend(agreement.take_changed().expect("listed"));
            let moved = agreement.agreed_services(config, &scope, &mut agreed, &mut unsure);
            (touched.len(), moved.len())
        };
        g.bench_function(BenchmarkId::new("in_place", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let done = change(&edited, &mut config);
                    spent += started.elapsed();
                    assert_eq!(done, (1, 0));
                    change(&text, &mut config);
                }
                spent
            })
        });
        assert_eq!(config, lb_core::load_str(&text).config);
    }
    g.finish();
}

criterion_group!(benches, bench, bench_decide, bench_reload);
criterion_main!(benches);
