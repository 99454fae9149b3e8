//! lb-announce-l2: the layer 2 announcer. One node owns each address and answers ARP (IPv4)
//! and Neighbor Solicitations (IPv6) for it; when ownership moves, the new owner tells the LAN
//! at once with gratuitous ARP and unsolicited Neighbor Advertisements.
//!
//! ```text
//!  lb_core::plan ──► L2Announcer::announce(desired) / change(withdrawn, added)
//!                          │ Announced set (shared, changed in place address by address)
//!                          ▼
//!  link (AF_PACKET per interface) ──frame──► responder::respond (pure, O(1)) ──reply──► link
//!                          ▲
//!  iface (discovery: MAC, flags, link-local, master; rescanned)
//! ```
//!
//! `wire` holds the packet formats; `link` is the only module with `unsafe`.
//!
//! ## Quick start
//!
//! With CAP_NET_RAW (see `examples/announce_vip.rs` for a whole program):
//!
//! ```no_run
//! use lb_announce_l2::{Config, L2Announcer};
//! use lb_core::Announcer;
//! use lb_core::objects::ServiceKey;
//! use lb_core::plan::{Announcement, How, Interfaces};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let announcer = L2Announcer::start(Config::default())?;
//! announcer
//!     .announce(&[Announcement {
//!         service: ServiceKey::new("default", "web"),
//!         ip: "192.0.2.100".parse()?,
//!         how: How::Layer2 { interfaces: Interfaces::Only(["eth0".to_string()].into()) },
//!     }])
//!     .await?;
//! // ... answers ARP for 192.0.2.100 on eth0 until:
//! announcer.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "runtime")]
pub mod announcer;
#[cfg(feature = "runtime")]
pub mod iface;
#[cfg(feature = "runtime")]
pub mod link;
pub mod responder;
pub mod wire;

#[cfg(feature = "runtime")]
pub use announcer::{Config, L2Announcer};
