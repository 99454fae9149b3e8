//! lb-core: the decisions of a bare-metal load balancer, with no IO.
//!
//! ```text
//!  YAML / CRDs ──► config::load_str ──► Config (validated; bad objects reported, left out)
//!                                          │
//!        ┌─────────────────────────────────┴─────────────────────┐
//!        ▼                                                       ▼
//!  alloc::converge + PoolAllocator                      plan::plan (for one node)
//!  service -> addresses (MetalLB rules)                 which addresses, L2 or BGP, to whom
//!        │                                                       │
//!        ▼                                                       ▼
//!  Service status (lb-k8s / standalone state)     Announcer impls (lb-announce-l2, -bgp),
//!                                                  LeaderElector (membership, Lease)
//! ```
//!
//! It knows MetalLB's `metallb.io` kinds and annotations, and its own minimal model of
//! Services, Nodes and EndpointSlices (`objects`); lb-k8s translates the real API types.

pub mod alloc;
pub mod announce;
pub mod config;
pub mod elect;
pub mod ip;
#[cfg(feature = "membership")]
pub mod members;
pub mod objects;
pub mod plan;
pub mod runtime;
pub mod selector;

pub use alloc::{Allocation, Allocator, PoolAllocator};
pub use announce::{Announcer, Protocol, RecordingAnnouncer};
#[cfg(feature = "yaml")]
pub use config::load_str;
pub use config::{Config, ConfigError};
pub use elect::{LeaderElector, Membership, StaticElector};
pub use plan::{Announcement, Plan, PlanInput, plan};
pub use runtime::{Rules, Runtime};
