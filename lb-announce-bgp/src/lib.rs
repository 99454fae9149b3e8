//! lb-announce-bgp: the BGP speaker.
//!
//! ```text
//!  lb_core::plan ─► BgpAnnouncer (lb-core's Announcer) ─ routes per peer ─► Session per peer
//!  Session (tokio driver) ─Input─► fsm (pure) ─Output─► TCP / timers
//!        │ Adj-RIB-Out diff ─► packet::UpdateBuilder ─► UPDATE bytes
//! ```
//!
//! `packet` is the IO-free codec (OPEN with capabilities, UPDATE with MP-BGP, communities and
//! large communities, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH, End-of-RIB; RFC 7606 receive
//! handling; UPDATE packing split at 4096 bytes); `fsm` the RFC 4271 §8 state machine as a pure
//! function, with passive mode and the §6.8 collision rule; `session` the tokio driver (active
//! connect with backoff, source address, TCP-MD5, TTL for eBGP single-hop / multihop, GTSM,
//! collision resolution, Adj-RIB-Out diffing, End-of-RIB, route refresh, Cease on stop,
//! graceful restart as a restarting speaker, the link-local IPv6 next hop of an on-link
//! session); `listen` the passive side shared by all sessions; `announcer` `BgpAnnouncer` with
//! MetalLB's metric names. Proven against BIRD, FRR, GoBGP and ExaBGP (tests/interop.rs,
//! tests/transport.rs); `examples/converge.rs` measures 100,000 prefixes to BIRD beside
//! BIRD -> BIRD. `bfd` is BFD (RFC 5880, single hop and multihop): the codec and state machine
//! without IO, and with `runtime` the UDP driver; `BgpAnnouncer` runs a BFD session for each
//! peer whose BGPPeer names a BFDProfile and drops that BGP session when it goes down (tested
//! against BIRD and FRR in tests/bfd.rs). `nd` (Router Solicitation / Advertisement, no IO) and
//! with `runtime` `neighbor` find an unnumbered peer on its interface; such a session runs
//! between link-local addresses and sends IPv4 prefixes with an IPv6 next hop (RFC 8950;
//! tests/unnumbered.rs, against FRR).
//!
//! Feature `runtime` (default) brings the tokio parts (`session`, `listen`, `announcer`);
//! without it the codec and the FSM stand alone.
//!
//! ## Quick start
//!
//! The codec needs no runtime:
//!
//! ```
//! use lb_announce_bgp::packet::{Context, Message};
//!
//! let mut wire = Vec::new();
//! Message::Keepalive.encode(&Context::default(), &mut wire);
//! assert_eq!(wire.len(), 19);
//! let back = Message::decode(&wire, &Context::default()).expect("a KEEPALIVE");
//! assert_eq!(back.message, Message::Keepalive);
//! ```
//!
//! A speaker announcing to a peer is `examples/announce_prefixes.rs`.

#![deny(missing_docs)]

#[cfg(feature = "runtime")]
pub mod announcer;
pub mod bfd;
pub mod fsm;
#[cfg(feature = "runtime")]
pub mod listen;
pub mod nd;
#[cfg(feature = "runtime")]
pub mod neighbor;
pub mod packet;
#[cfg(feature = "runtime")]
pub mod session;
#[cfg(feature = "runtime")]
mod sys;

/// The protocol this crate announces with.
pub const PROTOCOL: lb_core::Protocol = lb_core::Protocol::Bgp;

#[cfg(feature = "runtime")]
pub use announcer::BgpAnnouncer;
