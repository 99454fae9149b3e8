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

pub use converge::{Outcome, converge};
pub use pools::{Placement, PoolAllocator};
pub use request::{Request, RequestError, annotation};

/// The addresses a service holds and the pool they come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub pool: String,
    /// One address, or one per family for dual-stack; the service's primary family first.
    pub ips: Vec<IpAddr>,
}

/// Counts of one pool, for metrics and pool status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub ipv4_in_use: u128,
    pub ipv6_in_use: u128,
    pub ipv4_total: u128,
    pub ipv6_total: u128,
}

/// Why an address already in use cannot be shared with a service.
#[derive(Clone, Debug, PartialEq, Eq)]
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
pub enum AllocError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("no IPAddressPool named {0}")]
    UnknownPool(String),
    #[error(
        "IPAddressPool {0} does not admit this service (serviceAllocation namespaces or selectors)"
    )]
    PoolNotAllowed(String),
    #[error("{0} is in no IPAddressPool")]
    NotInPool(IpAddr),
    #[error(
        "{ip} is in IPAddressPool {actual}, but the service asks for IPAddressPool {requested}"
    )]
    WrongPool {
        ip: IpAddr,
        actual: String,
        requested: String,
    },
    #[error("the requested addresses are in different pools ({0} and {1})")]
    MixedPools(String, String),
    #[error("{ip} ends in .0 or .255, which IPAddressPool {pool} avoids (avoidBuggyIPs)")]
    BuggyIp { ip: IpAddr, pool: String },
    #[error("{ip} is in use by {holder} and cannot be shared: {why}")]
    InUse {
        ip: IpAddr,
        holder: ServiceKey,
        why: SharingConflict,
    },
    #[error("{0:?} are not the addresses the service requests")]
    NotRequested(Vec<IpAddr>),
    #[error("no IPAddressPool admits this service")]
    NoPool,
    #[error("no free {families} address in {pools}")]
    Exhausted { families: String, pools: String },
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
}

/// Renders families as `IPv4`, `IPv6` or `IPv4+IPv6`.
fn families_text(families: &[Family]) -> String {
    families
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("+")
}
