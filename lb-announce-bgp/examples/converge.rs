//! BGP convergence benchmark: N /32 prefixes (198.18.0.0/15, the benchmarking range) announced
//! to BIRD in a network namespace; prints the time from session Established (as the receiving
//! BIRD reports it, for both senders) until BIRD holds all N, and the announcing process's RSS. The same run measures BIRD -> BIRD as the
//! reference. Run as root through `benches/bgp-convergence.sh` (BIRD installs no route: the
//! receiver has no kernel protocol).
//!
//!   converge [N] [ROUNDS]        default 100000 prefixes, 3 rounds; prints medians

#![allow(unsafe_code, clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ipnetwork::{IpNetwork, Ipv4Network};
use lb_announce_bgp::fsm::{Config, RemoteAs};
use lb_announce_bgp::packet::AfiSafi;
use lb_announce_bgp::session::{PeerConfig, RouteAttrs, Session};

fn sh(args: &[&str]) -> String {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Lab {
    tag: String,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in ["recv.pid", "send.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.dir.join(pid))
                && !p.trim().is_empty()
            {
                let _ = Command::new("kill").arg(p.trim()).status();
            }
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
    fn new(round: usize) -> Lab {
        let tag = format!("lbcv{}r{round}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let lab = Lab { tag, dir };
        let (node, router) = (lab.ns("node"), lab.ns("router"));
        for ns in [&node, &router] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip", "-n", &node, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", &router,
        ]);
        for (ns, a) in [(&node, "192.0.2.10/24"), (&router, "192.0.2.1/24")] {
            sh(&["ip", "-n", ns, "addr", "add", a, "dev", "eth0"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        // The receiver: BIRD in the router namespace, passive, no kernel protocol.
        let conf = "router id 192.0.2.1;\nprotocol device {}\nprotocol bgp lb {\n  local 192.0.2.1 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  passive on;\n  ipv4 { import all; export none; };\n}\n";
        lab.bird(&router, "recv", conf);
        lab
    }

    fn ns(&self, s: &str) -> String {
        format!("{}{s}", self.tag)
    }

    fn bird(&self, ns: &str, name: &str, conf: &str) {
        let c = self.dir.join(format!("{name}.conf"));
        std::fs::write(&c, conf).expect("config");
        let p = |ext: &str| {
            self.dir
                .join(format!("{name}.{ext}"))
                .to_string_lossy()
                .into_owned()
        };
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "bird",
            "-c",
            c.to_str().expect("path"),
            "-s",
            &p("ctl"),
            "-P",
            &p("pid"),
        ]);
    }

    fn birdc(&self, name: &str, cmd: &[&str]) -> String {
        let s = self.dir.join(format!("{name}.ctl"));
        let mut a = vec!["birdc", "-s", s.to_str().expect("path")];
        a.extend_from_slice(cmd);
        let o = Command::new(a[0]).args(&a[1..]).output().expect("birdc");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Routes in the receiver's table: the first line of `show route count`.
    fn received(&self) -> usize {
        let out = self.birdc("recv", &["show", "route", "count"]);
        out.lines()
            .find(|l| l.contains("of") && l.contains("routes"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// When the receiving BIRD first reports the session Established: the same clock for both
    /// senders.
    fn wait_established(&self) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .birdc("recv", &["show", "protocols", "lb"])
                .contains("Established")
            {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "the session never established");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// When the receiver first held 99% of the routes, and when it held them all.
    fn wait_received(&self, n: usize, limit: Duration) -> (Instant, Instant) {
        let deadline = Instant::now() + limit;
        let start = Instant::now();
        let trace = std::env::var_os("CONVERGE_TRACE").is_some();
        let mut last = usize::MAX;
        let mut at99 = None;
        loop {
            let got = self.received();
            if trace && got != last {
                eprintln!("  {:>7.3} s: {got} routes", start.elapsed().as_secs_f64());
                last = got;
            }
            if got * 100 >= n * 99 && at99.is_none() {
                at99 = Some(Instant::now());
            }
            if got >= n {
                let now = Instant::now();
                return (at99.unwrap_or(now), now);
            }
            assert!(
                Instant::now() < deadline,
                "BIRD holds {} of {n} routes after {limit:?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn prefixes(n: u32) -> BTreeMap<IpNetwork, RouteAttrs> {
    (0..n)
        .map(|i| {
            (
                IpNetwork::V4(
                    Ipv4Network::new(Ipv4Addr::from(0xc612_0000 + i), 32).expect("prefix"),
                ),
                RouteAttrs::default(),
            )
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Our speaker in the node namespace; returns seconds from Established to 99% and to all
/// received, and the RSS in MiB.
fn ours(lab: &Lab, n: u32) -> (f64, f64, f64) {
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.ns("node"))).expect("netns");
    let routes = prefixes(n);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: this thread enters the node namespace; the runtime's worker, created
                // afterwards from this thread, inherits it, so the session's sockets live there.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let s = rt.block_on(async {
                    let mut fsm =
                        Config::new(64512, Ipv4Addr::new(192, 0, 2, 10), RemoteAs::Fixed(64500));
                    fsm.families = vec![AfiSafi::IPV4_UNICAST];
                    fsm.connect_retry = Duration::from_millis(100);
                    fsm.connect_retry_max = Duration::from_secs(1);
                    let mut peer = PeerConfig::new(fsm, "192.0.2.1:179".parse().expect("addr"));
                    peer.connect_timeout = Duration::from_secs(3);
                    Session::start(peer)
                });
                s.set_routes(routes);
                let t0 = lab.wait_established();
                // The worker thread keeps the session sending while this thread polls BIRD.
                let (t99, t100) = lab.wait_received(n as usize, Duration::from_secs(120));
                let rss = rss_kib() as f64 / 1024.0;
                rt.block_on(s.stop(Duration::from_secs(2)));
                ((t99 - t0).as_secs_f64(), (t100 - t0).as_secs_f64(), rss)
            })
            .join()
            .expect("speaker thread")
    })
}

/// BIRD -> BIRD: a sending BIRD with N static routes in the node namespace; seconds from
/// Established to 99% and to all received.
fn bird_to_bird(lab: &Lab, n: u32) -> (f64, f64) {
    let mut conf = String::from(
        "router id 192.0.2.10;\nprotocol device {}\nprotocol static prefixes { ipv4;\n",
    );
    for i in 0..n {
        conf.push_str(&format!(
            "  route {}/32 blackhole;\n",
            Ipv4Addr::from(0xc612_0000 + i)
        ));
    }
    // Disabled until the static routes are all in the table, so that both senders start with
    // their routes ready, as ours does.
    conf.push_str("}\nprotocol bgp lb {\n  disabled;\n  local 192.0.2.10 as 64512;\n  neighbor 192.0.2.1 as 64500;\n  ipv4 { import none; export all; };\n}\n");
    lab.bird(&lab.ns("node"), "send", &conf);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lab
        .birdc("send", &["show", "route", "count"])
        .contains(&format!("{n} of {n} routes"))
    {
        assert!(
            Instant::now() < deadline,
            "the sending BIRD never loaded its routes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.birdc("send", &["enable", "lb"]);
    let t0 = lab.wait_established();
    let (t99, t100) = lab.wait_received(n as usize, Duration::from_secs(120));
    ((t99 - t0).as_secs_f64(), (t100 - t0).as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `converge --speaker TAG N`: the speaker alone, in a process of its own so that its RSS is
/// the speaker's; prints "SECONDS_TO_99% SECONDS_TO_ALL RSS_MIB".
fn speaker_process(tag: &str, n: u32) {
    let lab = Lab {
        tag: tag.to_string(),
        dir: std::env::temp_dir().join(tag),
    };
    let (t99, t, rss) = ours(&lab, n);
    println!("{t99} {t} {rss}");
    // The parent owns the namespaces and BIRD.
    std::mem::forget(lab);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--speaker") {
        return speaker_process(&args[2], args[3].parse().expect("N"));
    }
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let (mut ours99, mut ours100, mut rss, mut bird99, mut bird100) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        {
            let lab = Lab::new(round * 2);
            let exe = std::env::current_exe().expect("own path");
            let out = sh(&[
                exe.to_str().expect("path"),
                "--speaker",
                &lab.tag,
                &n.to_string(),
            ]);
            let v: Vec<f64> = out
                .split_whitespace()
                .map(|x| x.parse().expect("number"))
                .collect();
            println!(
                "round {round}: ours           99% {:.3} s, all {:.3} s, RSS {:.1} MiB",
                v[0], v[1], v[2]
            );
            ours99.push(v[0]);
            ours100.push(v[1]);
            rss.push(v[2]);
        }
        {
            let lab = Lab::new(round * 2 + 1);
            let (t99, t100) = bird_to_bird(&lab, n);
            println!("round {round}: BIRD -> BIRD   99% {t99:.3} s, all {t100:.3} s");
            bird99.push(t99);
            bird100.push(t100);
        }
    }
    let max_rss = rss.iter().copied().fold(0.0, f64::max);
    let (o99, o100, b99, b100) = (
        median(ours99),
        median(ours100),
        median(bird99),
        median(bird100),
    );
    println!("{n} prefixes, medians of {rounds} rounds (from Established at the receiver):");
    println!("  ours:          99% {o99:.3} s, all {o100:.3} s, RSS {max_rss:.1} MiB (max)");
    println!("  BIRD -> BIRD:  99% {b99:.3} s, all {b100:.3} s");
    println!(
        "  ratio ours / BIRD: 99% {:.2}, all {:.2}",
        o99 / b99,
        o100 / b100
    );
}
