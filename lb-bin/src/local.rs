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

use lb_core::runtime::LocalError;

/// What went wrong with local delivery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ip` could not be run (not installed, say).
    #[error("running ip (iproute2): {0}")]
    Spawn(#[source] std::io::Error),
    /// An `ip` command failed; what it printed.
    #[error("ip {command}: {stderr}")]
    Ip {
        /// The arguments, as typed after `ip`.
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The ARP sysctls are not set as local delivery needs.
    #[error("local delivery needs ARP sysctls (or run with --local-delivery=false): {}", join(.0))]
    Sysctls(Vec<SysctlProblem>),
    /// The interface exists and was not made by lb-bin.
    #[error(
        "--dummy-interface {dev}: an interface of that name exists and lb-bin did not create it (its alias is not \"{MARK}\"); taking it over would remove its addresses. Name an interface that does not exist (default lb0), or delete this one if it is a leftover"
    )]
    NotOurs {
        /// The interface's name.
        dev: String,
    },
    /// Neither a dummy interface nor a bridge could be made.
    #[error("no dummy interface ({dummy}), nor a bridge: {bridge}")]
    NoDevice {
        /// Why the dummy interface failed.
        dummy: Box<Error>,
        /// Why the bridge failed.
        bridge: Box<Error>,
    },
}

fn join(problems: &[SysctlProblem]) -> String {
    let words: Vec<String> = problems.iter().map(ToString::to_string).collect();
    words.join("; ")
}

/// A sysctl that local delivery needs set higher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlProblem {
    /// Its dotted name (`net.ipv4.conf.all.arp_ignore`).
    pub name: String,
    /// Its value, if it could be read.
    pub value: Option<u32>,
    /// The least value that works.
    pub min: u32,
    /// What goes wrong below it.
    pub why: &'static str,
}

impl std::fmt::Display for SysctlProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, min) = (&self.name, self.min);
        match self.value {
            Some(v) => write!(f, "{name} is {v}")?,
            None => write!(f, "{name} is unreadable")?,
        }
        write!(
            f,
            "; set it to {min} (sysctl -w {name}={min}), {}",
            self.why
        )
    }
}

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

/// What is wrong with the ARP sysctls (each says what to set); empty if nothing. `read` gives a
/// file's text by its path under /proc/sys.
pub fn check_sysctls(read: impl Fn(&str) -> Option<String>) -> Vec<SysctlProblem> {
    let mut out = Vec::new();
    for (path, min, why) in SYSCTLS {
        let value = read(path).and_then(|t| t.trim().parse::<u32>().ok());
        if value.is_none_or(|v| v < min) {
            out.push(SysctlProblem {
                name: path.replace('/', "."),
                value,
                min,
                why,
            });
        }
    }
    out
}

/// The addresses on the dummy interface, kept equal to what this node announces.
#[derive(Debug)]
pub struct LocalDelivery {
    dev: String,
    have: BTreeSet<IpAddr>,
    want: BTreeSet<IpAddr>,
    errors: Vec<LocalError>,
}

/// The alias (`ip link set DEV alias ...`) that marks an interface lb-bin created.
pub const MARK: &str = "lb-bin local delivery";

/// Runs `ip` with `args`; its standard output if it succeeded.
fn ip_output(args: &[&str]) -> Result<Vec<u8>, Error> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(Error::Spawn)?;
    if !o.status.success() {
        return Err(Error::Ip {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(o.stdout)
}

fn ip(args: &[&str]) -> Result<(), Error> {
    ip_output(args).map(drop)
}

/// `ip -force -batch -`: every command in one process; an error if any failed.
fn ip_batch(commands: &[Vec<String>]) -> Result<(), Error> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    let mut text = String::new();
    for c in commands {
        text.push_str(&c.join(" "));
        text.push('\n');
    }
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).map_err(Error::Spawn)?;
    }
    let o = child.wait_with_output().map_err(Error::Spawn)?;
    if !o.status.success() {
        return Err(Error::Ip {
            command: "-force -batch -".into(),
            stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Del,
}

impl Verb {
    fn word(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Del => "del",
        }
    }
}

impl LocalDelivery {
    /// Creates the dummy interface `dev` (marked with [`MARK`]), or takes over one an earlier
    /// run made and removes every address it left; refuses any other existing interface.
    pub fn setup(dev: &str) -> Result<LocalDelivery, Error> {
        let problems = check_sysctls(|p| std::fs::read_to_string(format!("/proc/sys/{p}")).ok());
        if !problems.is_empty() {
            return Err(Error::Sysctls(problems));
        }
        let sys = std::path::Path::new("/sys/class/net").join(dev);
        if sys.exists() {
            // Only an interface an earlier run of ours made is taken over (and flushed): any
            // other holds addresses the host needs.
            let alias = std::fs::read_to_string(sys.join("ifalias")).unwrap_or_default();
            if alias.trim() != MARK {
                return Err(Error::NotOurs {
                    dev: dev.to_string(),
                });
            }
        } else {
            // A bridge without ports receives nothing either: the stand-in on kernels built
            // without the dummy driver.
            if let Err(dummy) = ip(&["link", "add", dev, "type", "dummy"]) {
                ip(&["link", "add", dev, "type", "bridge"]).map_err(|bridge| Error::NoDevice {
                    dummy: Box::new(dummy),
                    bridge: Box::new(bridge),
                })?;
            }
            ip(&["link", "set", dev, "alias", MARK])?;
        }
        ip(&["link", "set", dev, "up"])?;
        ip(&["addr", "flush", "dev", dev])?;
        Ok(LocalDelivery {
            dev: dev.to_string(),
            have: BTreeSet::new(),
            want: BTreeSet::new(),
            errors: Vec::new(),
        })
    }

    /// Puts on the interface every address of `want` it lacks (before they are announced, so
    /// the first packet the announcement draws is delivered); returns the errors.
    pub fn add(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        self.want = want.clone();
        let missing: Vec<IpAddr> = want.difference(&self.have).copied().collect();
        let errors = self.change(Verb::Add, missing);
        self.errors = errors.clone();
        errors
    }

    /// Makes the interface hold exactly `want` (removals after the announcer let go of them);
    /// returns the errors (each address is tried).
    pub fn sync(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        let extra: Vec<IpAddr> = self.have.difference(want).copied().collect();
        let mut errors = self.change(Verb::Del, extra);
        errors.extend(self.add(want));
        self.errors = errors.clone();
        errors
    }

    /// Adds or deletes `addrs`: all in one `ip` process (a takeover of many addresses waits for
    /// one, not one each). If that fails, the interface is read to learn what did change (or
    /// was so before), and the rest is tried one by one so that each failure is named.
    fn change(&mut self, verb: Verb, addrs: Vec<IpAddr>) -> Vec<LocalError> {
        let command = |a: IpAddr| {
            let mut c = vec!["addr".to_string(), verb.word().into(), host(a)];
            c.extend(["dev".to_string(), self.dev.clone()]);
            if verb == Verb::Add && a.is_ipv6() {
                c.push("nodad".into());
            }
            c
        };
        if addrs.is_empty() {
            return Vec::new();
        }
        let commands: Vec<Vec<String>> = addrs.iter().map(|a| command(*a)).collect();
        let rest = match ip_batch(&commands) {
            Ok(()) => Vec::new(),
            Err(_) => {
                let present = self.present().unwrap_or_default();
                addrs
                    .iter()
                    .copied()
                    .filter(|a| present.contains(a) != (verb == Verb::Add))
                    .collect()
            }
        };
        let mut errors = Vec::new();
        for a in addrs {
            if rest.contains(&a) {
                let c = command(a);
                if let Err(e) = ip(&c.iter().map(String::as_str).collect::<Vec<_>>()) {
                    errors.push(LocalError::new(a, e));
                    continue;
                }
            }
            match verb {
                Verb::Add => self.have.insert(a),
                Verb::Del => self.have.remove(&a),
            };
        }
        errors
    }

    /// The addresses the interface holds now.
    fn present(&self) -> Result<BTreeSet<IpAddr>, Error> {
        let out = ip_output(&["-o", "addr", "show", "dev", &self.dev])?;
        Ok(parse_addresses(&String::from_utf8_lossy(&out)))
    }

    /// Whether the interface differs from what was asked (an `ip` call failed): the caller
    /// retries with [`LocalDelivery::retry`].
    pub fn pending(&self) -> bool {
        self.have != self.want
    }

    /// Tries again what failed; returns the errors that remain.
    pub fn retry(&mut self) -> Vec<LocalError> {
        let want = self.want.clone();
        self.sync(&want)
    }

    /// The errors of the last change (empty once it succeeded).
    pub fn errors(&self) -> &[LocalError] {
        &self.errors
    }

    /// Removes every address (on shutdown).
    pub fn clear(&mut self) -> Vec<LocalError> {
        self.sync(&BTreeSet::new())
    }
}

/// The addresses in `ip -o addr show` output (`... inet 192.0.2.1/32 scope ...`).
fn parse_addresses(text: &str) -> BTreeSet<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l
                .split_whitespace()
                .skip_while(|w| *w != "inet" && *w != "inet6");
            w.next()?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

impl lb_core::runtime::LocalAddresses for LocalDelivery {
    fn add(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        LocalDelivery::add(self, want)
    }

    fn sync(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        LocalDelivery::sync(self, want)
    }

    fn pending(&self) -> bool {
        LocalDelivery::pending(self)
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
    fn the_addresses_of_ip_o_addr_show() {
        // Captured from iproute2 6.1 on a bridge standing in for the dummy interface.
        let text = "7: lb0    inet 192.0.2.201/32 scope global lb0\\       valid_lft forever preferred_lft forever\n7: lb0    inet6 2001:db8::201/128 scope global nodad \\       valid_lft forever preferred_lft forever\n7: lb0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n";
        let got: Vec<String> = parse_addresses(text)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["192.0.2.201", "2001:db8::201", "fe80::1"]);
        assert!(parse_addresses("").is_empty());
        assert!(parse_addresses("garbage inet\n7: x inet not-an-ip/3\n").is_empty());
    }

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
        let bad: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert!(
            bad[0].contains("sysctl -w net.ipv4.conf.all.arp_ignore=1"),
            "{}",
            bad[0]
        );
        assert!(bad[1].contains("arp_announce is unreadable"), "{}", bad[1]);
    }
}
