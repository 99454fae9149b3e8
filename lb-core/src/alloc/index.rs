//! The two structures that make allocation cost O(log n) whatever the pool size:
//!
//! * [`IndexSpace`] maps a pool's usable addresses onto dense integers. With `avoidBuggyIPs` the
//!   IPv4 addresses ending in `.0` and `.255` have no index at all, so "the next usable
//!   address" is always "the next index" and no scan ever steps over them one by one.
//! * [`Occupancy`] keeps the used indexes as maximal runs `start..=end` in a `BTreeMap`. The
//!   lowest free index at or after `x` is one lookup: the run containing `x`, if any, ends at
//!   `e`, and `e + 1` is free because runs are maximal. Memory grows with the number of runs,
//!   which is at most the number of used addresses and usually far fewer.

use std::collections::BTreeMap;

use crate::ip::IpRange;

/// How the addresses of a range map to dense indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexSpace {
    /// Every address is usable: the index is the address value.
    Plain,
    /// IPv4 with `avoidBuggyIPs`: 254 usable addresses (`.1`–`.254`) per /24.
    Skip254,
}

impl IndexSpace {
    /// The index of an address value, or `None` for an address this space skips.
    pub fn index_of(self, v: u128) -> Option<u128> {
        match self {
            IndexSpace::Plain => Some(v),
            IndexSpace::Skip254 => {
                let (block, octet) = (v >> 8, v & 0xff);
                (1..=254).contains(&octet).then(|| block * 254 + octet - 1)
            }
        }
    }

    /// The address value of an index.
    pub fn value_of(self, i: u128) -> u128 {
        match self {
            IndexSpace::Plain => i,
            IndexSpace::Skip254 => (i / 254) * 256 + i % 254 + 1,
        }
    }

    /// The index bounds of the usable addresses in `r`, or `None` when it has none.
    pub fn bounds(self, r: &IpRange) -> Option<(u128, u128)> {
        match self {
            IndexSpace::Plain => Some((r.start(), r.end())),
            IndexSpace::Skip254 => {
                let first = |v: u128| match v & 0xff {
                    0 => (v >> 8) * 254,
                    255 => ((v >> 8) + 1) * 254,
                    o => (v >> 8) * 254 + o - 1,
                };
                let last = |v: u128| match v & 0xff {
                    0 => ((v >> 8) * 254).checked_sub(1),
                    255 => Some((v >> 8) * 254 + 253),
                    o => Some((v >> 8) * 254 + o - 1),
                };
                let (lo, hi) = (first(r.start()), last(r.end())?);
                (lo <= hi).then_some((lo, hi))
            }
        }
    }

    /// Number of usable addresses in `r` (saturating for the whole IPv6 space).
    pub fn range_len(self, r: &IpRange) -> u128 {
        self.bounds(r)
            .map(|(lo, hi)| (hi - lo).saturating_add(1))
            .unwrap_or(0)
    }
}

/// A set of indexes stored as maximal runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Occupancy {
    runs: BTreeMap<u128, u128>,
    count: u128,
}

impl Occupancy {
    /// How many indexes are in the set.
    pub fn len(&self) -> u128 {
        self.count
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of runs: what the memory cost grows with.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    fn run_containing(&self, i: u128) -> Option<(u128, u128)> {
        self.runs
            .range(..=i)
            .next_back()
            .filter(|&(_, &end)| end >= i)
            .map(|(&s, &e)| (s, e))
    }

    /// Whether index `i` is in the set.
    pub fn contains(&self, i: u128) -> bool {
        self.run_containing(i).is_some()
    }

    /// Adds `i`; false if it was already there.
    pub fn insert(&mut self, i: u128) -> bool {
        if self.contains(i) {
            return false;
        }
        self.count += 1;
        let left = i
            .checked_sub(1)
            .and_then(|p| self.run_containing(p))
            .map(|(s, _)| s);
        let right_end = i.checked_add(1).and_then(|n| self.runs.remove(&n));
        let end = right_end.unwrap_or(i);
        match left {
            Some(s) => {
                self.runs.insert(s, end);
            }
            None => {
                self.runs.insert(i, end);
            }
        }
        true
    }

    /// Removes `i`; false if it was not there.
    pub fn remove(&mut self, i: u128) -> bool {
        let Some((s, e)) = self.run_containing(i) else {
            return false;
        };
        self.count -= 1;
        self.runs.remove(&s);
        if s < i {
            self.runs.insert(s, i - 1);
        }
        if i < e {
            self.runs.insert(i + 1, e);
        }
        true
    }

    /// The lowest index in `lo..=hi` that is not in the set.
    pub fn first_free(&self, lo: u128, hi: u128) -> Option<u128> {
        let candidate = match self.run_containing(lo) {
            Some((_, end)) => end.checked_add(1)?,
            None => lo,
        };
        (candidate <= hi).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip254_maps_only_dot_1_to_dot_254() {
        let s = IndexSpace::Skip254;
        assert_eq!(s.index_of(0x0201), Some(2 * 254));
        assert_eq!(s.index_of(0x0200), None);
        assert_eq!(s.index_of(0x02ff), None);
        for v in [1u128, 254, 257, 0xc000_02fe] {
            assert_eq!(s.value_of(s.index_of(v).unwrap()), v);
        }
    }

    #[test]
    fn skip254_bounds_trim_buggy_edges() {
        let r = IpRange::parse("192.0.2.0/24").unwrap();
        let (lo, hi) = IndexSpace::Skip254.bounds(&r).unwrap();
        assert_eq!(hi - lo + 1, 254);
        assert_eq!(
            IndexSpace::Skip254.range_len(&IpRange::parse("192.0.2.0/23").unwrap()),
            508
        );
        assert_eq!(
            IndexSpace::Skip254.range_len(&IpRange::parse("192.0.2.255/32").unwrap()),
            0
        );
        assert_eq!(
            IndexSpace::Skip254.range_len(&IpRange::parse("0.0.0.0/32").unwrap()),
            0
        );
    }

    #[test]
    fn runs_merge_and_split() {
        let mut o = Occupancy::default();
        assert!(o.insert(5));
        assert!(o.insert(7));
        assert_eq!(o.runs(), 2);
        assert!(o.insert(6));
        assert_eq!(o.runs(), 1);
        assert!(!o.insert(6));
        assert!(o.remove(6));
        assert_eq!(o.runs(), 2);
        assert!(!o.remove(6));
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn first_free_jumps_over_a_whole_run() {
        let mut o = Occupancy::default();
        for i in 10..1000 {
            o.insert(i);
        }
        assert_eq!(o.first_free(10, 2000), Some(1000));
        assert_eq!(o.first_free(0, 2000), Some(0));
        assert_eq!(o.first_free(10, 999), None);
        o.insert(u128::MAX);
        assert_eq!(o.first_free(u128::MAX, u128::MAX), None);
    }
}
