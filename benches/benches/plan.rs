//! A whole `plan --node` pass at 1,000, 10,000 and 100,000 services (issue 16): reading the
//! file (`load_str`), allocating every service from scratch, and planning one node, each timed
//! and with the heap's peak above what was live before it; beside it, in the same run, the YAML
//! parser alone reading the same documents into JSON values (serde-saphyr, as before the fast
//! path, and lb-core's fast path, `config::yaml`, on one thread each), and yaml-rust2 reading the same documents into its own tree (a faster pure-Rust parser,
//! measured as the alternative; serde_yaml, deprecated and on DEPENDENCIES.md's avoid list, is
//! not built here). The file is generated here ([`lb_benches::services_yaml`]).
//!
//! `cargo bench --bench plan` (`-- 1000 10000` for other sizes).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use lb_benches::{Counting, LIVE, PEAK};
use lb_core::alloc::Placement;
use lb_core::alloc::converge::{converge, inputs_from};
use lb_core::config::{DocumentCache, load_str_cached};
use lb_core::{PlanInput, PoolAllocator, Rules, load_str, plan};

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

/// lb-core's fast path alone (`config::yaml::value`: its block scanner, then its parser tier,
/// then serde-saphyr where neither is certain):
/// every document of `text` into a JSON value, on one thread as the others.
fn parse_only_fast(text: &str) -> usize {
    let mut n = 0;
    for doc in text.split("\n---\n") {
        let v = lb_core::config::yaml::value(doc).unwrap_or_default();
        n += usize::from(v.is_object());
    }
    n
}

/// yaml-rust2 alone: every document of `text` into its tree.
fn parse_only_yaml_rust2(text: &str) -> usize {
    let mut n = 0;
    for doc in text.split("\n---\n") {
        let docs = yaml_rust2::YamlLoader::load_from_str(doc).unwrap_or_default();
        n += docs.iter().filter(|d| d.as_hash().is_some()).count();
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
        "{:>8} {:>22} {:>22} {:>22} {:>22} | {:>22} {:>22} {:>22}",
        "services",
        "read",
        "allocate",
        "plan node1",
        "whole pass",
        "serde-saphyr alone",
        "fast path alone",
        "yaml-rust2 alone"
    );
    let cell = |d: Duration, b: isize| format!("{:>7.3} s {:>8.1} MB", d.as_secs_f64(), mb(b));
    let mut reread = Vec::new();
    for n in sizes {
        let text = lb_benches::services_yaml(n);
        let (docs, parse_t, parse_m) = measure(|| parse_only(&text));
        assert!(docs > n, "the parser read {docs} objects");
        let (docs3, fast_t, fast_m) = measure(|| parse_only_fast(&text));
        assert_eq!(docs3, docs, "the fast path reads every object");
        let (docs2, alt_t, alt_m) = measure(|| parse_only_yaml_rust2(&text));
        assert_eq!(docs2, docs, "both parsers read every object");
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
            " {:>22} | {:>22} {:>22} {:>22}",
            cell(total_t, total_m),
            cell(parse_t, parse_m),
            cell(fast_t, fast_m),
            cell(alt_t, alt_m)
        );
        reread.push((n, text));
    }
    // A standalone node reading its file again after one service was edited: a fresh read,
    // and a read through the cache of the last read's documents (`load_str_cached`).
    println!(
        "\n{:>8} {:>22} {:>22} {:>16}",
        "services", "re-read fresh", "re-read cached", "parsed"
    );
    for (n, text) in reread {
        let mut cache = DocumentCache::default();
        load_str_cached(&text, &mut cache);
        let edited = text.replacen("port: 80", "port: 8080", 1);
        assert_ne!(edited, text);
        let (fresh, fresh_t, fresh_m) = measure(|| load_str(&edited));
        let (cached, cached_t, cached_m) = measure(|| load_str_cached(&edited, &mut cache));
        assert_eq!(fresh.config, cached.config);
        println!(
            "{n:>8} {:>22} {:>22} {:>16}",
            cell(fresh_t, fresh_m),
            cell(cached_t, cached_m),
            format!("{} of {}", cache.parsed_last(), cache.len())
        );
    }
}
