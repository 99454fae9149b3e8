//! lb-k8s: the Kubernetes side. MetalLB's `metallb.io` kinds, the controller that allocates
//! addresses, and the speaker's view of the cluster.
//!
//! ```text
//!  API server ──watch──► store (objects as JSON) ──► lb_core::config::load_values ──► Config
//!                                                        │
//!       controller: converge (lb-core allocator) ─► Service status, pool status, events
//!                   (only while holding the Lease, checked before every write)
//!       speaker:    plan for this node (lb-core) ─► announcers (lb-bin), status kinds
//! ```
//!
//! lb-core stays free of kube; this crate is the only one that links it.

pub mod configstate;
pub mod controller;
pub mod crds;
pub mod lease;
pub mod memberlist;
pub mod metrics;
pub mod speaker;
pub mod store;

/// The API group whose kinds this crate serves.
pub const GROUP: &str = "metallb.io";
