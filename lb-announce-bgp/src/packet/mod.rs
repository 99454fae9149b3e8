//! BGP-4 messages (RFC 4271 §4) with the extensions a route announcer needs: capabilities
//! (RFC 5492), multiprotocol (RFC 4760), 4-octet AS numbers (RFC 6793), route refresh (RFC 2918),
//! graceful restart (RFC 4724), extended next hop (RFC 8950), communities (RFC 1997) and large
//! communities (RFC 8092). Receiving follows RFC 7606: a malformed attribute makes the UPDATE
//! "treat-as-withdraw" or is discarded; only what RFC 7606 says breaks the session does.
//!
//! IO-free: bytes in, typed values out, and back. Decoding never panics. Every decode error maps
//! to the NOTIFICATION to send in one place ([`DecodeError::notification`]).
//!
//! Message header (§4.1):
//! ```text
//! +-----------------------------------------------+
//! |                 Marker (16 x 0xff)            |
//! +-----------------------+-----------+-----------+
//! |        Length         |   Type    |  body ... |   Length includes the header, 19..=4096
//! +-----------------------+-----------+-----------+
//! ```

// The codec's arithmetic cannot wrap or panic: every length is checked or saturated.
#![deny(clippy::arithmetic_side_effects)]

mod notification;
mod open;
mod update;

use std::fmt;

pub use notification::Notification;
pub use open::{Capability, GracefulRestart, Open};
pub use update::{
    AsPath, AsSegment, MpReach, MpUnreach, Origin, PathAttributes, RawAttribute, Rfc7606, TooLarge,
    Update, UpdateBuilder,
};

/// The 16 ones every message starts with.
pub const MARKER: [u8; 16] = [0xff; 16];
/// The length of a message header.
pub const HEADER_LEN: usize = 19;
/// RFC 4271: the largest message without the extended message capability.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// RFC 6793: the 2-octet stand-in for a 4-octet AS number.
pub const AS_TRANS: u16 = 23456;

const TYPE_OPEN: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_NOTIFICATION: u8 = 3;
const TYPE_KEEPALIVE: u8 = 4;
const TYPE_ROUTE_REFRESH: u8 = 5;

/// An address family (AFI, SAFI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AfiSafi {
    /// Address family identifier.
    pub afi: u16,
    /// Subsequent address family identifier.
    pub safi: u8,
}

impl AfiSafi {
    /// IPv4 unicast.
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: 1, safi: 1 };
    /// IPv6 unicast.
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: 2, safi: 1 };
}

impl fmt::Display for AfiSafi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AfiSafi::IPV4_UNICAST => f.write_str("ipv4-unicast"),
            AfiSafi::IPV6_UNICAST => f.write_str("ipv6-unicast"),
            AfiSafi { afi, safi } => write!(f, "afi {afi} safi {safi}"),
        }
    }
}

/// ROUTE-REFRESH (RFC 2918 §3): a request to re-send the Adj-RIB-Out for a family. The byte
/// between AFI and SAFI is the RFC 7313 message subtype (0 = normal request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteRefresh {
    /// The family whose routes are asked for.
    pub family: AfiSafi,
    /// 0 for a request (RFC 2918); 1 and 2 mark an enhanced refresh (RFC 7313).
    pub subtype: u8,
}

/// What was negotiated, which changes how messages are read and written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// Both sides announced the 4-octet AS capability: AS_PATH carries 4-octet numbers.
    pub four_octet_as: bool,
}

impl Default for Context {
    fn default() -> Self {
        Context {
            four_octet_as: true,
        }
    }
}

// An UPDATE is the large variant and by far the most common one; boxing it would cost an
// allocation per message for no gain.
/// A BGP message.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// Why a message could not be read, and so which NOTIFICATION closes the session.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// RFC 4271 §6.1: "If the Marker field of the message header is not as expected".
    #[error("message header: marker is not all ones")]
    NotSynchronized,
    /// RFC 4271 §6.1: length < 19, > 4096, or wrong for the type.
    #[error("message header: bad length {0}")]
    BadLength(u16),
    /// The message type is not one of the five.
    #[error("message header: unknown type {0}")]
    BadType(u8),
    /// The OPEN's version is not 4.
    #[error("OPEN: unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The BGP identifier is 0 or otherwise unusable.
    #[error("OPEN: bad BGP identifier")]
    BadBgpId,
    /// The hold time is 1 or 2.
    #[error("OPEN: unacceptable hold time {0} (must be 0 or at least 3)")]
    UnacceptableHoldTime(u16),
    /// An optional parameter other than capabilities.
    #[error("OPEN: unsupported optional parameter {0}")]
    UnsupportedOptionalParameter(u8),
    /// The OPEN does not parse.
    #[error("OPEN: malformed ({0})")]
    MalformedOpen(&'static str),
    /// RFC 7606 §3: an error that cannot be confined to the UPDATE's routes.
    #[error("UPDATE: malformed attribute list ({0})")]
    MalformedAttributeList(String),
    /// RFC 4271 §6.3 / RFC 7606 §5.3: an NLRI that cannot be parsed.
    #[error("UPDATE: invalid network field ({0})")]
    InvalidNetworkField(String),
    /// A NOTIFICATION shorter than its fixed part.
    #[error("NOTIFICATION: too short")]
    MalformedNotification,
    /// A ROUTE-REFRESH of the wrong length.
    #[error("ROUTE-REFRESH: bad length")]
    MalformedRouteRefresh,
}

impl DecodeError {
    /// The NOTIFICATION this error calls for (RFC 4271 §6, RFC 7313 §5).
    pub fn notification(&self) -> Notification {
        use DecodeError::*;
        let (code, subcode, data) = match self {
            NotSynchronized => (1, 1, Vec::new()),
            BadLength(l) => (1, 2, l.to_be_bytes().to_vec()),
            BadType(t) => (1, 3, vec![*t]),
            UnsupportedVersion(_) => (2, 1, 4u16.to_be_bytes().to_vec()),
            BadBgpId => (2, 3, Vec::new()),
            UnacceptableHoldTime(_) => (2, 6, Vec::new()),
            UnsupportedOptionalParameter(_) => (2, 4, Vec::new()),
            MalformedOpen(_) => (2, 0, Vec::new()),
            MalformedAttributeList(_) => (3, 1, Vec::new()),
            InvalidNetworkField(_) => (3, 10, Vec::new()),
            MalformedNotification => (1, 2, Vec::new()),
            MalformedRouteRefresh => (7, 1, Vec::new()),
        };
        Notification {
            code,
            subcode,
            data,
        }
    }
}

/// A message read from the wire, with what RFC 7606 made of its errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The message.
    pub message: Message,
    /// Empty for a clean message.
    pub rfc7606: Vec<Rfc7606>,
}

/// The length of the next message in `buf`, once its header is there: the framing step.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(DecodeError::NotSynchronized);
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&usize::from(len)) {
        return Err(DecodeError::BadLength(len));
    }
    Ok(Some(usize::from(len)))
}

impl Message {
    /// Reads one whole message (header included).
    pub fn decode(buf: &[u8], ctx: &Context) -> Result<Decoded, DecodeError> {
        let len = message_len(buf)?.ok_or(DecodeError::BadLength(buf.len() as u16))?;
        if len != buf.len() {
            return Err(DecodeError::BadLength(len as u16));
        }
        let body = &buf[HEADER_LEN..];
        let clean = |message| Decoded {
            message,
            rfc7606: Vec::new(),
        };
        match buf[18] {
            TYPE_OPEN => Ok(clean(Message::Open(Open::decode(body)?))),
            TYPE_UPDATE => {
                let (update, rfc7606) = Update::decode(body, ctx)?;
                Ok(Decoded {
                    message: Message::Update(update),
                    rfc7606,
                })
            }
            TYPE_NOTIFICATION => Ok(clean(Message::Notification(Notification::decode(body)?))),
            TYPE_KEEPALIVE if body.is_empty() => Ok(clean(Message::Keepalive)),
            TYPE_KEEPALIVE => Err(DecodeError::BadLength(len as u16)),
            TYPE_ROUTE_REFRESH => match body {
                [a, b, subtype, safi] => Ok(clean(Message::RouteRefresh(RouteRefresh {
                    family: AfiSafi {
                        afi: u16::from_be_bytes([*a, *b]),
                        safi: *safi,
                    },
                    subtype: *subtype,
                }))),
                _ => Err(DecodeError::MalformedRouteRefresh),
            },
            t => Err(DecodeError::BadType(t)),
        }
    }

    /// Appends the whole message (header included) to `out`.
    pub fn encode(&self, ctx: &Context, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0, 0]);
        let ty = match self {
            Message::Open(o) => {
                o.encode(out);
                TYPE_OPEN
            }
            Message::Update(u) => {
                u.encode(ctx, out);
                TYPE_UPDATE
            }
            Message::Notification(n) => {
                n.encode(out);
                TYPE_NOTIFICATION
            }
            Message::Keepalive => TYPE_KEEPALIVE,
            Message::RouteRefresh(r) => {
                out.extend_from_slice(&r.family.afi.to_be_bytes());
                out.push(r.subtype);
                out.push(r.family.safi);
                TYPE_ROUTE_REFRESH
            }
        };
        finish_header(out, start, ty);
    }

    /// The message on the wire, encoded as `ctx` says.
    pub fn to_bytes(&self, ctx: &Context) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(ctx, &mut out);
        out
    }
}

/// Writes length and type into a header started at `start`.
pub(crate) fn finish_header(out: &mut [u8], start: usize, ty: u8) {
    let len = out.len().saturating_sub(start) as u16;
    if let Some(h) = out.get_mut(start..start.saturating_add(HEADER_LEN)) {
        h[16..18].copy_from_slice(&len.to_be_bytes());
        h[18] = ty;
    }
}

/// A cursor that never panics: every read checks the remaining length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}
