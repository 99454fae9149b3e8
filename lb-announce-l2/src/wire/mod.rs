//! Wire formats: Ethernet II, ARP (RFC 826) and IPv6 Neighbor Discovery (RFC 4861 §4.3, §4.4).
//!
//! Each format is a typed `Repr` read from and written to bytes. The fixed headers (Ethernet,
//! ARP, IPv6) are read and written at their offsets: every ARP and NDP frame on the link passes
//! here. [`arp::ArpFrame`] decides ARP on the frame in place.
//!
//! The contract, as in smoltcp's `wire`: **parsing never panics**, whatever the input. A frame
//! that is short, of an unknown hardware/protocol type, fails its checksum, or breaks a MUST of
//! RFC 4861's validation rules is an `Err(WireError)`, which callers count and drop. A frame that
//! is well formed but of no interest (another EtherType, another ICMPv6 type) is not an error:
//! it parses to [`Frame::Other`]. Emitting writes into a caller's buffer of at least
//! `buffer_len()` bytes and never allocates.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod ndisc;

use std::net::Ipv6Addr;

pub use arp::{ArpOp, ArpRepr};
pub use ethernet::{EtherType, EthernetRepr};
pub use ndisc::{Ipv6Repr, NaFlags, NdiscRepr};
pub use pnet_base::MacAddr as Mac;

/// Why a frame was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame ends before what is being read.
    #[error("{what}: truncated ({got} of {need} bytes)")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// An ARP packet for another hardware or protocol type.
    #[error(
        "ARP for hardware type {htype} / protocol 0x{ptype:04x} (lengths {hlen}/{plen}); only Ethernet/IPv4 is handled"
    )]
    ArpNotEthernetIpv4 {
        /// Hardware type.
        htype: u16,
        /// Protocol type.
        ptype: u16,
        /// Hardware address length.
        hlen: u8,
        /// Protocol address length.
        plen: u8,
    },
    /// Not IPv6.
    #[error("IPv6: version field is {0}")]
    Ipv6Version(u8),
    /// The IPv6 payload length runs past the frame.
    #[error("IPv6: payload length {declared} exceeds the {available} bytes present")]
    Ipv6Length {
        /// What the header says.
        declared: usize,
        /// What the frame holds.
        available: usize,
    },
    /// The ICMPv6 checksum is wrong.
    #[error("ICMPv6 checksum 0x{got:04x}, computed 0x{want:04x}")]
    Checksum {
        /// The frame's.
        got: u16,
        /// The computed one.
        want: u16,
    },
    /// RFC 4861 §7.1.1 / §7.1.2: "The IP Hop Limit field has a value of 255".
    #[error("neighbor discovery with hop limit {0} (RFC 4861 requires 255)")]
    HopLimit(u8),
    /// RFC 4861: "ICMP Code is 0".
    #[error("neighbor discovery with ICMP code {0} (RFC 4861 requires 0)")]
    Code(u8),
    /// RFC 4861: "Target Address is not a multicast address".
    #[error("neighbor discovery target {0} is multicast")]
    MulticastTarget(Ipv6Addr),
    /// RFC 4861: "All included options have a length that is greater than zero".
    #[error("neighbor discovery option at byte {offset} has length zero or runs past the end")]
    BadOption {
        /// Where the option starts.
        offset: usize,
    },
    /// RFC 4861 §7.1.1: "If the IP source address is the unspecified address, the IP destination
    /// address is a solicited-node multicast address" and "there is no source link-layer
    /// address option in the message".
    #[error(
        "neighbor solicitation from :: must go to a solicited-node group and carry no source link-layer option"
    )]
    UnspecifiedSource,
    /// RFC 4291 §2.7: "Multicast addresses must not be used as source addresses in IPv6
    /// packets" (a reply to one would go to a group).
    #[error("neighbor discovery from multicast source {0}")]
    MulticastSource(Ipv6Addr),
    /// RFC 4861 §7.1.2: "If the IP Destination Address is a multicast address the Solicited flag
    /// is zero".
    #[error("solicited neighbor advertisement sent to a multicast address")]
    SolicitedToMulticast,
}

/// A frame as the responder sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An ARP packet.
    Arp {
        /// Its Ethernet header.
        eth: EthernetRepr,
        /// The packet.
        arp: ArpRepr,
    },
    /// A neighbor discovery message.
    Ndisc {
        /// Its Ethernet header.
        eth: EthernetRepr,
        /// Its IPv6 header.
        ip: Ipv6Repr,
        /// The message.
        msg: NdiscRepr,
    },
    /// Well formed, not ARP or neighbor discovery.
    Other,
}

impl Frame {
    /// Parses an Ethernet frame.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<Frame, WireError> {
        let (eth, payload) = EthernetRepr::parse(bytes)?;
        match eth.ethertype {
            EtherType::ARP => Ok(Frame::Arp {
                eth,
                arp: ArpRepr::parse(payload)?,
            }),
            EtherType::IPV6 => Ok(match ndisc::parse(payload)? {
                Some((ip, msg)) => Frame::Ndisc { eth, ip, msg },
                None => Frame::Other,
            }),
            _ => Ok(Frame::Other),
        }
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Frame::Arp { .. } => ethernet::HEADER_LEN + arp::LEN,
            Frame::Ndisc { msg, .. } => {
                ethernet::HEADER_LEN + ndisc::IPV6_HEADER_LEN + msg.buffer_len()
            }
            Frame::Other => 0,
        }
    }

    /// Writes the frame into `buf` (at least `buffer_len()` bytes) and returns its length; the
    /// ICMPv6 checksum is computed here. `Other` writes nothing.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let len = self.buffer_len();
        if buf.len() < len {
            return 0;
        }
        match self {
            Frame::Arp { eth, arp } => {
                eth.emit(buf);
                arp.emit(&mut buf[ethernet::HEADER_LEN..len]);
            }
            Frame::Ndisc { eth, ip, msg } => {
                eth.emit(buf);
                ndisc::emit(ip, msg, &mut buf[ethernet::HEADER_LEN..len]);
            }
            Frame::Other => {}
        }
        len
    }
}

/// The largest frame this crate emits.
pub const MAX_FRAME_LEN: usize =
    ethernet::HEADER_LEN + ndisc::IPV6_HEADER_LEN + ndisc::NA_WITH_OPTION_LEN;
