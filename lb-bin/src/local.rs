//! Local delivery: the addresses this node announces are put on a dummy interface while it
//! announces them, so that traffic to them reaches local sockets (what a keepalived user
//! expects), and taken off when ownership moves.
//!
//! The kernel must never answer ARP for them itself: with `arp_ignore=1` it answers only for
//! addresses of the interface a request came in on, and a dummy interface receives none, so
//! after a crash a node that still holds an address on the dummy interface stays silent. IPv6
//! neighbour discovery answers only for the receiving interface already.
//!
//! Addresses are changed with `ip` (iproute2), the same tool an operator would use. Where the
//! kernel has no dummy driver, a bridge without ports stands in: it receives nothing either.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The sysctls local delivery needs, as (path under /proc/sys, minimum, why).
const SYSCTLS: [(&str, u32, &str); 2] = [
    (
        "net/ipv4/conf/all/arp_ignore",
        1,
        "or the kernel answers ARP for addresses on the dummy interface from every interface",
    ),
    (
        "net/ipv4/conf/all/arp_announce",
        2,
        "or the kernel may use an announced address as the source of its own ARP requests",
    ),
];

/// What is wrong with the ARP sysctls, as sentences that say what to set; empty if nothing.
pub fn check_sysctls(read: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, min, why) in SYSCTLS {
        let v = read(path).and_then(|t| t.trim().parse::<u32>().ok());
        if v.is_none_or(|v| v < min) {
            let name = path.replace('/', ".");
            out.push(format!(
                "{name} is {}; set it to {min} (sysctl -w {name}={min}), {why}",
                v.map_or("unreadable".to_string(), |v| v.to_string())
            ));
        }
    }
    out
}

/// The addresses on the dummy interface, kept equal to what this node announces.
#[derive(Debug)]
pub struct LocalDelivery {
    dev: String,
    have: BTreeSet<IpAddr>,
}

fn ip(args: &[&str]) -> Result<()> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !o.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

impl LocalDelivery {
    /// Creates (or takes over) the dummy interface `dev` and removes every address a previous
    /// run left on it.
    pub fn setup(dev: &str) -> Result<LocalDelivery> {
        let problems = check_sysctls(|p| std::fs::read_to_string(format!("/proc/sys/{p}")).ok());
        if !problems.is_empty() {
            bail!(
                "local delivery needs ARP sysctls (or run with --local-delivery=false): {}",
                problems.join("; ")
            );
        }
        if !std::path::Path::new("/sys/class/net").join(dev).exists() {
            // A bridge without ports receives nothing either: the stand-in on kernels built
            // without the dummy driver.
            if let Err(e) = ip(&["link", "add", dev, "type", "dummy"]) {
                ip(&["link", "add", dev, "type", "bridge"])
                    .with_context(|| format!("no dummy interface ({e:#}), nor a bridge"))?;
            }
        }
        ip(&["link", "set", dev, "up"])?;
        ip(&["addr", "flush", "dev", dev])?;
        Ok(LocalDelivery {
            dev: dev.to_string(),
            have: BTreeSet::new(),
        })
    }

    /// Makes the interface hold exactly `want`; returns the errors (each address is tried).
    pub fn sync(&mut self, want: &BTreeSet<IpAddr>) -> Vec<String> {
        let mut errors = Vec::new();
        for a in self.have.difference(want).copied().collect::<Vec<_>>() {
            match ip(&["addr", "del", &host(a), "dev", &self.dev]) {
                Ok(()) => {
                    self.have.remove(&a);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        for a in want.difference(&self.have).copied().collect::<Vec<_>>() {
            let h = host(a);
            let mut args = vec!["addr", "add", h.as_str(), "dev", self.dev.as_str()];
            if a.is_ipv6() {
                args.push("nodad");
            }
            match ip(&args) {
                Ok(()) => {
                    self.have.insert(a);
                }
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        errors
    }

    /// Removes every address (on shutdown).
    pub fn clear(&mut self) -> Vec<String> {
        self.sync(&BTreeSet::new())
    }
}

fn host(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_or_unreadable_arp_sysctls_say_what_to_set() {
        let ok = check_sysctls(|p| Some(if p.ends_with("ignore") { "1\n" } else { "2\n" }.into()));
        assert!(ok.is_empty(), "{ok:?}");
        let bad = check_sysctls(|p| {
            if p.ends_with("ignore") {
                Some("0".into())
            } else {
                None
            }
        });
        assert_eq!(bad.len(), 2);
        assert!(
            bad[0].contains("sysctl -w net.ipv4.conf.all.arp_ignore=1"),
            "{}",
            bad[0]
        );
        assert!(bad[1].contains("arp_announce is unreadable"), "{}", bad[1]);
    }
}
