//! Baselines the benches measure beside our code.
//!
//! [`FirstFitScan`] is MetalLB's allocation algorithm reduced to its core: walk the pool from its
//! first address and take the first one not in use (as MetalLB's allocator does). It keeps the used set in a
//! `HashMap` keyed by address, which is kinder than MetalLB's string keys, so any ratio measured
//! against it understates the difference.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use lb_core::ip::{Family, IpRange, from_u128};
use lb_core::objects::ServiceKey;

#[derive(Debug)]
pub struct FirstFitScan {
    range: IpRange,
    used: HashMap<IpAddr, ServiceKey>,
    by_service: HashMap<ServiceKey, IpAddr>,
}

impl FirstFitScan {
    pub fn new(range: IpRange) -> Self {
        FirstFitScan {
            range,
            used: HashMap::new(),
            by_service: HashMap::new(),
        }
    }

    /// Takes the lowest free address: O(number of used addresses before it).
    pub fn allocate(&mut self, key: &ServiceKey) -> Option<IpAddr> {
        let family: Family = self.range.family();
        let mut v = self.range.start();
        loop {
            let ip = from_u128(family, v);
            if let Entry::Vacant(slot) = self.used.entry(ip) {
                slot.insert(key.clone());
                self.by_service.insert(key.clone(), ip);
                return Some(ip);
            }
            if v == self.range.end() {
                return None;
            }
            v += 1;
        }
    }

    /// Marks `ip` used by `key` directly: fills a pool without paying the scan, so that a bench
    /// can reach a million used addresses.
    pub fn take(&mut self, key: &ServiceKey, ip: IpAddr) {
        self.used.insert(ip, key.clone());
        self.by_service.insert(key.clone(), ip);
    }

    pub fn range(&self) -> IpRange {
        self.range
    }

    pub fn release(&mut self, key: &ServiceKey) {
        if let Some(ip) = self.by_service.remove(key) {
            self.used.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_takes_the_lowest_free_address() {
        let mut s = FirstFitScan::new(IpRange::parse("192.0.2.0/30").unwrap());
        let k = |n: &str| ServiceKey::new("a", n);
        assert_eq!(s.allocate(&k("x")).unwrap().to_string(), "192.0.2.0");
        assert_eq!(s.allocate(&k("y")).unwrap().to_string(), "192.0.2.1");
        s.release(&k("x"));
        assert_eq!(s.allocate(&k("z")).unwrap().to_string(), "192.0.2.0");
    }
}
