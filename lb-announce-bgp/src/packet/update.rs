//! UPDATE (RFC 4271 §4.3), multiprotocol reach/unreach (RFC 4760), and RFC 7606 error handling.
//!
//! ```text
//! +---------------------------+-----------------------+
//! | Withdrawn Routes Length(2)| Withdrawn Routes ...  |   IPv4 prefixes: len(1) + bytes
//! +---------------------------+-----------------------+
//! | Total Path Attr Length(2) | Path Attributes ...   |   flags(1) type(1) len(1|2) value
//! +---------------------------+-----------------------+
//! | NLRI ...                                          |   IPv4 prefixes
//! +---------------------------------------------------+
//! Attribute flags: 0x80 optional, 0x40 transitive, 0x20 partial, 0x10 extended length.
//! MP_REACH_NLRI: AFI(2) SAFI(1) NH-len(1) next hop(s) reserved(1) NLRI...
//! MP_UNREACH_NLRI: AFI(2) SAFI(1) withdrawn NLRI...
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use super::{AfiSafi, Context, DecodeError, HEADER_LEN, MAX_MESSAGE_LEN, Message, Reader};

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const EXTENDED: u8 = 0x10;

const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const COMMUNITIES: u8 = 8;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
const LARGE_COMMUNITIES: u8 = 32;

/// ORIGIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// IGP.
    Igp,
    /// EGP.
    Egp,
    /// INCOMPLETE.
    Incomplete,
}

/// An AS_PATH segment (types 1-4; 3 and 4 are confederation segments, RFC 5065).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AsSegment {
    /// AS_SET.
    Set(Vec<u32>),
    /// AS_SEQUENCE.
    Sequence(Vec<u32>),
    /// AS_CONFED_SEQUENCE.
    ConfedSequence(Vec<u32>),
    /// AS_CONFED_SET.
    ConfedSet(Vec<u32>),
}

/// AS_PATH: its segments.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsPath(pub Vec<AsSegment>);

impl AsPath {
    /// A path of one AS_SEQUENCE (empty for iBGP-originated routes).
    pub fn sequence(asns: &[u32]) -> Self {
        if asns.is_empty() {
            AsPath(Vec::new())
        } else {
            AsPath(vec![AsSegment::Sequence(asns.to_vec())])
        }
    }
}

/// MP_REACH_NLRI (RFC 4760).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpReach {
    /// The family.
    pub family: AfiSafi,
    /// One next hop, or for IPv6 a global and a link-local one (RFC 2545 §3).
    pub next_hops: Vec<IpAddr>,
    /// The prefixes reached.
    pub nlri: Vec<IpNetwork>,
}

/// MP_UNREACH_NLRI (RFC 4760).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpUnreach {
    /// The family.
    pub family: AfiSafi,
    /// The prefixes withdrawn.
    pub withdrawn: Vec<IpNetwork>,
}

/// An attribute kept as it came: unknown optional attributes travel on unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAttribute {
    /// Attribute flags.
    pub flags: u8,
    /// Type code.
    pub code: u8,
    /// Value.
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathAttributes {
    /// ORIGIN.
    pub origin: Option<Origin>,
    /// AS_PATH.
    pub as_path: Option<AsPath>,
    /// NEXT_HOP (IPv4 routes outside MP_REACH_NLRI).
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE.
    pub atomic_aggregate: bool,
    /// AGGREGATOR: AS and address.
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// RFC 1997 communities, as sent.
    pub communities: Vec<u32>,
    /// RFC 8092 (global administrator, local data 1, local data 2).
    pub large_communities: Vec<(u32, u32, u32)>,
    /// MP_REACH_NLRI.
    pub mp_reach: Option<MpReach>,
    /// MP_UNREACH_NLRI.
    pub mp_unreach: Option<MpUnreach>,
    /// Attributes this crate does not interpret, passed as received.
    pub other: Vec<RawAttribute>,
}

/// An UPDATE message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// Withdrawn IPv4 prefixes.
    pub withdrawn: Vec<Ipv4Network>,
    /// Path attributes.
    pub attributes: PathAttributes,
    /// Reachable IPv4 prefixes.
    pub nlri: Vec<Ipv4Network>,
}

/// How RFC 7606 dealt with an error in a received UPDATE that did not reset the session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rfc7606 {
    /// The UPDATE's routes were turned into withdrawals (§2 "treat-as-withdraw").
    TreatAsWithdraw {
        /// The attribute's type code.
        code: u8,
        /// What was wrong.
        reason: String,
    },
    /// The attribute was dropped and the rest of the UPDATE kept (§2 "attribute discard").
    AttributeDiscarded {
        /// The attribute's type code.
        code: u8,
        /// What was wrong.
        reason: String,
    },
}

impl Update {
    /// End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an empty MP_UNREACH_NLRI
    /// for other families.
    pub fn end_of_rib(family: AfiSafi) -> Update {
        let mut u = Update::default();
        if family != AfiSafi::IPV4_UNICAST {
            u.attributes.mp_unreach = Some(MpUnreach {
                family,
                withdrawn: Vec::new(),
            });
        }
        u
    }

    /// The family this UPDATE is the End-of-RIB marker of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<AfiSafi> {
        let a = &self.attributes;
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || a.mp_reach.is_some() {
            return None;
        }
        match &a.mp_unreach {
            None if *a == PathAttributes::default() => Some(AfiSafi::IPV4_UNICAST),
            Some(u) if u.withdrawn.is_empty() && a.other.is_empty() && a.origin.is_none() => {
                Some(u.family)
            }
            _ => None,
        }
    }

    pub(crate) fn decode(
        body: &[u8],
        ctx: &Context,
    ) -> Result<(Update, Vec<Rfc7606>), DecodeError> {
        let malformed = |m: &str| DecodeError::MalformedAttributeList(m.to_string());
        let mut r = Reader::new(body);
        let wlen = usize::from(
            r.u16()
                .ok_or_else(|| malformed("no withdrawn routes length"))?,
        );
        let wbytes = r
            .bytes(wlen)
            .ok_or_else(|| malformed("withdrawn routes overrun the message"))?;
        let alen = usize::from(
            r.u16()
                .ok_or_else(|| malformed("no path attribute length"))?,
        );
        let abytes = r
            .bytes(alen)
            .ok_or_else(|| malformed("path attributes overrun the message"))?;
        let nbytes = r.rest();
        let withdrawn = v4_prefixes(wbytes)?;
        let nlri = v4_prefixes(nbytes)?;
        let mut notes = Vec::new();
        let (mut attributes, withdraw_reason) = decode_attributes(abytes, ctx, &mut notes)?;
        let mut update = Update {
            withdrawn,
            attributes: PathAttributes::default(),
            nlri,
        };
        let announces = !update.nlri.is_empty()
            || attributes
                .mp_reach
                .as_ref()
                .is_some_and(|m| !m.nlri.is_empty());
        let mut reason = withdraw_reason;
        if reason.is_none() && announces {
            // RFC 7606 §3(d): a missing well-known mandatory attribute -> treat-as-withdraw.
            let missing = [
                (attributes.origin.is_none(), "ORIGIN"),
                (attributes.as_path.is_none(), "AS_PATH"),
                (
                    !update.nlri.is_empty() && attributes.next_hop.is_none(),
                    "NEXT_HOP",
                ),
            ];
            if let Some((_, name)) = missing.iter().find(|(m, _)| *m) {
                reason = Some((3, format!("missing well-known attribute {name}")));
            }
        }
        if let Some((code, reason)) = reason {
            notes.push(Rfc7606::TreatAsWithdraw { code, reason });
            update.withdrawn.append(&mut update.nlri);
            let unreach = attributes.mp_reach.take().map(|m| MpUnreach {
                family: m.family,
                withdrawn: m.nlri,
            });
            let mut kept = PathAttributes {
                mp_unreach: attributes.mp_unreach.take(),
                ..Default::default()
            };
            if let Some(u) = unreach {
                match &mut kept.mp_unreach {
                    Some(existing) if existing.family == u.family => {
                        existing.withdrawn.extend(u.withdrawn)
                    }
                    _ => kept.mp_unreach = Some(u),
                }
            }
            attributes = kept;
        }
        update.attributes = attributes;
        Ok((update, notes))
    }

    pub(crate) fn encode(&self, ctx: &Context, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            put_prefix(&IpNetwork::V4(*p), out);
        }
        let wlen = out.len().saturating_sub(start).saturating_sub(2) as u16;
        out[start..start.saturating_add(2)].copy_from_slice(&wlen.to_be_bytes());
        let astart = out.len();
        out.extend_from_slice(&[0, 0]);
        encode_attributes(&self.attributes, ctx, out);
        let alen = out.len().saturating_sub(astart).saturating_sub(2) as u16;
        out[astart..astart.saturating_add(2)].copy_from_slice(&alen.to_be_bytes());
        for p in &self.nlri {
            put_prefix(&IpNetwork::V4(*p), out);
        }
    }
}

type Withdraw = Option<(u8, String)>;

fn decode_attributes(
    bytes: &[u8],
    ctx: &Context,
    notes: &mut Vec<Rfc7606>,
) -> Result<(PathAttributes, Withdraw), DecodeError> {
    let mut a = PathAttributes::default();
    let mut seen = [false; 256];
    let mut withdraw: Withdraw = None;
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let (Some(flags), Some(code)) = (r.u8(), r.u8()) else {
            withdraw.get_or_insert((1, "truncated attribute header".into()));
            break;
        };
        let len = if flags & EXTENDED != 0 {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let Some(value) = len.and_then(|l| r.bytes(usize::from(l))) else {
            // RFC 7606 §4: the attribute runs past the attribute list; the NLRI field can
            // still be found from the total length, so the routes are withdrawn.
            withdraw.get_or_insert((5, format!("attribute {code} overruns the attribute list")));
            break;
        };
        if std::mem::replace(&mut seen[usize::from(code)], true) {
            if code == MP_REACH || code == MP_UNREACH {
                // RFC 7606 §3(g): "If the MP_REACH_NLRI attribute or the MP_UNREACH_NLRI
                // attribute appears more than once ... then a NOTIFICATION message MUST be sent".
                return Err(DecodeError::MalformedAttributeList(format!(
                    "attribute {code} repeated"
                )));
            }
            // RFC 7606 §3(g): other repeats are discarded, the first one kept.
            notes.push(Rfc7606::AttributeDiscarded {
                code,
                reason: "repeated".into(),
            });
            continue;
        }
        if let Err(e) = decode_attribute(flags, code, value, ctx, &mut a) {
            match e {
                AttrError::Withdraw(reason) => {
                    withdraw.get_or_insert((code, reason));
                }
                AttrError::Discard(reason) => {
                    notes.push(Rfc7606::AttributeDiscarded { code, reason })
                }
                AttrError::Reset(e) => return Err(e),
            }
        }
    }
    // Canonical order, the one we write in: a decoded message re-encodes to bytes that decode
    // to the same value. Codes are unique here (repeats were discarded above).
    a.other.sort_by_key(|r| r.code);
    Ok((a, withdraw))
}

enum AttrError {
    Withdraw(String),
    Discard(String),
    Reset(DecodeError),
}

fn expect_flags(flags: u8, want: u8) -> Result<(), AttrError> {
    // RFC 7606 §3(c): a known attribute with the wrong Optional/Transitive bits.
    if flags & (OPTIONAL | TRANSITIVE) != want {
        return Err(AttrError::Withdraw(format!(
            "flags 0x{flags:02x}, expected 0x{want:02x}"
        )));
    }
    Ok(())
}

fn u32_value(v: &[u8], name: &str) -> Result<u32, AttrError> {
    match v {
        [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(AttrError::Withdraw(format!("{name} length {}", v.len()))),
    }
}

fn decode_attribute(
    flags: u8,
    code: u8,
    v: &[u8],
    ctx: &Context,
    a: &mut PathAttributes,
) -> Result<(), AttrError> {
    let wk = TRANSITIVE;
    let opt_trans = OPTIONAL | TRANSITIVE;
    match code {
        ORIGIN => {
            expect_flags(flags, wk)?;
            a.origin = Some(match v {
                [0] => Origin::Igp,
                [1] => Origin::Egp,
                [2] => Origin::Incomplete,
                _ => return Err(AttrError::Withdraw("invalid ORIGIN".into())),
            });
        }
        AS_PATH => {
            expect_flags(flags, wk)?;
            a.as_path = Some(
                decode_as_path(v, ctx.four_octet_as)
                    .ok_or_else(|| AttrError::Withdraw("malformed AS_PATH".into()))?,
            );
        }
        NEXT_HOP => {
            expect_flags(flags, wk)?;
            a.next_hop = Some(Ipv4Addr::from(u32_value(v, "NEXT_HOP")?));
        }
        MED => {
            expect_flags(flags, OPTIONAL)?;
            a.med = Some(u32_value(v, "MULTI_EXIT_DISC")?);
        }
        LOCAL_PREF => {
            expect_flags(flags, wk)?;
            a.local_pref = Some(u32_value(v, "LOCAL_PREF")?);
        }
        ATOMIC_AGGREGATE => {
            if !v.is_empty() || flags & (OPTIONAL | TRANSITIVE) != wk {
                return Err(AttrError::Discard("malformed ATOMIC_AGGREGATE".into()));
            }
            a.atomic_aggregate = true;
        }
        AGGREGATOR => {
            let agg = match (v.len(), ctx.four_octet_as) {
                (8, true) => Some((
                    u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                    Ipv4Addr::new(v[4], v[5], v[6], v[7]),
                )),
                (6, false) => Some((
                    u32::from(u16::from_be_bytes([v[0], v[1]])),
                    Ipv4Addr::new(v[2], v[3], v[4], v[5]),
                )),
                _ => None,
            };
            if flags & (OPTIONAL | TRANSITIVE) != opt_trans || agg.is_none() {
                // RFC 7606 §7.7: a malformed AGGREGATOR is discarded.
                return Err(AttrError::Discard("malformed AGGREGATOR".into()));
            }
            a.aggregator = agg;
        }
        COMMUNITIES => {
            expect_flags(flags, opt_trans)?;
            if v.is_empty() || !v.len().is_multiple_of(4) {
                return Err(AttrError::Withdraw(format!(
                    "COMMUNITIES length {}",
                    v.len()
                )));
            }
            a.communities = v
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        LARGE_COMMUNITIES => {
            expect_flags(flags, opt_trans)?;
            if v.is_empty() || !v.len().is_multiple_of(12) {
                return Err(AttrError::Withdraw(format!(
                    "LARGE_COMMUNITY length {}",
                    v.len()
                )));
            }
            a.large_communities = v
                .chunks_exact(12)
                .map(|c| {
                    let w = |i: usize| {
                        c.get(i..i.saturating_add(4))
                            .and_then(|b| <[u8; 4]>::try_from(b).ok())
                            .map_or(0, u32::from_be_bytes)
                    };
                    (w(0), w(4), w(8))
                })
                .collect();
        }
        MP_REACH => {
            // RFC 7606 §7.11: when the NLRI cannot be parsed the session is reset.
            a.mp_reach = Some(decode_mp_reach(v).map_err(AttrError::Reset)?);
        }
        MP_UNREACH => {
            a.mp_unreach = Some(decode_mp_unreach(v).map_err(AttrError::Reset)?);
        }
        _ if flags & OPTIONAL == 0 => {
            // An unrecognized well-known attribute.
            return Err(AttrError::Withdraw(format!(
                "unrecognized well-known attribute {code}"
            )));
        }
        _ => a.other.push(RawAttribute {
            flags: flags & !EXTENDED,
            code,
            value: v.to_vec(),
        }),
    }
    Ok(())
}

fn decode_as_path(mut v: &[u8], four: bool) -> Option<AsPath> {
    let width = if four { 4 } else { 2 };
    let mut segs = Vec::new();
    while !v.is_empty() {
        let [ty, count, rest @ ..] = v else {
            return None;
        };
        let n = usize::from(*count).saturating_mul(width);
        if rest.len() < n || *count == 0 {
            return None;
        }
        let asns: Vec<u32> = rest[..n]
            .chunks_exact(width)
            .map(|c| {
                if four {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        segs.push(match ty {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            3 => AsSegment::ConfedSequence(asns),
            4 => AsSegment::ConfedSet(asns),
            _ => return None,
        });
        v = &rest[n..];
    }
    Some(AsPath(segs))
}

fn decode_mp_reach(v: &[u8]) -> Result<MpReach, DecodeError> {
    let bad = |m: &str| DecodeError::MalformedAttributeList(format!("MP_REACH_NLRI: {m}"));
    let mut r = Reader::new(v);
    let afi = r.u16().ok_or_else(|| bad("truncated"))?;
    let safi = r.u8().ok_or_else(|| bad("truncated"))?;
    let nh_len = usize::from(r.u8().ok_or_else(|| bad("truncated"))?);
    let nh = r.bytes(nh_len).ok_or_else(|| bad("next hop overrun"))?;
    r.u8().ok_or_else(|| bad("no reserved octet"))?;
    let next_hops = match nh.len() {
        4 => vec![IpAddr::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3]))],
        16 | 32 => nh
            .chunks_exact(16)
            .map(|c| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or_default())))
            .collect(),
        n => return Err(bad(&format!("next hop length {n}"))),
    };
    let family = AfiSafi { afi, safi };
    let nlri = prefixes(r.rest(), family)?;
    Ok(MpReach {
        family,
        next_hops,
        nlri,
    })
}

fn decode_mp_unreach(v: &[u8]) -> Result<MpUnreach, DecodeError> {
    let mut r = Reader::new(v);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(DecodeError::MalformedAttributeList(
            "MP_UNREACH_NLRI: truncated".into(),
        ));
    };
    let family = AfiSafi { afi, safi };
    Ok(MpUnreach {
        family,
        withdrawn: prefixes(r.rest(), family)?,
    })
}

fn prefixes(bytes: &[u8], family: AfiSafi) -> Result<Vec<IpNetwork>, DecodeError> {
    match family.afi {
        1 => Ok(v4_prefixes(bytes)?.into_iter().map(IpNetwork::V4).collect()),
        2 => v6_prefixes(bytes),
        // Families we do not speak: the prefixes are not read (no routes are taken anyway).
        _ => Ok(Vec::new()),
    }
}

fn prefix_bytes<'a>(r: &mut Reader<'a>, max_bits: u8) -> Result<(u8, &'a [u8]), DecodeError> {
    let len = r
        .u8()
        .ok_or_else(|| DecodeError::InvalidNetworkField("truncated".into()))?;
    if len > max_bits {
        return Err(DecodeError::InvalidNetworkField(format!(
            "prefix length {len}"
        )));
    }
    let n = usize::from(len).div_ceil(8);
    let b = r
        .bytes(n)
        .ok_or_else(|| DecodeError::InvalidNetworkField("prefix overruns the field".into()))?;
    Ok((len, b))
}

fn v4_prefixes(bytes: &[u8]) -> Result<Vec<Ipv4Network>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        let (len, b) = prefix_bytes(&mut r, 32)?;
        let mut o = [0u8; 4];
        o[..b.len()].copy_from_slice(b);
        let masked = u32::from_be_bytes(o) & mask32(len);
        out.push(
            Ipv4Network::new(Ipv4Addr::from(masked), len)
                .map_err(|e| DecodeError::InvalidNetworkField(e.to_string()))?,
        );
    }
    Ok(out)
}

fn v6_prefixes(bytes: &[u8]) -> Result<Vec<IpNetwork>, DecodeError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        let (len, b) = prefix_bytes(&mut r, 128)?;
        let mut o = [0u8; 16];
        o[..b.len()].copy_from_slice(b);
        let masked = u128::from_be_bytes(o) & mask128(len);
        out.push(IpNetwork::V6(
            Ipv6Network::new(Ipv6Addr::from(masked), len)
                .map_err(|e| DecodeError::InvalidNetworkField(e.to_string()))?,
        ));
    }
    Ok(out)
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX
            .checked_shl(32u32.saturating_sub(u32::from(len)))
            .unwrap_or(0)
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX
            .checked_shl(128u32.saturating_sub(u32::from(len)))
            .unwrap_or(0)
    }
}

/// Appends `len` and the significant bytes of a prefix.
fn put_prefix(p: &IpNetwork, out: &mut Vec<u8>) {
    let len = p.prefix();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match p {
        IpNetwork::V4(n4) => out.extend_from_slice(&(u32::from(n4.network())).to_be_bytes()[..n]),
        IpNetwork::V6(n6) => out.extend_from_slice(&(u128::from(n6.network())).to_be_bytes()[..n]),
    }
}

fn prefix_len(p: &IpNetwork) -> usize {
    usize::from(p.prefix()).div_ceil(8).saturating_add(1)
}

/// Writes an attribute header for a value of `len` bytes (extended length past 255).
fn attr_header(flags: u8, code: u8, len: usize, out: &mut Vec<u8>) {
    if len > 255 {
        out.push(flags | EXTENDED);
        out.push(code);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(flags & !EXTENDED);
        out.push(code);
        out.push(len as u8);
    }
}

fn put_attr(flags: u8, code: u8, value: &[u8], out: &mut Vec<u8>) {
    attr_header(flags, code, value.len(), out);
    out.extend_from_slice(value);
}

fn segments(p: &AsPath) -> impl Iterator<Item = (u8, &[u32])> {
    p.0.iter().flat_map(|seg| {
        let (ty, asns) = match seg {
            AsSegment::Set(a) => (1, a),
            AsSegment::Sequence(a) => (2, a),
            AsSegment::ConfedSequence(a) => (3, a),
            AsSegment::ConfedSet(a) => (4, a),
        };
        // A segment holds at most 255 numbers; longer ones continue in another segment.
        asns.chunks(255).map(move |c| (ty, c))
    })
}

fn write_as_path(p: &AsPath, four: bool, out: &mut Vec<u8>) {
    let width = if four { 4 } else { 2 };
    let len: usize = segments(p)
        .map(|(_, c)| c.len().saturating_mul(width).saturating_add(2))
        .sum();
    attr_header(TRANSITIVE, AS_PATH, len, out);
    for (ty, chunk) in segments(p) {
        out.push(ty);
        out.push(chunk.len() as u8);
        for asn in chunk {
            if four {
                out.extend_from_slice(&asn.to_be_bytes());
            } else {
                out.extend_from_slice(
                    &u16::try_from(*asn).unwrap_or(super::AS_TRANS).to_be_bytes(),
                );
            }
        }
    }
}

fn encode_mp_reach(m: &MpReach, out: &mut Vec<u8>) {
    let nh_len: usize = m
        .next_hops
        .iter()
        .map(|nh| if nh.is_ipv4() { 4 } else { 16 })
        .sum();
    let nlri_len: usize = m.nlri.iter().map(prefix_len).sum();
    attr_header(
        OPTIONAL,
        MP_REACH,
        nh_len.saturating_add(nlri_len).saturating_add(5),
        out,
    );
    out.extend_from_slice(&m.family.afi.to_be_bytes());
    out.push(m.family.safi);
    out.push(nh_len as u8);
    for nh in &m.next_hops {
        match nh {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
        }
    }
    out.push(0);
    for p in &m.nlri {
        put_prefix(p, out);
    }
}

fn encode_mp_unreach(m: &MpUnreach, out: &mut Vec<u8>) {
    let nlri_len: usize = m.withdrawn.iter().map(prefix_len).sum();
    attr_header(OPTIONAL, MP_UNREACH, nlri_len.saturating_add(3), out);
    out.extend_from_slice(&m.family.afi.to_be_bytes());
    out.push(m.family.safi);
    for p in &m.withdrawn {
        put_prefix(p, out);
    }
}

/// Writes the attributes in type-code order.
fn encode_attributes(a: &PathAttributes, ctx: &Context, out: &mut Vec<u8>) {
    let mut others: Vec<&RawAttribute> = a.other.iter().collect();
    others.sort_by_key(|r| r.code);
    let mut others = others.into_iter().peekable();
    let mut flush_others = |upto: u8, out: &mut Vec<u8>| {
        while let Some(r) = others.next_if(|r| r.code < upto) {
            put_attr(r.flags, r.code, &r.value, out);
        }
    };
    flush_others(ORIGIN, out);
    if let Some(o) = a.origin {
        put_attr(TRANSITIVE, ORIGIN, &[o as u8], out);
    }
    if let Some(p) = &a.as_path {
        write_as_path(p, ctx.four_octet_as, out);
    }
    if let Some(nh) = a.next_hop {
        put_attr(TRANSITIVE, NEXT_HOP, &nh.octets(), out);
    }
    if let Some(m) = a.med {
        put_attr(OPTIONAL, MED, &m.to_be_bytes(), out);
    }
    if let Some(lp) = a.local_pref {
        put_attr(TRANSITIVE, LOCAL_PREF, &lp.to_be_bytes(), out);
    }
    if a.atomic_aggregate {
        put_attr(TRANSITIVE, ATOMIC_AGGREGATE, &[], out);
    }
    if let Some((asn, id)) = a.aggregator {
        if ctx.four_octet_as {
            attr_header(OPTIONAL | TRANSITIVE, AGGREGATOR, 8, out);
            out.extend_from_slice(&asn.to_be_bytes());
        } else {
            attr_header(OPTIONAL | TRANSITIVE, AGGREGATOR, 6, out);
            out.extend_from_slice(&u16::try_from(asn).unwrap_or(super::AS_TRANS).to_be_bytes());
        }
        out.extend_from_slice(&id.octets());
    }
    if !a.communities.is_empty() {
        attr_header(
            OPTIONAL | TRANSITIVE,
            COMMUNITIES,
            a.communities.len().saturating_mul(4),
            out,
        );
        for c in &a.communities {
            out.extend_from_slice(&c.to_be_bytes());
        }
    }
    flush_others(MP_REACH, out);
    if let Some(m) = &a.mp_reach {
        encode_mp_reach(m, out);
    }
    if let Some(m) = &a.mp_unreach {
        encode_mp_unreach(m, out);
    }
    flush_others(LARGE_COMMUNITIES, out);
    if !a.large_communities.is_empty() {
        attr_header(
            OPTIONAL | TRANSITIVE,
            LARGE_COMMUNITIES,
            a.large_communities.len().saturating_mul(12),
            out,
        );
        for (g, l1, l2) in &a.large_communities {
            out.extend_from_slice(&g.to_be_bytes());
            out.extend_from_slice(&l1.to_be_bytes());
            out.extend_from_slice(&l2.to_be_bytes());
        }
    }
    flush_others(u8::MAX, out);
    if let Some(r) = others.next() {
        put_attr(r.flags, r.code, &r.value, out);
    }
}

/// Path attributes that leave no room for a prefix in one UPDATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// Octets of the message without any prefix.
    pub fixed: usize,
    /// The message size limit.
    pub max_len: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "path attributes take {} octets of a {}-octet UPDATE: no room for a prefix",
            self.fixed, self.max_len
        )
    }
}

impl std::error::Error for TooLarge {}

/// Packs prefixes that share attributes into as few UPDATEs as the size limit allows.
#[derive(Clone, Copy, Debug)]
pub struct UpdateBuilder {
    /// How the messages are encoded.
    pub ctx: Context,
    /// 4096 unless the extended message capability (RFC 8654) was negotiated.
    pub max_len: usize,
}

impl UpdateBuilder {
    /// A builder for `ctx`, with the 4096-octet limit.
    pub fn new(ctx: Context) -> Self {
        UpdateBuilder {
            ctx,
            max_len: MAX_MESSAGE_LEN,
        }
    }

    /// UPDATE messages (bytes, header included) announcing `prefixes` with `attrs`. IPv4
    /// prefixes go in the NLRI field with `attrs.next_hop`; IPv6 prefixes in MP_REACH_NLRI with
    /// `ipv6_next_hops`. With no `attrs.next_hop`, IPv4 prefixes go in an MP_REACH_NLRI of
    /// their own with `ipv6_next_hops` (RFC 8950: only for a peer that negotiated the extended
    /// next hop capability). Attributes too large for one message: see [`Self::try_announce`];
    /// here those prefixes are left out.
    pub fn announce(
        &self,
        attrs: &PathAttributes,
        prefixes: &[IpNetwork],
        ipv6_next_hops: &[Ipv6Addr],
    ) -> Vec<Vec<u8>> {
        self.try_announce(attrs, prefixes, ipv6_next_hops)
            .unwrap_or_default()
    }

    /// As [`Self::announce`], or the encoded size of the attributes when they leave no room
    /// for a prefix in a `max_len` message (no arithmetic here can wrap).
    pub fn try_announce(
        &self,
        attrs: &PathAttributes,
        prefixes: &[IpNetwork],
        ipv6_next_hops: &[Ipv6Addr],
    ) -> Result<Vec<Vec<u8>>, TooLarge> {
        let (v4, v6): (Vec<&IpNetwork>, Vec<&IpNetwork>) =
            prefixes.iter().partition(|p| p.is_ipv4());
        let mut out = Vec::new();
        let mut base = attrs.clone();
        base.mp_reach = None;
        base.mp_unreach = None;
        if !v4.is_empty() && base.next_hop.is_none() {
            out.extend(self.mp_reach(&base, AfiSafi::IPV4_UNICAST, &v4, ipv6_next_hops)?);
        } else if !v4.is_empty() {
            let fixed = self.encoded_len(&Update {
                attributes: base.clone(),
                ..Default::default()
            });
            for chunk in chunks(&v4, self.room(fixed, &v4)?) {
                let mut u = Update {
                    attributes: base.clone(),
                    ..Default::default()
                };
                u.nlri = chunk
                    .iter()
                    .filter_map(|p| match p {
                        IpNetwork::V4(n) => Some(*n),
                        IpNetwork::V6(_) => None,
                    })
                    .collect();
                out.push(Message::Update(u).to_bytes(&self.ctx));
            }
        }
        if !v6.is_empty() {
            out.extend(self.mp_reach(&base, AfiSafi::IPV6_UNICAST, &v6, ipv6_next_hops)?);
        }
        Ok(out)
    }

    /// UPDATEs carrying `prefixes` of `family` in MP_REACH_NLRI with IPv6 next hops.
    fn mp_reach(
        &self,
        base: &PathAttributes,
        family: AfiSafi,
        prefixes: &[&IpNetwork],
        next_hops: &[Ipv6Addr],
    ) -> Result<Vec<Vec<u8>>, TooLarge> {
        let mut a = base.clone();
        a.next_hop = None;
        a.mp_reach = Some(MpReach {
            family,
            next_hops: next_hops.iter().map(|a| IpAddr::V6(*a)).collect(),
            nlri: Vec::new(),
        });
        // The MP_REACH header is written with an extended length once it passes 255 bytes:
        // reserve the extra octet.
        let fixed = self
            .encoded_len(&Update {
                attributes: a.clone(),
                ..Default::default()
            })
            .saturating_add(1);
        let mut out = Vec::new();
        for chunk in chunks(prefixes, self.room(fixed, prefixes)?) {
            let mut u = Update {
                attributes: a.clone(),
                ..Default::default()
            };
            if let Some(m) = &mut u.attributes.mp_reach {
                m.nlri = chunk.iter().map(|p| **p).collect();
            }
            out.push(Message::Update(u).to_bytes(&self.ctx));
        }
        Ok(out)
    }

    /// The NLRI room a message with `fixed` octets of everything else has, if every prefix of
    /// `prefixes` fits in it.
    fn room(&self, fixed: usize, prefixes: &[&IpNetwork]) -> Result<usize, TooLarge> {
        let widest = prefixes.iter().map(|p| prefix_len(p)).max().unwrap_or(0);
        match self.max_len.checked_sub(fixed) {
            Some(room) if room >= widest => Ok(room),
            _ => Err(TooLarge {
                fixed,
                max_len: self.max_len,
            }),
        }
    }

    /// UPDATE messages withdrawing `prefixes`.
    pub fn withdraw(&self, prefixes: &[IpNetwork]) -> Vec<Vec<u8>> {
        let (v4, v6): (Vec<&IpNetwork>, Vec<&IpNetwork>) =
            prefixes.iter().partition(|p| p.is_ipv4());
        let mut out = Vec::new();
        // Withdrawals carry no attributes: a 19-octet header, two lengths, and for IPv6 an
        // MP_UNREACH header (4 with extended length) and AFI/SAFI (3): always room.
        let fixed = HEADER_LEN + 4;
        let room = self.max_len.saturating_sub(fixed).max(17);
        for chunk in chunks(&v4, room) {
            let u = Update {
                withdrawn: chunk
                    .iter()
                    .filter_map(|p| match p {
                        IpNetwork::V4(n) => Some(*n),
                        IpNetwork::V6(_) => None,
                    })
                    .collect(),
                ..Default::default()
            };
            out.push(Message::Update(u).to_bytes(&self.ctx));
        }
        // Attribute header (4 with extended length) + AFI/SAFI (3).
        for chunk in chunks(&v6, room.saturating_sub(7).max(17)) {
            let u = Update {
                attributes: PathAttributes {
                    mp_unreach: Some(MpUnreach {
                        family: AfiSafi::IPV6_UNICAST,
                        withdrawn: chunk.iter().map(|p| **p).collect(),
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            out.push(Message::Update(u).to_bytes(&self.ctx));
        }
        out
    }

    fn encoded_len(&self, u: &Update) -> usize {
        Message::Update(u.clone()).to_bytes(&self.ctx).len()
    }
}

/// Splits prefixes into runs whose encoded NLRI fits `room` bytes.
fn chunks<'a>(prefixes: &[&'a IpNetwork], room: usize) -> Vec<Vec<&'a IpNetwork>> {
    let mut out: Vec<Vec<&IpNetwork>> = Vec::new();
    let mut used = room; // forces a new chunk first
    for p in prefixes {
        let n = prefix_len(p);
        if used.saturating_add(n) > room {
            out.push(Vec::new());
            used = 0;
        }
        used = used.saturating_add(n);
        if let Some(last) = out.last_mut() {
            last.push(p);
        }
    }
    out
}
