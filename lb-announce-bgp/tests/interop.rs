//! Our session against real BGP daemons (BIRD 2, GoBGP) in network namespaces this test creates.
//!
//! ```text
//!  ns node   eth0 192.0.2.10/24  2001:db8::10/64   our speaker, AS 64512 (in-process, via setns)
//!  ns router eth0 192.0.2.1/24   2001:db8::1/64    BIRD, passive, AS 64500 (eBGP) or 64512 (iBGP)
//! ```
//! BIRD has no kernel protocol: it installs nothing. Needs root, iproute2 and bird2; without them
//! the tests say so and pass, unless `LB_REQUIRE_NETNS=1` (set by `.ci/run`). Namespaces and the
//! BIRD process (by its PID file) are removed on drop, also when a test fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use lb_announce_bgp::fsm::{Config, RemoteAs, State};
use lb_announce_bgp::packet::AfiSafi;
use lb_announce_bgp::session::{PeerConfig, RouteAttrs, Session, SessionStatus};

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

fn prerequisites() -> bool {
    let root = run(&["id", "-u"]).stdout == b"0\n";
    let tools = ["ip", "bird", "birdc"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if root && tools {
        return true;
    }
    let why =
        format!("BGP interop tests need root, iproute2 and bird2 (root: {root}, tools: {tools})");
    if std::env::var("LB_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    false
}

struct Lab {
    tag: String,
    dir: PathBuf,
    /// A router daemon started here that writes no PID file (gobgpd).
    child: Option<std::process::Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // FRR daemons started for this lab, by their PID files.
        let frr = PathBuf::from("/var/run/frr").join(&self.tag);
        if let Ok(dir) = std::fs::read_dir(&frr) {
            for e in dir
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            {
                if let Ok(pid) = std::fs::read_to_string(e.path())
                    && !pid.trim().is_empty()
                {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            let _ = std::fs::remove_dir_all(&frr);
        }
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("bird.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        for ns in ["node", "router"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{ns}", self.tag)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Both namespaces, and BIRD peering passively with 192.0.2.10 as `bird_as`.
    fn new(bird_as: u32) -> Option<Lab> {
        Lab::with_bird_lines(bird_as, "")
    }

    /// As `new`, with extra lines in BIRD's `protocol bgp` block (a password, graceful restart).
    fn with_bird_lines(bird_as: u32, lines: &str) -> Option<Lab> {
        let lab = Lab::namespaces()?;
        let router = lab.ns("router");
        let conf = format!(
            "router id 192.0.2.1;\nprotocol device {{}}\nprotocol bgp lb {{\n  local 192.0.2.1 as {bird_as};\n  neighbor 192.0.2.10 as 64512;\n  passive on;\n  hold time 9;\n{}  ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n",
            lines
        );
        std::fs::write(lab.dir.join("bird.conf"), conf).unwrap();
        let d = |f: &str| lab.dir.join(f).to_string_lossy().into_owned();
        ok(&[
            "ip",
            "netns",
            "exec",
            &router,
            "bird",
            "-c",
            &d("bird.conf"),
            "-s",
            &d("bird.ctl"),
            "-P",
            &d("bird.pid"),
        ]);
        Some(lab)
    }

    /// Both namespaces, and gobgpd peering passively with 192.0.2.10 as AS 64500.
    fn with_gobgp() -> Option<Lab> {
        let mut lab = Lab::namespaces()?;
        if !Command::new("sh")
            .args(["-c", "command -v gobgpd && command -v gobgp"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                std::env::var("LB_REQUIRE_NETNS").as_deref() != Ok("1"),
                "gobgpd is not installed"
            );
            eprintln!("skipped: gobgpd is not installed");
            return None;
        }
        let conf = "[global.config]\n  as = 64500\n  router-id = \"192.0.2.1\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"192.0.2.10\"\n    peer-as = 64512\n  [neighbors.transport.config]\n    passive-mode = true\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n";
        std::fs::write(lab.dir.join("gobgp.toml"), conf).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("router"),
                "gobgpd",
                "-f",
                lab.dir.join("gobgp.toml").to_str().unwrap(),
                "-l",
                "warn",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        lab.child = Some(child);
        Some(lab)
    }

    /// Both namespaces, and FRR (zebra + bgpd) peering passively with 192.0.2.10 as AS 64500,
    /// with a TCP-MD5 password.
    fn with_frr(password: &str) -> Option<Lab> {
        let lab = Lab::namespaces()?;
        if !std::path::Path::new("/usr/lib/frr/bgpd").exists() {
            assert!(
                std::env::var("LB_REQUIRE_NETNS").as_deref() != Ok("1"),
                "FRR is not installed"
            );
            eprintln!("skipped: FRR is not installed");
            return None;
        }
        let conf = format!(
            "frr defaults traditional\nhostname lbr\nrouter bgp 64500\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n neighbor 192.0.2.10 remote-as 64512\n neighbor 192.0.2.10 passive\n neighbor 192.0.2.10 password {password}\n address-family ipv4 unicast\n  neighbor 192.0.2.10 activate\n exit-address-family\n address-family ipv6 unicast\n  neighbor 192.0.2.10 activate\n exit-address-family\n"
        );
        // FRR runs as user frr: its files must be readable, its run directory its own.
        let f = lab.dir.join("frr.conf");
        std::fs::write(&f, conf).unwrap();
        ok(&["chmod", "755", lab.dir.to_str().unwrap()]);
        ok(&["chmod", "644", f.to_str().unwrap()]);
        let run_dir = format!("/var/run/frr/{}", lab.tag);
        ok(&["mkdir", "-p", &run_dir]);
        ok(&["chown", "frr:frr", &run_dir]);
        for daemon in ["zebra", "bgpd"] {
            ok(&[
                "ip",
                "netns",
                "exec",
                &lab.ns("router"),
                &format!("/usr/lib/frr/{daemon}"),
                "-d",
                "-N",
                &lab.tag,
                "-f",
                f.to_str().unwrap(),
            ]);
        }
        Some(lab)
    }

    /// `vtysh` against this lab's FRR.
    fn vtysh(&self, cmd: &str) -> String {
        String::from_utf8_lossy(&run(&["vtysh", "-N", &self.tag, "-c", cmd]).stdout).into_owned()
    }

    /// `gobgp` in the router namespace; output as text.
    fn gobgp(&self, args: &[&str]) -> String {
        let ns = self.ns("router");
        let mut a = vec!["ip", "netns", "exec", &ns, "gobgp"];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&run(&a).stdout).into_owned()
    }

    /// The two namespaces on a veth pair, addressed.
    fn namespaces() -> Option<Lab> {
        if !prerequisites() {
            return None;
        }
        let tag = format!(
            "lbb{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            tag,
            dir,
            child: None,
        };
        let (node, router) = (lab.ns("node"), lab.ns("router"));
        for ns in [&node, &router] {
            ok(&["ip", "netns", "add", ns]);
            ok(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ]);
            ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        ok(&[
            "ip", "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", &router,
        ]);
        for (ns, v4, v6) in [
            (&node, "192.0.2.10/24", "2001:db8::10/64"),
            (&router, "192.0.2.1/24", "2001:db8::1/64"),
        ] {
            ok(&["ip", "-n", ns, "addr", "add", v4, "dev", "eth0"]);
            ok(&["ip", "-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"]);
            ok(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        Some(lab)
    }

    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.tag)
    }

    fn birdc(&self, cmd: &str) -> String {
        let sock = self.dir.join("bird.ctl");
        let mut args = vec!["birdc", "-s", sock.to_str().unwrap()];
        args.extend(cmd.split(' '));
        String::from_utf8_lossy(&run(&args).stdout).into_owned()
    }

    /// Waits until `birdc show route all` satisfies `pred`; returns the last output.
    fn wait_routes(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.birdc("show route all");
            if pred(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "BIRD never showed {what}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `f` with a session started inside the node namespace, on a thread of its own.
    fn with_speaker<T: Send + 'static>(
        &self,
        local_as: u32,
        remote_as: u32,
        tweak: impl FnOnce(&mut PeerConfig) + Send + 'static,
        f: impl FnOnce(&mut Speaker) -> T + Send + 'static,
    ) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns("node"))).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on a descriptor we own, for this thread only; the runtime below is
            // single-threaded, so every socket it creates belongs to the node namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut cfg = PeerConfig {
                fsm: Config {
                    local_as,
                    router_id: Ipv4Addr::new(192, 0, 2, 10),
                    remote_as: RemoteAs::Fixed(remote_as),
                    hold_time: 9,
                    keepalive: None,
                    families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
                    graceful_restart: None,
                    connect_retry: Duration::from_millis(200),
                    connect_retry_max: Duration::from_secs(2),
                },
                address: "192.0.2.1:179".parse().unwrap(),
                source: None,
                next_hop_v4: None,
                next_hop_v6: Some("2001:db8::10".parse().unwrap()),
                connect_timeout: Duration::from_secs(3),
                md5_password: None,
            };
            tweak(&mut cfg);
            let session = rt.block_on(async { Session::start(cfg.clone()) });
            let mut speaker = Speaker {
                rt,
                session: Some(session),
                cfg,
            };
            let out = f(&mut speaker);
            let Speaker { rt, session, .. } = speaker;
            if let Some(s) = session {
                rt.block_on(s.stop(Duration::from_secs(2)));
            }
            out
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

struct Speaker {
    rt: tokio::runtime::Runtime,
    session: Option<Session>,
    cfg: PeerConfig,
}

impl Speaker {
    /// Runs the session while polling `probe` until its output satisfies `pred`; fails after
    /// 20 s naming `what`. Returns the output that satisfied it.
    fn until(&self, what: &str, probe: impl Fn() -> String, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = probe();
            if pred(&out) {
                return out;
            }
            assert!(Instant::now() < deadline, "never saw {what}:\n{out}");
            self.run_for(Duration::from_millis(100));
        }
    }

    /// Dies as a crashed process would: the session is dropped, no Cease, TCP just closes.
    fn crash(&mut self) {
        drop(self.session.take());
        self.run_for(Duration::from_millis(100));
    }

    /// Starts a new session after a crash, announcing that it restarted (graceful restart R).
    fn restart(&mut self) {
        if let Some((t, _)) = self.cfg.fsm.graceful_restart {
            self.cfg.fsm.graceful_restart = Some((t, true));
        }
        let cfg = self.cfg.clone();
        self.session = Some(self.rt.block_on(async { Session::start(cfg) }));
    }

    fn set(&self, routes: &[(&str, RouteAttrs)]) {
        let map: BTreeMap<IpNetwork, RouteAttrs> = routes
            .iter()
            .map(|(p, a)| (p.parse().unwrap(), a.clone()))
            .collect();
        self.session.as_ref().unwrap().set_routes(map);
    }

    /// Lets the session run until `pred` holds on its status (bounded).
    fn wait(&self, what: &str, pred: impl Fn(&SessionStatus) -> bool) {
        let mut w = self.session.as_ref().unwrap().watch();
        self.rt.block_on(async {
            let reached = tokio::time::timeout(Duration::from_secs(20), w.wait_for(|s| pred(s)))
                .await
                .is_ok();
            assert!(reached, "session never reached {what}: {:?}", *w.borrow());
        });
    }

    /// Lets the session run for a while (timers, messages).
    fn run_for(&self, d: Duration) {
        self.rt.block_on(async move { tokio::time::sleep(d).await });
    }
}

fn attrs() -> RouteAttrs {
    RouteAttrs {
        communities: vec![(64512 << 16) | 100],
        large_communities: vec![(64512, 1, 1)],
        local_pref: Some(200),
    }
}

#[test]
fn ebgp_ipv4_and_ipv6_prefixes_with_communities_reach_bird_and_withdraw() {
    let Some(lab) = Lab::new(64500) else { return };
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |_| {},
        move |sp| {
            sp.set(&[
                ("203.0.113.10/32", attrs()),
                ("2001:db8:1::10/128", attrs()),
            ]);
            sp.wait("Established", |s| {
                s.state == State::Established && s.prefixes_announced == 2
            });
            let out = sp.until(
                "both prefixes at BIRD",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.10/32") && o.contains("2001:db8:1::10/128"),
            );
            assert!(out.contains("BGP.as_path: 64512"), "{out}");
            assert!(out.contains("BGP.community: (64512,100)"), "{out}");
            assert!(out.contains("BGP.large_community: (64512, 1, 1)"), "{out}");
            assert!(out.contains("BGP.next_hop: 2001:db8::10"), "{out}");
            assert!(
                !out.contains("BGP.local_pref: 200"),
                "localPref is not sent to an eBGP peer:\n{out}"
            );
            // Withdraw the IPv6 prefix only.
            sp.set(&[("203.0.113.10/32", attrs())]);
            let out = sp.until(
                "the IPv6 withdrawal at BIRD",
                || l.birdc("show route all"),
                |o| !o.contains("2001:db8:1::10/128"),
            );
            assert!(out.contains("203.0.113.10/32"), "{out}");
        },
    );
    // The speaker sent Cease on stop: BIRD says so and drops the routes.
    let out = lab.wait_routes("the routes gone", |o| !o.contains("203.0.113.10/32"));
    let proto = lab.birdc("show protocols all lb");
    assert!(proto.contains("Administrative shutdown"), "{proto}\n{out}");
}

#[test]
fn ibgp_carries_local_pref() {
    let Some(lab) = Lab::new(64512) else { return };
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64512,
        |_| {},
        move |sp| {
            sp.set(&[("203.0.113.20/32", attrs())]);
            sp.wait("Established", |s| {
                s.state == State::Established && s.prefixes_announced == 1
            });
            let out = sp.until(
                "localPref 200 at BIRD",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.20/32") && o.contains("BGP.local_pref: 200"),
            );
            assert!(
                out.contains("BGP.as_path: \n")
                    || out.contains("BGP.as_path:\n")
                    || !out.contains("BGP.as_path: 64512"),
                "iBGP adds no AS:\n{out}"
            );
        },
    );
}

#[test]
fn tcp_md5_with_the_right_password_establishes_and_a_wrong_one_does_not() {
    let Some(lab) = Lab::with_bird_lines(64500, "  password \"lb-secret\";\n") else {
        return;
    };
    lab.with_speaker(
        64512,
        64500,
        |c| c.md5_password = Some("lb-secret".into()),
        |sp| {
            sp.set(&[("203.0.113.30/32", attrs())]);
            sp.wait("Established with MD5", |s| s.state == State::Established);
        },
    );
    let Some(lab) = Lab::with_bird_lines(64500, "  password \"lb-secret\";\n") else {
        return;
    };
    lab.with_speaker(
        64512,
        64500,
        |c| c.md5_password = Some("wrong".into()),
        |sp| {
            sp.run_for(Duration::from_secs(3));
            let s = sp.session.as_ref().unwrap().status();
            assert_ne!(s.state, State::Established, "{s:?}");
            assert!(s.established_since.is_none());
        },
    );
}

#[test]
fn bgp_announcer_sends_plan_announcements_from_a_metallb_peer_to_bird() {
    use lb_announce_bgp::BgpAnnouncer;
    use lb_announce_bgp::announcer::peer_config;
    use lb_core::Announcer;
    use lb_core::config::Community;
    use lb_core::objects::ServiceKey;
    use lb_core::plan::{Announcement, BgpRoute, How};

    let Some(lab) = Lab::new(64500) else { return };
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.ns("node"))).unwrap();
    let yaml = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: router}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1, holdTime: 9s}\n";
    let cfg = lb_core::load_str(yaml).config;
    let peer = peer_config(&cfg.peers["router"], Ipv4Addr::new(192, 0, 2, 10), None).unwrap();
    let sock = lab.dir.join("bird.ctl");
    let metrics = std::thread::spawn(move || {
        // SAFETY: as in `with_speaker`: this thread alone enters the node namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let a = BgpAnnouncer::start([("router".to_string(), peer)]);
            let ann = Announcement {
                service: ServiceKey::new("default", "web"),
                ip: "203.0.113.40".parse().unwrap(),
                how: How::Bgp {
                    routes: vec![BgpRoute {
                        prefix: "203.0.113.40/32".parse().unwrap(),
                        peers: vec!["router".into()],
                        local_pref: None,
                        communities: vec![
                            Community::Legacy((64512 << 16) | 40),
                            Community::Large(64512, 4, 0),
                        ],
                    }],
                },
            };
            a.announce(std::slice::from_ref(&ann)).await.unwrap();
            let unknown = Announcement {
                how: How::Bgp {
                    routes: vec![BgpRoute {
                        peers: vec!["ghost".into()],
                        ..match &ann.how {
                            How::Bgp { routes } => routes[0].clone(),
                            _ => unreachable!(),
                        }
                    }],
                },
                ..ann.clone()
            };
            assert!(
                a.announce(&[unknown]).await.is_err(),
                "a peer with no session is an error"
            );
            a.announce(&[ann]).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut seen = String::new();
            while tokio::time::Instant::now() < deadline {
                let o = Command::new("birdc")
                    .args(["-s", sock.to_str().unwrap(), "show", "route", "all"])
                    .output()
                    .unwrap();
                seen = String::from_utf8_lossy(&o.stdout).into_owned();
                if seen.contains("203.0.113.40/32") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(
                seen.contains("203.0.113.40/32")
                    && seen.contains("BGP.community: (64512,40)")
                    && seen.contains("BGP.large_community: (64512, 4, 0)"),
                "{seen}"
            );
            let m = a.render_metrics();
            a.stop(Duration::from_secs(2)).await;
            m
        })
    })
    .join()
    .unwrap();
    assert!(
        metrics.contains("metallb_bgp_session_up{peer=\"router\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("metallb_bgp_announced_prefixes_total{peer=\"router\"} 1"),
        "{metrics}"
    );
    let _ = lab.wait_routes("nothing after Cease", |o| !o.contains("203.0.113.40/32"));
}

/// Waits (bounded) while the speaker runs until BIRD's routes satisfy `pred`.
fn until_bird(
    sp: &Speaker,
    sock: &std::path::Path,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let birdc = || {
        let o = Command::new("birdc")
            .args(["-s", sock.to_str().unwrap(), "show", "route", "all"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    sp.until(what, birdc, pred)
}

#[test]
fn graceful_restart_keeps_our_routes_at_bird_through_a_crash_and_after() {
    let Some(lab) = Lab::with_bird_lines(64500, "  graceful restart on;\n") else {
        return;
    };
    let sock = lab.dir.join("bird.ctl");
    lab.with_speaker(
        64512,
        64500,
        |c| c.fsm.graceful_restart = Some((120, false)),
        move |sp| {
            sp.set(&[("203.0.113.50/32", attrs())]);
            until_bird(sp, &sock, "the route", |o| o.contains("203.0.113.50/32"));
            sp.crash();
            // BIRD holds the routes of a peer that announced graceful restart while it is away.
            std::thread::sleep(Duration::from_secs(2));
            let during = until_bird(sp, &sock, "anything", |_| true);
            assert!(
                during.contains("203.0.113.50/32"),
                "routes dropped during the restart:\n{during}"
            );
            sp.restart();
            sp.set(&[("203.0.113.50/32", attrs())]);
            sp.wait("Established again", |s| {
                s.state == State::Established && s.prefixes_announced == 1
            });
            // After our End-of-RIB, what we re-advertised stays.
            std::thread::sleep(Duration::from_secs(1));
            let after = until_bird(sp, &sock, "the route after the restart", |o| {
                o.contains("203.0.113.50/32")
            });
            assert!(!after.contains("stale"), "{after}");
        },
    );
}

#[test]
fn without_graceful_restart_a_crash_drops_our_routes_at_once() {
    let Some(lab) = Lab::with_bird_lines(64500, "  graceful restart on;\n") else {
        return;
    };
    let sock = lab.dir.join("bird.ctl");
    lab.with_speaker(
        64512,
        64500,
        |_| {},
        move |sp| {
            sp.set(&[("203.0.113.51/32", attrs())]);
            until_bird(sp, &sock, "the route", |o| o.contains("203.0.113.51/32"));
            sp.crash();
            until_bird(sp, &sock, "the route gone", |o| {
                !o.contains("203.0.113.51/32")
            });
        },
    );
}

#[test]
fn gobgp_receives_ipv4_and_ipv6_prefixes_with_communities() {
    let Some(lab) = Lab::with_gobgp() else { return };
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |_| {},
        move |sp| {
            sp.set(&[
                ("203.0.113.60/32", attrs()),
                ("2001:db8:1::60/128", attrs()),
            ]);
            sp.wait("Established", |s| {
                s.state == State::Established && s.prefixes_announced == 2
            });
            let rib = |fam: &str| l.gobgp(&["global", "rib", "-a", fam]);
            sp.until(
                "both prefixes at GoBGP",
                || rib("ipv4") + &rib("ipv6"),
                |o| o.contains("203.0.113.60/32") && o.contains("2001:db8:1::60/128"),
            );
            let (v4, v6) = (rib("ipv4"), rib("ipv6"));
            assert!(
                v4.contains("203.0.113.60/32") && v4.contains("192.0.2.10") && v4.contains("64512"),
                "{v4}"
            );
            assert!(
                v4.contains("64512:100") && v4.contains("64512:1:1"),
                "communities: {v4}"
            );
            assert!(
                v6.contains("2001:db8:1::60/128") && v6.contains("2001:db8::10"),
                "{v6}"
            );
            sp.set(&[("2001:db8:1::60/128", attrs())]);
            sp.until(
                "the IPv4 withdrawal at GoBGP",
                || rib("ipv4"),
                |o| !o.contains("203.0.113.60/32"),
            );
        },
    );
}

/// Reads one whole BGP message from a blocking stream.
fn read_message(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = [0u8; 19];
    s.read_exact(&mut head).ok()?;
    let len = lb_announce_bgp::packet::message_len(&head).ok()??;
    let mut msg = head.to_vec();
    msg.resize(len, 0);
    s.read_exact(&mut msg[19..]).ok()?;
    Some(msg)
}

fn accept_within(l: &std::net::TcpListener, d: Duration) -> Option<std::net::TcpStream> {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if let Ok((s, _)) = l.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_peer_sending_malformed_updates_gets_rfc_7606_handling_and_we_survive() {
    use lb_announce_bgp::packet::{Capability, Context, Message, Open};
    use std::io::Write;

    let Some(lab) = Lab::namespaces() else { return };
    let router = std::fs::File::open(format!("/run/netns/{}", lab.ns("router"))).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let peer = std::thread::spawn(move || {
        // SAFETY: this thread alone enters the router namespace.
        assert_eq!(
            unsafe { libc::setns(router.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let l = std::net::TcpListener::bind("192.0.2.1:179").unwrap();
        let mut s = accept_within(&l, Duration::from_secs(20)).expect("the speaker connects");
        let ctx = Context::default();
        let caps = vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
        ];
        let open = read_message(&mut s).expect("OPEN");
        assert_eq!(open[18], 1, "the speaker starts with OPEN");
        s.write_all(
            &Message::Open(Open::new(64500, 9, Ipv4Addr::new(192, 0, 2, 1), caps)).to_bytes(&ctx),
        )
        .unwrap();
        s.write_all(&Message::Keepalive.to_bytes(&ctx)).unwrap();
        // An UPDATE whose ORIGIN is invalid: RFC 7606 treat-as-withdraw, the session stays.
        let bad_origin: Vec<u8> = [
            &[0xff; 16][..],
            &[0, 47, 2, 0, 0, 0, 20],
            &[
                0x40, 1, 1, 9, 0x40, 2, 6, 2, 1, 0, 0, 0xfb, 0xf4, 0x40, 3, 4, 192, 0, 2, 1,
            ],
            &[24, 198, 51, 100],
        ]
        .concat();
        assert_eq!(bad_origin.len(), 47);
        s.write_all(&bad_origin).unwrap();
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            match read_message(&mut s) {
                Some(m) => seen.push(m[18]),
                None => {
                    s.write_all(&Message::Keepalive.to_bytes(&ctx)).unwrap();
                }
            }
        }
        assert!(
            !seen.contains(&3),
            "the speaker sent a NOTIFICATION for a treat-as-withdraw UPDATE: {seen:?}"
        );
        // MP_REACH_NLRI twice: RFC 7606 §3(g) requires a session reset (3/1).
        let mp = [0x80u8, 14, 5, 0, 2, 1, 0, 0];
        let twice: Vec<u8> = [&[0xff; 16][..], &[0, 39, 2, 0, 0, 0, 16], &mp, &mp].concat();
        s.write_all(&twice).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut notification = None;
        while let Some(m) = read_message(&mut s) {
            if m[18] == 3 {
                notification = Some((m[19], m[20]));
                break;
            }
        }
        drop(s);
        // And it comes back.
        let again = accept_within(&l, Duration::from_secs(10))
            .map(|mut s| read_message(&mut s).map(|m| m[18]));
        done_tx.send(()).unwrap();
        (notification, again)
    });
    lab.with_speaker(
        64512,
        64500,
        |_| {},
        move |sp| {
            sp.set(&[("203.0.113.70/32", attrs())]);
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline && done_rx.try_recv().is_err() {
                sp.run_for(Duration::from_millis(50));
            }
            let st = sp.session.as_ref().unwrap().status();
            // The bad-ORIGIN UPDATE was read without a reset; the NOTIFICATION for the repeated
            // MP_REACH_NLRI is checked on the peer's side (our last_down is overwritten when
            // the scripted peer closes our reconnection).
            assert!(st.updates_received >= 1, "{st:?}");
        },
    );
    let (notification, again) = peer.join().unwrap();
    assert_eq!(notification, Some((3, 1)), "Malformed Attribute List");
    assert_eq!(
        again,
        Some(Some(1)),
        "the speaker reconnects with a new OPEN"
    );
}

#[test]
fn frr_receives_prefixes_with_communities_over_an_md5_session() {
    let Some(lab) = Lab::with_frr("lb-secret") else {
        return;
    };
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |c| c.md5_password = Some("lb-secret".into()),
        move |sp| {
            sp.set(&[
                ("203.0.113.80/32", attrs()),
                ("2001:db8:1::80/128", attrs()),
            ]);
            sp.wait("Established", |s| {
                s.state == State::Established && s.prefixes_announced == 2
            });
            let v4q = || l.vtysh("show bgp ipv4 unicast 203.0.113.80/32");
            let v6q = || l.vtysh("show bgp ipv6 unicast 2001:db8:1::80/128");
            sp.until(
                "both prefixes at FRR",
                || v4q() + &v6q(),
                |o| o.contains("64512:100") && o.contains("2001:db8::10"),
            );
            let (v4, v6) = (v4q(), v6q());
            assert!(
                v4.contains("Community: 64512:100") && v4.contains("Large Community: 64512:1:1"),
                "{v4}"
            );
            assert!(v4.contains("192.0.2.10") && v4.contains("64512"), "{v4}");
            assert!(v6.contains("2001:db8::10"), "{v6}");
            sp.set(&[("2001:db8:1::80/128", attrs())]);
            sp.until("the IPv4 withdrawal at FRR", v4q, |o| {
                o.contains("not in table")
            });
        },
    );
}
