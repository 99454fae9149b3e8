//! lb-announce-bgp: the BGP speaker (issue: "BGP speaker: RFC 4271 sessions, MP-BGP IPv6, ...").
//!
//! Not built yet. It will hold, by module:
//!
//! * `packet`: OPEN (capabilities), UPDATE (MP_REACH / MP_UNREACH, communities, large
//!   communities), KEEPALIVE, NOTIFICATION, ROUTE-REFRESH; RFC 7606 error handling; IO-free.
//! * `fsm`: the RFC 4271 §8 state machine as a pure function (now, input) -> outputs.
//! * `session`: the tokio driver (active/passive, TCP-MD5, TTL/GTSM, backoff, Cease).
//! * `speaker`: one Adj-RIB-Out per peer and `BgpAnnouncer`, implementing
//!   [`lb_core::Announcer`] for [`lb_core::Protocol::Bgp`], with graceful restart.
//!
//! Until then `lb-bin` can only plan BGP announcements, not make them.

/// The protocol this crate will announce with.
pub const PROTOCOL: lb_core::Protocol = lb_core::Protocol::Bgp;
