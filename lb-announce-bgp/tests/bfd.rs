//! BFD against BIRD's `protocol bfd` and FRR's bfdd in network namespaces this test creates
//! (the lab of interop.rs): the session comes up whoever starts it, both sides agree on the
//! intervals RFC 5880 §6.8.2–§6.8.4 give, and when the peer's packets stop (dropped by
//! nftables, no link change) our BGP session to it drops within the detection time, long
//! before its hold time, and comes back with BFD. The daemons' BGP does not follow their BFD
//! (BIRD's session comes from a static route, FRR's from its `bfd` block): only our side can
//! drop the BGP session, so the tests prove our BFD → BGP path.
//!
//! ```text
//!  ns node   eth0 192.0.2.10/24   our BgpAnnouncer + BFD, AS 64512 (in-process, via setns)
//!  ns router eth0 192.0.2.1/24    BIRD or FRR (bgpd + bfdd), AS 64500, passive BGP
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

mod lab;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use lab::*;
use lb_announce_bgp::BgpAnnouncer;
use lb_announce_bgp::bfd::driver::{BfdStatus, PeerBfd};
use lb_announce_bgp::bfd::fsm::Config as Timers;
use lb_announce_bgp::bfd::packet::{Diag, State as BfdState};
use lb_announce_bgp::fsm::{Config, RemoteAs, State};
use lb_announce_bgp::session::PeerConfig;

const MS: Duration = Duration::from_millis(1);
const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// Runs the future `f` makes inside the node namespace (see [`Lab::in_node`]); the daemons
/// are probed with async commands so the runtime keeps sending BFD packets meanwhile.
fn in_node<T: Send + 'static>(
    lab: &Lab,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
) -> T {
    lab.in_node(move |rt| rt.block_on(f()))
}

/// Our BGP session to the router (eBGP 64512 → 64500, hold time 9 s).
fn bgp_peer() -> PeerConfig {
    let mut fsm = Config::new(64512, Ipv4Addr::new(192, 0, 2, 10), RemoteAs::Fixed(64500));
    fsm.hold_time = 9;
    fsm.connect_retry = Duration::from_millis(200);
    fsm.connect_retry_max = Duration::from_millis(500);
    let mut c = PeerConfig::new(fsm, "192.0.2.1:179".parse().unwrap());
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// The standard output of a command (run without blocking the runtime).
async fn sh(args: Vec<String>) -> String {
    let o = tokio::process::Command::new(&args[0])
        .args(&args[1..])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `probe` every 50 ms until `pred` holds, for at most `secs` seconds.
async fn until<T>(
    secs: u64,
    what: &str,
    mut probe: impl AsyncFnMut() -> T,
    pred: impl Fn(&T) -> bool,
) -> T
where
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = probe().await;
        if pred(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never {what}: {v:?}");
        tokio::time::sleep(50 * MS).await;
    }
}

fn router_bfd(a: &BgpAnnouncer) -> Option<BfdStatus> {
    a.bfd_statuses().remove("router")
}

/// Drops (or lets through again) the UDP packets the router sends to port 3784.
async fn cut_router_bfd(lab_ns: &str, cut: bool) {
    let nft = |cmd: &str| {
        vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            lab_ns.to_string(),
            "nft".into(),
            cmd.to_string(),
        ]
    };
    if cut {
        sh(nft("add table inet lbbfd")).await;
        sh(nft(
            "add chain inet lbbfd out { type filter hook output priority 0; policy accept; }",
        ))
        .await;
        sh(nft("add rule inet lbbfd out udp dport 3784 drop")).await;
    } else {
        sh(nft("delete table inet lbbfd")).await;
    }
}

/// The common part: BFD up, BGP up with a route at the router, then the router's BFD packets
/// cut: our BGP session must leave Established within the detection time (not the 9 s hold
/// time), with diag "control detection time expired"; then both come back.
async fn cut_and_restore(
    a: &BgpAnnouncer,
    router_ns: &str,
    has_route: impl AsyncFn() -> bool,
) -> Duration {
    let st = until(
        20,
        "BGP established",
        async || a.statuses()["router"].state,
        |s| *s == State::Established,
    )
    .await;
    assert_eq!(st, State::Established);
    announce(a).await;
    until(
        20,
        "the route at the router",
        async || has_route().await,
        |h| *h,
    )
    .await;
    let detect = router_bfd(a).unwrap().detection_time;
    cut_router_bfd(router_ns, true).await;
    let t0 = Instant::now();
    until(
        10,
        "BGP dropped after BFD down",
        async || a.statuses()["router"].state,
        |s| *s != State::Established,
    )
    .await;
    let took = t0.elapsed();
    let b = router_bfd(a).unwrap();
    assert_eq!((b.state, b.diag), (BfdState::Down, Diag::Expired), "{b:?}");
    eprintln!("BFD detection {detect:?}: BGP dropped {took:?} after the cut");
    // BFD's doing, not the hold timer's: the router keeps sending BGP keepalives, so without
    // BFD the session would never drop (the figures are the bench's business).
    assert!(
        took < Duration::from_secs(5),
        "BGP dropped {took:?} after the cut"
    );
    cut_router_bfd(router_ns, false).await;
    until(
        20,
        "BFD up again",
        async || router_bfd(a).map(|s| s.state),
        |s| *s == Some(BfdState::Up),
    )
    .await;
    until(
        20,
        "BGP established again",
        async || a.statuses()["router"].state,
        |s| *s == State::Established,
    )
    .await;
    until(
        20,
        "the route back at the router",
        async || has_route().await,
        |h| *h,
    )
    .await;
    took
}

/// Announces 203.0.113.30/32 to the router.
async fn announce(a: &BgpAnnouncer) {
    use lb_core::Announcer;
    use lb_core::plan::{Announcement, BgpRoute, How};
    let ann = Announcement {
        service: lb_core::objects::ServiceKey::new("default", "web"),
        ip: "203.0.113.30".parse().unwrap(),
        how: How::Bgp {
            routes: vec![BgpRoute {
                prefix: "203.0.113.30/32".parse().unwrap(),
                peers: vec!["router".into()],
                local_pref: None,
                communities: Vec::new(),
            }],
        },
    };
    a.announce(&[ann]).await.unwrap();
}

#[test]
fn bfd_with_bird_negotiates_the_rfc_intervals_and_drops_bgp_within_the_detection_time() {
    let Some(lab) = Lab::namespaces() else { return };
    lab.start_bird(
        "router",
        "bird",
        "router id 192.0.2.1;\nprotocol device {}\nprotocol bfd {\n  interface \"eth0\" { min rx interval 200 ms; min tx interval 150 ms; idle tx interval 300 ms; multiplier 3; };\n}\nprotocol static {\n  ipv4;\n  route 198.51.100.99/32 via 192.0.2.10 bfd;\n}\nprotocol bgp lb {\n  local 192.0.2.1 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  passive on;\n  hold time 9;\n  error wait time 1, 2;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n",
    );
    let ctl = lab.dir.join("bird.ctl").to_string_lossy().into_owned();
    let router_ns = lab.ns("router");
    in_node(&lab, move || {
        Box::pin(async move {
            let birdc = |cmd: &str| vec!["birdc".to_string(), "-s".into(), ctl.clone(), cmd.into()];
            let a = BgpAnnouncer::start([("router".to_string(), bgp_peer())]);
            // Ours: send every 50 ms, receive every 100 ms, ×3. BIRD: 150 / 200, ×3.
            let bfd = PeerBfd::single_hop(ROUTER, Timers::new(50 * MS, 100 * MS, 3));
            a.set_bfd(BTreeMap::from([("router".to_string(), bfd)]));
            let up = until(
                20,
                "BFD up",
                async || router_bfd(&a),
                |s| s.as_ref().is_some_and(|s| s.state == BfdState::Up),
            )
            .await
            .unwrap();
            // §6.8.7: we send at max(our 50, BIRD's rx 200); §6.8.4: we declare it down after
            // BIRD's 3 × max(our rx 100, BIRD's tx 150). The Poll that follows Up settles the
            // fast rate.
            until(
                5,
                "the negotiated intervals",
                async || router_bfd(&a).map(|s| (s.tx_interval, s.detection_time)),
                |v| *v == Some((200 * MS, 450 * MS)),
            )
            .await;
            assert_ne!(up.remote_discr, 0);
            // BIRD's view: it sends every max(150, our rx 100) = 0.150 s and times out after
            // our 3 × max(its rx 200, our tx 50) = 0.600 s.
            let view = until(
                5,
                "BIRD's view of the session",
                async || sh(birdc("show bfd sessions")).await,
                |o| o.contains("192.0.2.10") && o.contains("Up"),
            )
            .await;
            assert!(view.contains("0.150") && view.contains("0.600"), "{view}");
            let has = async || {
                sh(birdc("show route 203.0.113.30/32"))
                    .await
                    .contains("203.0.113.30/32")
            };
            cut_and_restore(&a, &router_ns, has).await;
            a.stop(Duration::from_secs(1)).await;
        })
    });
}

/// FRR (zebra, bfdd, bgpd) as AS 64500 with BFD profile `fast` (tx 150 ms, rx 200 ms, ×3)
/// on its passive BGP neighbor 192.0.2.10; `passive` makes FRR's BFD wait for ours.
fn frr(passive: bool) -> Option<Lab> {
    let passive = if passive { "  passive-mode\n" } else { "" };
    Lab::with_frr_conf(
        &format!(
            "frr defaults traditional\nhostname lbr\nbfd\n profile fast\n  transmit-interval 150\n  receive-interval 200\n  detect-multiplier 3\n{passive} !\n peer 192.0.2.10\n  profile fast\n !\n!\nrouter bgp 64500\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n neighbor 192.0.2.10 remote-as 64512\n neighbor 192.0.2.10 passive\n neighbor 192.0.2.10 timers connect 1\n address-family ipv4 unicast\n  neighbor 192.0.2.10 activate\n exit-address-family\n"
        ),
        &["zebra", "bfdd", "bgpd"],
    )
}

/// Both ways of starting: FRR active with ours passive (it speaks first), and FRR passive
/// with ours active. Each side sees the other's intervals, the Poll after Up included (our
/// transmit interval goes from the one second of a session not Up to 50 ms).
#[test]
fn bfd_with_frr_comes_up_whoever_starts_and_drops_bgp_within_the_detection_time() {
    for ours_passive in [true, false] {
        let Some(lab) = frr(!ours_passive) else {
            return;
        };
        let tag = lab.tag.clone();
        let router_ns = lab.ns("router");
        in_node(&lab, move || {
            Box::pin(async move {
                let vtysh = |cmd: &str| {
                    vec![
                        "vtysh".to_string(),
                        "-N".into(),
                        tag.clone(),
                        "-c".into(),
                        cmd.into(),
                    ]
                };
                let a = BgpAnnouncer::start([("router".to_string(), bgp_peer())]);
                let mut timers = Timers::new(50 * MS, 100 * MS, 3);
                timers.passive = ours_passive;
                let bfd = PeerBfd::single_hop(ROUTER, timers);
                a.set_bfd(BTreeMap::from([("router".to_string(), bfd)]));
                until(
                    20,
                    "BFD up",
                    async || router_bfd(&a).map(|s| s.state),
                    |s| *s == Some(BfdState::Up),
                )
                .await;
                // Ours: max(our tx 50, FRR's rx 200) and 3 × max(our rx 100, FRR's tx 150).
                until(
                    5,
                    "the negotiated intervals",
                    async || router_bfd(&a).map(|s| (s.tx_interval, s.detection_time)),
                    |v| *v == Some((200 * MS, 450 * MS)),
                )
                .await;
                // FRR's view of us: up, our 50 / 100 ×3 after the Poll.
                let view = until(
                    10,
                    "FRR's view of the session",
                    async || sh(vtysh("show bfd peer 192.0.2.10 json")).await,
                    |o| {
                        serde_json::from_str::<serde_json::Value>(o).is_ok_and(|v| {
                            v["status"] == "up"
                                && v["remote-transmit-interval"] == 50
                                && v["remote-receive-interval"] == 100
                        })
                    },
                )
                .await;
                let v: serde_json::Value = serde_json::from_str(&view).unwrap();
                assert_eq!(v["remote-detect-multiplier"], 3, "{view}");
                let has = async || {
                    sh(vtysh("show bgp ipv4 unicast 203.0.113.30/32 json"))
                        .await
                        .contains("\"paths\"")
                };
                cut_and_restore(&a, &router_ns, has).await;
                a.stop(Duration::from_secs(1)).await;
            })
        });
    }
}

/// Multihop (RFC 5883) to BIRD one router away, as an `ebgpMultiHop` peer gets it (port
/// 4784). BIRD 2.0.12 sends multihop BFD with the default TTL (64), where FRR sends 255: at
/// MetalLB's default `minimumTtl` of 254 its packets arrive with 63 and are refused, as FRR
/// would refuse them, and the session never comes up; with a `minimumTtl` of 60 it does.
#[test]
fn multihop_bfd_with_bird_one_router_away_checks_the_minimum_ttl() {
    let Some(lab) = Lab::namespaces() else { return };
    lab.add_far();
    lab.start_bird(
        "far",
        "bird",
        "router id 198.51.100.2;\nprotocol device {}\nprotocol bfd {\n  multihop { min rx interval 200 ms; min tx interval 150 ms; multiplier 3; };\n}\nprotocol bgp lb {\n  local 198.51.100.2 as 64500;\n  neighbor 192.0.2.10 as 64512;\n  multihop;\n  passive on;\n  bfd on;\n  hold time 9;\n  ipv4 { import all; export none; };\n}\n",
    );
    let ctl = lab.dir.join("bird.ctl").to_string_lossy().into_owned();
    in_node(&lab, move || {
        Box::pin(async move {
            let birdc = |cmd: &str| vec!["birdc".to_string(), "-s".into(), ctl.clone(), cmd.into()];
            let mut peer = bgp_peer();
            peer.address = "198.51.100.2:179".parse().unwrap();
            peer.ttl = Some(255);
            let a = BgpAnnouncer::start([("router".to_string(), peer)]);
            let bfd = |min_ttl: u8| {
                let mut b = PeerBfd::single_hop(
                    "198.51.100.2".parse().unwrap(),
                    Timers::new(50 * MS, 100 * MS, 3),
                );
                b.multihop = true;
                b.min_ttl = min_ttl;
                BTreeMap::from([("router".to_string(), b)])
            };
            a.set_bfd(bfd(254));
            // BIRD hears us (Init) but nothing of its reaches the session.
            until(
                10,
                "BIRD hearing our multihop packets",
                async || sh(birdc("show bfd sessions")).await,
                |o| o.contains("192.0.2.10") && o.contains("Init"),
            )
            .await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let refused = router_bfd(&a).unwrap();
            assert_eq!(
                (refused.state, refused.counters.received),
                (BfdState::Down, 0),
                "{refused:?}"
            );
            // Counted, not silently lost.
            assert!(
                a.bfd_dropped().get("ttl").is_some_and(|n| *n > 0),
                "{:?}",
                a.bfd_dropped()
            );
            a.set_bfd(bfd(60));
            until(
                20,
                "multihop BFD up",
                async || router_bfd(&a).map(|s| (s.state, s.tx_interval, s.detection_time)),
                |s| *s == Some((BfdState::Up, 200 * MS, 450 * MS)),
            )
            .await;
            until(
                10,
                "BIRD's multihop session up",
                async || sh(birdc("show bfd sessions")).await,
                |o| o.contains("192.0.2.10") && o.contains("Up"),
            )
            .await;
            a.stop(Duration::from_secs(1)).await;
        })
    });
}
