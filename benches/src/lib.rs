//! Baselines the benches measure beside our code.
//!
//! [`FirstFitScan`] is MetalLB's allocation algorithm reduced to its core: walk the pool from its
//! first address and take the first one not in use (as MetalLB's allocator does). It keeps the used set in a
//! `HashMap` keyed by address, which is kinder than MetalLB's string keys, so any ratio measured
//! against it understates the difference.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lb_core::announce::AnnounceError;
use lb_core::ip::{Family, IpRange, from_u128};
use lb_core::objects::ServiceKey;
use lb_core::{Announcement, Announcer, Change, Protocol};

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

/// A configuration file of `n` LoadBalancer services, shaped as issue 16 measured it: an IPv4
/// /8 pool announced by layer 2, an IPv6 /64 pool announced by BGP to one peer, three Nodes;
/// every tenth service IPv6, every tenth `externalTrafficPolicy: Local` with one EndpointSlice
/// on one node. Made by the bench, never shipped (100,000 services are an 18 MB file). The
/// addresses are data that `plan` reads; nothing is sent to them.
pub fn services_yaml(n: usize) -> String {
    use std::fmt::Write;
    let mut o = String::with_capacity(n * 200);
    o.push_str(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan, namespace: metallb-system}\nspec:\n  addresses: [10.0.0.0/8]\n\
---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: routed, namespace: metallb-system}\nspec:\n  addresses: [\"2001:db8:1::/64\"]\n\
---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan, namespace: metallb-system}\nspec:\n  ipAddressPools: [lan]\n\
---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: routed, namespace: metallb-system}\nspec:\n  ipAddressPools: [routed]\n\
---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: router, namespace: metallb-system}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: \"2001:db8::1\"}\n",
    );
    for i in 1..=3 {
        let _ = write!(
            o,
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: node{i}\n  labels: {{kubernetes.io/hostname: node{i}}}\n"
        );
    }
    for i in 0..n {
        let family = if i % 10 == 5 {
            "ipFamilies: [IPv6]\n  "
        } else {
            ""
        };
        let local = i % 10 == 3;
        let etp = if local {
            "externalTrafficPolicy: Local\n  "
        } else {
            ""
        };
        let ns = i % 100;
        let _ = write!(
            o,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc{i}\n  namespace: ns{ns}\nspec:\n  type: LoadBalancer\n  {family}{etp}selector: {{app: a{i}}}\n  ports: [{{port: 80}}]\n"
        );
        if local {
            let _ = write!(
                o,
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc{i}-x\n  namespace: ns{ns}\n  labels: {{kubernetes.io/service-name: svc{i}}}\naddressType: IPv4\nendpoints:\n  - addresses: [10.255.{}.{}]\n    nodeName: node{}\n    conditions: {{ready: true}}\n",
                (i / 250) % 250,
                i % 250,
                i % 3 + 1
            );
        }
    }
    o
}

/// A global allocator that forwards to the system's and counts the bytes live and their peak:
/// the memory benches install it (`#[global_allocator] static A: Counting = Counting;`).
#[derive(Debug)]
pub struct Counting;

/// Bytes allocated and not yet freed, while [`Counting`] is the global allocator.
pub static LIVE: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
/// The highest [`LIVE`] since it was last set (a bench resets it to the live count).
pub static PEAK: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use std::sync::atomic::Ordering::Relaxed;
        let size = layout.size() as isize;
        let now = LIVE.fetch_add(size, Relaxed) + size;
        PEAK.fetch_max(now, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
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

/// An announcer that keeps what it announces by service and address, as the real ones do.
#[derive(Debug)]
pub struct Table {
    protocol: Protocol,
    held: Mutex<BTreeMap<(ServiceKey, IpAddr), Announcement>>,
}

impl Table {
    /// An empty table for `protocol`.
    pub fn new(protocol: Protocol) -> Arc<Table> {
        Arc::new(Table {
            protocol,
            held: Mutex::default(),
        })
    }

    /// How many announcements it holds.
    pub fn len(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Announcer for Table {
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = desired
            .iter()
            .map(|a| ((a.service.clone(), a.ip), a.clone()))
            .collect();
        Ok(())
    }

    async fn change(&self, change: Change<'_>) -> Result<(), AnnounceError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for a in change.withdrawn {
            held.remove(&(a.service.clone(), a.ip));
        }
        for a in change.added {
            held.insert((a.service.clone(), a.ip), a.clone());
        }
        Ok(())
    }
}

/// The sizes the decision benches run at, with their labels.
pub const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (10_000, "10k"), (100_000, "100k")];
