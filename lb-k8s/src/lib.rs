//! lb-k8s: the Kubernetes side (issue: "Kubernetes integration: MetalLB-compatible CRDs, ...").
//!
//! Not built yet. It will hold:
//!
//! * `crds`: every `metallb.io` kind (BGPPeer v1beta2 storage, v1beta1 served; the rest v1beta1)
//!   with kube-derive + schemars, and the status kinds ServiceL2Status and ServiceBGPStatus.
//! * `translate`: Kubernetes API objects -> [`lb_core::objects`] and [`lb_core::Config`].
//! * `controller`: allocation with [`lb_core::PoolAllocator`], Service status writes, events
//!   on change only, Lease leader election checked before every write.
//! * `speaker`: watches feeding [`lb_core::plan`], driving the announcers.
//!
//! lb-core stays free of kube; this crate is the only one that links it.

/// The API group whose kinds this crate will serve.
pub const GROUP: &str = "metallb.io";
