//! A whole `plan --node` pass at 1,000, 10,000 and 100,000 services (issue 16): reading the
//! file (`load_str`), allocating every service from scratch, and planning one node, each timed
//! and with the heap's peak above what was live before it; beside it, in the same run, the YAML
//! parser alone reading the same documents into JSON values (the floor of any reader built on
//! it). The file is generated here ([`lb_benches::services_yaml`]).
//!
//! `cargo bench --bench plan` (`-- 1000 10000` for other sizes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use lb_core::alloc::Placement;
use lb_core::alloc::converge::{converge, inputs_from};
use lb_core::{PlanInput, PoolAllocator, Rules, load_str, plan};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now =
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The heap's highest point since the last reset, kept across nested measurements.
static HIGH: AtomicIsize = AtomicIsize::new(0);

/// Runs `f`, returning its result, its time and the heap's peak above what was live before.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Duration, isize) {
    let base = LIVE.load(Ordering::Relaxed);
    HIGH.fetch_max(PEAK.load(Ordering::Relaxed), Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let out = f();
    let d = t.elapsed();
    let peak = PEAK.load(Ordering::Relaxed);
    HIGH.fetch_max(peak, Ordering::Relaxed);
    (out, d, peak - base)
}

/// As [`measure`] for a whole that contains measured parts: the peak over all of them.
fn measure_whole<T>(f: impl FnOnce() -> T) -> (T, Duration, isize) {
    let base = LIVE.load(Ordering::Relaxed);
    HIGH.store(base, Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let out = f();
    let d = t.elapsed();
    let high = HIGH
        .load(Ordering::Relaxed)
        .max(PEAK.load(Ordering::Relaxed));
    (out, d, high - base)
}

fn mb(b: isize) -> f64 {
    b as f64 / 1e6
}

/// The YAML parser alone: every document of `text` into a JSON value, as `load_str` starts.
fn parse_only(text: &str) -> usize {
    let mut n = 0;
    for doc in text.split("\n---\n") {
        let v: serde_json::Value = serde_saphyr::from_str(doc).unwrap_or_default();
        n += usize::from(v.is_object());
    }
    n
}

#[allow(clippy::print_stdout)]
fn main() {
    // `cargo test --benches` runs bench binaries too: stay quick there.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000, 100_000];
    }
    println!(
        "{:>8} {:>22} {:>22} {:>22} {:>22} | {:>22}",
        "services", "read", "allocate", "plan node1", "whole pass", "YAML parser alone"
    );
    let cell = |d: Duration, b: isize| format!("{:>7.3} s {:>8.1} MB", d.as_secs_f64(), mb(b));
    for n in sizes {
        let text = lb_benches::services_yaml(n);
        let (docs, parse_t, parse_m) = measure(|| parse_only(&text));
        assert!(docs > n, "the parser read {docs} objects");
        let ((), total_t, total_m) = measure_whole(|| {
            let (loaded, read_t, read_m) = measure(|| load_str(&text));
            assert!(loaded.is_valid(), "{:?}", loaded.errors.first());
            let config = loaded.config;
            let (outcome, alloc_t, alloc_m) = measure(|| {
                let pools: Vec<_> = config.pools.values().cloned().collect();
                let mut a = PoolAllocator::with_placement(&pools, Placement::default());
                converge(&mut a, inputs_from(&config, None))
            });
            assert_eq!(outcome.allocated.len(), n);
            let members: BTreeSet<String> = config.nodes.keys().cloned().collect();
            let (p, plan_t, plan_m) = measure(|| {
                plan(&PlanInput::new(
                    &config,
                    &outcome.allocated,
                    &members,
                    "node1",
                    Rules::standalone(),
                ))
            });
            assert!(!p.announcements.is_empty());
            print!(
                "{n:>8} {:>22} {:>22} {:>22}",
                cell(read_t, read_m),
                cell(alloc_t, alloc_m),
                cell(plan_t, plan_m)
            );
        });
        println!(
            " {:>22} | {:>22}",
            cell(total_t, total_m),
            cell(parse_t, parse_m)
        );
    }
}
