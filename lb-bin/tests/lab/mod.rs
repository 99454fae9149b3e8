//! Network namespaces on one bridge for lb-bin's tests: each host is a namespace with `eth0`
//! on a bridge that lives in its own namespace, so nothing touches the machine's interfaces.
//! Processes are started inside hosts and stopped by PID; everything is removed on drop, also
//! when a test fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The membership key the tests' nodes share (as MetalLB's memberlist `secretkey`).
pub const KEY: &str = "dGVzdCBrZXkgZm9yIHRoZSBtZW1iZXJzaGlwIG9mIHRoZSBsYWIgbm9kZXMK\n";

pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

pub fn ok(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// True when the tests can build namespaces (root, iproute2, ping); otherwise says why and
/// returns false, unless `LB_REQUIRE_NETNS=1` (set by `.ci/run`), which makes it fail.
pub fn available(what: &str) -> bool {
    let root = run(&["id", "-u"]).stdout == b"0\n";
    let tools = ["ip", "ping"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !(root && tools) {
        assert!(
            std::env::var("LB_REQUIRE_NETNS").as_deref() != Ok("1"),
            "{what} need root, iproute2 and ping"
        );
        eprintln!("skipped: {what} need root, iproute2 and ping");
        return false;
    }
    true
}

/// True when BIRD is installed; otherwise says so and returns false, unless
/// `LB_REQUIRE_NETNS=1`, which makes it fail.
pub fn bird_available() -> bool {
    if Command::new("sh")
        .args(["-c", "command -v bird && command -v birdc"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    assert!(
        std::env::var("LB_REQUIRE_NETNS").as_deref() != Ok("1"),
        "bird2 is not installed"
    );
    eprintln!("skipped: bird2 is not installed");
    false
}

/// Held by the tests of one file that must not overlap (one saturates the cores on purpose,
/// others measure gaps of milliseconds): they run one at a time.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops a daemon when dropped, by the PID its PID file held when this was made (the file
/// may be gone by then, with the lab's directory).
pub struct KillOnDrop(pub Option<String>);

impl KillOnDrop {
    /// Waits (up to 2 s) for the PID file to hold a PID: a daemon writes it after it forks,
    /// so it may be missing or empty when the command that started it returns.
    pub fn new(pid_file: &str) -> KillOnDrop {
        let read = || {
            std::fs::read_to_string(pid_file)
                .ok()
                .map(|p| p.trim().to_string())
                .filter(|p| p.parse::<u32>().is_ok())
        };
        until(2, || read().is_some());
        KillOnDrop(read())
    }
}

impl Drop for KillOnDrop {
    /// SIGTERM, then SIGKILL after a second: a daemon shutting down gracefully in a namespace
    /// that is being torn down can wait forever (BIRD did, once).
    fn drop(&mut self) {
        if let Some(pid) = &self.0 {
            let _ = Command::new("kill").arg(pid).status();
            // Exited: no /proc entry, or a zombie (state Z) nobody has reaped yet.
            let gone = until(1, || {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| {
                    st.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
            });
            if !gone {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }
}

/// BIRD in one of a [`Net`]'s hosts, its files `<tag>.{conf,ctl,pid}` in the net's directory;
/// stopped by PID on drop.
pub struct Bird {
    conf: String,
    ctl: String,
    _kill: KillOnDrop,
}

impl Bird {
    /// `birdc WHAT...` on this BIRD's socket; its output.
    pub fn birdc(&self, what: &[&str]) -> String {
        let mut args = vec!["birdc", "-s", &self.ctl];
        args.extend_from_slice(what);
        String::from_utf8_lossy(&run(&args).stdout).into_owned()
    }

    /// `show route all`.
    pub fn routes(&self) -> String {
        self.birdc(&["show", "route", "all"])
    }

    /// Protocol `lb`'s line in `show protocols`: state, since (ms), info.
    pub fn session(&self) -> String {
        self.birdc(&["show", "protocols", "lb"])
            .lines()
            .find(|l| l.starts_with("lb "))
            .unwrap_or_default()
            .to_string()
    }

    /// Writes `conf` and has BIRD load it.
    pub fn reconfigure(&self, conf: &str) {
        std::fs::write(&self.conf, conf).unwrap();
        self.birdc(&["configure"]);
    }
}

/// A passive BIRD protocol `lb` at `local` (AS 64500) for the node 192.0.2.11 (AS 64512), hold
/// time 9 s, importing everything; `password` sets TCP-MD5.
pub fn bird_conf(local: &str, password: Option<&str>) -> String {
    let pw = password.map_or(String::new(), |p| format!("  password \"{p}\";\n"));
    format!(
        "router id {local};\ntimeformat protocol iso long ms;\nprotocol device {{}}\nprotocol bgp lb {{\n  local {local} as 64500;\n  neighbor 192.0.2.11 as 64512;\n  passive on;\n  hold time 9;\n{pw}  ipv4 {{ import all; export none; }};\n}}\n"
    )
}

/// tcpdump on one host's `eth0`, writing a pcap file; stopped by PID on drop.
pub struct Capture {
    child: Child,
    pub file: String,
}

impl Capture {
    /// Stops the capture (SIGINT, so the file is complete) and waits, bounded, for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        until(5, || self.child.try_wait().is_ok_and(|s| s.is_some()));
    }

    /// What tcpdump said when it stopped: how many packets it captured and how many the
    /// kernel dropped before it could read them (under load a capture can miss frames).
    pub fn summary(&self) -> String {
        std::fs::read_to_string(format!("{}.err", self.file))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("packets"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The capture as `tcpdump -n -e -tt` prints it: epoch time, MACs, then the packet.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&run(&["tcpdump", "-n", "-e", "-tt", "-r", &self.file]).stdout)
            .into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Net {
    pub tag: String,
    pub dir: PathBuf,
    hosts: Vec<String>,
    procs: BTreeMap<String, Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.procs.values_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for h in self.hosts.iter().chain(std::iter::once(&"br".to_string())) {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{h}", self.tag)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Net {
    /// Hosts `(short name, address/prefix)` on one bridge.
    pub fn new(prefix: &str, hosts: &[(&str, &str)]) -> Net {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{prefix}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).unwrap();
        let mut net = Net {
            tag,
            dir,
            hosts: Vec::new(),
            procs: BTreeMap::new(),
        };
        let br = net.ns("br");
        ok(&["ip", "netns", "add", &br]);
        ok(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]);
        ok(&["ip", "-n", &br, "link", "set", "br0", "up"]);
        for (short, addr) in hosts {
            let ns = net.ns(short);
            ok(&["ip", "netns", "add", &ns]);
            net.hosts.push(short.to_string());
            ok(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            ok(&[
                "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", short,
                "netns", &br,
            ]);
            ok(&["ip", "-n", &br, "link", "set", short, "master", "br0", "up"]);
            ok(&["ip", "-n", &ns, "addr", "add", addr, "dev", "eth0"]);
            ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.tag)
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }

    /// Starts `program args` in `host` as process `name`, its stderr in `<name>.log`.
    pub fn spawn(
        &mut self,
        name: &str,
        host: &str,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path(&format!("{name}.log"))).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        self.procs.insert(name.to_string(), child);
    }

    /// Signals process `name` by PID and waits (bounded) for it; returns its exit status.
    pub fn signal(&mut self, name: &str, sig: &str) -> std::process::ExitStatus {
        let mut c = self.procs.remove(name).unwrap();
        ok(&["kill", sig, &c.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "{name} did not exit on {sig}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The PID of process `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.procs[name].id()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    /// Runs `f` on a thread that has entered `host`'s namespace (sockets it opens stay there).
    pub fn inside<T: Send + 'static>(
        &self,
        host: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let ns = std::fs::File::open(format!("/run/netns/{}", self.ns(host))).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns affects only this thread, which exits after `f`.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    }

    /// GET `path` from `addr` inside `host`; the body.
    pub fn get(&self, host: &str, addr: &str, path: &str) -> Option<String> {
        let (addr, path) = (addr.to_string(), path.to_string());
        self.inside(host, move || {
            let mut s = std::net::TcpStream::connect(&addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut r = String::new();
            s.read_to_string(&mut r).ok()?;
            r.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
        })
    }

    /// One echo request from `host`; whether it was answered within a second.
    pub fn ping_once(&self, host: &str, ip: &str) -> bool {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.ns(host),
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            ip,
        ])
        .status
        .success()
    }

    /// Starts tcpdump on `host`'s `eth0` into `file` (in the net's directory) with the capture
    /// `filter`; returns once it is capturing.
    pub fn capture(&self, host: &str, file: &str, filter: &[&str]) -> Capture {
        let file = self.path(file);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "tcpdump",
                "--immediate-mode",
                "-Z",
                "root",
                "-i",
                "eth0",
                "-U",
                "-B",
                "8192",
                "-w",
                &file,
            ])
            .args(filter)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(format!("{file}.err")).unwrap())
            .spawn()
            .unwrap();
        // Capturing once the file's header is written.
        until(5, || std::fs::metadata(&file).is_ok_and(|m| m.len() >= 24));
        std::thread::sleep(Duration::from_millis(200));
        Capture { child, file }
    }

    /// Starts BIRD in `host` with `conf`, its files under `tag`.
    pub fn bird(&self, host: &str, tag: &str, conf: &str) -> Bird {
        let d = |f: &str| self.path(&format!("{tag}.{f}"));
        std::fs::write(d("conf"), conf).unwrap();
        ok(&[
            "ip",
            "netns",
            "exec",
            &self.ns(host),
            "bird",
            "-c",
            &d("conf"),
            "-s",
            &d("ctl"),
            "-P",
            &d("pid"),
        ]);
        let kill = KillOnDrop::new(&d("pid"));
        assert!(kill.0.is_some(), "BIRD wrote no PID file");
        Bird {
            conf: d("conf"),
            ctl: d("ctl"),
            _kill: kill,
        }
    }

    /// The MAC `host`'s neighbour table has for `ip`.
    pub fn neighbour(&self, host: &str, ip: &str) -> Option<String> {
        let o = run(&["ip", "-n", &self.ns(host), "neigh", "show", ip]);
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        let w: Vec<&str> = t.split_whitespace().collect();
        w.iter()
            .position(|x| *x == "lladdr")
            .map(|p| w[p + 1].to_string())
    }

    pub fn flush_neighbours(&self, host: &str) {
        ok(&["ip", "-n", &self.ns(host), "neigh", "flush", "dev", "eth0"]);
    }

    pub fn mac(&self, host: &str) -> String {
        let o = run(&["ip", "-n", &self.ns(host), "-o", "link", "show", "eth0"]);
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        let w: Vec<&str> = t.split_whitespace().collect();
        let p = w.iter().position(|x| *x == "link/ether").unwrap();
        w[p + 1].to_string()
    }

    pub fn link_down(&self, host: &str) {
        ok(&["ip", "-n", &self.ns(host), "link", "set", "eth0", "down"]);
    }
}

/// Polls `f` every 50 ms until it holds or `secs` pass.
pub fn until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
