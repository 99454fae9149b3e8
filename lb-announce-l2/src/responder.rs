//! The responder: a pure function from (announced set, interface, received frame) to what to
//! do about it. One hash lookup per frame, whatever the number of announced addresses.
//!
//! It answers
//! * ARP requests, broadcast or unicast to the interface, for owned IPv4 addresses;
//! * Neighbor Solicitations for owned IPv6 addresses, to the solicited-node group or unicast to
//!   the address (NUD probes, MetalLB #2920), with or without a source link-layer option
//!   (MetalLB only answered with one), by a solicited NA with the Override flag and our target
//!   link-layer address;
//! * a duplicate address detection probe for an owned address, by defending it (NA to all-nodes)
//!   and reporting the conflict;
//!
//! and nothing else. A frame in which another MAC claims an owned address is reported as a
//! conflict.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_core::plan::Interfaces;

use crate::wire::arp::ArpFrame;
use crate::wire::ndisc::{ALL_NODES, multicast_mac, solicited_node};
use crate::wire::{
    ArpOp, ArpRepr, EtherType, EthernetRepr, Frame, Ipv6Repr, Mac, NaFlags, NdiscRepr, WireError,
};

/// A multiply-rotate hash for addresses (FxHash's step), several times cheaper than SipHash
/// on the answer path, where every ARP request and neighbor solicitation costs two lookups.
/// SipHash's keying guards a table against keys chosen to collide; here the stored keys are
/// this node's own announced addresses, which no sender on the link chooses: a frame can only
/// ask for one.
#[derive(Clone, Copy, Debug, Default)]
pub struct AddrHasher(u64);

impl AddrHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
}

type AddrMap<K> = HashMap<K, Interfaces, BuildHasherDefault<AddrHasher>>;

/// The addresses this node answers for, and on which interfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announced {
    /// Keyed by the addresses as integers: one or two multiply steps to hash, where an address
    /// type hashes its octets as a slice (a length and a byte copy first).
    v4: AddrMap<u32>,
    v6: AddrMap<u128>,
}

impl Announced {
    /// Adds an address; announcing one address on several interface sets gives their union.
    pub fn insert(&mut self, ip: IpAddr, scope: Interfaces) {
        fn add<K: std::hash::Hash + Eq>(map: &mut AddrMap<K>, k: K, scope: Interfaces) {
            let merged = match map.remove(&k) {
                Some(old) => old.union(scope),
                None => scope,
            };
            map.insert(k, merged);
        }
        match ip {
            IpAddr::V4(a) => add(&mut self.v4, a.to_bits(), scope),
            IpAddr::V6(a) => add(&mut self.v6, a.to_bits(), scope),
        }
    }

    /// Answers for `ip` on exactly `scope` from now on (what it was answered on before, if
    /// anything, is replaced).
    pub fn set(&mut self, ip: IpAddr, scope: Interfaces) {
        match ip {
            IpAddr::V4(a) => self.v4.insert(a.to_bits(), scope),
            IpAddr::V6(a) => self.v6.insert(a.to_bits(), scope),
        };
    }

    /// Makes room for `more` addresses.
    pub fn reserve(&mut self, more: usize) {
        self.v4.reserve(more);
        self.v6.reserve(more);
    }

    /// Stops answering for `ip`; returns the interfaces it was answered on.
    pub fn remove(&mut self, ip: IpAddr) -> Option<Interfaces> {
        match ip {
            IpAddr::V4(a) => self.v4.remove(&a.to_bits()),
            IpAddr::V6(a) => self.v6.remove(&a.to_bits()),
        }
    }

    /// The interfaces `ip` is answered on, if it is announced.
    pub fn scope(&self, ip: IpAddr) -> Option<&Interfaces> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&a.to_bits()),
            IpAddr::V6(a) => self.v6.get(&a.to_bits()),
        }
    }

    /// Whether `ip` is answered for on `interface`.
    pub fn owns_on(&self, ip: IpAddr, interface: &str) -> bool {
        self.scope(ip).is_some_and(|s| s.includes(interface))
    }

    /// How many addresses are announced.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every address with its interfaces (no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &Interfaces)> {
        self.v4
            .iter()
            .map(|(a, s)| (IpAddr::V4(Ipv4Addr::from_bits(*a)), s))
            .chain(
                self.v6
                    .iter()
                    .map(|(a, s)| (IpAddr::V6(Ipv6Addr::from_bits(*a)), s)),
            )
    }
}

/// The interface a frame arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The interface index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its hardware address (the answers' sender).
    pub mac: Mac,
    /// Its IPv6 link-local address.
    pub link_local: Option<Ipv6Addr>,
}

/// Why a frame got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ignored {
    /// Neither ARP nor neighbor discovery.
    NotArpOrNdisc,
    /// ARP reply or NA: nothing to answer.
    NotARequest,
    /// Unicast to another station.
    NotForUs,
    /// For an address this node does not announce.
    NotOwned,
    /// Owned, but not announced on this interface.
    NotOnThisInterface,
}

/// What to do with a received frame. Replies are written into the caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Send the first `len` bytes of the buffer: the answer for `ip`.
    Reply {
        /// The address answered for.
        ip: IpAddr,
        /// The length of the answer.
        len: usize,
    },
    /// Another station (`mac`) uses `ip`, one of ours. When `len > 0` the buffer holds our
    /// defence (an NA answering its duplicate address detection probe).
    Conflict {
        /// The address.
        ip: IpAddr,
        /// The other station.
        mac: Mac,
        /// The length of the defence (0: none).
        len: usize,
    },
    /// Nothing to do, and why.
    Ignore(Ignored),
    /// The frame does not parse.
    Malformed(WireError),
}

/// Decides about one received frame. ARP, most of what the link carries, is decided on the
/// frame in place ([`ArpFrame`]); neighbour discovery through the parsed [`Frame`].
pub fn respond(announced: &Announced, iface: &Interface, frame: &[u8], out: &mut [u8]) -> Verdict {
    match ArpFrame::parse(frame) {
        Err(e) => return Verdict::Malformed(e),
        Ok(Some(arp)) => return arp_verdict(announced, iface, arp, out),
        Ok(None) => {}
    }
    // As `Frame::parse` does for IPv6, without moving the parts into a `Frame`.
    let (eth, payload) = match EthernetRepr::parse(frame) {
        Ok(p) => p,
        Err(e) => return Verdict::Malformed(e),
    };
    if eth.ethertype != EtherType::IPV6 {
        return Verdict::Ignore(Ignored::NotArpOrNdisc);
    }
    match crate::wire::ndisc::parse(payload) {
        Err(e) => Verdict::Malformed(e),
        Ok(None) => Verdict::Ignore(Ignored::NotArpOrNdisc),
        Ok(Some((ip, msg))) => ndisc_verdict(announced, iface, &eth, &ip, &msg, out),
    }
}

fn arp_verdict(
    announced: &Announced,
    iface: &Interface,
    arp: ArpFrame<'_>,
    out: &mut [u8],
) -> Verdict {
    let (sha, eth_src) = (arp.sha(), arp.eth_src());
    let spa = IpAddr::V4(arp.spa());
    if sha != iface.mac && eth_src != iface.mac && announced.owns_on(spa, &iface.name) {
        return Verdict::Conflict {
            ip: spa,
            mac: sha,
            len: 0,
        };
    }
    if arp.op() != ArpOp::Request {
        return Verdict::Ignore(Ignored::NotARequest);
    }
    let dst = arp.eth_dst();
    if !dst.is_broadcast() && dst != iface.mac {
        return Verdict::Ignore(Ignored::NotForUs);
    }
    let tpa = IpAddr::V4(arp.tpa());
    match announced.scope(tpa) {
        None => return Verdict::Ignore(Ignored::NotOwned),
        Some(s) if !s.includes(&iface.name) => {
            return Verdict::Ignore(Ignored::NotOnThisInterface);
        }
        Some(_) => {}
    }
    let to = if sha.is_unicast() && !sha.is_zero() {
        sha
    } else {
        eth_src
    };
    Verdict::Reply {
        ip: tpa,
        len: arp.emit_reply(iface.mac, to, out),
    }
}

fn ndisc_verdict(
    announced: &Announced,
    iface: &Interface,
    eth: &EthernetRepr,
    ip: &Ipv6Repr,
    msg: &NdiscRepr,
    out: &mut [u8],
) -> Verdict {
    let target = msg.target();
    let owned = IpAddr::V6(target);
    match *msg {
        NdiscRepr::NeighborAdvert { target_lladdr, .. } => {
            let theirs = target_lladdr.unwrap_or(eth.src);
            if theirs != iface.mac && announced.owns_on(owned, &iface.name) {
                return Verdict::Conflict {
                    ip: owned,
                    mac: theirs,
                    len: 0,
                };
            }
            Verdict::Ignore(Ignored::NotARequest)
        }
        NdiscRepr::NeighborSolicit { source_lladdr, .. } => {
            match announced.scope(owned) {
                None => return Verdict::Ignore(Ignored::NotOwned),
                Some(s) if !s.includes(&iface.name) => {
                    return Verdict::Ignore(Ignored::NotOnThisInterface);
                }
                Some(_) => {}
            }
            if ip.dst != target && ip.dst != solicited_node(&target) {
                return Verdict::Ignore(Ignored::NotForUs);
            }
            if ip.src.is_unspecified() {
                // Someone probes our address before using it: defend (RFC 4862 §5.4.3 answers a
                // probe from :: with an NA to all-nodes) and report.
                if eth.src == iface.mac {
                    return Verdict::Ignore(Ignored::NotForUs);
                }
                let len = advert(
                    iface,
                    target,
                    ALL_NODES,
                    multicast_mac(&ALL_NODES),
                    false,
                    out,
                );
                return Verdict::Conflict {
                    ip: owned,
                    mac: eth.src,
                    len,
                };
            }
            let to_mac = source_lladdr.unwrap_or(eth.src);
            Verdict::Reply {
                ip: owned,
                len: advert(iface, target, ip.src, to_mac, true, out),
            }
        }
    }
}

/// A Neighbor Advertisement for `target` from this interface, with Override set.
pub fn advert(
    iface: &Interface,
    target: Ipv6Addr,
    dst: Ipv6Addr,
    dst_mac: Mac,
    solicited: bool,
    out: &mut [u8],
) -> usize {
    Frame::Ndisc {
        eth: EthernetRepr {
            dst: dst_mac,
            src: iface.mac,
            ethertype: EtherType::IPV6,
        },
        // The advertised address itself is the source, as the kernel does for its own NAs.
        ip: Ipv6Repr {
            src: target,
            dst,
            hop_limit: 255,
        },
        msg: NdiscRepr::NeighborAdvert {
            flags: NaFlags {
                router: false,
                solicited,
                override_: true,
            },
            target,
            target_lladdr: Some(iface.mac),
        },
    }
    .emit(out)
}

/// The frames that tell the LAN this interface now owns `ip`: for IPv4 a gratuitous ARP request
/// and a gratuitous ARP reply, both broadcast; for IPv6 an unsolicited NA with Override to
/// all-nodes. Each frame is handed to `send`.
pub fn announcement_frames(iface: &Interface, ip: IpAddr, mut send: impl FnMut(&[u8])) {
    let mut buf = [0u8; crate::wire::MAX_FRAME_LEN];
    match ip {
        IpAddr::V4(a) => {
            for arp in [
                ArpRepr::gratuitous_request(iface.mac, a),
                ArpRepr::gratuitous_reply(iface.mac, a),
            ] {
                let f = Frame::Arp {
                    eth: EthernetRepr {
                        dst: Mac::broadcast(),
                        src: iface.mac,
                        ethertype: EtherType::ARP,
                    },
                    arp,
                };
                let n = f.emit(&mut buf);
                send(&buf[..n]);
            }
        }
        IpAddr::V6(a) => {
            let n = advert(
                iface,
                a,
                ALL_NODES,
                multicast_mac(&ALL_NODES),
                false,
                &mut buf,
            );
            send(&buf[..n]);
        }
    }
}

/// The probe that asks whether anyone already uses `ip` (RFC 5227 ARP probe; RFC 4862 DAD
/// solicitation from :: to the solicited-node group).
pub fn probe_frame(iface: &Interface, ip: IpAddr, out: &mut [u8]) -> usize {
    match ip {
        IpAddr::V4(a) => Frame::Arp {
            eth: EthernetRepr {
                dst: Mac::broadcast(),
                src: iface.mac,
                ethertype: EtherType::ARP,
            },
            arp: ArpRepr::probe(iface.mac, a),
        }
        .emit(out),
        IpAddr::V6(a) => {
            let group = solicited_node(&a);
            Frame::Ndisc {
                eth: EthernetRepr {
                    dst: multicast_mac(&group),
                    src: iface.mac,
                    ethertype: EtherType::IPV6,
                },
                ip: Ipv6Repr {
                    src: Ipv6Addr::UNSPECIFIED,
                    dst: group,
                    hop_limit: 255,
                },
                msg: NdiscRepr::NeighborSolicit {
                    target: a,
                    source_lladdr: None,
                },
            }
            .emit(out)
        }
    }
}

/// The address a foreign station claims or probes for in this frame, and its MAC: an ARP
/// packet with that sender address, an ARP probe for it (RFC 5227 §2.1.1: a simultaneous probe
/// is a conflict too), a Neighbor Advertisement for it, or a DAD solicitation for it.
pub fn claim(iface: &Interface, frame: &[u8]) -> Option<(IpAddr, Mac)> {
    match Frame::parse(frame).ok()? {
        Frame::Arp { eth, arp } => {
            if arp.sha == iface.mac || eth.src == iface.mac {
                return None;
            }
            if !arp.spa.is_unspecified() {
                Some((IpAddr::V4(arp.spa), arp.sha))
            } else if arp.op == ArpOp::Request {
                Some((IpAddr::V4(arp.tpa), arp.sha))
            } else {
                None
            }
        }
        Frame::Ndisc { eth, ip, msg } => {
            if eth.src == iface.mac {
                return None;
            }
            match msg {
                NdiscRepr::NeighborAdvert {
                    target,
                    target_lladdr,
                    ..
                } => Some((IpAddr::V6(target), target_lladdr.unwrap_or(eth.src))),
                NdiscRepr::NeighborSolicit { target, .. } if ip.src.is_unspecified() => {
                    Some((IpAddr::V6(target), eth.src))
                }
                NdiscRepr::NeighborSolicit { .. } => None,
            }
        }
        Frame::Other => None,
    }
}

/// Whether a received frame answers a probe for `ip` sent from `iface`.
pub fn answers_probe(iface: &Interface, ip: IpAddr, frame: &[u8]) -> Option<Mac> {
    claim(iface, frame)
        .filter(|(claimed, _)| *claimed == ip)
        .map(|(_, mac)| mac)
}
