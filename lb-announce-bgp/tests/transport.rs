//! How sessions reach their peers, against BIRD and a scripted peer in namespaces this test
//! creates: passive listening, connection collisions (RFC 4271 §6.8), eBGP multihop TTL through
//! a router, GTSM (RFC 5082), the link-local IPv6 next hop of an on-link session, and a peer
//! that restarts.
//!
//! ```text
//!  ns node   eth0 192.0.2.10/24     2001:db8::10/64    our speaker, AS 64512
//!  ns router eth0 192.0.2.1/24      2001:db8::1/64     BIRD or a scripted peer, AS 64500
//!            eth1 198.51.100.1/24   2001:db8:1::1/64   (forwarding)
//!  ns far    eth0 198.51.100.2/24   2001:db8:1::2/64   BIRD two hops away (multihop tests)
//! ```
//! Needs root, iproute2 and bird2 (see `lab`); negative cases wait a few seconds each to show a
//! session does *not* come up.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod lab;

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use lab::*;
use lb_announce_bgp::fsm::State;
use lb_announce_bgp::packet::{AfiSafi, Capability, Context, Message, Open};

/// How long a session that must not come up is given.
const NEGATIVE_WAIT: Duration = Duration::from_secs(4);

#[test]
fn a_passive_md5_session_takes_the_connection_bird_opens_and_strangers_are_refused() {
    let Some(lab) = Lab::namespaces() else { return };
    // BIRD connects (no `passive on`), signed, and retries every second until we listen.
    lab.start_bird(
        "router",
        "bird",
        &bird_conf(
            "192.0.2.1",
            "local 192.0.2.1 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  connect delay time 1;\n  connect retry time 1;\n  password \"lb-secret\";",
        ),
    );
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |c| {
            c.fsm.passive = true;
            c.md5_password = Some("lb-secret".into());
        },
        move |sp| {
            sp.set(&[("203.0.113.90/32", attrs())]);
            sp.run_for(NEGATIVE_WAIT / 2);
            assert_eq!(
                sp.session.as_ref().unwrap().status().state,
                State::Active,
                "a passive session never connects by itself"
            );
            sp.listen("[::]:179");
            sp.wait("Established", |s| s.state == State::Established);
            sp.until(
                "our prefix at BIRD",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.90/32"),
            );
            let ss = run(&[
                "ip",
                "netns",
                "exec",
                &l.ns("node"),
                "ss",
                "-Htn",
                "state",
                "established",
            ]);
            let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
            assert!(
                ss.contains("192.0.2.10]:179"),
                "the session runs on the accepted connection: {ss}"
            );
            // A connection from an address no session is registered for (the router's IPv6
            // address) is closed at once.
            let router = l.ns("router");
            let stranger = std::thread::spawn(move || {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &router,
                    "timeout",
                    "3",
                    "bash",
                    "-c",
                    "exec 3<>/dev/tcp/2001:db8::10/179; head -c1 <&3 >/dev/null; echo closed",
                ])
            });
            while !stranger.is_finished() {
                sp.run_for(Duration::from_millis(50));
            }
            let stranger = stranger.join().unwrap();
            assert_eq!(String::from_utf8_lossy(&stranger.stdout).trim(), "closed");
            assert_eq!(sp.listener.as_ref().unwrap().refused(), 1);
            assert_eq!(
                sp.session.as_ref().unwrap().status().state,
                State::Established
            );
        },
    );
}

/// The scripted side of a collision: accepts the speaker's connection A and answers its OPEN
/// (but never its KEEPALIVE), then opens connection B and sends an OPEN with `peer_id` on it.
/// Confirms whichever connection the speaker sends its OPEN on, and keeps both alive with
/// KEEPALIVEs. Returns what the speaker sent on A and B from then on (each message from its
/// type octet), and both connections.
fn collide(router: std::fs::File, peer_id: Ipv4Addr) -> Collision {
    // SAFETY: this thread alone enters the router namespace.
    assert_eq!(
        unsafe { libc::setns(router.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    let ctx = Context::default();
    let open = Message::Open(Open::new(
        64500,
        9,
        peer_id,
        vec![Capability::Multiprotocol(AfiSafi::IPV4_UNICAST)],
    ))
    .to_bytes(&ctx);
    let l = std::net::TcpListener::bind("192.0.2.1:179").unwrap();
    let mut a = accept_within(&l, Duration::from_secs(20)).expect("the speaker connects");
    assert_eq!(read_message(&mut a).expect("OPEN on A")[18], 1);
    a.write_all(&open).unwrap();
    assert_eq!(
        read_message(&mut a).expect("KEEPALIVE on A")[18],
        4,
        "the speaker accepts our OPEN on A (OpenConfirm)"
    );
    let mut b = std::net::TcpStream::connect_timeout(
        &"192.0.2.10:179".parse().unwrap(),
        Duration::from_secs(5),
    )
    .expect("the speaker listens");
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.write_all(&open).unwrap();
    // Collect what each connection carries for a while; the winner gets our KEEPALIVE.
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    a.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut a_open, mut b_open) = (true, true);
    while Instant::now() < deadline && (a_open || b_open) {
        for (s, seen, open_flag) in [
            (&mut a, &mut on_a, &mut a_open),
            (&mut b, &mut on_b, &mut b_open),
        ] {
            if !*open_flag {
                continue;
            }
            match read_message(s) {
                Some(m) => {
                    if m[18] == 1 {
                        // The speaker's OPEN on the connection it kept: confirm it.
                        s.write_all(&Message::Keepalive.to_bytes(&ctx)).unwrap();
                    }
                    if m[18] == 3 {
                        *open_flag = false;
                    }
                    seen.push(m[18..].to_vec());
                }
                None => {
                    let _ = s.write_all(&Message::Keepalive.to_bytes(&ctx));
                }
            }
        }
    }
    (on_a, on_b, [a, b])
}

/// What the speaker sent on connections A and B, and the connections (kept open until the
/// speaker's state has been checked).
type Collision = (Vec<Vec<u8>>, Vec<Vec<u8>>, [std::net::TcpStream; 2]);

fn kinds(msgs: &[Vec<u8>]) -> Vec<u8> {
    msgs.iter().map(|m| m[0]).collect()
}

#[test]
fn a_collision_keeps_the_connection_opened_by_the_higher_bgp_identifier() {
    // Our identifier is 192.0.2.10. A peer with a higher one wins with its connection (B), a
    // peer with a lower one loses its connection (B) to ours (A).
    for (peer_id, ours_wins) in [
        (Ipv4Addr::new(198, 51, 100, 1), false),
        (Ipv4Addr::new(192, 0, 2, 1), true),
    ] {
        let Some(lab) = Lab::namespaces() else { return };
        let router = std::fs::File::open(format!("/run/netns/{}", lab.ns("router"))).unwrap();
        let peer = std::thread::spawn(move || collide(router, peer_id));
        lab.with_speaker(
            64512,
            64500,
            |c| c.fsm.families = vec![AfiSafi::IPV4_UNICAST],
            move |sp| {
                sp.listen("192.0.2.10:179");
                sp.set(&[("203.0.113.91/32", attrs())]);
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline && !peer.is_finished() {
                    sp.run_for(Duration::from_millis(50));
                }
                let (on_a, on_b, _open) = peer.join().unwrap();
                let cease7 = |m: &Vec<u8>| m[0] == 3 && m[1] == 6 && m[2] == 7;
                let st = sp.session.as_ref().unwrap().status();
                if ours_wins {
                    assert!(
                        on_b.first().is_some_and(cease7),
                        "B refused with Cease 7: {:?}",
                        kinds(&on_b)
                    );
                    assert!(
                        !kinds(&on_b).contains(&1),
                        "no OPEN on the losing connection"
                    );
                    assert!(
                        kinds(&on_a).contains(&2),
                        "routes go over A: {:?}",
                        kinds(&on_a)
                    );
                } else {
                    assert!(
                        on_a.first().is_some_and(cease7),
                        "A closed with Cease 7: {:?}",
                        kinds(&on_a)
                    );
                    let b = kinds(&on_b);
                    assert_eq!(b[..2], [1, 4], "OPEN and KEEPALIVE on B: {b:?}");
                    assert!(b.contains(&2), "routes go over B: {b:?}");
                }
                assert_eq!(st.state, State::Established, "{st:?}");
                assert!(st.prefixes_announced == 1, "{st:?}");
            },
        );
    }
}

#[test]
fn when_both_sides_connect_bird_and_we_settle_on_one_session() {
    let Some(lab) = Lab::namespaces() else { return };
    lab.start_bird(
        "router",
        "bird",
        &bird_conf(
            "192.0.2.1",
            "local 192.0.2.1 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  connect delay time 1;\n  connect retry time 1;",
        ),
    );
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |_| {},
        move |sp| {
            sp.listen("192.0.2.10:179");
            sp.set(&[("203.0.113.92/32", attrs())]);
            sp.wait("Established", |s| s.state == State::Established);
            let since = sp.session.as_ref().unwrap().status().established_since;
            sp.until(
                "our prefix at BIRD",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.92/32"),
            );
            sp.run_for(Duration::from_secs(3));
            let st = sp.session.as_ref().unwrap().status();
            assert_eq!(
                (st.state, st.established_since),
                (State::Established, since),
                "no flap: {st:?}"
            );
            let proto = l.birdc("show protocols lb");
            assert!(proto.contains("Established"), "{proto}");
            let ss = run(&[
                "ip",
                "netns",
                "exec",
                &l.ns("node"),
                "ss",
                "-Htn",
                "state",
                "established",
            ]);
            let n = String::from_utf8_lossy(&ss.stdout).lines().count();
            assert_eq!(n, 1, "one TCP connection left between the two");
        },
    );
}

#[test]
fn ebgp_multihop_through_a_router_needs_ebgp_multihop_for_its_ttl() {
    let Some(lab) = Lab::namespaces() else { return };
    lab.add_far();
    lab.start_bird(
        "far",
        "bird",
        &bird_conf(
            "198.51.100.2",
            "local 198.51.100.2 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  multihop 2;\n  passive on;",
        ),
    );
    // The TTL each MetalLB setting gives.
    let ttl = |multihop: bool| {
        let yaml = format!(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: far}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.2, ebgpMultiHop: {multihop}}}\n"
        );
        let l = lb_core::load_str(&yaml);
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        lb_announce_bgp::announcer::peer_config(
            &l.config.peers["far"],
            Ipv4Addr::new(192, 0, 2, 10),
            None,
        )
        .unwrap()
        .ttl
    };
    assert_eq!((ttl(false), ttl(true)), (Some(1), Some(255)));
    let lab = std::sync::Arc::new(lab);
    lab.with_speaker(
        64512,
        64500,
        move |c| {
            c.address = "198.51.100.2:179".parse().unwrap();
            c.ttl = ttl(false);
        },
        |sp| {
            sp.run_for(NEGATIVE_WAIT);
            let st = sp.session.as_ref().unwrap().status();
            assert!(
                st.established_since.is_none() && st.state != State::Established,
                "TTL 1 dies at the router: {st:?}"
            );
        },
    );
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        move |c| {
            c.address = "198.51.100.2:179".parse().unwrap();
            c.ttl = ttl(true);
        },
        move |sp| {
            sp.set(&[("203.0.113.93/32", attrs())]);
            sp.wait("Established", |s| s.state == State::Established);
            let out = sp.until(
                "our prefix at BIRD two hops away",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.93/32"),
            );
            assert!(out.contains("BGP.next_hop: 192.0.2.10"), "{out}");
        },
    );
}

#[test]
fn gtsm_sends_ttl_255_and_drops_a_peer_more_hops_away_than_allowed() {
    let Some(lab) = Lab::namespaces() else { return };
    lab.add_far();
    // Both BIRDs require GTSM: on-link (accepts TTL 255 only) and two hops away (254).
    lab.start_bird(
        "router",
        "bird",
        &bird_conf(
            "192.0.2.1",
            "local 192.0.2.1 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  ttl security on;\n  passive on;",
        ),
    );
    lab.start_bird(
        "far",
        "far",
        &bird_conf(
            "198.51.100.2",
            "local 198.51.100.2 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  multihop 2;\n  ttl security on;\n  passive on;",
        ),
    );
    let lab = std::sync::Arc::new(lab);
    // Each attempt meets a freshly started BIRD (one that saw a failed session waits before it
    // accepts the next) and is judged by BIRD: does it hold our route?
    let bird_takes_route =
        |lab: &std::sync::Arc<Lab>, to: &'static str, gtsm: Option<u8>, expect: bool| {
            let (ns, name) = if to.starts_with("192.") {
                ("router", "bird")
            } else {
                ("far", "far")
            };
            let conf = std::fs::read_to_string(lab.dir.join(format!("{name}.conf"))).unwrap();
            lab.stop_bird(name);
            lab.start_bird(ns, name, &conf);
            let l = lab.clone();
            lab.with_speaker(
                64512,
                64500,
                move |c| {
                    c.address = to.parse().unwrap();
                    c.ttl_security = gtsm;
                },
                move |sp| {
                    sp.set(&[("203.0.113.96/32", attrs())]);
                    let routes = || l.birdc_at(name, "show route all");
                    if expect {
                        sp.until("our route at BIRD", routes, |o| {
                            o.contains("203.0.113.96/32")
                        });
                    } else {
                        sp.run_for(NEGATIVE_WAIT);
                        let (r, p) = (routes(), l.birdc_at(name, "show protocols lb"));
                        assert!(
                            !r.contains("203.0.113.96/32") && !p.contains("Established"),
                            "{r}{p}"
                        );
                    }
                },
            )
        };
    // Without GTSM our packets arrive with TTL 64: BIRD drops them.
    bird_takes_route(&lab, "192.0.2.1:179", None, false);
    bird_takes_route(&lab, "192.0.2.1:179", Some(1), true);
    // The far BIRD's packets arrive with TTL 254: one hop allowed drops them, two accept.
    bird_takes_route(&lab, "198.51.100.2:179", Some(1), false);
    bird_takes_route(&lab, "198.51.100.2:179", Some(2), true);
}

#[test]
fn an_on_link_ipv6_session_sends_the_link_local_next_hop_too() {
    let Some(lab) = Lab::namespaces() else { return };
    lab.start_bird(
        "router",
        "bird",
        &bird_conf(
            "192.0.2.1",
            "local 2001:db8::1 as 64500;\n  neighbor 2001:db8::10 as 64512;\n  passive on;",
        ),
    );
    let ll = lab.node_link_local();
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |c| {
            c.address = "[2001:db8::1]:179".parse().unwrap();
            c.next_hop_v6 = None;
        },
        move |sp| {
            sp.set(&[("2001:db8:ff::94/128", attrs())]);
            let out = sp.until(
                "our IPv6 prefix at BIRD",
                || l.birdc("show route all"),
                |o| o.contains("2001:db8:ff::94/128"),
            );
            assert!(
                out.contains(&format!("BGP.next_hop: 2001:db8::10 {ll}")),
                "global and link-local next hop: {out}"
            );
        },
    );
}

#[test]
fn when_bird_restarts_the_session_comes_back_with_our_routes() {
    let Some(lab) = Lab::new(64500) else { return };
    let lab = std::sync::Arc::new(lab);
    let l = lab.clone();
    lab.with_speaker(
        64512,
        64500,
        |_| {},
        move |sp| {
            sp.set(&[
                ("203.0.113.95/32", attrs()),
                ("2001:db8:ff::95/128", attrs()),
            ]);
            sp.until(
                "our prefixes at BIRD",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.95/32") && o.contains("2001:db8:ff::95/128"),
            );
            let first = sp.session.as_ref().unwrap().status().established_since;
            l.stop_bird("bird");
            sp.wait("the session down", |s| s.state != State::Established);
            let conf = std::fs::read_to_string(l.dir.join("bird.conf")).unwrap();
            l.start_bird("router", "bird", &conf);
            sp.wait("Established again", |s| {
                s.state == State::Established && s.established_since != first
            });
            sp.until(
                "our prefixes at the restarted BIRD",
                || l.birdc("show route all"),
                |o| o.contains("203.0.113.95/32") && o.contains("2001:db8:ff::95/128"),
            );
            // A path failure reported from outside (BFD) drops the session at once; it comes
            // back by itself.
            let second = sp.session.as_ref().unwrap().status().established_since;
            sp.session.as_ref().unwrap().peer_down();
            sp.wait("down after peer_down", |s| s.state != State::Established);
            sp.wait("Established after peer_down", |s| {
                s.state == State::Established && s.established_since != second
            });
        },
    );
}

/// The scripted peer of the hold-time test: answers the speaker's OPEN with hold time 1, then 2
/// (each on a new connection), then 3. Returns what the speaker answered each with: the
/// NOTIFICATION's (code, subcode), or (4, 0) for a KEEPALIVE.
fn offer_hold_times(router: std::fs::File) -> Vec<(u8, u8)> {
    // SAFETY: this thread alone enters the router namespace.
    assert_eq!(
        unsafe { libc::setns(router.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    let ctx = Context::default();
    let l = std::net::TcpListener::bind("192.0.2.1:179").unwrap();
    let mut answers = Vec::new();
    for hold in [1u16, 2, 3] {
        let mut s = accept_within(&l, Duration::from_secs(20)).expect("the speaker connects");
        assert_eq!(read_message(&mut s).expect("the speaker's OPEN")[18], 1);
        let open = Open::new(
            64500,
            hold,
            Ipv4Addr::new(192, 0, 2, 1),
            vec![Capability::Multiprotocol(AfiSafi::IPV4_UNICAST)],
        );
        s.write_all(&Message::Open(open).to_bytes(&ctx)).unwrap();
        let m = read_message(&mut s).expect("an answer to our OPEN");
        answers.push(match m[18] {
            3 => (m[19], m[20]),
            k => (k, 0),
        });
        if hold == 3 {
            s.write_all(&Message::Keepalive.to_bytes(&ctx)).unwrap();
            // Hold 3 gives keepalives every second: one must come within 2.
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut kinds = Vec::new();
            while let Some(m) = read_message(&mut s) {
                kinds.push(m[18]);
                if m[18] == 4 {
                    break;
                }
            }
            assert!(kinds.contains(&4), "keepalives on a 3 s session: {kinds:?}");
        }
    }
    answers
}

#[test]
fn a_peer_offering_hold_time_1_or_2_gets_notification_2_6_and_the_session_lives_on() {
    let Some(lab) = Lab::namespaces() else { return };
    let router = std::fs::File::open(format!("/run/netns/{}", lab.ns("router"))).unwrap();
    let peer = std::thread::spawn(move || offer_hold_times(router));
    lab.with_speaker(
        64512,
        64500,
        |c| c.fsm.families = vec![AfiSafi::IPV4_UNICAST],
        move |sp| {
            sp.set(&[("203.0.113.92/32", attrs())]);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !peer.is_finished() {
                sp.run_for(Duration::from_millis(50));
            }
            let answers = peer.join().unwrap();
            assert_eq!(answers, [(2, 6), (2, 6), (4, 0)]);
            // The third session came up and carried the route (an UPDATE goes out only when
            // Established), with keepalives every second (checked by the peer).
            let st = sp.session.as_ref().unwrap().status();
            assert!(st.updates_sent >= 1, "{st:?}");
        },
    );
}

/// The flooding peer: establishes with route refresh, waits for our routes, then writes
/// 100,000 ROUTE-REFRESH messages as fast as TCP takes them, reading all the while. Returns
/// (UPDATEs we sent before the flood, UPDATEs we sent during and 2 s after it, how long writing
/// the flood took).
fn refresh_flood(router: std::fs::File, reads: bool, count: usize) -> (usize, usize, Duration) {
    // SAFETY: this thread alone enters the router namespace.
    assert_eq!(
        unsafe { libc::setns(router.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );
    let ctx = Context::default();
    let l = std::net::TcpListener::bind("192.0.2.1:179").unwrap();
    let mut s = accept_within(&l, Duration::from_secs(20)).expect("the speaker connects");
    assert_eq!(read_message(&mut s).expect("the speaker's OPEN")[18], 1);
    let open = Open::new(
        64500,
        9,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
        ],
    );
    s.write_all(&Message::Open(open).to_bytes(&ctx)).unwrap();
    assert_eq!(read_message(&mut s).expect("KEEPALIVE")[18], 4);
    s.write_all(&Message::Keepalive.to_bytes(&ctx)).unwrap();
    // Everything the speaker sends is read (and UPDATEs counted) on a thread of its own.
    let updates = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut r = s.try_clone().unwrap();
    r.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let u = updates.clone();
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let go_on = reading.clone();
    std::thread::spawn(move || {
        while go_on.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(m) = read_message(&mut r)
        {
            if m[18] == 2 {
                u.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while updates.load(std::sync::atomic::Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // A peer that stops reading: our answers fill its window and our writer waits.
    reading.store(reads, std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let before = updates.load(std::sync::atomic::Ordering::Relaxed);
    // 23-byte ROUTE-REFRESH for IPv4 unicast: marker, length 23, type 5, AFI 1, 0, SAFI 1.
    let mut one = vec![0xffu8; 16];
    one.extend_from_slice(&[0, 23, 5, 0, 1, 0, 1]);
    // Written 1,000 at a time (a small buffer: this thread's memory is the test's too), for
    // at most 20 s: a speaker that stops reading stops the flood (back-pressure).
    let chunk: Vec<u8> = one.repeat(1000);
    let t0 = Instant::now();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    for _ in 0..count / 1000 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let took = t0.elapsed();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(1));
        let _ = s.write_all(&Message::Keepalive.to_bytes(&ctx));
    }
    let after = updates.load(std::sync::atomic::Ordering::Relaxed);
    (before, after - before, took)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_route_refresh_flood_costs_no_memory_gets_one_resend_a_second_and_the_session_stays_up() {
    let Some(lab) = Lab::namespaces() else { return };
    let router = std::fs::File::open(format!("/run/netns/{}", lab.ns("router"))).unwrap();
    let peer = std::thread::spawn(move || refresh_flood(router, true, 100_000));
    lab.with_speaker(
        64512,
        64500,
        |c| c.fsm.families = vec![AfiSafi::IPV4_UNICAST],
        move |sp| {
            let routes: Vec<(String, lb_announce_bgp::session::RouteAttrs)> = (0..200)
                .map(|i| (format!("203.0.113.{}/32", i % 250), attrs()))
                .chain((0..200).map(|i| (format!("198.51.100.{}/32", i % 250), attrs())))
                .collect();
            let routes: Vec<(&str, _)> = routes.iter().map(|(p, a)| (p.as_str(), a.clone())).collect();
            sp.set(&routes);
            sp.wait("established", |s| s.state == State::Established);
            sp.run_for(Duration::from_millis(300));
            let idle = rss_kib();
            let mut peak = idle;
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !peer.is_finished() {
                sp.run_for(Duration::from_millis(50));
                peak = peak.max(rss_kib());
            }
            let (before, during, took) = peer.join().unwrap();
            let st = sp.session.as_ref().unwrap().status();
            eprintln!(
                "100,000 ROUTE-REFRESH written in {took:?}: {during} UPDATEs in answer ({before} per resend), {} deferred; RSS idle {idle} KiB, peak {peak} KiB",
                st.refreshes_deferred
            );
            assert_eq!(st.state, State::Established, "{st:?}");
            assert!(peak <= idle * 2, "RSS {idle} KiB idle, {peak} KiB in the flood");
            // One full resend a second at most: the flood's duration, the 2 s after, and one.
            let resends = during / before.max(1);
            let most = took.as_secs() as usize + 4;
            assert!(resends <= most, "{resends} full resends in {took:?}");
            assert!(resends >= 1, "the refresh was answered");
        },
    );
}

#[test]
fn a_peer_that_floods_without_reading_is_held_back_by_tcp_not_by_our_memory() {
    let Some(lab) = Lab::namespaces() else { return };
    let router = std::fs::File::open(format!("/run/netns/{}", lab.ns("router"))).unwrap();
    // 2,000,000 messages (46 MB) while it reads nothing of ours.
    let peer = std::thread::spawn(move || refresh_flood(router, false, 2_000_000));
    lab.with_speaker(
        64512,
        64500,
        |c| c.fsm.families = vec![AfiSafi::IPV4_UNICAST],
        move |sp| {
            let routes: Vec<String> = (0..250).map(|i| format!("203.0.113.{i}/32")).collect();
            let routes: Vec<(&str, _)> = routes.iter().map(|p| (p.as_str(), attrs())).collect();
            sp.set(&routes);
            sp.wait("established", |s| s.state == State::Established);
            sp.run_for(Duration::from_millis(300));
            let idle = rss_kib();
            let mut peak = idle;
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline && !peer.is_finished() {
                sp.run_for(Duration::from_millis(50));
                peak = peak.max(rss_kib());
            }
            let (_, _, took) = peer.join().unwrap();
            eprintln!("flood written for {took:?}; RSS idle {idle} KiB, peak {peak} KiB");
            assert!(
                peak <= idle * 2,
                "RSS {idle} KiB idle, {peak} KiB in the flood"
            );
        },
    );
}
