//! IP families, inclusive address ranges and their arithmetic.
//!
//! Addresses are handled as `u128` inside a family so that IPv4 and IPv6 share one code path;
//! `IpRange` is what a pool's `spec.addresses[]` entry becomes, whether written as a CIDR or as
//! `start-end`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::Serialize;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    /// IPv4.
    #[serde(rename = "IPv4")]
    V4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Number of bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The largest address value of this family.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        }
    }

    /// The other family.
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The numeric value of an address within its family.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` with numeric value `v`; `v` must fit the family.
pub fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        // Truncation is intended: callers only pass values of the family's width.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// An IPv4 address that some old firmware mistakes for a network or broadcast address: the last
/// octet is 0 or 255 (MetalLB's `avoidBuggyIPs`).
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => matches!(a.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// Why an address range did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Neither a CIDR nor `start-end`.
    #[error("not a CIDR or an address range (write a single address as 192.0.2.1/32)")]
    Syntax,
    /// A bad CIDR.
    #[error("invalid CIDR: {0}")]
    Cidr(String),
    /// A bad address.
    #[error("invalid address {0:?}")]
    Address(String),
    /// The two ends are of different families.
    #[error("range start and end are of different families")]
    MixedFamilies,
    /// The start is after the end.
    #[error("range start is after its end")]
    Reversed,
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    family: Family,
    start: u128,
    end: u128,
}

impl IpRange {
    /// A range from `start` to `end` inclusive.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<Self, RangeError> {
        let family = Family::of(start);
        if Family::of(end) != family {
            return Err(RangeError::MixedFamilies);
        }
        let (start, end) = (to_u128(start), to_u128(end));
        if start > end {
            return Err(RangeError::Reversed);
        }
        Ok(IpRange { family, start, end })
    }

    /// The addresses of a network. Host bits are ignored, as MetalLB (Go's `net.ParseCIDR`) does.
    pub fn from_network(net: IpNetwork) -> Self {
        let family = Family::of(net.ip());
        let host_mask = low_mask(u32::from(family.bits() - net.prefix()));
        let start = to_u128(net.ip()) & !host_mask;
        IpRange {
            family,
            start,
            end: (start | host_mask) & family.max(),
        }
    }

    /// Parses a pool address entry: a CIDR (`192.0.2.0/24`) or a range (`192.0.2.10-192.0.2.20`,
    /// spaces around the dash allowed).
    pub fn parse(s: &str) -> Result<Self, RangeError> {
        let s = s.trim();
        if let Some((a, b)) = s.split_once('-') {
            let parse = |x: &str| {
                x.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| RangeError::Address(x.trim().to_string()))
            };
            return IpRange::new(parse(a)?, parse(b)?);
        }
        if !s.contains('/') {
            return Err(RangeError::Syntax);
        }
        let net: IpNetwork = s.parse().map_err(|e| RangeError::Cidr(format!("{e}")))?;
        Ok(IpRange::from_network(net))
    }

    /// The range's family.
    pub fn family(&self) -> Family {
        self.family
    }
    /// The first address, as a number.
    pub fn start(&self) -> u128 {
        self.start
    }
    /// The last address, as a number.
    pub fn end(&self) -> u128 {
        self.end
    }
    /// The first address.
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.start)
    }
    /// The last address.
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.end)
    }

    /// Number of addresses, saturating at `u128::MAX` for the whole IPv6 space.
    pub fn size(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.start..=self.end).contains(&to_u128(ip))
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }

    /// The minimal list of CIDRs that covers exactly this range.
    pub fn to_cidrs(&self) -> Vec<IpNetwork> {
        let bits = u32::from(self.family.bits());
        let mut out = Vec::new();
        let mut cur = self.start;
        loop {
            // The largest block that starts aligned at `cur` and does not pass `end`.
            let align = if cur == 0 {
                bits
            } else {
                cur.trailing_zeros().min(bits)
            };
            let remaining = self.end - cur;
            let fits = match remaining.checked_add(1) {
                Some(count) => 127 - count.leading_zeros(),
                None => 128,
            };
            let size_bits = align.min(fits);
            let ip = from_u128(self.family, cur);
            let prefix = (bits - size_bits) as u8;
            out.push(IpNetwork::new(ip, prefix).unwrap_or_else(|_| unreachable_network(ip)));
            let block_last = cur + low_mask(size_bits);
            if block_last >= self.end {
                return out;
            }
            cur = block_last + 1;
        }
    }

    /// The longest prefix length that covers every address of the range in one block: the
    /// shortest of the CIDRs the range summarizes into.
    pub fn shortest_prefix(&self) -> u8 {
        self.to_cidrs()
            .iter()
            .map(|n| n.prefix())
            .min()
            .unwrap_or(self.family.bits())
    }
}

/// A mask of the `n` lowest bits.
fn low_mask(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

// `IpNetwork::new` only fails for a prefix longer than the family allows, which `to_cidrs`
// never builds; a host route is a harmless answer should that ever change.
fn unreachable_network(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs = self.to_cidrs();
        if cidrs.len() == 1 {
            write!(f, "{}", cidrs[0])
        } else {
            write!(f, "{}-{}", self.first(), self.last())
        }
    }
}

/// `ip` masked to `prefix` bits, as a network.
pub fn mask(ip: IpAddr, prefix: u8) -> IpNetwork {
    let family = Family::of(ip);
    let prefix = prefix.min(family.bits());
    let host_mask = low_mask(u32::from(family.bits() - prefix));
    let net = from_u128(family, to_u128(ip) & !host_mask);
    IpNetwork::new(net, prefix).unwrap_or_else(|_| unreachable_network(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> IpRange {
        IpRange::parse(s).expect(s)
    }

    #[test]
    fn cidr_and_range_forms_parse() {
        assert_eq!(r("192.0.2.0/24").size(), 256);
        assert_eq!(r("192.0.2.10 - 192.0.2.20").size(), 11);
        assert_eq!(r("2001:db8::/64").size(), 1 << 64);
        assert_eq!(r("::/0").size(), u128::MAX);
    }

    #[test]
    fn cidr_host_bits_are_masked_like_go() {
        assert_eq!(r("192.0.2.77/24"), r("192.0.2.0/24"));
    }

    #[test]
    fn bare_address_is_rejected_with_a_hint() {
        assert_eq!(IpRange::parse("192.0.2.1"), Err(RangeError::Syntax));
    }

    #[test]
    fn reversed_and_mixed_ranges_are_rejected() {
        assert_eq!(
            IpRange::parse("192.0.2.9-192.0.2.1"),
            Err(RangeError::Reversed)
        );
        assert_eq!(
            IpRange::parse("192.0.2.1-2001:db8::1"),
            Err(RangeError::MixedFamilies)
        );
        assert!(matches!(
            IpRange::parse("192.0.2.300/24"),
            Err(RangeError::Cidr(_))
        ));
    }

    #[test]
    fn range_summarizes_to_minimal_cidrs() {
        let cidrs: Vec<String> = r("192.0.2.1-192.0.2.6")
            .to_cidrs()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            cidrs,
            [
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32"
            ]
        );
        assert_eq!(r("0.0.0.0/0").to_cidrs().len(), 1);
        assert_eq!(r("::/0").to_cidrs()[0].prefix(), 0);
        assert_eq!(r("2001:db8::/64").shortest_prefix(), 64);
        assert_eq!(r("192.0.2.0-192.0.2.255").shortest_prefix(), 24);
    }

    #[test]
    fn overlap_is_family_aware() {
        assert!(r("192.0.2.0/24").overlaps(&r("192.0.2.255-192.0.3.4")));
        assert!(!r("192.0.2.0/25").overlaps(&r("192.0.2.128/25")));
        assert!(!r("0.0.0.0/0").overlaps(&r("::/0")));
    }

    #[test]
    fn buggy_ips_are_ipv4_dot_zero_and_dot_255() {
        assert!(is_buggy("192.0.2.0".parse().unwrap()));
        assert!(is_buggy("192.0.2.255".parse().unwrap()));
        assert!(!is_buggy("192.0.2.1".parse().unwrap()));
        assert!(!is_buggy("2001:db8::ff".parse().unwrap()));
    }

    #[test]
    fn mask_builds_aggregate_prefixes() {
        assert_eq!(
            mask("192.0.2.77".parse().unwrap(), 24).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            mask("2001:db8::1:2".parse().unwrap(), 64).to_string(),
            "2001:db8::/64"
        );
        assert_eq!(
            mask("192.0.2.77".parse().unwrap(), 32).to_string(),
            "192.0.2.77/32"
        );
    }
}
