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

use super::ethernet::mac_at;
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
    /// Parses the ARP payload of an Ethernet frame (trailing padding allowed). Read at its
    /// fixed offsets, as the Ethernet header is.
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<ArpRepr, WireError> {
        let Some(b) = bytes.first_chunk::<LEN>() else {
            return Err(WireError::Truncated {
                what: "ARP packet",
                need: LEN,
                got: bytes.len(),
            });
        };
        let htype = u16::from_be_bytes([b[0], b[1]]);
        let ptype = u16::from_be_bytes([b[2], b[3]]);
        let (hlen, plen) = (b[4], b[5]);
        if htype != 1 || ptype != 0x0800 || hlen != 6 || plen != 4 {
            return Err(WireError::ArpNotEthernetIpv4 {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        Ok(ArpRepr {
            op: ArpOp::from_code(u16::from_be_bytes([b[6], b[7]])),
            sha: mac_at(b, 8),
            spa: Ipv4Addr::new(b[14], b[15], b[16], b[17]),
            tha: mac_at(b, 18),
            tpa: Ipv4Addr::new(b[24], b[25], b[26], b[27]),
        })
    }

    /// Writes the packet into the first [`LEN`] bytes of `buf` (nothing if it is shorter).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        if let Some(b) = buf.first_chunk_mut::<LEN>() {
            b[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
            b[6..8].copy_from_slice(&self.op.code().to_be_bytes());
            b[8..14].copy_from_slice(&self.sha.octets());
            b[14..18].copy_from_slice(&self.spa.octets());
            b[18..24].copy_from_slice(&self.tha.octets());
            b[24..28].copy_from_slice(&self.tpa.octets());
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

/// The length of an ARP frame: the Ethernet header and the ARP packet.
pub const FRAME_LEN: usize = super::ethernet::HEADER_LEN + LEN;

/// A whole Ethernet/ARP frame read in place: the answer path's view, which reads only the fields
/// it looks at, where they lie, and writes a reply straight from them (a parsed
/// [`super::Frame`] is the same packet as values). Holds a frame whose EtherType is ARP and
/// whose ARP header says Ethernet and IPv4.
#[derive(Clone, Copy, Debug)]
pub struct ArpFrame<'a>(&'a [u8; FRAME_LEN]);

impl<'a> ArpFrame<'a> {
    /// Checks the frame as [`super::Frame::parse`] would for ARP: long enough (padding
    /// allowed), EtherType ARP, hardware Ethernet and protocol IPv4. `Ok(None)`: not ARP.
    #[inline]
    pub fn parse(frame: &'a [u8]) -> Result<Option<ArpFrame<'a>>, WireError> {
        let Some(eth) = frame.first_chunk::<{ super::ethernet::HEADER_LEN }>() else {
            return Err(WireError::Truncated {
                what: "Ethernet header",
                need: super::ethernet::HEADER_LEN,
                got: frame.len(),
            });
        };
        if [eth[12], eth[13]] != [0x08, 0x06] {
            return Ok(None);
        }
        let Some(b) = frame.first_chunk::<FRAME_LEN>() else {
            return Err(WireError::Truncated {
                what: "ARP packet",
                need: LEN,
                got: frame.len() - super::ethernet::HEADER_LEN,
            });
        };
        let a = &b[super::ethernet::HEADER_LEN..];
        if a[..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return Err(WireError::ArpNotEthernetIpv4 {
                htype: u16::from_be_bytes([a[0], a[1]]),
                ptype: u16::from_be_bytes([a[2], a[3]]),
                hlen: a[4],
                plen: a[5],
            });
        }
        Ok(Some(ArpFrame(b)))
    }

    /// The Ethernet destination.
    #[inline]
    pub fn eth_dst(&self) -> Mac {
        mac_at(self.0, 0)
    }

    /// The Ethernet source.
    #[inline]
    pub fn eth_src(&self) -> Mac {
        mac_at(self.0, 6)
    }

    /// The operation.
    #[inline]
    pub fn op(&self) -> ArpOp {
        ArpOp::from_code(u16::from_be_bytes([self.0[20], self.0[21]]))
    }

    /// The sender's hardware address.
    #[inline]
    pub fn sha(&self) -> Mac {
        mac_at(self.0, 22)
    }

    /// The sender's address.
    #[inline]
    pub fn spa(&self) -> Ipv4Addr {
        let b = self.0;
        Ipv4Addr::new(b[28], b[29], b[30], b[31])
    }

    /// The address asked about.
    #[inline]
    pub fn tpa(&self) -> Ipv4Addr {
        let b = self.0;
        Ipv4Addr::new(b[38], b[39], b[40], b[41])
    }

    /// Writes the reply to this request into `out` (at least [`FRAME_LEN`] bytes; else
    /// nothing, 0): from `mac` to `to`, `mac` has the address asked about. Returns its length.
    /// The same bytes as [`ArpRepr::reply_to`] in an Ethernet frame.
    #[inline]
    pub fn emit_reply(&self, mac: Mac, to: Mac, out: &mut [u8]) -> usize {
        let Some(o) = out.first_chunk_mut::<FRAME_LEN>() else {
            return 0;
        };
        let b = self.0;
        o[0..6].copy_from_slice(&to.octets());
        o[6..12].copy_from_slice(&mac.octets());
        o[12..20].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]);
        o[20..22].copy_from_slice(&[0, 2]);
        o[22..28].copy_from_slice(&mac.octets());
        o[28..32].copy_from_slice(&b[38..42]);
        o[32..38].copy_from_slice(&b[22..28]);
        o[38..42].copy_from_slice(&b[28..32]);
        FRAME_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{EtherType, EthernetRepr, Frame};
    use proptest::prelude::*;

    proptest! {
        /// The in-place view reads any frame as the parser does (the same fields, the same
        /// refusals), and its reply is byte for byte the parsed reply written out.
        #[test]
        fn the_view_reads_and_answers_as_the_parsed_frame(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..64),
            arp_header in any::<bool>(),
            mac in any::<[u8; 6]>(),
            to in any::<[u8; 6]>(),
        ) {
            if bytes.len() >= 14 {
                bytes[12] = 0x08;
                bytes[13] = 0x06;
            }
            if arp_header && bytes.len() >= 20 {
                bytes[14..20].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
            }
            let (mac, to) = (Mac::from(mac), Mac::from(to));
            match (ArpFrame::parse(&bytes), Frame::parse(&bytes)) {
                (Ok(Some(view)), Ok(Frame::Arp { eth, arp })) => {
                    prop_assert_eq!(
                        (view.eth_dst(), view.eth_src(), view.op(), view.sha(), view.spa(), view.tpa()),
                        (eth.dst, eth.src, arp.op, arp.sha, arp.spa, arp.tpa)
                    );
                    let mut ours = [0u8; FRAME_LEN];
                    prop_assert_eq!(view.emit_reply(mac, to, &mut ours), FRAME_LEN);
                    let parsed = Frame::Arp {
                        eth: EthernetRepr { dst: to, src: mac, ethertype: EtherType::ARP },
                        arp: arp.reply_to(mac),
                    };
                    let mut theirs = [0u8; FRAME_LEN];
                    prop_assert_eq!(parsed.emit(&mut theirs), FRAME_LEN);
                    prop_assert_eq!(ours, theirs);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "view {:?}, parser {:?}", a.map(|v| v.is_some()), b),
            }
        }
    }
}
