//! Ethernet II header (IEEE 802.3 with an EtherType).
//!
//! ```text
//!  0                   6                  12        14
//! +-------------------+-------------------+---------+------------
//! | destination MAC   | source MAC        | EtherType| payload ...
//! +-------------------+-------------------+---------+------------
//! ```

use pnet_packet::ethernet::{EtherType as PnetEtherType, EthernetPacket, MutableEthernetPacket};

use super::{Mac, WireError};

/// The length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// An EtherType value; the two this crate speaks are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
}

/// An Ethernet II header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Destination.
    pub dst: Mac,
    /// Source.
    pub src: Mac,
    /// What the payload is.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// The header and the payload after it.
    pub fn parse(bytes: &[u8]) -> Result<(EthernetRepr, &[u8]), WireError> {
        let p = EthernetPacket::new(bytes).ok_or(WireError::Truncated {
            what: "Ethernet header",
            need: HEADER_LEN,
            got: bytes.len(),
        })?;
        let repr = EthernetRepr {
            dst: p.get_destination(),
            src: p.get_source(),
            ethertype: EtherType(p.get_ethertype().0),
        };
        Ok((repr, &bytes[HEADER_LEN..]))
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) {
        if let Some(mut p) = MutableEthernetPacket::new(buf) {
            p.set_destination(self.dst);
            p.set_source(self.src);
            p.set_ethertype(PnetEtherType(self.ethertype.0));
        }
    }
}
