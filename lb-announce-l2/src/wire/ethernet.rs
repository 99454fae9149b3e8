//! Ethernet II header (IEEE 802.3 with an EtherType).
//!
//! ```text
//!  0                   6                  12        14
//! +-------------------+-------------------+---------+------------
//! | destination MAC   | source MAC        | EtherType| payload ...
//! +-------------------+-------------------+---------+------------
//! ```

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
    /// The header and the payload after it. Read at its fixed offsets (the layer 2 answer
    /// path parses every ARP and NDP frame the link carries; pnet's view costs a bounds check
    /// and a call per field there).
    #[inline]
    pub fn parse(bytes: &[u8]) -> Result<(EthernetRepr, &[u8]), WireError> {
        let Some((h, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                what: "Ethernet header",
                need: HEADER_LEN,
                got: bytes.len(),
            });
        };
        let repr = EthernetRepr {
            dst: mac_at(h, 0),
            src: mac_at(h, 6),
            ethertype: EtherType(u16::from_be_bytes([h[12], h[13]])),
        };
        Ok((repr, payload))
    }

    /// Writes the header into the first `HEADER_LEN` bytes of `buf` (nothing if it is shorter).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) {
        if let Some(h) = buf.first_chunk_mut::<HEADER_LEN>() {
            h[0..6].copy_from_slice(&self.dst.octets());
            h[6..12].copy_from_slice(&self.src.octets());
            h[12..14].copy_from_slice(&self.ethertype.0.to_be_bytes());
        }
    }
}

/// The MAC address at `at` of a buffer at least `at + 6` long.
#[inline]
pub(crate) fn mac_at<const N: usize>(b: &[u8; N], at: usize) -> Mac {
    Mac::new(b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5])
}
