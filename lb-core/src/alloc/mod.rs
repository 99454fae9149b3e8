//! IP allocation with MetalLB's semantics and O(log n) costs.
//!
//! ```text
//!  Service ──► Request::from_service (annotations, families, sharing key)
//!                 │
//!                 ▼
//!  converge(): services holding IPs first (re-claim by assign), then pending ones (allocate),
//!              each group in key order
//!                 │
//!                 ▼
//!  Allocator ──► PoolAllocator: pools in priority/name order; per pool and family the lowest
//!                free index (Occupancy) or the lowest shareable IP (sharing-key index)
//! ```

pub mod converge;
pub mod index;
mod pools;
mod request;

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::config::Pool;
use crate::ip::Family;
use crate::objects::{Port, ServiceKey};

pub use converge::{Outcome, converge, converge_some};
pub use pools::{Placement, PoolAllocator};
pub use request::{Request, RequestError, annotation};

/// The addresses a service holds and the pool they come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// The IPAddressPool the addresses come from.
    pub pool: String,
    /// One address, or one per family for dual-stack; the service's primary family first.
    pub ips: Vec<IpAddr>,
}

/// Counts of one pool, for metrics and pool status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    /// IPv4 addresses held by services.
    pub ipv4_in_use: u128,
    /// IPv6 addresses held by services.
    pub ipv6_in_use: u128,
    /// IPv4 addresses in the pool (avoided ones not counted).
    pub ipv4_total: u128,
    /// IPv6 addresses in the pool.
    pub ipv6_total: u128,
}

/// Why an address already in use cannot be shared with a service.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SharingConflict {
    /// The service has no `allow-shared-ip` key.
    NoKey,
    /// The holder uses another key (or none).
    DifferentKey,
    /// `externalTrafficPolicy` or (for Local) the pod selectors differ.
    DifferentBackends,
    /// Both use this protocol and port.
    PortInUse(Port),
}

impl fmt::Display for SharingConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SharingConflict::NoKey => f.write_str("this service has no allow-shared-ip key"),
            SharingConflict::DifferentKey => f.write_str("their allow-shared-ip keys differ"),
            SharingConflict::DifferentBackends => f.write_str(
                "their backends differ (externalTrafficPolicy, or pod selectors with Local)",
            ),
            SharingConflict::PortInUse(p) => write!(f, "both use {}/{}", p.protocol, p.port),
        }
    }
}

/// Why a service got no addresses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The service's request is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The `address-pool` annotation names no pool.
    #[error("no IPAddressPool named {0}")]
    UnknownPool(String),
    /// The named pool's `serviceAllocation` does not admit the service.
    #[error(
        "IPAddressPool {0} does not admit this service (serviceAllocation namespaces or selectors)"
    )]
    PoolNotAllowed(String),
    /// A requested address is in no pool.
    #[error("{0} is in no IPAddressPool")]
    NotInPool(IpAddr),
    /// A requested address is in another pool than the one the service names.
    #[error(
        "{ip} is in IPAddressPool {actual}, but the service asks for IPAddressPool {requested}"
    )]
    WrongPool {
        /// The address.
        ip: IpAddr,
        /// The pool it is in.
        actual: String,
        /// The pool the service names.
        requested: String,
    },
    /// The requested addresses come from two pools.
    #[error("the requested addresses are in different pools ({0} and {1})")]
    MixedPools(String, String),
    /// A requested address ends in .0 or .255 and its pool avoids those.
    #[error("{ip} ends in .0 or .255, which IPAddressPool {pool} avoids (avoidBuggyIPs)")]
    BuggyIp {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// A requested address is held by a service it may not share with.
    #[error("{ip} is in use by {holder} and cannot be shared: {why}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// The service holding it.
        holder: ServiceKey,
        /// Why they cannot share.
        why: SharingConflict,
    },
    /// The addresses are not those the service requests (for [`Allocator::assign`]).
    #[error("{0:?} are not the addresses the service requests")]
    NotRequested(Vec<IpAddr>),
    /// No pool admits the service.
    #[error("no IPAddressPool admits this service")]
    NoPool,
    /// Every admitting pool is full.
    #[error("no free {families} address in {pools}")]
    Exhausted {
        /// The families asked for (`IPv4`, `IPv4 and IPv6`).
        families: String,
        /// The pools tried.
        pools: String,
    },
}

/// The allocation decisions. One implementation ([`PoolAllocator`]); the trait lets embedders
/// wrap it (persistence, metrics) and lets tests compare it with a model.
pub trait Allocator {
    /// Replaces the pools. Services whose addresses left every pool, now sit in two pools, or
    /// sit in a pool that no longer admits the service are released and returned; addresses
    /// that moved to another pool that admits the service are re-tagged.
    fn set_pools(&mut self, pools: &[Pool]) -> Vec<(ServiceKey, Allocation)>;

    /// Gives the service addresses: its requested IPs, or the best pool's lowest free (or
    /// shareable) ones. A service that already holds addresses that still satisfy its request
    /// keeps them. On failure the service holds nothing.
    fn allocate(&mut self, req: &Request) -> Result<Allocation, AllocError>;

    /// Claims exactly these addresses for the service (an explicit request, or re-claiming
    /// status after a restart). `autoAssign` is not checked, as in MetalLB. On failure the
    /// service keeps what it held before.
    fn assign(&mut self, req: &Request, ips: &[IpAddr]) -> Result<Allocation, AllocError>;

    /// Frees what the service holds.
    fn release(&mut self, key: &ServiceKey) -> Option<Allocation>;

    /// What the service holds.
    fn allocation(&self, key: &ServiceKey) -> Option<Allocation>;

    /// Every service holding addresses, in key order.
    fn services(&self) -> Vec<ServiceKey>;

    /// Usage of a pool, or `None` for an unknown pool.
    fn usage(&self, pool: &str) -> Option<PoolUsage>;
    /// Room for `services` services in all, made before a pass over that many (the tables
    /// then grow once rather than step by step). Optional.
    fn reserve_for(&mut self, _services: usize) {}
}

/// Renders families as `IPv4`, `IPv6` or `IPv4+IPv6`.
fn families_text(families: &[Family]) -> String {
    families
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("+")
}
