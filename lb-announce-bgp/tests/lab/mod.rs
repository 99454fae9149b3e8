//! The namespace lab shared by the BGP tests that run real peers: two namespaces on a veth pair
//! (node: our speaker; router: a daemon), optionally a third behind the router, and the
//! in-process speaker driven from a thread inside the node namespace.

#![allow(dead_code, clippy::print_stderr, unsafe_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use lb_announce_bgp::fsm::{Config, RemoteAs};
use lb_announce_bgp::listen::Listener;
use lb_announce_bgp::session::{PeerConfig, RouteAttrs, Session, SessionStatus};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

pub fn ok(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn prerequisites() -> bool {
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

/// A daemon's command line and environment.
pub type Respawn = (Vec<String>, Vec<(String, String)>);

/// Whether the shell `check` succeeds; if not, the test is skipped, or fails when
/// `LB_REQUIRE_NETNS=1`, saying `what` is not installed.
fn installed(check: &str, what: &str) -> bool {
    if Command::new("sh")
        .args(["-c", check])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    assert!(
        std::env::var("LB_REQUIRE_NETNS").as_deref() != Ok("1"),
        "{what} is not installed"
    );
    eprintln!("skipped: {what} is not installed");
    false
}

pub struct Lab {
    pub tag: String,
    pub dir: PathBuf,
    /// A router daemon started here that writes no PID file (gobgpd).
    pub child: std::sync::Mutex<Option<std::process::Child>>,
    /// How that daemon was started (arguments, environment), to start it again.
    pub respawn: Option<Respawn>,
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
        if let Some(c) = self.child.get_mut().unwrap().as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // BIRD instances, by their PID files.
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "pid")
                && let Ok(pid) = std::fs::read_to_string(e.path())
            {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        for ns in ["node", "router", "far"] {
            let name = format!("{}{ns}", self.tag);
            if std::path::Path::new("/run/netns").join(&name).exists() {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Both namespaces, and BIRD peering passively with 192.0.2.10 as `bird_as`.
    pub fn new(bird_as: u32) -> Option<Lab> {
        Lab::with_bird_lines(bird_as, "")
    }

    /// As `new`, with extra lines in BIRD's `protocol bgp` block (a password, graceful restart).
    pub fn with_bird_lines(bird_as: u32, lines: &str) -> Option<Lab> {
        let lab = Lab::namespaces()?;
        lab.start_bird(
            "router",
            "bird",
            &bird_conf(
                "192.0.2.1",
                &format!("local 192.0.2.1 as {bird_as};\n  neighbor 192.0.2.10 as 64512;\n  passive on;\n{lines}"),
            ),
        );
        Some(lab)
    }

    /// Starts BIRD in namespace `ns` with `conf`; `name` names its files (`name.ctl` is the
    /// socket [`Lab::birdc_at`] uses, `name.pid` lets drop stop it).
    pub fn start_bird(&self, ns: &str, name: &str, conf: &str) {
        std::fs::write(self.dir.join(format!("{name}.conf")), conf).unwrap();
        let d = |ext: &str| {
            self.dir
                .join(format!("{name}.{ext}"))
                .to_string_lossy()
                .into_owned()
        };
        ok(&[
            "ip",
            "netns",
            "exec",
            &self.ns(ns),
            "bird",
            "-c",
            &d("conf"),
            "-s",
            &d("ctl"),
            "-P",
            &d("pid"),
        ]);
    }

    /// Stops the BIRD instance `name` (SIGTERM, by its PID file) and waits until it is gone.
    pub fn stop_bird(&self, name: &str) {
        let pidfile = self.dir.join(format!("{name}.pid"));
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        ok(&["kill", &pid]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "BIRD {pid} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(pidfile);
    }

    /// A third namespace behind the router: far eth0 198.51.100.2/24 2001:db8:1::2/64, router
    /// eth1 198.51.100.1/24 2001:db8:1::1/64, the router forwarding and node and far routed
    /// through it. For multihop sessions.
    pub fn add_far(&self) {
        let (node, router, far) = (self.ns("node"), self.ns("router"), self.ns("far"));
        ok(&["ip", "netns", "add", &far]);
        ok(&["ip", "-n", &far, "link", "set", "lo", "up"]);
        ok(&[
            "ip", "-n", &router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
            "netns", &far,
        ]);
        for (ns, dev, v4, v6) in [
            (&router, "eth1", "198.51.100.1/24", "2001:db8:1::1/64"),
            (&far, "eth0", "198.51.100.2/24", "2001:db8:1::2/64"),
        ] {
            ok(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            ok(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ok(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        ok(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        ok(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.1",
        ]);
        ok(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            "2001:db8::1",
        ]);
        ok(&[
            "ip",
            "-n",
            &far,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "198.51.100.1",
        ]);
        ok(&[
            "ip",
            "-n",
            &far,
            "route",
            "add",
            "2001:db8::/64",
            "via",
            "2001:db8:1::1",
        ]);
    }

    /// The node's IPv6 link-local address on eth0.
    pub fn node_link_local(&self) -> String {
        self.link_local("node")
    }

    /// The IPv6 link-local address on eth0 of namespace `short` (`node`, `router`).
    pub fn link_local(&self, short: &str) -> String {
        let o = run(&[
            "ip",
            "-n",
            &self.ns(short),
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let ll = text
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string();
        assert!(
            ll.starts_with("fe80:"),
            "no link-local address in {short}: {text}"
        );
        ll
    }

    /// `birdc` against instance `name`, command words split on spaces.
    pub fn birdc_at(&self, name: &str, cmd: &str) -> String {
        let sock = self.dir.join(format!("{name}.ctl"));
        let mut args = vec!["birdc", "-s", sock.to_str().unwrap()];
        args.extend(cmd.split(' '));
        String::from_utf8_lossy(&run(&args).stdout).into_owned()
    }

    /// Both namespaces, and gobgpd peering passively with 192.0.2.10 as AS 64500.
    pub fn with_gobgp() -> Option<Lab> {
        let mut lab = Lab::namespaces()?;
        if !installed("command -v gobgpd && command -v gobgp", "gobgpd") {
            return None;
        }
        let conf = "[global.config]\n  as = 64500\n  router-id = \"192.0.2.1\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"192.0.2.10\"\n    peer-as = 64512\n  [neighbors.transport.config]\n    passive-mode = true\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n";
        std::fs::write(lab.dir.join("gobgp.toml"), conf).unwrap();
        let conf = lab.dir.join("gobgp.toml").to_string_lossy().into_owned();
        lab.spawn_router(&["gobgpd", "-f", &conf, "-l", "warn"], &[]);
        Some(lab)
    }

    /// Both namespaces, and FRR (zebra + bgpd) peering passively with 192.0.2.10 as AS 64500,
    /// with a TCP-MD5 password.
    pub fn with_frr(password: &str) -> Option<Lab> {
        Lab::with_frr_neighbor(64500, "192.0.2.10", 64512, &format!("password {password}"))
    }

    /// Both namespaces, and FRR (zebra + bgpd) as AS `frr_as` peering passively with
    /// `neighbor` (AS `remote_as`; `extra` is one more `neighbor X ...` setting), both unicast
    /// families activated.
    pub fn with_frr_neighbor(
        frr_as: u32,
        neighbor: &str,
        remote_as: u32,
        extra: &str,
    ) -> Option<Lab> {
        let n = neighbor;
        let conf = format!(
            "frr defaults traditional\nhostname lbr\nrouter bgp {frr_as}\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n neighbor {n} remote-as {remote_as}\n neighbor {n} passive\n neighbor {n} {extra}\n address-family ipv4 unicast\n  neighbor {n} activate\n exit-address-family\n address-family ipv6 unicast\n  neighbor {n} activate\n exit-address-family\n"
        );
        Lab::with_frr_conf(&conf, &["zebra", "bgpd"])
    }

    /// Both namespaces, and ExaBGP peering passively with 192.0.2.10 as AS 64500 (or 64512
    /// for iBGP); every UPDATE it receives is written as a JSON line to `exabgp.json`.
    pub fn with_exabgp(exabgp_as: u32) -> Option<Lab> {
        let mut lab = Lab::namespaces()?;
        if !installed("command -v exabgp", "exabgp") {
            return None;
        }
        let d = |f: &str| lab.dir.join(f).to_string_lossy().into_owned();
        // ExaBGP counts a helper whose stdout closes as dead: the shell keeps it open.
        std::fs::write(
            d("receive.sh"),
            format!("#!/bin/sh\ncat >> {}\n", d("exabgp.json")),
        )
        .unwrap();
        ok(&["chmod", "755", &d("receive.sh")]);
        let conf = format!(
            "process receive {{\n  run {};\n  encoder json;\n}}\nneighbor 192.0.2.10 {{\n  router-id 192.0.2.1;\n  local-address 192.0.2.1;\n  local-as {exabgp_as};\n  peer-as 64512;\n  passive;\n  hold-time 9;\n  family {{ ipv4 unicast; ipv6 unicast; }}\n  api {{ processes [ receive ]; receive {{ parsed; update; }} }}\n}}\n",
            d("receive.sh")
        );
        std::fs::write(d("exabgp.conf"), conf).unwrap();
        let log = d("exabgp.log");
        lab.spawn_router(
            &["exabgp", &d("exabgp.conf")],
            &[
                ("exabgp.daemon.user", "root"),
                ("exabgp.daemon.drop", "false"),
                ("exabgp.api.cli", "false"),
                ("exabgp.tcp.bind", "192.0.2.1"),
                ("exabgp.log.destination", &log),
            ],
        );
        Some(lab)
    }

    /// Starts a router daemon that stays in the foreground, in the router namespace.
    fn spawn_router(&mut self, args: &[&str], envs: &[(&str, &str)]) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns("router")])
            .args(&args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        *self.child.lock().unwrap() = Some(child);
        self.respawn = Some((args, envs));
    }

    /// Stops the lab's router daemon (gobgpd, ExaBGP, FRR's bgpd or BIRD) and starts it again
    /// with the same configuration: the peer restarts.
    pub fn restart_router(&self) {
        if let Some((args, envs)) = &self.respawn {
            let mut child = self.child.lock().unwrap();
            if let Some(c) = child.as_mut() {
                ok(&["kill", &c.id().to_string()]);
                c.wait().unwrap();
            }
            let c = Command::new("ip")
                .args(["netns", "exec", &self.ns("router")])
                .args(args)
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            *child = Some(c);
        } else if self.dir.join("frr.conf").exists() {
            let pidfile = PathBuf::from("/var/run/frr")
                .join(&self.tag)
                .join("bgpd.pid");
            let pid = std::fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .to_string();
            ok(&["kill", &pid]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                assert!(Instant::now() < deadline, "bgpd {pid} did not exit");
                std::thread::sleep(Duration::from_millis(50));
            }
            self.start_frr_daemon("bgpd");
        } else {
            let conf = std::fs::read_to_string(self.dir.join("bird.conf")).unwrap();
            self.stop_bird("bird");
            self.start_bird("router", "bird", &conf);
        }
    }

    /// Both namespaces, and FRR in the router namespace running `daemons` (zebra first) with
    /// the configuration `conf`.
    pub fn with_frr_conf(conf: &str, daemons: &[&str]) -> Option<Lab> {
        let lab = Lab::namespaces()?;
        if !installed("test -x /usr/lib/frr/bgpd", "FRR") {
            return None;
        }
        let f = lab.dir.join("frr.conf");
        std::fs::write(&f, conf).unwrap();
        ok(&["chmod", "755", lab.dir.to_str().unwrap()]);
        ok(&["chmod", "644", f.to_str().unwrap()]);
        let run_dir = format!("/var/run/frr/{}", lab.tag);
        ok(&["mkdir", "-p", &run_dir]);
        ok(&["chown", "frr:frr", &run_dir]);
        for daemon in daemons {
            lab.start_frr_daemon(daemon);
        }
        Some(lab)
    }

    fn start_frr_daemon(&self, daemon: &str) {
        ok(&[
            "ip",
            "netns",
            "exec",
            &self.ns("router"),
            &format!("/usr/lib/frr/{daemon}"),
            "-d",
            "-N",
            &self.tag,
            "-f",
            self.dir.join("frr.conf").to_str().unwrap(),
        ]);
    }

    /// The UPDATE messages ExaBGP has received so far, one JSON document per line.
    pub fn exabgp_updates(&self) -> String {
        std::fs::read_to_string(self.dir.join("exabgp.json")).unwrap_or_default()
    }

    /// `vtysh` against this lab's FRR.
    pub fn vtysh(&self, cmd: &str) -> String {
        String::from_utf8_lossy(&run(&["vtysh", "-N", &self.tag, "-c", cmd]).stdout).into_owned()
    }

    /// `gobgp` in the router namespace; output as text.
    pub fn gobgp(&self, args: &[&str]) -> String {
        let ns = self.ns("router");
        let mut a = vec!["ip", "netns", "exec", &ns, "gobgp"];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&run(&a).stdout).into_owned()
    }

    /// The two namespaces on a veth pair, addressed.
    pub fn namespaces() -> Option<Lab> {
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
            child: Default::default(),
            respawn: None,
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

    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.tag)
    }

    pub fn birdc(&self, cmd: &str) -> String {
        self.birdc_at("bird", cmd)
    }

    /// Waits until `birdc show route all` satisfies `pred`; returns the last output.
    pub fn wait_routes(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
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
    pub fn with_speaker<T: Send + 'static>(
        &self,
        local_as: u32,
        remote_as: u32,
        tweak: impl FnOnce(&mut PeerConfig) + Send + 'static,
        f: impl FnOnce(&mut Speaker) -> T + Send + 'static,
    ) -> T {
        self.in_node(move |rt| {
            let mut fsm = Config::new(
                local_as,
                Ipv4Addr::new(192, 0, 2, 10),
                RemoteAs::Fixed(remote_as),
            );
            fsm.hold_time = 9;
            fsm.connect_retry = Duration::from_millis(200);
            fsm.connect_retry_max = Duration::from_secs(2);
            let mut cfg = PeerConfig::new(fsm, "192.0.2.1:179".parse().unwrap());
            cfg.next_hop_v6 = Some("2001:db8::10".parse().unwrap());
            cfg.connect_timeout = Duration::from_secs(3);
            tweak(&mut cfg);
            let session = rt.block_on(async { Session::start(cfg.clone()) });
            let mut speaker = Speaker {
                rt,
                session: Some(session),
                cfg,
                listener: None,
            };
            let out = f(&mut speaker);
            let Speaker { rt, session, .. } = speaker;
            if let Some(s) = session {
                rt.block_on(s.stop(Duration::from_secs(2)));
            }
            out
        })
    }

    /// Runs `f` on a thread of its own inside the node namespace, with a current-thread
    /// runtime: every socket the runtime's tasks open belongs to the node namespace.
    pub fn in_node<T: Send + 'static>(
        &self,
        f: impl FnOnce(tokio::runtime::Runtime) -> T + Send + 'static,
    ) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns("node"))).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on a descriptor we own, for this thread only.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            f(rt)
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

pub struct Speaker {
    pub rt: tokio::runtime::Runtime,
    pub session: Option<Session>,
    pub cfg: PeerConfig,
    pub listener: Option<Listener>,
}

impl Speaker {
    /// Listens on `addr` in the node namespace for the session's peer.
    pub fn listen(&mut self, addr: &str) -> &Listener {
        let l = self
            .rt
            .block_on(Listener::bind(addr.parse().unwrap()))
            .unwrap();
        l.register(self.session.as_ref().unwrap()).unwrap();
        self.listener.insert(l)
    }

    /// Runs the session while polling `probe` until its output satisfies `pred`; fails after
    /// 20 s naming `what`. Returns the output that satisfied it.
    pub fn until(
        &self,
        what: &str,
        probe: impl Fn() -> String,
        pred: impl Fn(&str) -> bool,
    ) -> String {
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
    pub fn crash(&mut self) {
        drop(self.session.take());
        self.run_for(Duration::from_millis(100));
    }

    /// Starts a new session after a crash, announcing that it restarted (graceful restart R).
    pub fn restart(&mut self) {
        if let Some((t, _)) = self.cfg.fsm.graceful_restart {
            self.cfg.fsm.graceful_restart = Some((t, true));
        }
        let cfg = self.cfg.clone();
        let s = self.rt.block_on(async { Session::start(cfg) });
        if let Some(l) = &self.listener {
            l.register(&s).unwrap();
        }
        self.session = Some(s);
    }

    pub fn set(&self, routes: &[(&str, RouteAttrs)]) {
        let map: BTreeMap<IpNetwork, RouteAttrs> = routes
            .iter()
            .map(|(p, a)| (p.parse().unwrap(), a.clone()))
            .collect();
        self.session.as_ref().unwrap().set_routes(map);
    }

    /// Lets the session run until `pred` holds on its status (bounded).
    pub fn wait(&self, what: &str, pred: impl Fn(&SessionStatus) -> bool) {
        let mut w = self.session.as_ref().unwrap().watch();
        self.rt.block_on(async {
            let reached = tokio::time::timeout(Duration::from_secs(20), w.wait_for(|s| pred(s)))
                .await
                .is_ok();
            assert!(reached, "session never reached {what}: {:?}", *w.borrow());
        });
    }

    /// Lets the session run for a while (timers, messages).
    pub fn run_for(&self, d: Duration) {
        self.rt.block_on(async move { tokio::time::sleep(d).await });
    }
}

/// A BIRD configuration with router id `id` and one `protocol bgp lb` made of `lines`, taking
/// IPv4 and IPv6 routes and exporting none.
pub fn bird_conf(id: &str, lines: &str) -> String {
    format!(
        "router id {id};\nprotocol device {{}}\nprotocol bgp lb {{\n  {lines}\n  hold time 9;\n  ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
    )
}

pub fn attrs() -> RouteAttrs {
    RouteAttrs {
        communities: vec![(64512 << 16) | 100],
        large_communities: vec![(64512, 1, 1)],
        local_pref: Some(200),
    }
}

/// Reads one whole BGP message from a blocking stream.
pub fn read_message(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = [0u8; 19];
    s.read_exact(&mut head).ok()?;
    let len = lb_announce_bgp::packet::message_len(&head).ok()??;
    let mut msg = head.to_vec();
    msg.resize(len, 0);
    s.read_exact(&mut msg[19..]).ok()?;
    Some(msg)
}

pub fn accept_within(l: &std::net::TcpListener, d: Duration) -> Option<std::net::TcpStream> {
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

/// A BGP announcement of `prefix` for the service named after `ip`, to the peer `router`.
pub fn bgp_announcement(ip: &str, prefix: &str) -> lb_core::plan::Announcement {
    use lb_core::plan::{Announcement, BgpRoute, How};
    Announcement {
        service: lb_core::objects::ServiceKey::new("default", ip),
        ip: ip.parse().unwrap(),
        how: How::Bgp {
            routes: vec![BgpRoute {
                prefix: prefix.parse().unwrap(),
                peers: vec!["router".into()],
                local_pref: None,
                communities: Vec::new(),
            }],
        },
    }
}
