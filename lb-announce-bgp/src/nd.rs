//! Neighbour discovery for unnumbered peers, without IO: the Router Solicitation and Router
//! Advertisement messages (RFC 4861 §4.1, §4.2) as far as BGP unnumbered needs them, and
//! [`Learner`], which decides which link-local address on the interface is the peer.
//!
//! A BGPPeer given by `interface` has no address: as FRR does, the speaker learns it from the
//! Router Advertisements the router sends on that link, and sends its own (router lifetime 0:
//! no host takes this node for a default router) so that the router learns ours. A Router
//! Solicitation at start asks the router to advertise at once.
//!
//! ```
//! use lb_announce_bgp::nd::{self, Message};
//!
//! let ra = nd::router_advertisement(0);
//! assert_eq!(nd::decode(&ra), Ok(Message::RouterAdvertisement { router_lifetime: 0 }));
//! ```

use std::net::Ipv6Addr;
use std::time::Duration;

/// ICMPv6 type of a Router Solicitation.
pub const ROUTER_SOLICITATION: u8 = 133;
/// ICMPv6 type of a Router Advertisement.
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// The hop limit every neighbour discovery message arrives with (RFC 4861 §6.1): one sent
/// from further away is forged.
pub const HOP_LIMIT: u8 = 255;

/// A decoded neighbour discovery message (the ICMPv6 message, without the IPv6 header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// A Router Solicitation: the sender wants an advertisement now.
    RouterSolicitation,
    /// A Router Advertisement.
    RouterAdvertisement {
        /// Seconds the sender may be used as a default router (0: not a default router).
        router_lifetime: u16,
    },
}

/// Why a message was not taken (RFC 4861 §6.1.1, §6.1.2 validity checks).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NdError {
    /// Shorter than the message's fixed part.
    #[error("{0} octets: shorter than the message")]
    Short(usize),
    /// Another ICMPv6 type (the socket's filter should have kept it out).
    #[error("ICMPv6 type {0} is not a router solicitation or advertisement")]
    Type(u8),
    /// ICMP code other than 0.
    #[error("ICMP code {0} (must be 0)")]
    Code(u8),
    /// An option of length 0 or running past the message.
    #[error("malformed option at offset {0}")]
    Option(usize),
}

/// Decodes an ICMPv6 message as received on a raw ICMPv6 socket (the kernel has checked the
/// checksum; the caller checks the hop limit and the source).
pub fn decode(icmp: &[u8]) -> Result<Message, NdError> {
    let (&kind, &code) = match icmp {
        [k, c, ..] => (k, c),
        _ => return Err(NdError::Short(icmp.len())),
    };
    let fixed = match kind {
        ROUTER_SOLICITATION => 8,
        ROUTER_ADVERTISEMENT => 16,
        other => return Err(NdError::Type(other)),
    };
    if icmp.len() < fixed {
        return Err(NdError::Short(icmp.len()));
    }
    if code != 0 {
        return Err(NdError::Code(code));
    }
    // Options: type, length in units of 8 octets (never 0), value.
    let mut at = fixed;
    while at < icmp.len() {
        let len = icmp
            .get(at + 1)
            .map(|l| usize::from(*l) * 8)
            .ok_or(NdError::Option(at))?;
        if len == 0 || at + len > icmp.len() {
            return Err(NdError::Option(at));
        }
        at += len;
    }
    Ok(match kind {
        ROUTER_SOLICITATION => Message::RouterSolicitation,
        _ => Message::RouterAdvertisement {
            router_lifetime: u16::from_be_bytes([icmp[6], icmp[7]]),
        },
    })
}

/// A Router Solicitation with no option (the checksum is left 0: the kernel fills it in on a
/// raw ICMPv6 socket).
pub fn router_solicitation() -> Vec<u8> {
    vec![ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]
}

/// A Router Advertisement with `router_lifetime` and nothing else: no hop limit, flag,
/// reachable time, retransmission timer, prefix or source link-layer option (receivers resolve
/// our link-layer address by ordinary neighbour solicitation). Checksum left 0, as above.
pub fn router_advertisement(router_lifetime: u16) -> Vec<u8> {
    let [hi, lo] = router_lifetime.to_be_bytes();
    vec![
        ROUTER_ADVERTISEMENT,
        0,
        0,
        0,
        0,
        0,
        hi,
        lo,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Which neighbour on the link is the peer: the first link-local address heard from, kept while
/// it keeps advertising; another one replaces it only once the first has been silent for
/// `stale_after`. One router per link is what unnumbered peering expects; a second one
/// advertising on the link does not make the session flap between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learner {
    current: Option<(Ipv6Addr, Duration)>,
    stale_after: Duration,
}

impl Learner {
    /// A learner that forgets a neighbour silent for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Learner {
            current: None,
            stale_after,
        }
    }

    /// The neighbour now.
    pub fn neighbor(&self) -> Option<Ipv6Addr> {
        self.current.map(|(a, _)| a)
    }

    /// A valid message from `from` at `now` (time since any fixed start): whether the
    /// neighbour changed. A source that is not link-local is ignored (RFC 4861 §6.1.2: routers
    /// advertise from their link-local address).
    pub fn heard(&mut self, from: Ipv6Addr, now: Duration) -> bool {
        if !from.is_unicast_link_local() {
            return false;
        }
        match self.current {
            Some((a, _)) if a == from => {
                self.current = Some((a, now));
                false
            }
            Some((_, last)) if now.saturating_sub(last) < self.stale_after => false,
            _ => {
                self.current = Some((from, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Router Advertisement FRR 8.4's zebra sent on a `neighbor eth0 interface` link,
    /// captured with tcpdump (the ICMPv6 message; the kernel had checked its checksum): hop
    /// limit 64, router lifetime 30 s, and a source link-layer address option.
    const FRR_RA: &[u8] = include_bytes!("../tests/fixtures/nd/frr-8.4-router-advertisement.bin");

    /// Ours, as the fixtures hold them (the fuzz target's seeds).
    const OUR_RA: &[u8] = include_bytes!("../tests/fixtures/nd/ours-router-advertisement.bin");
    const OUR_RS: &[u8] = include_bytes!("../tests/fixtures/nd/ours-router-solicitation.bin");

    #[test]
    fn frrs_router_advertisement_decodes() {
        assert_eq!(
            decode(FRR_RA),
            Ok(Message::RouterAdvertisement {
                router_lifetime: 30
            })
        );
    }

    #[test]
    fn ours_are_encoded_as_the_fixtures_and_decode_as_sent() {
        assert_eq!(router_advertisement(0), OUR_RA);
        assert_eq!(router_solicitation(), OUR_RS);
        assert_eq!(
            decode(&router_advertisement(0)),
            Ok(Message::RouterAdvertisement { router_lifetime: 0 })
        );
        assert_eq!(
            decode(&router_solicitation()),
            Ok(Message::RouterSolicitation)
        );
    }

    #[test]
    fn invalid_messages_are_refused_with_why() {
        assert_eq!(decode(&[]), Err(NdError::Short(0)));
        assert_eq!(decode(&FRR_RA[..15]), Err(NdError::Short(15)));
        assert_eq!(decode(&FRR_RA[..8]), Err(NdError::Short(8)));
        assert_eq!(decode(&[135, 0, 0, 0]), Err(NdError::Type(135)));
        let mut coded = router_advertisement(0);
        coded[1] = 1;
        assert_eq!(decode(&coded), Err(NdError::Code(1)));
        // An option of length 0 (RFC 4861 §6.1: silently discard), one running past the end.
        let mut zero = router_solicitation();
        zero.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(&zero), Err(NdError::Option(8)));
        assert_eq!(decode(&FRR_RA[..20]), Err(NdError::Option(16)));
        let mut dangling = router_solicitation();
        dangling.push(1);
        assert_eq!(decode(&dangling), Err(NdError::Option(8)));
    }

    #[test]
    fn the_first_neighbour_is_kept_until_it_goes_silent() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let s = Duration::from_secs;
        let mut l = Learner::new(s(60));
        assert!(
            !l.heard("2001:db8::1".parse().unwrap(), s(0)),
            "not link-local"
        );
        assert_eq!(l.neighbor(), None);
        assert!(l.heard(a, s(1)));
        assert!(!l.heard(a, s(11)), "the same one again");
        assert!(
            !l.heard(b, s(20)),
            "a second router while the first advertises"
        );
        assert_eq!(l.neighbor(), Some(a));
        assert!(!l.heard(b, s(70)), "the first was heard 59 s ago");
        assert!(l.heard(b, s(72)), "the first has been silent for 61 s");
        assert_eq!(l.neighbor(), Some(b));
    }
}
