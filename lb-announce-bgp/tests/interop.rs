//! Our session against real BGP daemons (BIRD 2, FRR, GoBGP, ExaBGP) in network namespaces this
//! test creates; the namespace lab is in `lab/`, session transport cases in `transport.rs`.
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

mod lab;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::*;
use lb_announce_bgp::fsm::State;
use lb_announce_bgp::packet::AfiSafi;
use std::net::Ipv4Addr;

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
            let a = std::sync::Arc::new(BgpAnnouncer::start([("router".to_string(), peer)]));
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
            let m = lb_core::metrics::render(vec![Box::new(lb_core::metrics::AnnouncerMetrics(
                a.clone(),
            ))]);
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
    assert!(
        metrics.contains("lb_bgp_updates_received_total{peer=\"router\"}"),
        "{metrics}"
    );
    let _ = lab.wait_routes("nothing after Cease", |o| !o.contains("203.0.113.40/32"));
}

/// `Announcer::change` hands the session the touched prefixes alone: after a change that
/// withdraws one service, adds another and changes a third's communities, BIRD holds exactly
/// the whole set's routes with their attributes, and the session counts them.
#[test]
fn a_change_of_some_services_reaches_bird_as_the_difference() {
    use lb_announce_bgp::BgpAnnouncer;
    use lb_announce_bgp::announcer::peer_config;
    use lb_core::config::Community;
    use lb_core::objects::ServiceKey;
    use lb_core::plan::{Announcement, BgpRoute, How};
    use lb_core::{Announcer, Change};

    let Some(lab) = Lab::new(64500) else { return };
    let ns = std::fs::File::open(format!("/run/netns/{}", lab.ns("node"))).unwrap();
    let yaml = "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: router}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1, holdTime: 9s}\n";
    let cfg = lb_core::load_str(yaml).config;
    let peer = peer_config(&cfg.peers["router"], Ipv4Addr::new(192, 0, 2, 10), None).unwrap();
    let sock = lab.dir.join("bird.ctl");
    let ann = |svc: &str, last: u8, community: u32| Announcement {
        service: ServiceKey::new("default", svc),
        ip: format!("203.0.113.{last}").parse().unwrap(),
        how: How::Bgp {
            routes: vec![BgpRoute {
                prefix: format!("203.0.113.{last}/32").parse().unwrap(),
                peers: vec!["router".into()],
                local_pref: None,
                communities: vec![Community::Legacy((64512 << 16) | community)],
            }],
        },
    };
    std::thread::spawn(move || {
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
            let bird = |want: &'static [&'static str], not: &'static [&'static str]| {
                let sock = sock.clone();
                async move {
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                    let mut seen = String::new();
                    while tokio::time::Instant::now() < deadline {
                        let o = Command::new("birdc")
                            .args(["-s", sock.to_str().unwrap(), "show", "route", "all"])
                            .output()
                            .unwrap();
                        seen = String::from_utf8_lossy(&o.stdout).into_owned();
                        if want.iter().all(|w| seen.contains(w))
                            && !not.iter().any(|n| seen.contains(n))
                        {
                            return seen;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    panic!("BIRD should show {want:?} and not {not:?}:\n{seen}");
                }
            };
            let a = BgpAnnouncer::start([("router".to_string(), peer)]);
            let (web, api, db) = (ann("web", 41, 41), ann("api", 42, 42), ann("db", 43, 43));
            a.announce(&[web.clone(), api.clone()]).await.unwrap();
            bird(
                &["203.0.113.41/32", "203.0.113.42/32", "(64512,41)"],
                &["203.0.113.43/32"],
            )
            .await;
            let web2 = ann("web", 41, 141);
            let whole = || vec![web2.clone(), db.clone()];
            a.change(Change {
                withdrawn: &[web.clone(), api.clone()],
                added: &[web2.clone(), db.clone()],
                whole: &whole,
            })
            .await
            .unwrap();
            let seen = bird(
                &[
                    "203.0.113.41/32",
                    "203.0.113.43/32",
                    "(64512,141)",
                    "(64512,43)",
                ],
                &["203.0.113.42/32", "(64512,41)\n"],
            )
            .await;
            assert!(!seen.contains("(64512,41)\n"), "{seen}");
            let st = a.statuses()["router"].clone();
            assert_eq!(st.prefixes_announced, 2, "{st:?}");
            // Withdrawing the last of them leaves nothing.
            let none = Vec::new;
            a.change(Change {
                withdrawn: &[web2.clone(), db.clone()],
                added: &[],
                whole: &none,
            })
            .await
            .unwrap();
            bird(&[], &["203.0.113.41/32", "203.0.113.43/32"]).await;
            a.stop(Duration::from_secs(2)).await;
        })
    })
    .join()
    .unwrap();
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
fn gobgp_receives_ipv4_and_ipv6_prefixes_with_communities_and_again_after_it_restarts() {
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
            restart_peer(sp, &l, || rib("ipv6"), |o| o.contains("2001:db8:1::60/128"));
        },
    );
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
fn frr_receives_prefixes_with_communities_over_an_md5_session_and_again_after_it_restarts() {
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
            restart_peer(sp, &l, v6q, |o| o.contains("2001:db8::10"));
        },
    );
}

/// Restarts the lab's peer daemon; the session must come back (a new Established) and `probe`
/// at the restarted peer must satisfy `pred`: it has our routes again.
fn restart_peer(sp: &Speaker, lab: &Lab, probe: impl Fn() -> String, pred: impl Fn(&str) -> bool) {
    let before = sp.session.as_ref().unwrap().status().established_since;
    lab.restart_router();
    sp.wait("Established after the peer restarted", |s| {
        s.state == State::Established && s.established_since != before
    });
    sp.until("our routes at the restarted peer", probe, pred);
}

/// Every UPDATE ExaBGP logged, as parsed JSON `message.update` objects.
fn exabgp_updates(lab: &Lab) -> Vec<serde_json::Value> {
    lab.exabgp_updates()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "update")
        .map(|v| v["neighbor"]["message"]["update"].clone())
        .collect()
}

/// The attributes ExaBGP last received with `prefix` (None if its last word was a withdrawal).
fn exabgp_route(lab: &Lab, family: &str, prefix: &str) -> Option<serde_json::Value> {
    let mut last = None;
    for u in exabgp_updates(lab) {
        if let Some(hops) = u["announce"][family].as_object() {
            for (next_hop, nlris) in hops {
                if nlris
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["nlri"] == prefix)
                {
                    let mut a = u["attribute"].clone();
                    a["next-hop"] = next_hop.as_str().into();
                    last = Some(a);
                }
            }
        }
        if u["withdraw"][family]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["nlri"] == prefix)
        {
            last = None;
        }
    }
    last
}

#[test]
fn exabgp_receives_ebgp_and_ibgp_prefixes_with_communities_local_pref_withdrawals_and_restarts() {
    for (exa_as, ibgp) in [(64500, false), (64512, true)] {
        let Some(lab) = Lab::with_exabgp(exa_as) else {
            return;
        };
        let lab = std::sync::Arc::new(lab);
        let l = lab.clone();
        lab.with_speaker(
            64512,
            exa_as,
            |_| {},
            move |sp| {
                sp.set(&[
                    ("203.0.113.65/32", attrs()),
                    ("2001:db8:1::65/128", attrs()),
                ]);
                let both = || {
                    let v4 = exabgp_route(&l, "ipv4 unicast", "203.0.113.65/32");
                    let v6 = exabgp_route(&l, "ipv6 unicast", "2001:db8:1::65/128");
                    format!("{v4:?}\n{v6:?}")
                };
                sp.until("both prefixes at ExaBGP", both, |o| !o.contains("None"));
                let v4 = exabgp_route(&l, "ipv4 unicast", "203.0.113.65/32").unwrap();
                let v6 = exabgp_route(&l, "ipv6 unicast", "2001:db8:1::65/128").unwrap();
                assert_eq!(v4["next-hop"], "192.0.2.10", "{v4}");
                assert_eq!(v6["next-hop"], "2001:db8::10", "{v6}");
                assert_eq!(v4["origin"], "igp");
                assert_eq!(v4["community"], serde_json::json!([[64512, 100]]), "{v4}");
                assert_eq!(
                    v4["large-community"],
                    serde_json::json!([[64512, 1, 1]]),
                    "{v4}"
                );
                if ibgp {
                    assert_eq!(
                        v4["as-path"],
                        serde_json::Value::Null,
                        "empty AS path on iBGP: {v4}"
                    );
                    assert_eq!(v4["local-preference"], 200, "{v4}");
                } else {
                    assert_eq!(v4["as-path"], serde_json::json!([64512]), "{v4}");
                    assert_eq!(
                        v4["local-preference"],
                        serde_json::Value::Null,
                        "no localPref on eBGP: {v4}"
                    );
                }
                assert_eq!(v6["community"], v4["community"], "{v6}");
                sp.set(&[("2001:db8:1::65/128", attrs())]);
                sp.until(
                    "the IPv4 withdrawal at ExaBGP",
                    || format!("{:?}", exabgp_route(&l, "ipv4 unicast", "203.0.113.65/32")),
                    |o| o == "None",
                );
                std::fs::write(l.dir.join("exabgp.json"), "").unwrap();
                restart_peer(
                    sp,
                    &l,
                    || {
                        format!(
                            "{:?}",
                            exabgp_route(&l, "ipv6 unicast", "2001:db8:1::65/128")
                        )
                    },
                    |o| o != "None",
                );
            },
        );
    }
}

#[test]
fn frr_receives_ibgp_routes_with_local_pref_over_an_ipv6_session_with_link_local_next_hop() {
    let Some(lab) = Lab::with_frr_neighbor(64512, "2001:db8::10", 64512, "timers 3 9") else {
        return;
    };
    let ll = lab.node_link_local();
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64512,
        |c| {
            c.address = "[2001:db8::1]:179".parse().unwrap();
            c.next_hop_v4 = Some(Ipv4Addr::new(192, 0, 2, 10));
            c.next_hop_v6 = None;
        },
        move |sp| {
            sp.set(&[
                ("203.0.113.85/32", attrs()),
                ("2001:db8:1::85/128", attrs()),
            ]);
            sp.wait("Established", |s| {
                s.state == State::Established && s.prefixes_announced == 2
            });
            let v4q = || l.vtysh("show bgp ipv4 unicast 203.0.113.85/32");
            let v6q = || l.vtysh("show bgp ipv6 unicast 2001:db8:1::85/128");
            sp.until(
                "both prefixes at FRR",
                || v4q() + &v6q(),
                |o| o.matches("localpref 200").count() == 2,
            );
            let (v4, v6) = (v4q(), v6q());
            assert!(v4.contains("192.0.2.10 from 2001:db8::10"), "{v4}");
            assert!(v4.contains("Community: 64512:100"), "{v4}");
            assert!(v6.contains("2001:db8::10 from 2001:db8::10"), "{v6}");
            assert!(v6.contains(&ll), "link-local next hop {ll}: {v6}");
            sp.set(&[("203.0.113.85/32", attrs())]);
            sp.until("the IPv6 withdrawal at FRR", v6q, |o| {
                o.contains("not in table")
            });
        },
    );
}

/// The `announce_prefixes` example against BIRD: the route arrives, and leaves on SIGTERM.
#[test]
fn the_announce_prefixes_example_reaches_bird_and_withdraws_on_sigterm() {
    use std::io::BufRead;
    let Some(lab) = Lab::new(64500) else { return };
    // Built by `cargo test` beside this test binary: target/<profile>/examples/.
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("examples/announce_prefixes")))
        .unwrap();
    assert!(bin.exists(), "{} not built", bin.display());
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("node")])
            .arg(&bin)
            .args(["192.0.2.1", "64512", "64500", "203.0.113.41/32"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let up = out.next().and_then(Result::ok).unwrap_or_default();
    assert!(up.starts_with("established: 1 prefix(es)"), "{up}");
    lab.wait_routes("the example's route", |o| o.contains("203.0.113.41/32"));
    ok(&["kill", "-TERM", &child.0.id().to_string()]);
    assert_eq!(
        out.next().and_then(Result::ok).unwrap_or_default(),
        "withdrawn"
    );
    assert!(child.0.wait().unwrap().success());
    let after = lab.birdc("show route");
    assert!(
        !after.contains("203.0.113.41/32"),
        "left after the Cease:\n{after}"
    );
}
