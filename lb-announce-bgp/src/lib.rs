//! lb-announce-bgp: the BGP speaker.
//!
//! Built so far: `packet`, the IO-free codec (OPEN with capabilities, UPDATE with MP-BGP,
//! communities and large communities, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH, End-of-RIB;
//! RFC 7606 receive handling; UPDATE packing split at 4096 bytes).
//!
//! Still to come (the rest of the BGP issue): `fsm`, the RFC 4271 §8 state machine as a pure
//! function; `session`, the tokio driver (active/passive, TCP-MD5, TTL/GTSM, backoff, Cease);
//! and `speaker`, one Adj-RIB-Out per peer behind `BgpAnnouncer` (lb-core's `Announcer` for
//! [`lb_core::Protocol::Bgp`]) with graceful restart.

pub mod fsm;
pub mod packet;

/// The protocol this crate announces with.
pub const PROTOCOL: lb_core::Protocol = lb_core::Protocol::Bgp;
