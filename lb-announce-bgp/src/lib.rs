//! lb-announce-bgp: the BGP speaker.
//!
//! ```text
//!  desired routes ─► session (tokio driver) ─Input─► fsm (pure) ─Output─► TCP / timers
//!                        │ Adj-RIB-Out diff ─► packet::UpdateBuilder ─► UPDATE bytes
//! ```
//!
//! Built so far: `packet`, the IO-free codec (OPEN with capabilities, UPDATE with MP-BGP,
//! communities and large communities, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH, End-of-RIB;
//! RFC 7606 receive handling; UPDATE packing split at 4096 bytes); `fsm`, the RFC 4271 §8
//! state machine as a pure function; `session`, the tokio driver (active connect with
//! backoff, optional source address, Adj-RIB-Out diffing, End-of-RIB, route refresh, Cease on
//! stop), proven against BIRD.
//!
//! Still to come (the rest of the BGP issue): passive listening and collision handling,
//! TCP-MD5, TTL/GTSM, graceful restart as a restarting speaker, `BgpAnnouncer` (lb-core's
//! `Announcer` for [`lb_core::Protocol::Bgp`]) with per-peer counters, and interop tests with
//! FRR, GoBGP and ExaBGP.

pub mod fsm;
pub mod packet;
pub mod session;
mod sys;

/// The protocol this crate announces with.
pub const PROTOCOL: lb_core::Protocol = lb_core::Protocol::Bgp;
