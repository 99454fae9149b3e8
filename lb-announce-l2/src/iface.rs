//! Interface discovery: which interfaces may answer, with their MAC and IPv6 link-local address.
//!
//! Read from `/sys/class/net` and `/proc/net/if_inet6`, which describe the network namespace of
//! the reading process as long as sysfs is mounted for it (as `ip netns exec` and container
//! runtimes do). Parsing is pure and tested on text; `scan` is the only IO.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::Path;

use crate::wire::Mac;

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_NOARP: u32 = 0x80;
const ARPHRD_ETHER: u32 = 1;

/// MetalLB's default exclude list (`config/native/exclude-l2-config.yaml`), as name patterns:
/// `^prefix.*` or `^exact$`.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
];

/// An interface as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its hardware address.
    pub mac: Mac,
    /// `IFF_*` flags.
    pub flags: u32,
    /// ARPHRD type; 1 is Ethernet.
    pub kind: u32,
    /// Enslaved to a bond or bridge.
    pub has_master: bool,
    /// Its IPv6 link-local address, the source of our neighbour advertisements.
    pub link_local: Option<Ipv6Addr>,
}

/// Why an interface does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Skip {
    /// It is down.
    Down,
    /// It is the loopback.
    Loopback,
    /// It has `IFF_NOARP`.
    NoArp,
    /// It is not Ethernet.
    NotEthernet,
    /// It is enslaved to a bond or bridge (the master answers).
    Enslaved,
    /// It matches an exclude pattern.
    Excluded,
}

/// A name pattern of the exclude list: `^prefix.*`, `^exact$`, or a plain prefix.
fn matches(pattern: &str, name: &str) -> bool {
    let p = pattern.strip_prefix('^').unwrap_or(pattern);
    if let Some(prefix) = p.strip_suffix(".*") {
        name.starts_with(prefix)
    } else if let Some(exact) = p.strip_suffix('$') {
        name == exact
    } else {
        name.starts_with(p)
    }
}

impl Link {
    /// Whether this interface may answer. `named` says the advertisement names it explicitly,
    /// which overrides the exclude list (not the hard rules: loopback, NOARP, enslaved ports).
    pub fn usable(&self, excludes: &[String], named: bool) -> Result<(), Skip> {
        if self.flags & IFF_LOOPBACK != 0 {
            return Err(Skip::Loopback);
        }
        if self.flags & IFF_NOARP != 0 {
            return Err(Skip::NoArp);
        }
        if self.kind != ARPHRD_ETHER {
            return Err(Skip::NotEthernet);
        }
        if self.has_master {
            return Err(Skip::Enslaved);
        }
        if self.flags & IFF_UP == 0 {
            return Err(Skip::Down);
        }
        if !named && excludes.iter().any(|p| matches(p, &self.name)) {
            return Err(Skip::Excluded);
        }
        Ok(())
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let parts: Vec<u8> = text
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    match parts[..] {
        [a, b, c, d, e, f] => Some(Mac::new(a, b, c, d, e, f)),
        _ => None,
    }
}

/// Parses a sysfs number: decimal, or hexadecimal with `0x`.
pub fn parse_number(text: &str) -> Option<u32> {
    let t = text.trim();
    match t.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    }
}

/// Link-local addresses by interface name, from `/proc/net/if_inet6` text
/// (`address ifindex prefixlen scope flags name`, scope 0x20 is link).
pub fn parse_if_inet6(text: &str) -> BTreeMap<String, Ipv6Addr> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, _, scope, _, name] = f[..] else {
            continue;
        };
        if scope != "20" || addr.len() != 32 {
            continue;
        }
        if let Ok(v) = u128::from_str_radix(addr, 16) {
            out.entry(name.to_string()).or_insert(Ipv6Addr::from(v));
        }
    }
    out
}

/// Reads every interface of this network namespace.
pub fn scan() -> Vec<Link> {
    scan_at(Path::new("/sys/class/net"), Path::new("/proc/net/if_inet6"))
}

fn scan_at(sys: &Path, if_inet6: &Path) -> Vec<Link> {
    let link_locals = std::fs::read_to_string(if_inet6)
        .map(|t| parse_if_inet6(&t))
        .unwrap_or_default();
    let Ok(dir) = std::fs::read_dir(sys) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let read = |f: &str| std::fs::read_to_string(path.join(f)).ok();
        let (Some(index), Some(mac), Some(flags), Some(kind)) = (
            read("ifindex").and_then(|t| parse_number(&t)),
            read("address").and_then(|t| parse_mac(&t)),
            read("flags").and_then(|t| parse_number(&t)),
            read("type").and_then(|t| parse_number(&t)),
        ) else {
            continue;
        };
        out.push(Link {
            index,
            mac,
            flags,
            kind,
            has_master: path.join("master").exists(),
            link_local: link_locals.get(&name).copied(),
            name,
        });
    }
    out.sort_by_key(|l| l.index);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, flags: u32) -> Link {
        Link {
            index: 2,
            name: name.into(),
            mac: Mac::new(2, 0, 0, 0, 0, 1),
            flags,
            kind: ARPHRD_ETHER,
            has_master: false,
            link_local: None,
        }
    }

    fn defaults() -> Vec<String> {
        DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_up_ethernet_interface_is_usable() {
        assert_eq!(link("eth0", 0x1003).usable(&defaults(), false), Ok(()));
    }

    #[test]
    fn loopback_noarp_down_enslaved_and_non_ethernet_are_skipped() {
        assert_eq!(link("lo", 0x9).usable(&[], true), Err(Skip::Loopback));
        assert_eq!(link("wg0", 0x81).usable(&[], true), Err(Skip::NoArp));
        assert_eq!(link("eth1", 0x1002).usable(&[], true), Err(Skip::Down));
        let mut l = link("eth2", 0x1003);
        l.has_master = true;
        assert_eq!(l.usable(&[], true), Err(Skip::Enslaved));
        l.has_master = false;
        l.kind = 65534;
        assert_eq!(l.usable(&[], true), Err(Skip::NotEthernet));
    }

    #[test]
    fn metallb_default_patterns_exclude_unless_named() {
        for name in ["docker0", "veth1234", "cali9", "kube-ipvs0", "lxc7", "cni0"] {
            assert_eq!(
                link(name, 0x1003).usable(&defaults(), false),
                Err(Skip::Excluded),
                "{name}"
            );
            assert_eq!(
                link(name, 0x1003).usable(&defaults(), true),
                Ok(()),
                "{name} named"
            );
        }
        assert_eq!(
            link("lower", 0x1003).usable(&defaults(), false),
            Ok(()),
            "^lo$ is exact"
        );
    }

    #[test]
    fn sysfs_and_proc_text_parse() {
        assert_eq!(
            parse_mac("02:00:00:00:00:0b\n"),
            Some(Mac::new(2, 0, 0, 0, 0, 0x0b))
        );
        assert_eq!(parse_mac("02:00"), None);
        assert_eq!(parse_number("0x1003\n"), Some(0x1003));
        assert_eq!(parse_number("7\n"), Some(7));
        let t = "20010db8000000000000000000000003 02 40 00 80     eth0\nfe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(
            parse_if_inet6(t)["eth0"],
            "fe80::1".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn scan_reads_this_namespace() {
        // Every Linux namespace has at least loopback.
        assert!(scan().iter().any(|l| l.flags & IFF_LOOPBACK != 0));
    }
}
