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
//!
//! ## Quick start
//!
//! The controller's decisions are a pure pass over the objects it watches (as JSON, the way the
//! API serves them):
//!
//! ```
//! use lb_k8s::controller::Core;
//! use serde_json::json;
//!
//! let mut core = Core::default();
//! let pass = core.pass(
//!     vec![
//!         json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
//!                "metadata": {"name": "lan", "namespace": "metallb-system"},
//!                "spec": {"addresses": ["192.0.2.10/31"]}}),
//!         json!({"apiVersion": "v1", "kind": "Service",
//!                "metadata": {"name": "web", "namespace": "default"},
//!                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
//!     ],
//!     None,
//! );
//! assert_eq!(pass.writes[0].ips[0].to_string(), "192.0.2.10");
//! ```
//!
//! [`controller::run`] drives it against a cluster, with a [`Clients`] pair and a
//! `LeaderElector` (a Lease: [`lease::LeaseElector`]).

#![deny(missing_docs)]

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

/// The clients a component talks to the API server with.
#[derive(Clone)]
pub struct Clients {
    /// For watches: long reads, guarded by the watcher's own idle timeout.
    pub watch: kube::Client,
    /// For everything else (status, events, the Lease): a request gets no answer for at most
    /// [`READ_TIMEOUT`], and is not retried inside the client (429/503 come back at once and
    /// the caller retries on a task of its own).
    pub write: kube::Client,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients").finish_non_exhaustive()
    }
}

impl Clients {
    /// One client for both (tests, or a caller that configured its own timeouts).
    pub fn single(client: kube::Client) -> Clients {
        Clients {
            watch: client.clone(),
            write: client,
        }
    }
}

/// How long a connection to the API server may take ([`Clients::write`]).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a request to the API server may go unanswered ([`Clients::write`]).
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
