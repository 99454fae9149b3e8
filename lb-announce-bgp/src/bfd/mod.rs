//! BFD (RFC 5880) for the BGP sessions: a peer whose BGPPeer names a BFDProfile gets a BFD
//! session, and when it goes down the BGP session drops at once (RFC 5882) instead of when
//! the hold timer expires.
//!
//! `packet` is the Control packet codec, `fsm` one session in asynchronous mode as a pure
//! state machine; with the `runtime` feature, `driver` runs them over UDP: single hop (RFC
//! 5881: port 3784, TTL 255 sent and required) and multihop (RFC 5883: port 4784, the
//! profile's `minimumTtl`). Echo mode is not implemented: `check` warns that a profile asking
//! for it runs without.

#[cfg(feature = "runtime")]
pub mod driver;
pub mod fsm;
pub mod packet;
