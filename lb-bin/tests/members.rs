//! SWIM membership over real UDP between three nodes, each in a network namespace this test
//! creates, on one bridge (in a namespace of its own):
//!
//! ```text
//!  ns <tag>n1 eth0 192.0.2.11/24 ─┐
//!  ns <tag>n2 eth0 192.0.2.12/24 ─┼─ br0 in ns <tag>br
//!  ns <tag>n3 eth0 192.0.2.13/24 ─┘
//! ```
//! Each elector runs on a thread that entered its node's namespace. Needs root, iproute2 and
//! ping; without them the test says so and passes, unless `LB_REQUIRE_NETNS=1` (set by
//! `.ci/run`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

mod lab;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lab::Net;
use lb_bin::members::{Keyring, Options, Security, SwimElector};
use lb_core::elect::LeaderElector;

/// The namespaces; removed on drop, also when the test fails.
struct Lab {
    net: Net,
}

impl Lab {
    fn new() -> Option<Lab> {
        if !lab::available("membership tests") {
            return None;
        }
        let net = Net::new(
            "lbm",
            &[
                ("n1", "192.0.2.11/24"),
                ("n2", "192.0.2.12/24"),
                ("n3", "192.0.2.13/24"),
            ],
        );
        Some(Lab { net })
    }
}

enum Cmd {
    /// Report the live set.
    View(mpsc::Sender<BTreeSet<String>>),
    Resign(mpsc::Sender<()>),
    /// Stop without a word, as a crash would.
    Crash,
}

/// Starts node `i`'s elector (joining through node 1) on a thread inside its namespace.
fn node(lab: &Lab, i: u8) -> mpsc::Sender<Cmd> {
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.net.ns(&format!("n{i}")))).unwrap();
    let (tx, rx) = mpsc::channel::<Cmd>();
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we own, for this thread only; the runtime below is
        // single-threaded, so its socket belongs to the node's namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let me: std::net::SocketAddr = format!("192.0.2.1{i}:7946").parse().unwrap();
        let e = rt
            .block_on(SwimElector::start({
                let key = Keyring::parse(lab::KEY).unwrap();
                let mut o = Options::new(format!("node{i}"), me, Security::Sealed(key));
                o.seeds = vec!["192.0.2.11:7946".parse().unwrap()];
                o
            }))
            .unwrap();
        loop {
            // Let the elector run between commands.
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(5)).await });
            match rx.try_recv() {
                Ok(Cmd::View(r)) => {
                    let _ = r.send(e.current().members);
                }
                Ok(Cmd::Resign(r)) => {
                    rt.block_on(e.resign()).unwrap();
                    let _ = r.send(());
                    return;
                }
                Ok(Cmd::Crash) | Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
    });
    tx
}

fn view(n: &mpsc::Sender<Cmd>) -> BTreeSet<String> {
    let (tx, rx) = mpsc::channel();
    n.send(Cmd::View(tx)).unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

fn names(ids: &[u8]) -> BTreeSet<String> {
    ids.iter().map(|i| format!("node{i}")).collect()
}

/// Polls (bounded) until every node in `nodes` sees exactly `want`.
fn until_all_see(what: &str, nodes: &[&mpsc::Sender<Cmd>], want: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let views: Vec<BTreeSet<String>> = nodes.iter().map(|n| view(n)).collect();
        if views.iter().all(|v| v == want) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {views:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_nodes_join_a_crash_is_detected_a_restart_rejoins_and_a_resign_is_seen_at_once() {
    let Some(lab) = Lab::new() else { return };
    // Node 3 starts first: it keeps asking node 1 until node 1 is up.
    let n3 = node(&lab, 3);
    std::thread::sleep(Duration::from_millis(300));
    let n1 = node(&lab, 1);
    let n2 = node(&lab, 2);
    until_all_see("all three joined", &[&n1, &n2, &n3], &names(&[1, 2, 3]));

    n3.send(Cmd::Crash).unwrap();
    let t = Instant::now();
    until_all_see("node3's crash seen", &[&n1, &n2], &names(&[1, 2]));
    eprintln!("crash of node3 seen by both others after {:?}", t.elapsed());

    // It comes back as a new generation at the same address.
    let n3 = node(&lab, 3);
    until_all_see("node3 back", &[&n1, &n2, &n3], &names(&[1, 2, 3]));

    let (tx, rx) = mpsc::channel();
    n2.send(Cmd::Resign(tx)).unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let t = Instant::now();
    until_all_see("node2's leave seen", &[&n1, &n3], &names(&[1, 3]));
    eprintln!("leave of node2 seen after {:?}", t.elapsed());
    for n in [n1, n3] {
        let _ = n.send(Cmd::Crash);
    }
}
