//! Node faults, each in network namespaces this test creates: a BGPPeer this build cannot
//! serve beside one it can, a `--dummy-interface` that names the host's own interface, a
//! dummy interface left by a crashed run, and a slowloris on the HTTP port.
//!
//! ```text
//!  ns <tag>n1 eth0 192.0.2.11 ─┬─ br0 in ns <tag>br
//!  ns <tag>cl eth0 192.0.2.100 ┘  the client (ping, the kernel's ARP) and BIRD
//! ```
//! Needs root, iproute2, ping (and bird2 for the peer test); without them each test says so
//! and passes, unless `LB_REQUIRE_NETNS=1` (set by `.ci/run`). Processes are stopped by PID
//! and the namespaces removed on drop, also when a test fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

mod lab;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use lab::{Net, ok, run, until};

const L2_VIP: &str = "192.0.2.200";

/// A node namespace and a client, with the sysctls local delivery needs.
fn net(tag: &str) -> Option<Net> {
    if !lab::available("node fault tests") {
        return None;
    }
    let net = Net::new(tag, &[("n1", "192.0.2.11/24"), ("cl", "192.0.2.100/24")]);
    ok(&[
        "ip",
        "netns",
        "exec",
        &net.ns("n1"),
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
    ]);
    Some(net)
}

fn l2_config() -> String {
    format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan}}\nspec: {{addresses: [{L2_VIP}/32]}}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lan}}\nspec: {{ipAddressPools: [lan]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}], loadBalancerIP: {L2_VIP}}}\n"
    )
}

/// Starts node1 in n1 with `config` and `extra` arguments, HTTP on 127.0.0.1:9100.
fn start(net: &mut Net, name: &str, config: &str, extra: &[&str]) {
    let path = net.path(&format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    let mut args = vec![
        "standalone",
        "--config",
        &path,
        "--node-name",
        "node1",
        "--bind",
        "192.0.2.11:7946",
        "--http",
        "127.0.0.1:9100",
    ];
    args.extend_from_slice(extra);
    net.spawn(name, "n1", env!("CARGO_BIN_EXE_lb-bin"), &args, &[]);
}

fn status(net: &Net) -> Option<serde_json::Value> {
    serde_json::from_str(&net.get("n1", "127.0.0.1:9100", "/status")?).ok()
}

/// Connections the node's HTTP port holds open (its side, established).
fn established(net: &Net) -> usize {
    let o = run(&[
        "ip",
        "netns",
        "exec",
        &net.ns("n1"),
        "ss",
        "-Htn",
        "state",
        "established",
        "sport",
        "=",
        ":9100",
    ]);
    String::from_utf8_lossy(&o.stdout).lines().count()
}

fn pings(net: &Net) -> bool {
    until(10, || net.ping_once("cl", L2_VIP))
}

#[test]
fn an_unnumbered_peer_is_skipped_alone_the_other_peer_gets_routes_and_layer2_runs() {
    let Some(mut net) = net("lbu") else { return };
    if !lab::bird_available() {
        return;
    }
    let dir = net.dir.clone();
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    std::fs::write(
        d("bird.conf"),
        "router id 192.0.2.100;\nprotocol device {}\nprotocol bgp lb {\n  local 192.0.2.100 as 64500;\n  neighbor 192.0.2.11 as 64512;\n  passive on;\n  hold time 9;\n  ipv4 { import all; export none; };\n}\n",
    )
    .unwrap();
    ok(&[
        "ip",
        "netns",
        "exec",
        &net.ns("cl"),
        "bird",
        "-c",
        &d("bird.conf"),
        "-s",
        &d("bird.ctl"),
        "-P",
        &d("bird.pid"),
    ]);
    let bird = lab::KillOnDrop::new(&d("bird.pid"));
    assert!(bird.0.is_some(), "BIRD wrote no PID file");
    let config = l2_config()
        + "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: routed}\nspec: {addresses: [203.0.113.7/32]}\n---\napiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: routed}\nspec: {ipAddressPools: [routed]}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: router}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.100, holdTime: 9s}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: unnumbered}\nspec: {myASN: 64512, peerASN: 64500, interface: eth0}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\nspec: {type: LoadBalancer, ports: [{port: 443}], loadBalancerIP: 203.0.113.7}\n";
    // `check` warns about the peer and names it; it is no error.
    let path = d("check.yaml");
    std::fs::write(&path, &config).unwrap();
    let o = run(&[env!("CARGO_BIN_EXE_lb-bin"), "check", "--config", &path]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("unnumbered") && out.contains("will be ignored"),
        "{out}"
    );
    start(&mut net, "node1", &config, &[]);
    let birdc = || {
        String::from_utf8_lossy(&run(&["birdc", "-s", &d("bird.ctl"), "show", "route"]).stdout)
            .into_owned()
    };
    assert!(
        until(20, || birdc().contains("203.0.113.7/32")),
        "BIRD never got the route:\n{}\n{}",
        birdc(),
        net.log("node1")
    );
    assert!(pings(&net), "the L2 VIP answers:\n{}", net.log("node1"));
    let st = status(&net).expect("/status");
    let skipped = st["skipped_peers"].to_string();
    assert!(
        skipped.contains("unnumbered") && skipped.contains("not supported"),
        "{st}"
    );
    let metrics = net.get("n1", "127.0.0.1:9100", "/metrics").unwrap();
    assert!(
        metrics.contains("lb_bgp_peer_skipped{peer=\"unnumbered\"} 1"),
        "{metrics}"
    );
    assert!(net.log("node1").contains("skipped"), "{}", net.log("node1"));
}

#[test]
fn a_dummy_interface_that_is_the_hosts_own_is_refused_and_keeps_its_address() {
    let Some(mut net) = net("lbd") else { return };
    start(
        &mut net,
        "node1",
        &l2_config(),
        &["--dummy-interface", "eth0"],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let o = run(&["kill", "-0", &net.pid("node1").to_string()]);
        let log = net.log("node1");
        if !o.status.success() || log.contains("did not create it") {
            break log;
        }
        assert!(Instant::now() < deadline, "the node did not refuse: {log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        code.contains("--dummy-interface eth0") && code.contains("did not create it"),
        "{code}"
    );
    assert!(
        !net.signal("node1", "-0").success(),
        "it exits with an error"
    );
    let addrs = String::from_utf8_lossy(
        &run(&[
            "ip",
            "-n",
            &net.ns("n1"),
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .stdout,
    )
    .into_owned();
    assert!(
        addrs.contains("192.0.2.11/24"),
        "eth0 lost its address: {addrs}"
    );
}

#[test]
fn a_dummy_interface_left_by_a_crashed_run_is_taken_over() {
    let Some(mut net) = net("lbk") else { return };
    start(&mut net, "first", &l2_config(), &[]);
    assert!(pings(&net), "{}", net.log("first"));
    net.signal("first", "-KILL");
    // lb0 and its address are still there; the next run takes them over.
    let links = String::from_utf8_lossy(&run(&["ip", "-n", &net.ns("n1"), "-o", "addr"]).stdout)
        .into_owned();
    assert!(links.contains("lb0") && links.contains(L2_VIP), "{links}");
    start(&mut net, "second", &l2_config(), &[]);
    assert!(
        until(10, || status(&net).is_some_and(|s| s["ready"] == true)),
        "{}",
        net.log("second")
    );
    assert!(pings(&net), "{}", net.log("second"));
}

#[test]
fn a_slowloris_of_a_thousand_idle_connections_leaves_metrics_answering() {
    let Some(mut net) = net("lbh") else { return };
    start(&mut net, "node1", &l2_config(), &[]);
    assert!(until(10, || status(&net).is_some()), "{}", net.log("node1"));
    let answered = net.inside("n1", || {
        // Each sends half a request head and then nothing.
        let mut idle = Vec::new();
        for _ in 0..1000 {
            if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:9100") {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
                idle.push(s);
            }
        }
        let opened = idle.len();
        let t0 = Instant::now();
        let mut s = std::net::TcpStream::connect("127.0.0.1:9100").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        (opened, r, t0.elapsed(), idle)
    });
    let (opened, reply, took, idle) = answered;
    // The node holds at most 256 of them (the oldest idle ones are closed to make room)...
    let held = established(&net);
    eprintln!(
        "{opened} idle connections opened, the node holds {held}; /metrics answered in {took:?}"
    );
    assert!(opened >= 900, "the flood opened {opened} connections");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("lb_members_sealed"), "{reply}");
    assert!(held <= 260, "the node holds {held} connections");
    // ...and closes every one that sent no whole request head within 5 s.
    assert!(
        until(10, || established(&net) == 0),
        "{} still open",
        established(&net)
    );
    drop(idle);
    assert!(!net.log("node1").contains("panicked"));
}
