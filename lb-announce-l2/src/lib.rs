//! lb-announce-l2: the layer 2 announcer. One node owns each address and answers ARP (IPv4)
//! and Neighbor Solicitations (IPv6) for it; when ownership moves, the new owner tells the LAN
//! at once with gratuitous ARP and unsolicited Neighbor Advertisements.
//!
//! ```text
//!  lb_core::plan ──► L2Announcer::announce(desired)      (announcer: diff, takeover, probes)
//!                          │ Announced set (shared, swapped whole)
//!                          ▼
//!  link (AF_PACKET per interface) ──frame──► responder::respond (pure, O(1)) ──reply──► link
//!                          ▲
//!  iface (discovery: MAC, flags, link-local, master; rescanned)
//! ```
//!
//! `wire` holds the packet formats; `link` is the only module with `unsafe`.

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
