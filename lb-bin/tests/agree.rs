//! Standalone nodes agree on every address, whatever order they saw the changes in: the
//! allocator (elected from the membership) decides, the others adopt its ledger.
//!
//! ```text
//!  ns <tag>n1..n3  192.0.2.11-13  lb-bin standalone --state-dir stateN (sealed membership)
//!  bridge br0 in ns <tag>br
//! ```
//! Each node's agreed allocation is read from its `--state-dir/allocations.json`. Needs root,
//! iproute2 and ping (and nftables for the partition); see `lab::available`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

mod lab;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{Net, until};
use lb_core::members::agree::Agreement;

type Allocations = BTreeMap<String, Vec<IpAddr>>;

const POOL: &str = "203.0.113.0/31";

fn config(services: &[&str]) -> String {
    let mut c = format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan}}\nspec: {{addresses: [{POOL}]}}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lan}}\n"
    );
    for s in services {
        c.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {s}, namespace: default}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n"
        ));
    }
    c
}

/// Where a node alone would place `svc` in the pool.
fn alone(svc: &str) -> Vec<IpAddr> {
    let l = lb_core::config::load_str(&config(&[svc]));
    let mut a = Agreement::new("x", 1, BTreeMap::new());
    a.decide(&l.config)
        .outcome
        .allocated
        .values()
        .next()
        .unwrap()
        .ips
        .clone()
}

/// Service-name pairs that nodes alone would place on the same address: the contests.
fn contesting_pairs(n: usize) -> Vec<(String, String)> {
    let names: Vec<String> = (0..60).map(|i| format!("svc{i:02}")).collect();
    let mut out = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if alone(a) == alone(b) && out.len() < n {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    assert_eq!(out.len(), n, "not enough contesting pairs");
    out
}

struct Lab {
    net: Net,
    running: BTreeSet<u8>,
}

impl Lab {
    fn new(tag: &str, nodes: u8) -> Option<Lab> {
        if !lab::available("agreement tests") {
            return None;
        }
        let hosts: Vec<(String, String)> = (1..=nodes)
            .map(|i| (format!("n{i}"), format!("192.0.2.1{i}/24")))
            .collect();
        let hosts: Vec<(&str, &str)> = hosts
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let net = Net::new(tag, &hosts);
        std::fs::write(net.dir.join("key"), lab::KEY).unwrap();
        Some(Lab {
            net,
            running: BTreeSet::new(),
        })
    }

    /// Gives node `i` a file with `services` (written aside and renamed, never half a file).
    fn file(&self, i: u8, services: &[&str]) {
        let tmp = self.net.path(&format!("n{i}.yaml.tmp"));
        std::fs::write(&tmp, config(services)).unwrap();
        std::fs::rename(&tmp, self.net.path(&format!("n{i}.yaml"))).unwrap();
    }

    fn start(&mut self, i: u8) {
        let (cfg, key) = (self.net.path(&format!("n{i}.yaml")), self.net.path("key"));
        let state = self.net.path(&format!("state{i}"));
        let (name, bind) = (format!("node{i}"), format!("192.0.2.1{i}:7946"));
        let args = [
            "standalone",
            "--config",
            &cfg,
            "--node-name",
            &name,
            "--bind",
            &bind,
            "--join",
            "192.0.2.11:7946",
            "--join",
            "192.0.2.12:7946",
            "--state-dir",
            &state,
            "--http",
            "127.0.0.1:9100",
            "--secret-key-file",
            &key,
            "--local-delivery",
            "false",
        ];
        self.net.spawn(
            &format!("node{i}"),
            &format!("n{i}"),
            env!("CARGO_BIN_EXE_lb-bin"),
            &args,
            &[],
        );
        self.running.insert(i);
    }

    fn stop(&mut self, i: u8) {
        self.net.signal(&format!("node{i}"), "-TERM");
        self.running.remove(&i);
    }

    fn allocations(&self, i: u8) -> Allocations {
        std::fs::read_to_string(self.net.path(&format!("state{i}/allocations.json")))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn status(&self, i: u8) -> serde_json::Value {
        self.net
            .get(&format!("n{i}"), "127.0.0.1:9100", "/status")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn members(&self, i: u8) -> usize {
        self.status(i)["members"].as_array().map_or(0, Vec::len)
    }

    fn logs(&self) -> String {
        self.running
            .iter()
            .map(|i| format!("--- node{i}\n{}", self.net.log(&format!("node{i}"))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn joined(&self) {
        let n = self.running.len();
        assert!(
            until(20, || self.running.iter().all(|i| self.members(*i) == n)),
            "members never settled\n{}",
            self.logs()
        );
    }

    /// Polls every 20 ms (bounded) until every running node holds the same allocation with
    /// `services` entries and nothing disputed; returns it and how long it took.
    fn agree(&self, services: usize, within: Duration) -> (Allocations, Duration) {
        let t0 = Instant::now();
        loop {
            let all: Vec<Allocations> = self.running.iter().map(|i| self.allocations(*i)).collect();
            let undisputed = self
                .running
                .iter()
                .all(|i| self.status(*i)["disputed"] == serde_json::json!([]));
            if all.windows(2).all(|w| w[0] == w[1]) && all[0].len() == services && undisputed {
                return (all[0].clone(), t0.elapsed());
            }
            assert!(
                t0.elapsed() < within,
                "no agreement within {within:?}: {all:?}, disputed {:?}\n{}",
                self.running
                    .iter()
                    .map(|i| (
                        self.status(*i)["disputed"].clone(),
                        self.status(*i)["ledgers"].clone()
                    ))
                    .collect::<Vec<_>>(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn key(s: &str) -> String {
    format!("default/{s}")
}

#[test]
fn nodes_that_saw_different_files_first_agree_within_a_second_of_seeing_the_same() {
    let Some(mut lab) = Lab::new("lbg", 2) else {
        return;
    };
    for (alpha, beta) in contesting_pairs(2) {
        assert_eq!(
            alone(&alpha),
            alone(&beta),
            "{alpha} and {beta} contest an address"
        );
        lab.file(1, &[&alpha]);
        lab.file(2, &[&beta]);
        for i in [1, 2] {
            let _ = std::fs::remove_dir_all(lab.net.path(&format!("state{i}")));
            lab.start(i);
        }
        lab.joined();
        // The node whose service the allocator has not decided does not announce it, and
        // says so in /status and /metrics.
        assert!(until(5, || (1..=2).any(|i| lab.status(i)["disputed"]
            .as_array()
            .is_some_and(|d| !d.is_empty()))));
        assert!(until(3, || (1..=2).any(|i| lab
            .net
            .get(&format!("n{i}"), "127.0.0.1:9100", "/metrics")
            .is_some_and(|m| m.contains("lb_allocation_disputed 1")))));
        for i in [1, 2] {
            let st = lab.status(i);
            for a in st["announcements"].as_array().unwrap() {
                let svc = a["service"].as_str().unwrap();
                assert!(
                    !st["disputed"].as_array().unwrap().iter().any(|d| d == svc),
                    "node{i} announces {svc}, which is disputed: {st:#}"
                );
            }
        }
        lab.file(1, &[&alpha, &beta]);
        lab.file(2, &[&alpha, &beta]);
        let (agreed, took) = lab.agree(2, Duration::from_secs(1));
        eprintln!("{alpha}/{beta}: agreed after {took:?}: {agreed:?}");
        assert_ne!(agreed[&key(&alpha)], agreed[&key(&beta)]);
        for i in [1, 2] {
            lab.stop(i);
        }
    }
}

#[test]
fn three_nodes_given_three_edits_in_three_orders_agree_and_keep_every_address() {
    let Some(mut lab) = Lab::new("lbe", 3) else {
        return;
    };
    let pairs = contesting_pairs(1);
    let (p, q) = &pairs[0];
    // Base: p. Edits: add q (contests p's address), add r, remove p... in three orders.
    let base = [p.as_str()];
    for i in 1..=3 {
        lab.file(i, &base);
        lab.start(i);
    }
    lab.joined();
    let (before, _) = lab.agree(1, Duration::from_secs(5));
    // Every address any node held, by service: none may change while its service exists.
    let mut held: Allocations = before.clone();
    let mut check = |lab: &Lab| {
        for i in 1..=3 {
            for (svc, ips) in lab.allocations(i) {
                let first = held.entry(svc.clone()).or_insert_with(|| ips.clone());
                assert_eq!(*first, ips, "node{i}: {svc} moved\n{}", lab.logs());
            }
        }
    };
    // The edits: 0 adds q (it contests p's place), 1 adds "extra", 2 removes p.
    let orders = [[0, 1, 2], [1, 2, 0], [2, 0, 1]];
    for step in 0..3 {
        for (n, order) in orders.iter().enumerate() {
            // Each node gets the edits cumulatively, in its own order: what it has after
            // `step + 1` of them.
            let seen: BTreeSet<usize> = order[..=step].iter().copied().collect();
            let mut svcs: BTreeSet<&str> = base.iter().copied().collect();
            for e in &seen {
                match e {
                    0 => {
                        svcs.insert(q);
                    }
                    1 => {
                        svcs.insert("extra");
                    }
                    _ => {
                        svcs.remove(p.as_str());
                    }
                }
            }
            let svcs: Vec<&str> = svcs.into_iter().collect();
            lab.file(n as u8 + 1, &svcs);
        }
        for _ in 0..20 {
            check(&lab);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (after, took) = lab.agree(2, Duration::from_secs(2));
    eprintln!("three orders: agreed after {took:?}: {before:?} -> {after:?}");
    assert!(after.contains_key(&key(q)) && after.contains_key(&key("extra")));
    assert!(!after.contains_key(&key(p)));
    check(&lab);
    // Agreed: every member follows the same ledger, so none is sent again (each node used to
    // repeat its ledger every second, 5 MB at 100,000 services). The last tells of the
    // agreement settle first.
    let sends = |lab: &Lab| -> Vec<u64> {
        (1..=3)
            .map(|i| lab.status(i)["ledger_sends"].as_u64().unwrap_or(0))
            .collect()
    };
    let mut settled = sends(&lab);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(1500));
        let now = sends(&lab);
        if now == settled {
            break;
        }
        settled = now;
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        sends(&lab),
        settled,
        "a ledger every member follows was sent again\n{}",
        lab.logs()
    );
    assert!(settled.iter().all(|n| *n > 0), "{settled:?}");
}

#[test]
fn a_node_restarted_with_an_empty_state_adopts_the_clusters_allocation() {
    let Some(mut lab) = Lab::new("lbr", 3) else {
        return;
    };
    let pairs = contesting_pairs(1);
    let (first, second) = (&pairs[0].1, &pairs[0].0);
    // History: `first` came first and took the shared place; `second` got the other address.
    // A fresh allocation of both would give the shared place to `second` (sorted first).
    for i in 1..=3 {
        lab.file(i, &[first]);
        lab.start(i);
    }
    lab.joined();
    lab.agree(1, Duration::from_secs(5));
    for i in 1..=3 {
        lab.file(i, &[first, second]);
    }
    let (agreed, _) = lab.agree(2, Duration::from_secs(5));
    assert_eq!(
        agreed[&key(first)],
        alone(first),
        "history: first kept its place"
    );
    let allocator = lab.status(1)["allocator"].as_str().unwrap().to_string();
    let n: u8 = allocator.trim_start_matches("node").parse().unwrap();
    // The allocator itself restarts with nothing: it is the allocator again.
    lab.stop(n);
    std::fs::remove_dir_all(lab.net.path(&format!("state{n}"))).unwrap();
    lab.start(n);
    lab.joined();
    std::thread::sleep(Duration::from_secs(2));
    let (after, _) = lab.agree(2, Duration::from_secs(5));
    assert_eq!(after, agreed, "no address moved\n{}", lab.logs());
}

#[test]
fn after_a_partition_only_the_contested_address_moves() {
    let Some(mut lab) = Lab::new("lbp", 2) else {
        return;
    };
    let pairs = contesting_pairs(1);
    let (alpha, beta) = (&pairs[0].0, &pairs[0].1);
    // A 4-address pool would be kinder; two addresses make the contest certain.
    for i in 1..=2 {
        lab.file(i, &[]);
        lab.start(i);
    }
    lab.joined();
    // Cut the two apart (membership datagrams dropped both ways).
    for (i, other) in [(1u8, "192.0.2.12"), (2, "192.0.2.11")] {
        let rule = format!(
            "table inet cut {{ chain in {{ type filter hook input priority 0; ip saddr {other} drop; }}; }}"
        );
        let mut nft = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.net.ns(&format!("n{i}")),
                "nft",
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(nft.stdin.as_mut().unwrap(), rule.as_bytes()).unwrap();
        drop(nft.stdin.take());
        assert!(nft.wait().unwrap().success());
    }
    assert!(
        until(10, || lab.members(1) == 1 && lab.members(2) == 1),
        "partitioned"
    );
    lab.file(1, &[alpha]);
    lab.file(2, &[beta]);
    assert!(until(5, || lab.allocations(1).len() == 1
        && lab.allocations(2).len() == 1));
    assert_eq!(
        lab.allocations(1)[&key(alpha)],
        lab.allocations(2)[&key(beta)],
        "each side placed its service on the same address"
    );
    let sides = (lab.allocations(1), lab.allocations(2));
    for i in 1..=2 {
        lab::ok(&[
            "ip",
            "netns",
            "exec",
            &lab.net.ns(&format!("n{i}")),
            "nft",
            "delete",
            "table",
            "inet",
            "cut",
        ]);
    }
    lab.joined();
    for i in 1..=2 {
        lab.file(i, &[alpha, beta]);
    }
    let (agreed, _) = lab.agree(2, Duration::from_secs(3));
    let allocator = lab.status(1)["allocator"].as_str().unwrap().to_string();
    let (kept, moved) = if allocator == "node1" {
        (alpha, beta)
    } else {
        (beta, alpha)
    };
    let was = if allocator == "node1" {
        &sides.0
    } else {
        &sides.1
    };
    assert_eq!(
        agreed[&key(kept)],
        was[&key(kept)],
        "the allocator's side keeps its address"
    );
    assert_ne!(
        agreed[&key(moved)],
        agreed[&key(kept)],
        "the other service moved"
    );
    let n: u8 = allocator.trim_start_matches("node").parse().unwrap();
    let st = lab.status(n);
    assert!(
        st["moved"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["service"] == key(moved).as_str())),
        "the allocator says what moved: {st:#}"
    );
    assert!(lab.net.log(&format!("node{n}")).contains("address moved"));
    let metrics = lab
        .net
        .get(&format!("n{n}"), "127.0.0.1:9100", "/metrics")
        .unwrap_or_default();
    assert!(
        metrics.contains("lb_allocation_moved_total 1"),
        "the move is counted:\n{metrics}"
    );
}
