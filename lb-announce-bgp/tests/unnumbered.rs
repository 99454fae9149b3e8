//! Unnumbered BGP (`BGPPeer.interface`) against FRR's `neighbor eth0 interface`, in network
//! namespaces this test creates (the lab of interop.rs). Neither side has an address on the
//! link but its IPv6 link-local one: each learns the other from Router Advertisements, the
//! session runs between link-local addresses, and IPv4 prefixes travel with an IPv6 next hop
//! (RFC 8950 extended next hop). The session comes from a MetalLB object, as lb-bin makes it.
//!
//! ```text
//!  ns node   eth0 fe80::…   our BgpAnnouncer, AS 64512
//!  ns router eth0 fe80::…   FRR (zebra + bgpd), AS 64500, `neighbor eth0 interface`
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

mod lab;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use lab::*;
use lb_announce_bgp::BgpAnnouncer;
use lb_announce_bgp::nd;
use lb_announce_bgp::neighbor::Discovery;
use lb_core::Announcer;

const FRR_CONF: &str = "frr defaults traditional
hostname lbr
router bgp 64500
 bgp router-id 192.0.2.1
 no bgp ebgp-requires-policy
 neighbor eth0 interface remote-as 64512
 neighbor eth0 timers connect 1
 address-family ipv4 unicast
  neighbor eth0 activate
 exit-address-family
 address-family ipv6 unicast
  neighbor eth0 activate
 exit-address-family
";

/// The MetalLB peer `router` on the node's eth0.
fn config() -> lb_core::Config {
    let l = lb_core::load_str(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: router, namespace: metallb-system}\nspec: {myASN: 64512, peerASN: 64500, interface: eth0, holdTime: 9s}\n",
    );
    assert!(l.is_valid(), "{:?}", l.errors);
    l.config
}

/// The next hops FRR holds for a prefix (`show bgp <family> unicast <prefix> json`): each
/// address, and whether FRR can use it (`accessible`). FRR labels a lone 16-octet next hop
/// "global" whatever its scope, so the scope is not compared.
fn next_hops(json: &str) -> Vec<(String, bool)> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v["paths"][0]["nexthops"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    (
                        h["ip"].as_str().unwrap_or("").to_string(),
                        h["accessible"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn frr_holds_our_ipv4_and_ipv6_prefixes_with_our_link_local_next_hop() {
    let Some(lab) = Lab::with_frr_conf(FRR_CONF, &["zebra", "bgpd"]) else {
        return;
    };
    // Unnumbered: nothing on the link but the link-local addresses.
    for ns in ["node", "router"] {
        ok(&[
            "ip",
            "-n",
            &lab.ns(ns),
            "addr",
            "flush",
            "dev",
            "eth0",
            "scope",
            "global",
        ]);
    }
    let ll = lab.node_link_local();
    let tag = lab.tag.clone();
    let (out, status) = lab.in_node(move |rt| {
        rt.block_on(async move {
            let a = BgpAnnouncer::for_node(&config(), "node1", Ipv4Addr::new(192, 0, 2, 10));
            assert!(a.skipped().is_empty(), "{:?}", a.skipped());
            a.announce(&[
                bgp_announcement("203.0.113.50", "203.0.113.50/32"),
                bgp_announcement("2001:db8:5::50", "2001:db8:5::50/128"),
            ])
            .await
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let out = loop {
                let tag = tag.clone();
                let out = tokio::task::spawn_blocking(move || {
                    let vtysh = |cmd: &str| {
                        String::from_utf8_lossy(&run(&["vtysh", "-N", &tag, "-c", cmd]).stdout)
                            .into_owned()
                    };
                    [
                        vtysh("show bgp ipv4 unicast 203.0.113.50/32 json"),
                        vtysh("show bgp ipv6 unicast 2001:db8:5::50/128 json"),
                        vtysh("show bgp neighbors eth0 json"),
                    ]
                })
                .await
                .unwrap();
                if (out[0].contains("\"paths\"") && out[1].contains("\"paths\""))
                    || Instant::now() > deadline
                {
                    break out;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let status = a.statuses();
            a.stop(Duration::from_secs(1)).await;
            (out, status)
        })
    });
    let [v4, v6, neighbor] = &out;
    let all = format!("{v4}\n{v6}\n{neighbor}\nours: {status:?}");
    let link_local = (ll.clone(), true);
    assert!(
        next_hops(v4).contains(&link_local),
        "FRR holds 203.0.113.50/32 via our link-local {ll}:\n{all}"
    );
    assert!(
        next_hops(v6).contains(&link_local),
        "FRR holds 2001:db8:5::50/128 via our link-local {ll}:\n{all}"
    );
    let n: serde_json::Value = serde_json::from_str(neighbor).unwrap_or_default();
    let caps = &n["eth0"]["neighborCapabilities"];
    assert!(
        caps.to_string().contains("extendedNexthop"),
        "the extended next hop capability was negotiated:\n{all}"
    );
}

/// Sends one Router Advertisement from the router namespace's eth0 to all nodes with
/// `hop_limit`, as a raw ICMPv6 socket there does (the kernel writes the checksum).
fn advertise_from_router(lab: &Lab, hop_limit: u32) {
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.ns("router"))).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we own, for this thread only.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV6),
        )
        .unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.set_multicast_hops_v6(hop_limit).unwrap();
        let index = nix_index("eth0");
        let to = SocketAddrV6::new("ff02::1".parse().unwrap(), 0, 0, index);
        s.send_to(&nd::router_advertisement(1800), &to.into())
            .unwrap();
    })
    .join()
    .unwrap();
}

fn nix_index(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name alive for the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// RFC 4861 §6.1.2: an advertisement that did not arrive with hop limit 255 was sent from off
/// the link (or forged there) and is dropped, counted; the same one with 255 names the peer.
#[test]
fn a_router_advertisement_from_off_the_link_is_dropped_and_counted() {
    let Some(lab) = Lab::namespaces() else { return };
    let router_ll: Ipv6Addr = lab.link_local("router").parse().unwrap();
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    let (dropped, before, after) = lab.in_node(move |rt| {
        rt.block_on(async move {
            let d = Discovery::start("eth0");
            let mut watch = d.watch();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let l2 = l.clone();
            tokio::task::spawn_blocking(move || advertise_from_router(&l2, 64))
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while d.dropped() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let before = *watch.borrow_and_update();
            let dropped = d.dropped();
            tokio::task::spawn_blocking(move || advertise_from_router(&l, 255))
                .await
                .unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
            let after = *watch.borrow();
            (dropped, before, after)
        })
    });
    assert!(dropped >= 1, "the hop limit 64 advertisement was counted");
    assert_eq!(before, None, "and not taken");
    assert_eq!(
        after.map(|a| *a.ip()),
        Some(router_ll),
        "hop limit 255 names the peer"
    );
}
