//! Work split over the machine's cores: independent items in contiguous runs, the results in
//! the items' order.

/// Below this many items, work runs on the calling thread (a thread costs tens of
/// microseconds to start).
pub const PARALLEL_FROM: usize = 2048;

/// `f` over contiguous runs of `items`, one run per core (at most 8), each run's result in
/// the items' order. The first run is done on the calling thread: what it allocates reuses
/// that thread's free memory (a pass's earlier step, just freed) where another thread's would
/// take more. Few items, or one core, make one run.
pub fn runs<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    match per_run(items.len()) {
        Some(per) => spread(items.chunks(per), f),
        None => vec![f(items)],
    }
}

/// [`runs`] over items that `f` may change.
pub fn runs_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(&mut [T]) -> R + Sync) -> Vec<R> {
    match per_run(items.len()) {
        Some(per) => spread(items.chunks_mut(per), f),
        None => vec![f(items)],
    }
}

/// How many of `n` items each core's run takes, or none for one run.
fn per_run(n: usize) -> Option<usize> {
    if n < PARALLEL_FROM {
        return None;
    }
    let threads = cores();
    (threads >= 2).then(|| n.div_ceil(threads))
}

/// The cores this process may use (at most 8), asked once: the answer reads the cgroup's
/// files, which cost more than a small change's whole decision.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
}

/// `f` over each of `runs`, the first on the calling thread.
fn spread<C: Send, R: Send>(
    mut runs: impl Iterator<Item = C>,
    f: impl Fn(C) -> R + Sync,
) -> Vec<R> {
    std::thread::scope(|scope| {
        let first = runs.next();
        let f = &f;
        let handles: Vec<_> = runs.map(|run| scope.spawn(move || f(run))).collect();
        let mut out: Vec<R> = first.map(f).into_iter().collect();
        out.extend(
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
        );
        out
    })
}

/// `items` sorted: a run per core sorted on its own, then the runs merged. Ties keep no order
/// (as `sort_unstable`); callers whose items are distinct get the one order there is.
pub fn sort_unstable<T: Ord + Send + Copy>(mut items: Vec<T>) -> Vec<T> {
    let Some(per) = per_run(items.len()) else {
        items.sort_unstable();
        return items;
    };
    std::thread::scope(|scope| {
        for run in items.chunks_mut(per) {
            scope.spawn(move || run.sort_unstable());
        }
    });
    let mut runs: Vec<Vec<T>> = items.chunks(per).map(<[T]>::to_vec).collect();
    while runs.len() > 1 {
        let mut merged = Vec::with_capacity(runs.len().div_ceil(2));
        let mut pairs = runs.into_iter();
        while let Some(a) = pairs.next() {
            merged.push(match pairs.next() {
                Some(b) => merge(&a, &b),
                None => a,
            });
        }
        runs = merged;
    }
    runs.pop().unwrap_or_default()
}

fn merge<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j] < a[i] {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_sort_on_every_core_is_a_sort(mut v in proptest::collection::vec(0u16..500, 0..9000)) {
            let got = super::sort_unstable(v.clone());
            v.sort_unstable();
            prop_assert_eq!(got, v);
        }
    }

    #[test]
    fn runs_keep_the_items_order() {
        for n in [0, 1, super::PARALLEL_FROM - 1, super::PARALLEL_FROM * 3 + 7] {
            let items: Vec<usize> = (0..n).collect();
            let got: Vec<usize> = super::runs(&items, |run| run.iter().map(|i| i * 2).collect())
                .into_iter()
                .flat_map(|r: Vec<usize>| r)
                .collect();
            assert_eq!(got, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn runs_mut_change_every_item_and_keep_the_order() {
        for n in [0, 1, super::PARALLEL_FROM - 1, super::PARALLEL_FROM * 3 + 7] {
            let mut items: Vec<usize> = (0..n).collect();
            let got: Vec<usize> = super::runs_mut(&mut items, |run| {
                run.iter_mut()
                    .map(|i| {
                        *i += 1;
                        *i * 2
                    })
                    .collect()
            })
            .into_iter()
            .flat_map(|r: Vec<usize>| r)
            .collect();
            assert_eq!(items, (1..=n).collect::<Vec<_>>());
            assert_eq!(got, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        }
    }
}
