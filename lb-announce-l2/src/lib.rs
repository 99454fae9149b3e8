//! lb-announce-l2: the layer 2 announcer (issue: "Layer 2 announcer: ARP and NDP over AF_PACKET").
//!
//! Not built yet. It will hold, by module:
//!
//! * `wire`: Ethernet, ARP, IPv6 + ICMPv6 Neighbor Solicitation / Advertisement with options, as
//!   `pnet_packet` views behind typed reprs with parse / emit / length; parsing never panics.
//! * `responder`: a pure function (announced set, interface, frame) -> optional reply, O(1) per
//!   frame; answers ARP requests and NS (multicast, unicast NUD, with or without source LLA).
//! * `link`: AF_PACKET sockets per interface on tokio `AsyncFd` (the crate's only `unsafe`),
//!   solicited-node multicast membership, interface discovery.
//! * `announcer`: `L2Announcer`, implementing [`lb_core::Announcer`] for
//!   [`lb_core::Protocol::Layer2`]: gratuitous ARP / unsolicited NA on takeover and refresh,
//!   conflict probes, counters with MetalLB's metric names.
//!
//! Until then `lb-bin` can only plan layer 2 announcements, not make them.

/// The protocol this crate will announce with.
pub const PROTOCOL: lb_core::Protocol = lb_core::Protocol::Layer2;
