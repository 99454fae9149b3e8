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
//!
//! ## Quick start
//!
//! Allocate an address from a pool built in code, then let the [`Runtime`] hand a node's plan
//! to an announcer (here [`RecordingAnnouncer`], which only remembers; the real ones are in
//! lb-announce-l2 and lb-announce-bgp):
//!
//! ```
//! use std::collections::{BTreeMap, BTreeSet};
//! use std::sync::Arc;
//! use lb_core::alloc::Request;
//! use lb_core::config::Pool;
//! use lb_core::ip::IpRange;
//! use lb_core::objects::ServiceKey;
//! use lb_core::{Allocator, Announcer, PoolAllocator, Protocol, RecordingAnnouncer};
//! use lb_core::{Rules, Runtime, StaticElector};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ServiceKey::new("default", "web");
//! let mut alloc = PoolAllocator::new(&[Pool::new("lan", vec![IpRange::parse("192.0.2.10/31")?])]);
//! let a = alloc.allocate(&Request::simple(key.clone()))?;
//! assert_eq!(a.ips[0].to_string(), "192.0.2.10");
//!
//! // The configuration says how the pool is announced (an L2Advertisement) and names the
//! // service; in a file it would be YAML (`load_str`), here it is JSON values.
//! let config = lb_core::config::load_values([
//!     serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
//!         "metadata": {"name": "lan", "namespace": "metallb-system"},
//!         "spec": {"addresses": ["192.0.2.10/31"]}}),
//!     serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
//!         "metadata": {"name": "lan", "namespace": "metallb-system"}}),
//!     serde_json::json!({"apiVersion": "v1", "kind": "Service",
//!         "metadata": {"name": "web", "namespace": "default"},
//!         "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
//! ])
//! .config;
//! let l2 = Arc::new(RecordingAnnouncer::new(Protocol::Layer2));
//! let mut runtime = Runtime::new("node1", vec![l2.clone() as Arc<dyn Announcer>]);
//! let alone = StaticElector::new("node1", ["node1".to_string()]);
//! let allocations = BTreeMap::from([(key, a)]);
//! let (plan, applied) = runtime
//!     .pass(&config, &allocations, &alone, Rules::standalone(), &BTreeSet::new(), 0)
//!     .await;
//! assert!(applied.errors.is_empty());
//! assert_eq!(l2.current(), plan.announcements);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod alloc;
pub mod announce;
pub mod config;
pub mod elect;
pub mod ip;
#[cfg(feature = "membership")]
pub mod members;
pub mod metrics;
pub mod objects;
pub mod par;
pub mod parts;
pub mod plan;
pub mod runtime;
pub mod selector;

pub use alloc::{Allocation, Allocator, PoolAllocator};
pub use announce::{Announcer, Change, Protocol, RecordingAnnouncer};
#[cfg(feature = "yaml")]
pub use config::load_str;
pub use config::{Config, ConfigError};
pub use elect::{LeaderElector, Membership, StaticElector};
pub use plan::{Announcement, Plan, PlanInput, Planner, Standing, plan};
pub use runtime::{AppliedChange, LocalError, Rules, Runtime};
