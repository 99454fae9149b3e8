//! OPEN (RFC 4271 §4.2) and capabilities (RFC 5492).
//!
//! ```text
//! +---------+-------------+-------------+------------------+--------+------------------------+
//! | Version | My AS (2)   | Hold Time(2)| BGP Identifier(4)| OptLen | Optional Parameters    |
//! +---------+-------------+-------------+------------------+--------+------------------------+
//! Optional parameter: Type(1) Length(1) Value; type 2 carries capabilities:
//!   Code(1) Length(1) Value, one after another.
//! ```
//! Capabilities understood: 1 multiprotocol (RFC 4760), 2 route refresh (RFC 2918),
//! 5 extended next hop (RFC 8950), 64 graceful restart (RFC 4724), 65 4-octet AS (RFC 6793).
//! Others are kept as `Unknown` and ignored, as RFC 5492 allows.

use std::net::Ipv4Addr;

use super::{AS_TRANS, AfiSafi, DecodeError, Reader};

const PARAM_CAPABILITIES: u8 = 2;
const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_EXTENDED_NEXT_HOP: u8 = 5;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

/// Graceful restart capability (RFC 4724 §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R: the sender has restarted (its peer should not wait for its End-of-RIB first).
    pub restarted: bool,
    /// N: graceful restart also applies to NOTIFICATION (RFC 8538).
    pub notification: bool,
    /// Restart Time, seconds (12 bits).
    pub time: u16,
    /// Families, with F: forwarding state preserved.
    pub families: Vec<(AfiSafi, bool)>,
}

/// An OPEN capability.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capability {
    /// Multiprotocol extensions (RFC 4760).
    Multiprotocol(AfiSafi),
    /// Route refresh (RFC 2918).
    RouteRefresh,
    /// (NLRI family, next hop AFI) pairs.
    ExtendedNextHop(Vec<(AfiSafi, u16)>),
    /// Graceful restart (RFC 4724).
    GracefulRestart(GracefulRestart),
    /// 4-octet AS numbers (RFC 6793), with our AS.
    FourOctetAs(u32),
    /// Any other, kept as received.
    Unknown {
        /// The capability code.
        code: u8,
        /// Its value.
        value: Vec<u8>,
    },
}

/// An OPEN message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The version (4).
    pub version: u8,
    /// The 2-octet field; `AS_TRANS` when the real number needs 4 octets.
    pub my_as: u16,
    /// Hold time, seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// An OPEN for `asn` (4-octet capability always included; AS_TRANS in the 2-octet field
    /// when needed).
    pub fn new(
        asn: u32,
        hold_time: u16,
        bgp_id: Ipv4Addr,
        mut capabilities: Vec<Capability>,
    ) -> Self {
        if !capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
        {
            capabilities.push(Capability::FourOctetAs(asn));
        }
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's AS: from the 4-octet capability if present.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Families announced with the multiprotocol capability; none means IPv4 unicast only
    /// (RFC 4760 §8).
    pub fn families(&self) -> Vec<AfiSafi> {
        let mp: Vec<AfiSafi> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            vec![AfiSafi::IPV4_UNICAST]
        } else {
            mp
        }
    }

    /// Whether a capability matches `pred`.
    pub fn has(&self, pred: impl Fn(&Capability) -> bool) -> bool {
        self.capabilities.iter().any(pred)
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Open, DecodeError> {
        let mut r = Reader::new(body);
        let short = DecodeError::MalformedOpen("too short");
        let version = r.u8().ok_or(short.clone())?;
        if version != 4 {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let my_as = r.u16().ok_or(short.clone())?;
        let hold_time = r.u16().ok_or(short.clone())?;
        // RFC 4271 §6.2: "MUST reject Hold Time values of one or two seconds".
        if hold_time == 1 || hold_time == 2 {
            return Err(DecodeError::UnacceptableHoldTime(hold_time));
        }
        let bgp_id = Ipv4Addr::from(r.u32().ok_or(short.clone())?);
        // RFC 6286 §2.1: the identifier is a non-zero 4-octet number.
        if bgp_id.is_unspecified() {
            return Err(DecodeError::BadBgpId);
        }
        let mut opt_len = usize::from(r.u8().ok_or(short.clone())?);
        let mut extended = false;
        // RFC 9072: OptLen 255 and a first type of 255 announce 2-octet lengths.
        if opt_len == 255 && body.get(10) == Some(&255) {
            r.u8();
            opt_len = usize::from(r.u16().ok_or(short.clone())?);
            extended = true;
        }
        let params = r
            .bytes(opt_len)
            .ok_or(DecodeError::MalformedOpen("optional parameters overrun"))?;
        if !r.is_empty() {
            return Err(DecodeError::MalformedOpen(
                "bytes after the optional parameters",
            ));
        }
        let mut p = Reader::new(params);
        let mut capabilities = Vec::new();
        while !p.is_empty() {
            let ty = p.u8().ok_or(short.clone())?;
            let len = if extended {
                p.u16()
            } else {
                p.u8().map(u16::from)
            };
            let value = len
                .and_then(|l| p.bytes(usize::from(l)))
                .ok_or(DecodeError::MalformedOpen("optional parameter overrun"))?;
            if ty != PARAM_CAPABILITIES {
                return Err(DecodeError::UnsupportedOptionalParameter(ty));
            }
            decode_capabilities(value, &mut capabilities)?;
        }
        Ok(Open {
            version,
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut caps = Vec::new();
        for c in &self.capabilities {
            encode_capability(c, &mut caps);
        }
        if caps.is_empty() {
            out.push(0);
            return;
        }
        // One capabilities parameter; RFC 9072 extended lengths when it does not fit in 255.
        if caps.len().saturating_add(2) <= 255 {
            out.push(caps.len().saturating_add(2) as u8);
            out.push(PARAM_CAPABILITIES);
            out.push(caps.len() as u8);
        } else {
            out.push(255);
            out.push(255);
            out.extend_from_slice(&(caps.len().saturating_add(3) as u16).to_be_bytes());
            out.push(PARAM_CAPABILITIES);
            out.extend_from_slice(&(caps.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&caps);
    }
}

fn decode_capabilities(mut value: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let bad = |what| DecodeError::MalformedOpen(what);
    while !value.is_empty() {
        let [code, len, rest @ ..] = value else {
            return Err(bad("capability header"));
        };
        let len = usize::from(*len);
        if rest.len() < len {
            return Err(bad("capability overrun"));
        }
        let (v, tail) = rest.split_at(len);
        value = tail;
        let cap = match (*code, v) {
            (CAP_MULTIPROTOCOL, [a, b, _, safi]) => Capability::Multiprotocol(AfiSafi {
                afi: u16::from_be_bytes([*a, *b]),
                safi: *safi,
            }),
            (CAP_MULTIPROTOCOL, _) => return Err(bad("multiprotocol capability length")),
            (CAP_ROUTE_REFRESH, []) => Capability::RouteRefresh,
            (CAP_ROUTE_REFRESH, _) => return Err(bad("route refresh capability length")),
            (CAP_FOUR_OCTET_AS, [a, b, c, d]) => {
                Capability::FourOctetAs(u32::from_be_bytes([*a, *b, *c, *d]))
            }
            (CAP_FOUR_OCTET_AS, _) => return Err(bad("4-octet AS capability length")),
            (CAP_EXTENDED_NEXT_HOP, v) if v.len().is_multiple_of(6) => Capability::ExtendedNextHop(
                v.chunks_exact(6)
                    .map(|c| {
                        (
                            AfiSafi {
                                afi: u16::from_be_bytes([c[0], c[1]]),
                                // The SAFI is two octets here; only the low one is meaningful.
                                safi: c[3],
                            },
                            u16::from_be_bytes([c[4], c[5]]),
                        )
                    })
                    .collect(),
            ),
            (CAP_EXTENDED_NEXT_HOP, _) => return Err(bad("extended next hop capability length")),
            (CAP_GRACEFUL_RESTART, [hi, lo, fams @ ..]) if fams.len().is_multiple_of(4) => {
                let word = u16::from_be_bytes([*hi, *lo]);
                Capability::GracefulRestart(GracefulRestart {
                    restarted: word & 0x8000 != 0,
                    notification: word & 0x4000 != 0,
                    time: word & 0x0fff,
                    families: fams
                        .chunks_exact(4)
                        .map(|c| {
                            (
                                AfiSafi {
                                    afi: u16::from_be_bytes([c[0], c[1]]),
                                    safi: c[2],
                                },
                                c[3] & 0x80 != 0,
                            )
                        })
                        .collect(),
                })
            }
            (CAP_GRACEFUL_RESTART, _) => return Err(bad("graceful restart capability length")),
            (code, v) => Capability::Unknown {
                code,
                value: v.to_vec(),
            },
        };
        out.push(cap);
    }
    Ok(())
}

fn encode_capability(c: &Capability, out: &mut Vec<u8>) {
    let mut put = |code: u8, value: &[u8]| {
        out.push(code);
        out.push(value.len() as u8);
        out.extend_from_slice(value);
    };
    match c {
        Capability::Multiprotocol(f) => {
            let a = f.afi.to_be_bytes();
            put(CAP_MULTIPROTOCOL, &[a[0], a[1], 0, f.safi]);
        }
        Capability::RouteRefresh => put(CAP_ROUTE_REFRESH, &[]),
        Capability::FourOctetAs(asn) => put(CAP_FOUR_OCTET_AS, &asn.to_be_bytes()),
        Capability::ExtendedNextHop(entries) => {
            let mut v = Vec::with_capacity(entries.len().saturating_mul(6));
            for (f, nh) in entries {
                v.extend_from_slice(&f.afi.to_be_bytes());
                v.extend_from_slice(&u16::from(f.safi).to_be_bytes());
                v.extend_from_slice(&nh.to_be_bytes());
            }
            put(CAP_EXTENDED_NEXT_HOP, &v);
        }
        Capability::GracefulRestart(gr) => {
            let word = (u16::from(gr.restarted) << 15)
                | (u16::from(gr.notification) << 14)
                | (gr.time & 0x0fff);
            let mut v = word.to_be_bytes().to_vec();
            for (f, fwd) in &gr.families {
                v.extend_from_slice(&f.afi.to_be_bytes());
                v.push(f.safi);
                v.push(if *fwd { 0x80 } else { 0 });
            }
            put(CAP_GRACEFUL_RESTART, &v);
        }
        Capability::Unknown { code, value } => put(*code, value),
    }
}
