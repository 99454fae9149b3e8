//! IPv6 header and the two Neighbor Discovery messages (RFC 4861) this crate speaks.
//!
//! IPv6 header (RFC 8200 §3):
//! ```text
//! +-------+---------------+-----------------------+
//! |Version| Traffic Class |      Flow Label       |   bytes 0-3
//! +-------+---------------+-------+---------------+
//! |      Payload Length   |Next Hdr=58| Hop Limit |   bytes 4-7
//! +-----------------------+-----------+-----------+
//! |               Source Address (16)             |   bytes 8-23
//! |            Destination Address (16)           |   bytes 24-39
//! +-----------------------------------------------+
//! ```
//! Neighbor Solicitation (RFC 4861 §4.3) / Advertisement (§4.4):
//! ```text
//! +--------+--------+----------------+
//! | Type   | Code=0 |   Checksum     |   135 = NS, 136 = NA
//! +--------+--------+----------------+
//! |R|S|O|      Reserved (NS: all)    |   flags in NA only
//! +----------------------------------+
//! |         Target Address (16)      |
//! +----------------------------------+
//! | Options: type(1) len(1, x8 bytes) value ...   1 = source LLA, 2 = target LLA
//! +----------------------------------+
//! ```

use std::net::Ipv6Addr;

use pnet_packet::icmpv6::Icmpv6Types;
use pnet_packet::ip::IpNextHeaderProtocols;

use super::{Mac, WireError, checksum};

/// The length of an IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// Type, code, checksum, flags/reserved, target.
const NDISC_FIXED_LEN: usize = 24;
const LLA_OPTION_LEN: usize = 8;
/// A neighbour advertisement with its target link-layer address option.
pub const NA_WITH_OPTION_LEN: usize = NDISC_FIXED_LEN + LLA_OPTION_LEN;
const NS_TYPE: u8 = 135;
const NA_TYPE: u8 = 136;
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;

/// The IPv6 header fields neighbor discovery checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    /// Source.
    pub src: Ipv6Addr,
    /// Destination.
    pub dst: Ipv6Addr,
    /// Hop limit (255 for neighbor discovery).
    pub hop_limit: u8,
}

/// A neighbour advertisement's flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NaFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: it answers a solicitation.
    pub solicited: bool,
    /// O: it overrides a cached entry.
    pub override_: bool,
}

/// A neighbor discovery message we handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdiscRepr {
    /// Who has `target`?
    NeighborSolicit {
        /// The address asked for.
        target: Ipv6Addr,
        /// The asker's link-layer address (none in duplicate address detection).
        source_lladdr: Option<Mac>,
    },
    /// `target` is at `target_lladdr`.
    NeighborAdvert {
        /// R, S and O.
        flags: NaFlags,
        /// The address advertised.
        target: Ipv6Addr,
        /// Its link-layer address.
        target_lladdr: Option<Mac>,
    },
}

impl NdiscRepr {
    /// Length of the ICMPv6 message.
    pub fn buffer_len(&self) -> usize {
        let has_option = match self {
            NdiscRepr::NeighborSolicit { source_lladdr, .. } => source_lladdr.is_some(),
            NdiscRepr::NeighborAdvert { target_lladdr, .. } => target_lladdr.is_some(),
        };
        NDISC_FIXED_LEN + if has_option { LLA_OPTION_LEN } else { 0 }
    }

    /// The address the message is about.
    pub fn target(&self) -> Ipv6Addr {
        match self {
            NdiscRepr::NeighborSolicit { target, .. }
            | NdiscRepr::NeighborAdvert { target, .. } => *target,
        }
    }
}

/// `ff02::1:ffXX:XXXX`, the solicited-node multicast address of `ip` (RFC 4291 §2.7.1).
pub fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet multicast address of an IPv6 multicast address (RFC 2464 §7): `33:33` and the
/// low 32 bits.
pub fn multicast_mac(ip: &Ipv6Addr) -> Mac {
    let o = ip.octets();
    Mac::new(0x33, 0x33, o[12], o[13], o[14], o[15])
}

/// The all-nodes link-local multicast address.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn is_solicited_node(ip: &Ipv6Addr) -> bool {
    let o = ip.octets();
    o[..11] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0] && o[11] == 1 && o[12] == 0xff
}

/// Parses an IPv6 packet. `Ok(None)` when it is valid but not NS or NA; `Err` when it is NS or
/// NA and breaks a rule of RFC 4861 §7.1, or when the IPv6 header is broken.
#[inline]
pub fn parse(bytes: &[u8]) -> Result<Option<(Ipv6Repr, NdiscRepr)>, WireError> {
    // The fixed header is read at its offsets (every NS on the link passes here).
    let Some(h) = bytes.first_chunk::<IPV6_HEADER_LEN>() else {
        return Err(WireError::Truncated {
            what: "IPv6 header",
            need: IPV6_HEADER_LEN,
            got: bytes.len(),
        });
    };
    let version = h[0] >> 4;
    if version != 6 {
        return Err(WireError::Ipv6Version(version));
    }
    let declared = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let available = bytes.len() - IPV6_HEADER_LEN;
    if declared > available {
        return Err(WireError::Ipv6Length {
            declared,
            available,
        });
    }
    // Extension headers before ICMPv6 are not followed: NDP messages carry none in practice, and
    // the kernel's own NS/NA have none.
    if h[6] != IpNextHeaderProtocols::Icmpv6.0 {
        return Ok(None);
    }
    let message = &bytes[IPV6_HEADER_LEN..IPV6_HEADER_LEN + declared];
    let [ty, code, sum_hi, sum_lo, ..] = *message else {
        return Ok(None);
    };
    if ty != Icmpv6Types::NeighborSolicit.0 && ty != Icmpv6Types::NeighborAdvert.0 {
        return Ok(None);
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        Ipv6Addr::from(a)
    };
    let repr = Ipv6Repr {
        src: addr(8),
        dst: addr(24),
        hop_limit: h[7],
    };
    if repr.hop_limit != 255 {
        return Err(WireError::HopLimit(repr.hop_limit));
    }
    if code != 0 {
        return Err(WireError::Code(code));
    }
    if message.len() < NDISC_FIXED_LEN {
        return Err(WireError::Truncated {
            what: "neighbor discovery message",
            need: NDISC_FIXED_LEN,
            got: message.len(),
        });
    }
    let sum = checksum::icmpv6(&repr.src, &repr.dst, message);
    if sum != 0 {
        let got = u16::from_be_bytes([sum_hi, sum_lo]);
        return Err(WireError::Checksum {
            got,
            want: (!sum).wrapping_add(got),
        });
    }
    if repr.src.is_multicast() {
        return Err(WireError::MulticastSource(repr.src));
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&message[8..24]);
    let target = Ipv6Addr::from(t);
    if target.is_multicast() {
        return Err(WireError::MulticastTarget(target));
    }
    let (source_lla, target_lla) = options(&message[NDISC_FIXED_LEN..])?;
    let msg = if ty == Icmpv6Types::NeighborSolicit.0 {
        if repr.src.is_unspecified() && (!is_solicited_node(&repr.dst) || source_lla.is_some()) {
            return Err(WireError::UnspecifiedSource);
        }
        NdiscRepr::NeighborSolicit {
            target,
            source_lladdr: source_lla,
        }
    } else {
        let flags = NaFlags {
            router: message[4] & 0x80 != 0,
            solicited: message[4] & 0x40 != 0,
            override_: message[4] & 0x20 != 0,
        };
        if flags.solicited && repr.dst.is_multicast() {
            return Err(WireError::SolicitedToMulticast);
        }
        NdiscRepr::NeighborAdvert {
            flags,
            target,
            target_lladdr: target_lla,
        }
    };
    Ok(Some((repr, msg)))
}

/// Reads the link-layer address options; others are skipped, as RFC 4861 §4.6 requires.
fn options(mut rest: &[u8]) -> Result<(Option<Mac>, Option<Mac>), WireError> {
    let (mut source, mut target) = (None, None);
    let mut offset = NDISC_FIXED_LEN;
    while !rest.is_empty() {
        let len = rest.get(1).map(|l| usize::from(*l) * 8).unwrap_or(0);
        if len == 0 || len > rest.len() {
            return Err(WireError::BadOption { offset });
        }
        let (opt, tail) = rest.split_at(len);
        if len >= 8 {
            let mac = Mac::new(opt[2], opt[3], opt[4], opt[5], opt[6], opt[7]);
            match opt[0] {
                OPT_SOURCE_LLA => source = Some(mac),
                OPT_TARGET_LLA => target = Some(mac),
                _ => {}
            }
        }
        offset += len;
        rest = tail;
    }
    Ok((source, target))
}

/// Writes the IPv6 header and the message, with its checksum, into `buf`.
pub fn emit(ip: &Ipv6Repr, msg: &NdiscRepr, buf: &mut [u8]) {
    let msg_len = msg.buffer_len();
    if buf.len() < IPV6_HEADER_LEN + msg_len {
        return;
    }
    if let Some(h) = buf.first_chunk_mut::<IPV6_HEADER_LEN>() {
        // Version 6, traffic class and flow label 0; the rest at their offsets.
        h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        h[4..6].copy_from_slice(&(msg_len as u16).to_be_bytes());
        h[6] = IpNextHeaderProtocols::Icmpv6.0;
        h[7] = ip.hop_limit;
        h[8..24].copy_from_slice(&ip.src.octets());
        h[24..40].copy_from_slice(&ip.dst.octets());
    }
    let m = &mut buf[IPV6_HEADER_LEN..IPV6_HEADER_LEN + msg_len];
    m.fill(0);
    let (ty, flags, target, lla) = match *msg {
        NdiscRepr::NeighborSolicit {
            target,
            source_lladdr,
        } => (
            NS_TYPE,
            0,
            target,
            source_lladdr.map(|m| (OPT_SOURCE_LLA, m)),
        ),
        NdiscRepr::NeighborAdvert {
            flags,
            target,
            target_lladdr,
        } => (
            NA_TYPE,
            (u8::from(flags.router) << 7)
                | (u8::from(flags.solicited) << 6)
                | (u8::from(flags.override_) << 5),
            target,
            target_lladdr.map(|m| (OPT_TARGET_LLA, m)),
        ),
    };
    m[0] = ty;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    if let Some((kind, mac)) = lla {
        m[24] = kind;
        m[25] = 1;
        m[26..32].copy_from_slice(&mac.octets());
    }
    let sum = checksum::icmpv6(&ip.src, &ip.dst, m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
}
