//! ARP over Ethernet for IPv4 (RFC 826), with RFC 5227's probe and announcement forms.
//!
//! ```text
//!  0        2        4    5    6        8                14           18                24           28
//! +--------+--------+----+----+--------+----------------+------------+----------------+------------+
//! | htype=1|ptype=  |hlen|plen| oper   | sender hw addr | sender IP  | target hw addr | target IP  |
//! |        | 0x0800 | =6 | =4 |        | (SHA)          | (SPA)      | (THA)          | (TPA)      |
//! +--------+--------+----+----+--------+----------------+------------+----------------+------------+
//! ```

use std::net::Ipv4Addr;

use pnet_packet::arp::{ArpHardwareType, ArpOperation, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::EtherTypes;

use super::{Mac, WireError};

/// The length of an ARP packet for Ethernet and IPv4.
pub const LEN: usize = 28;

/// The ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOp {
    /// Who has?
    Request,
    /// Is at.
    Reply,
    /// Any other.
    Unknown(u16),
}

impl ArpOp {
    fn code(self) -> u16 {
        match self {
            ArpOp::Request => 1,
            ArpOp::Reply => 2,
            ArpOp::Unknown(n) => n,
        }
    }

    fn from_code(n: u16) -> ArpOp {
        match n {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            n => ArpOp::Unknown(n),
        }
    }
}

/// An ARP packet for Ethernet and IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpRepr {
    /// The operation.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sha: Mac,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: Mac,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl ArpRepr {
    /// Parses the ARP payload of an Ethernet frame (trailing padding allowed).
    pub fn parse(bytes: &[u8]) -> Result<ArpRepr, WireError> {
        let p =
            ArpPacket::new(bytes)
                .filter(|_| bytes.len() >= LEN)
                .ok_or(WireError::Truncated {
                    what: "ARP packet",
                    need: LEN,
                    got: bytes.len(),
                })?;
        let (htype, ptype) = (p.get_hardware_type().0, p.get_protocol_type().0);
        let (hlen, plen) = (p.get_hw_addr_len(), p.get_proto_addr_len());
        if htype != 1 || ptype != 0x0800 || hlen != 6 || plen != 4 {
            return Err(WireError::ArpNotEthernetIpv4 {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        Ok(ArpRepr {
            op: ArpOp::from_code(p.get_operation().0),
            sha: p.get_sender_hw_addr(),
            spa: p.get_sender_proto_addr(),
            tha: p.get_target_hw_addr(),
            tpa: p.get_target_proto_addr(),
        })
    }

    /// Writes the 28-byte packet into `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        if let Some(mut p) = MutableArpPacket::new(buf) {
            p.set_hardware_type(ArpHardwareType(1));
            p.set_protocol_type(EtherTypes::Ipv4);
            p.set_hw_addr_len(6);
            p.set_proto_addr_len(4);
            p.set_operation(ArpOperation(self.op.code()));
            p.set_sender_hw_addr(self.sha);
            p.set_sender_proto_addr(self.spa);
            p.set_target_hw_addr(self.tha);
            p.set_target_proto_addr(self.tpa);
        }
    }

    /// The reply to a request for `ip` that we own: from `mac`, to the requester.
    pub fn reply_to(&self, mac: Mac) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Reply,
            sha: mac,
            spa: self.tpa,
            tha: self.sha,
            tpa: self.spa,
        }
    }

    /// Gratuitous ARP, request form (sender IP = target IP, broadcast): updates existing
    /// neighbour entries at once on Linux, as keepalived and MetalLB send it.
    pub fn gratuitous_request(mac: Mac, ip: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sha: mac,
            spa: ip,
            tha: Mac::zero(),
            tpa: ip,
        }
    }

    /// Gratuitous ARP, reply form. THA equals SHA, so Linux accepts it even within the
    /// neighbour entry's `locktime`.
    pub fn gratuitous_reply(mac: Mac, ip: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Reply,
            sha: mac,
            spa: ip,
            tha: mac,
            tpa: ip,
        }
    }

    /// RFC 5227 §2.1.1 probe: "the 'sender IP address' field MUST be set to all zeroes", the
    /// target hardware address zero, asking who has `ip`.
    pub fn probe(mac: Mac, ip: Ipv4Addr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Request,
            sha: mac,
            spa: Ipv4Addr::UNSPECIFIED,
            tha: Mac::zero(),
            tpa: ip,
        }
    }
}
