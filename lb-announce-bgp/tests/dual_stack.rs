//! `dualStackAddressFamily`: IPv4 and IPv6 prefixes over one session, of either transport,
//! each with a next hop of its own family, against BIRD and FRR in network namespaces this
//! test creates (the lab of interop.rs). The sessions come from MetalLB objects, as lb-bin makes
//! them: nobody configures the other family's next hop, the speaker finds it on the session's
//! interface.
//!
//! ```text
//!  ns node   eth0 192.0.2.10/24 2001:db8::10/64   our BgpAnnouncer, AS 64512
//!  ns router eth0 192.0.2.1/24  2001:db8::1/64    BIRD or FRR, AS 64500, passive
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

mod lab;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lab::*;
use lb_announce_bgp::BgpAnnouncer;
use lb_core::Announcer;

/// The MetalLB peer `router` at `address`, carrying both families.
fn config(address: &str) -> lb_core::Config {
    let l = lb_core::load_str(&format!(
        "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: router, namespace: metallb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: \"{address}\", holdTime: 9s, dualStackAddressFamily: true}}\n"
    ));
    assert!(l.is_valid(), "{:?}", l.errors);
    l.config
}

/// In the node namespace: announces 203.0.113.50/32 and 2001:db8:5::50/128 to the router at
/// `address`, until `seen` (polled every 100 ms, for at most 20 s) holds; returns its last
/// output.
fn announce_until(
    lab: &Lab,
    address: &'static str,
    seen: impl Fn() -> (bool, String) + Send + Sync + 'static,
) -> String {
    lab.in_node(move |rt| {
        let seen = std::sync::Arc::new(seen);
        rt.block_on(async move {
            let a = BgpAnnouncer::for_node(&config(address), "node1", Ipv4Addr::new(192, 0, 2, 10));
            a.announce(&[
                bgp_announcement("203.0.113.50", "203.0.113.50/32"),
                bgp_announcement("2001:db8:5::50", "2001:db8:5::50/128"),
            ])
            .await
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let out = loop {
                let probe = seen.clone();
                let (ok, out) = tokio::task::spawn_blocking(move || probe()).await.unwrap();
                if ok || Instant::now() > deadline {
                    break out;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            a.stop(Duration::from_secs(1)).await;
            out
        })
    })
}

#[test]
fn both_families_reach_bird_over_either_transport_each_with_its_own_next_hop() {
    for (transport, address) in [("IPv4", "192.0.2.1"), ("IPv6", "2001:db8::1")] {
        let Some(lab) = Lab::namespaces() else { return };
        lab.start_bird(
            "router",
            "bird",
            "router id 192.0.2.1;\nprotocol device {}\nprotocol bgp v4 {\n  local 192.0.2.1 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  passive on;\n  hold time 9;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\nprotocol bgp v6 {\n  local 2001:db8::1 as 64500;\n  neighbor 2001:db8::10 as 64512;\n  passive on;\n  hold time 9;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
        );
        let ctl = lab.dir.join("bird.ctl").to_string_lossy().into_owned();
        let session = if transport == "IPv4" { "v4" } else { "v6" };
        let out = announce_until(&lab, address, move || {
            let o = run(&["birdc", "-s", &ctl, "show route all"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let ok = text.contains("203.0.113.50/32") && text.contains("2001:db8:5::50/128");
            (ok, text)
        });
        let v4 = out.split("203.0.113.50/32").nth(1).unwrap_or_default();
        let v6 = out.split("2001:db8:5::50/128").nth(1).unwrap_or_default();
        assert!(
            v4.lines().take(3).any(|l| l.contains("via 192.0.2.10"))
                && v4.contains(&format!("[{session} ")),
            "{transport}: the IPv4 prefix over the {session} session, next hop 192.0.2.10:\n{out}"
        );
        assert!(
            v6.lines().take(3).any(|l| l.contains("via 2001:db8::10"))
                && v6.contains(&format!("[{session} ")),
            "{transport}: the IPv6 prefix over the {session} session, next hop 2001:db8::10:\n{out}"
        );
    }
}

#[test]
fn both_families_reach_frr_over_either_transport_each_with_its_own_next_hop() {
    for (transport, address, neighbor) in [
        ("IPv4", "192.0.2.1", "192.0.2.10"),
        ("IPv6", "2001:db8::1", "2001:db8::10"),
    ] {
        let Some(lab) = Lab::with_frr_neighbor(64500, neighbor, 64512, "timers connect 1") else {
            return;
        };
        let tag = lab.tag.clone();
        let out = announce_until(&lab, address, move || {
            let vtysh = |cmd: &str| {
                String::from_utf8_lossy(&run(&["vtysh", "-N", &tag, "-c", cmd]).stdout).into_owned()
            };
            let v4 = vtysh("show bgp ipv4 unicast 203.0.113.50/32 json");
            let v6 = vtysh("show bgp ipv6 unicast 2001:db8:5::50/128 json");
            let ok = v4.contains("\"paths\"") && v6.contains("\"paths\"");
            (ok, format!("{v4}\n=====\n{v6}"))
        });
        let (v4, v6) = out.split_once("\n=====\n").unwrap();
        let hop = |json: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            v["paths"][0]["nexthops"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|h| h["ip"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(hop(v4), ["192.0.2.10"], "{transport}:\n{out}");
        assert_eq!(
            hop(v6).first().map(String::as_str),
            Some("2001:db8::10"),
            "{transport}:\n{out}"
        );
    }
}
