//! The announcer against the real Linux kernel, in network namespaces this test creates.
//!
//! ```text
//!  ns lan: bridge br0 ─┬─ client  eth0 192.0.2.2    2001:db8::2    02:00:00:00:00:02
//!                      ├─ node1   eth0 192.0.2.17   2001:db8::11   02:00:00:00:00:11
//!                      ├─ node2   eth0 192.0.2.18   2001:db8::12   02:00:00:00:00:12
//!                      └─ squat   eth0 192.0.2.150  2001:db8::150  02:00:00:00:00:50
//!  node1 eth1 ── island (a LAN the client is not on)
//!  VIPs 192.0.2.100 and 2001:db8::100 sit on the nodes' loopback (arp_ignore=1, nodad), so only
//!  our responder answers for them.
//! ```
//!
//! Needs root, iproute2 and iputils-ping. Without them the tests say so and pass, unless
//! `LB_REQUIRE_NETNS=1` (set by `.ci/run`), which makes a missing prerequisite a failure.
//! Everything created is deleted on drop, also when a test fails; only processes started here
//! are stopped, by PID.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const VIP4: &str = "192.0.2.100";
const VIP6: &str = "2001:db8::100";
const NODE1_MAC: &str = "02:00:00:00:00:11";
const NODE2_MAC: &str = "02:00:00:00:00:12";
const SQUAT_MAC: &str = "02:00:00:00:00:50";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Whether this machine can run the tests; explains why not.
fn prerequisites() -> bool {
    let root = run(&["id", "-u"]).stdout == b"0\n";
    let tools = ["ip", "ping"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if root && tools {
        return true;
    }
    let why = format!(
        "network namespace tests need root, iproute2 and iputils-ping (root: {root}, tools: {tools})"
    );
    if std::env::var("LB_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// A started announcer: its PID is ours to stop.
struct Announcer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Lines read but not yet consumed.
    backlog: std::collections::VecDeque<String>,
}

impl Announcer {
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        if let Some(l) = self.backlog.pop_front() {
            return Some(l);
        }
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// Waits for a line starting with `prefix` and returns it; other lines stay for later.
    fn wait_for(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            match self.next_line(deadline) {
                Some(l) if l.starts_with(prefix) => {
                    skipped.extend(self.backlog.drain(..));
                    self.backlog = skipped.into();
                    return l;
                }
                Some(l) => skipped.push(l),
                None => {
                    let status = self.child.try_wait();
                    panic!(
                        "no line starting with {prefix:?} within {timeout:?}; saw {skipped:?}; exit status {status:?}"
                    )
                }
            }
        }
    }

    /// Every line printed so far or within `d`.
    fn lines_within(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(l) = self.next_line(deadline) {
            out.push(l);
        }
        out
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn terminate(&mut self) {
        // Our own child, by PID.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The namespaces of one test; deleted on drop.
struct Lab {
    tag: String,
    made: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new() -> Option<Lab> {
        if !prerequisites() {
            return None;
        }
        let tag = format!(
            "lbt{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut lab = Lab {
            tag,
            made: Vec::new(),
        };
        let lan = lab.ns("lan");
        ok(&[
            "ip",
            "-n",
            &lan,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ]);
        ok(&["ip", "-n", &lan, "link", "set", "br0", "up"]);
        lab.host("client", "02", "192.0.2.2", "2001:db8::2");
        for (name, id, v4) in [("node1", "11", "192.0.2.17"), ("node2", "12", "192.0.2.18")] {
            let ns = lab.host(name, id, v4, &format!("2001:db8::{id}"));
            ok(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{VIP4}/32"),
                "dev",
                "lo",
            ]);
            ok(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        Some(lab)
    }

    fn name(&self, short: &str) -> String {
        format!("{}{short}", self.tag)
    }

    fn ns(&mut self, short: &str) -> String {
        let ns = self.name(short);
        ok(&["ip", "netns", "add", &ns]);
        self.made.push(ns.clone());
        ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        for s in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.default.arp_ignore=1",
        ] {
            ok(&["ip", "netns", "exec", &ns, "sysctl", "-qw", s]);
        }
        ns
    }

    /// A host on the LAN bridge with `eth0` = 02:00:00:00:00:`id`.
    fn host(&mut self, short: &str, id: &str, v4: &str, v6: &str) -> String {
        let ns = self.ns(short);
        let lan = self.name("lan");
        let port = format!("p{id}");
        ok(&[
            "ip", "-n", &lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        ok(&[
            "ip",
            "-n",
            &ns,
            "link",
            "set",
            "eth0",
            "address",
            &format!("02:00:00:00:00:{id}"),
        ]);
        ok(&[
            "ip", "-n", &lan, "link", "set", &port, "master", "br0", "up",
        ]);
        ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            "eth0",
        ]);
        ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    fn announcer(&self, node: &str, args: &[&str]) -> Announcer {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name(node),
                env!("CARGO_BIN_EXE_l2-announce"),
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut a = Announcer {
            child,
            stdin,
            lines,
            backlog: Default::default(),
        };
        a.wait_for("ready", Duration::from_secs(10));
        a
    }

    /// node1 announcing both VIPs on eth0.
    fn node1_with_vips(&self) -> Announcer {
        self.announcer(
            "node1",
            &["--ip", VIP4, "--ip", VIP6, "--interface", "eth0"],
        )
    }

    fn ping(&self, from: &str, ip: &str) -> bool {
        let ns = self.name(from);
        let mut args = vec!["ip", "netns", "exec", &ns, "ping", "-c", "1", "-W", "1"];
        if ip.contains(':') {
            args.push("-6");
        }
        args.push(ip);
        run(&args).status.success()
    }

    fn neighbour(&self, from: &str, ip: &str) -> String {
        let o = run(&["ip", "-n", &self.name(from), "neigh", "show", ip]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

#[test]
fn client_kernel_resolves_each_vip_to_the_owner_and_gets_echo_replies() {
    let Some(lab) = Lab::new() else { return };
    let mut node1 = lab.node1_with_vips();
    for vip in [VIP4, VIP6] {
        assert!(lab.ping("client", vip), "no echo reply from {vip}");
        let n = lab.neighbour("client", vip);
        assert!(n.contains(NODE1_MAC), "{vip}: {n}");
    }
    node1.command("counters");
    let lines = node1.lines_within(Duration::from_millis(500));
    for vip in [VIP4, VIP6] {
        let sent = lines
            .iter()
            .find(|l| {
                l.starts_with(&format!(
                    "counter metallb_layer2_responses_sent{{ip=\"{vip}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert!(!sent.ends_with(" 0"), "{sent}");
    }
    // Withdrawn: no more answers, and no stale counter series.
    node1.command("set");
    node1.wait_for("ok", Duration::from_secs(2));
    ok(&["ip", "-n", &lab.name("client"), "neigh", "flush", "all"]);
    for vip in [VIP4, VIP6] {
        assert!(
            !lab.ping("client", vip),
            "{vip} still answered after withdrawal"
        );
    }
    node1.command("counters");
    let lines = node1.lines_within(Duration::from_millis(500));
    let stale = |l: &&String| l.starts_with("counter") && (l.contains(VIP4) || l.contains(VIP6));
    assert!(!lines.iter().any(|l| stale(&l)), "{lines:?}");
    node1.terminate();
}

#[test]
fn takeover_switches_the_clients_existing_entries_from_gratuitous_frames_alone_within_200ms() {
    let Some(lab) = Lab::new() else { return };
    let mut node1 = lab.node1_with_vips();
    let mut node2 = lab.announcer("node2", &["--interface", "eth0"]);
    for vip in [VIP4, VIP6] {
        assert!(lab.ping("client", vip));
        assert!(lab.neighbour("client", vip).contains(NODE1_MAC));
    }
    node1.terminate();
    // The client sends nothing from here on: only node2's frames can change its entries.
    let start = Instant::now();
    node2.command(&format!("set {VIP4},{VIP6}"));
    let mut switched = [None, None];
    while start.elapsed() < Duration::from_secs(3) && switched.iter().any(Option::is_none) {
        for (i, vip) in [VIP4, VIP6].iter().enumerate() {
            if switched[i].is_none() && lab.neighbour("client", vip).contains(NODE2_MAC) {
                switched[i] = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "takeover: IPv4 entry switched after {:?}, IPv6 after {:?}",
        switched[0], switched[1]
    );
    for (i, vip) in [VIP4, VIP6].iter().enumerate() {
        let t = switched[i]
            .unwrap_or_else(|| panic!("{vip} never switched: {}", lab.neighbour("client", vip)));
        assert!(t < Duration::from_millis(200), "{vip} switched after {t:?}");
        assert!(
            lab.ping("client", vip),
            "no echo reply from {vip} after takeover"
        );
    }
    node2.terminate();
}

#[test]
fn an_address_not_owned_gets_no_answer() {
    let Some(lab) = Lab::new() else { return };
    let mut node1 = lab.node1_with_vips();
    for other in ["192.0.2.101", "2001:db8::101"] {
        assert!(!lab.ping("client", other), "{other} answered");
        let n = lab.neighbour("client", other);
        assert!(!n.contains(NODE1_MAC), "{other}: {n}");
    }
    node1.terminate();
}

#[test]
fn an_interface_not_selected_gets_no_answer() {
    let Some(mut lab) = Lab::new() else { return };
    // node1 also has eth1, on a LAN the client is not on; the VIPs are announced only there.
    let island = lab.ns("island");
    let node1 = lab.name("node1");
    ok(&[
        "ip", "-n", &node1, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
        &island,
    ]);
    ok(&["ip", "-n", &node1, "link", "set", "eth1", "up"]);
    ok(&["ip", "-n", &island, "link", "set", "eth0", "up"]);
    let mut a = lab.announcer(
        "node1",
        &["--ip", VIP4, "--ip", VIP6, "--interface", "eth1"],
    );
    for vip in [VIP4, VIP6] {
        assert!(!lab.ping("client", vip), "{vip} answered on eth0");
        assert!(!lab.neighbour("client", vip).contains(NODE1_MAC));
    }
    a.terminate();
}

#[test]
fn a_host_already_using_an_address_stops_its_first_announcement() {
    let Some(mut lab) = Lab::new() else { return };
    lab.host("squat", "50", "192.0.2.150", "2001:db8::150");
    let mut node1 = lab.announcer(
        "node1",
        &[
            "--ip",
            "192.0.2.150",
            "--ip",
            "2001:db8::150",
            "--ip",
            "192.0.2.151",
            "--interface",
            "eth0",
            "--probe",
            "--conflict-retry",
            "1",
        ],
    );
    let mut conflicts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut announced = Vec::new();
    while Instant::now() < deadline && (conflicts.len() < 2 || announced.is_empty()) {
        for l in node1.lines_within(Duration::from_millis(100)) {
            if l.starts_with("conflict ") {
                conflicts.push(l);
            } else if let Some(ip) = l.strip_prefix("announcing ") {
                announced.push(ip.to_string());
            }
        }
    }
    assert!(
        conflicts.contains(&format!("conflict 192.0.2.150 {SQUAT_MAC}")),
        "{conflicts:?}"
    );
    assert!(
        conflicts.contains(&format!("conflict 2001:db8::150 {SQUAT_MAC}")),
        "{conflicts:?}"
    );
    assert_eq!(
        announced,
        ["192.0.2.151"],
        "only the free address is announced"
    );
    node1.command("status");
    let status = node1.lines_within(Duration::from_millis(300));
    assert!(
        status
            .iter()
            .any(|l| l.starts_with("status 192.0.2.150 Conflict")),
        "{status:?}"
    );
    // The client still reaches the squatter, not node1.
    assert!(lab.ping("client", "192.0.2.150"));
    assert!(lab.neighbour("client", "192.0.2.150").contains(SQUAT_MAC));
    // Once the squatter lets go of the address, the next retry probes again and announces it.
    ok(&[
        "ip",
        "-n",
        &lab.name("squat"),
        "addr",
        "del",
        "192.0.2.150/24",
        "dev",
        "eth0",
    ]);
    node1.wait_for("announcing 192.0.2.150", Duration::from_secs(10));
    node1.terminate();
}

#[test]
fn an_interface_that_goes_down_and_up_is_followed_and_told_again() {
    let Some(lab) = Lab::new() else { return };
    let mut node1 = lab.announcer("node1", &["--ip", VIP4, "--interface", "eth0"]);
    let node1_ns = lab.name("node1");
    assert!(lab.ping("client", VIP4));
    let gratuitous = |a: &mut Announcer| -> u64 {
        a.command("counters");
        let lines = a.lines_within(Duration::from_millis(300));
        let l = lines
            .iter()
            .find(|l| {
                l.starts_with(&format!(
                    "counter metallb_layer2_gratuitous_sent{{ip=\"{VIP4}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("{lines:?}"))
            .clone();
        l.rsplit(' ').next().unwrap().parse().unwrap()
    };
    // Re-sending the same set changes nothing and sends nothing (idempotent).
    std::thread::sleep(Duration::from_millis(3500)); // let the takeover repeats finish
    let before = gratuitous(&mut node1);
    node1.command(&format!("set {VIP4}"));
    node1.wait_for("ok", Duration::from_secs(2));
    assert_eq!(
        gratuitous(&mut node1),
        before,
        "the same set sent frames again"
    );
    ok(&["ip", "-n", &node1_ns, "link", "set", "eth0", "down"]);
    node1.wait_for("interface-down eth0", Duration::from_secs(5));
    ok(&["ip", "-n", &node1_ns, "link", "set", "eth0", "up"]);
    node1.wait_for("interface-up eth0", Duration::from_secs(5));
    assert!(
        gratuitous(&mut node1) > before,
        "no gratuitous frames after the interface came back"
    );
    assert!(
        lab.ping("client", VIP4),
        "no echo reply after the interface came back"
    );
    node1.terminate();
}

/// An example of the crate, built by `cargo test` beside this test binary.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/netns-<hash> -> target/<profile>/examples/<name>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|p| p.join("examples").join(name))
        .unwrap()
}

#[test]
fn the_announce_vip_example_makes_its_address_answer_and_withdraws_it() {
    let Some(lab) = Lab::new() else { return };
    let bin = example("announce_vip");
    assert!(bin.exists(), "{} not built", bin.display());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.name("node1")])
        .arg(&bin)
        .args(["eth0", VIP4])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    // Stopped by PID however the test ends.
    struct Reap(Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let first = out.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(first, format!("announcing {VIP4} on eth0"));
    assert!(lab.ping("client", VIP4), "no echo reply from {VIP4}");
    assert!(lab.neighbour("client", VIP4).contains(NODE1_MAC));
    ok(&["kill", "-TERM", &child.0.id().to_string()]);
    let last = out.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(last, "withdrawn");
    assert!(child.0.wait().unwrap().success());
    ok(&["ip", "-n", &lab.name("client"), "neigh", "flush", "all"]);
    assert!(!lab.ping("client", VIP4), "{VIP4} still answered");
}

/// Past 256 IPv6 addresses on an interface the receive socket takes every multicast frame
/// instead of joining each solicited-node group (thousands of joins searched the kernel's lists
/// one by one): the device counts one all-multicast user while they are announced and none after, and a
/// client's solicitations for the last and for one of the first are answered. (A veth passes
/// every multicast frame up whatever the memberships, so the answers guard the answer path
/// with hundreds of addresses; the count is what shows the membership.)
#[test]
fn with_hundreds_of_ipv6_addresses_the_interface_takes_all_multicast_and_answers() {
    let Some(lab) = Lab::new() else { return };
    let ips: Vec<String> = (0..300)
        .map(|i| format!("2001:db8::{:x}", 0x1000 + i))
        .collect();
    let mut args = vec!["--interface", "eth0"];
    for ip in &ips {
        args.extend(["--ip", ip.as_str()]);
    }
    // The device's all-multicast count (`ip -d`: memberships such as ours, not the flag).
    let link = || {
        let o = run(&["ip", "-d", "-n", &lab.name("node1"), "link", "show", "eth0"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut node1 = lab.announcer("node1", &args);
    assert!(link().contains(" allmulti 1 "), "{}", link());
    for ip in [&ips[299], &ips[7]] {
        // The kernel delivers none of these addresses: the echo goes unanswered, but the
        // solicitation before it must be answered by the announcer.
        let _ = lab.ping("client", ip);
        let n = lab.neighbour("client", ip);
        assert!(n.contains(NODE1_MAC), "{ip}: {n}");
    }
    node1.command("set");
    node1.wait_for("ok", Duration::from_secs(2));
    assert!(link().contains(" allmulti 0 "), "{}", link());
    node1.terminate();
}

/// A change touches its addresses alone (`L2Announcer::update`, what `Announcer::change`
/// uses): withdrawing one address leaves the others answered, adding it back answers it again,
/// and adding and removing hundreds of IPv6 addresses one change at a time moves the interface
/// into all-multicast and back out, answering throughout.
#[test]
fn a_change_of_some_addresses_leaves_the_others_answered() {
    let Some(lab) = Lab::new() else { return };
    let link = || {
        let o = run(&["ip", "-d", "-n", &lab.name("node1"), "link", "show", "eth0"]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut node1 = lab.node1_with_vips();
    assert!(lab.ping("client", VIP4));
    node1.command(&format!("del {VIP4}"));
    node1.wait_for("withdrawn 192.0.2.100", Duration::from_secs(2));
    node1.wait_for("ok", Duration::from_secs(2));
    let _ = run(&["ip", "-n", &lab.name("client"), "neigh", "flush", "all"]);
    assert!(
        !lab.ping("client", VIP4),
        "a withdrawn address is still answered"
    );
    assert!(
        lab.ping("client", VIP6),
        "the other address must stay answered"
    );
    node1.command(&format!("add {VIP4}"));
    node1.wait_for("announcing 192.0.2.100", Duration::from_secs(2));
    node1.wait_for("ok", Duration::from_secs(2));
    assert!(lab.ping("client", VIP4));

    let many: Vec<String> = (0..300)
        .map(|i| format!("2001:db8::{:x}", 0x2000 + i))
        .collect();
    node1.command(&format!("add {}", many.join(",")));
    node1.wait_for("ok", Duration::from_secs(5));
    assert!(link().contains(" allmulti 1 "), "{}", link());
    let _ = lab.ping("client", &many[299]);
    let n = lab.neighbour("client", &many[299]);
    assert!(n.contains(NODE1_MAC), "{}: {n}", many[299]);
    // Below half of the bound, one change at a time, the interface goes back to groups.
    for chunk in many[..200].chunks(50) {
        node1.command(&format!("del {}", chunk.join(",")));
        node1.wait_for("ok", Duration::from_secs(5));
    }
    assert!(link().contains(" allmulti 0 "), "{}", link());
    let _ = lab.ping("client", &many[250]);
    let n = lab.neighbour("client", &many[250]);
    assert!(n.contains(NODE1_MAC), "{}: {n}", many[250]);
    assert!(lab.ping("client", VIP6));
    node1.command("status");
    let mut lines = Vec::new();
    loop {
        let l = node1.wait_for("", Duration::from_secs(2));
        if l == "ok" {
            break;
        }
        if l.starts_with("status ") {
            lines.push(l);
        }
    }
    // The two VIPs and the 100 addresses left.
    assert_eq!(lines.len(), 102, "{lines:?}");
    node1.terminate();
}
