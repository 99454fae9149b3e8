//! The state machine, one test per RFC 4271 §8 (and RFC 5492 / 6286 / 6793 / 6608) behaviour.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use lb_announce_bgp::fsm::*;
use lb_announce_bgp::packet::*;

fn cfg() -> Config {
    let mut c = Config::new(64512, Ipv4Addr::new(192, 0, 2, 10), RemoteAs::Fixed(64500));
    c.graceful_restart = Some((120, false));
    c.connect_retry_max = Duration::from_secs(8);
    c
}

/// The test configuration with these timers.
fn timers(hold_time: u16, keepalive: Option<u16>) -> Config {
    let mut c = cfg();
    c.hold_time = hold_time;
    c.keepalive = keepalive;
    c
}

fn peer_open(asn: u32, hold: u16, caps: Vec<Capability>) -> Message {
    Message::Open(Open::new(asn, hold, Ipv4Addr::new(192, 0, 2, 1), caps))
}

fn mp_both() -> Vec<Capability> {
    vec![
        Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
        Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
        Capability::RouteRefresh,
    ]
}

fn sent_notification(out: &[Output]) -> Option<(u8, u8)> {
    out.iter().find_map(|o| match o {
        Output::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    })
}

/// An FSM taken to OpenSent.
fn open_sent(c: Config) -> Fsm {
    let mut f = Fsm::new(c);
    assert_eq!(
        f.handle(Input::Start),
        [Output::StateChanged(State::Connect), Output::Connect]
    );
    let out = f.handle(Input::TcpConnected);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send(Message::Open(_))))
    );
    assert!(
        out.contains(&Output::Arm(Timer::Hold, Duration::from_secs(240))),
        "large hold timer while waiting for OPEN"
    );
    assert_eq!(f.state(), State::OpenSent);
    f
}

fn established(c: Config, peer_hold: u16) -> Fsm {
    let mut f = open_sent(c);
    f.handle(Input::Received(peer_open(64500, peer_hold, mp_both())));
    let out = f.handle(Input::Received(Message::Keepalive));
    assert!(
        out.iter().any(|o| matches!(o, Output::Established(_))),
        "{out:?}"
    );
    f
}

#[test]
fn open_announces_families_route_refresh_graceful_restart_and_4_octet_as() {
    let o = cfg().open();
    assert_eq!(o.asn(), 64512);
    assert_eq!(o.families(), [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]);
    assert!(o.has(|c| matches!(c, Capability::RouteRefresh)));
    assert!(
        o.has(|c| matches!(c, Capability::GracefulRestart(g) if g.time == 120 && !g.restarted))
    );
    assert!(o.has(|c| matches!(c, Capability::FourOctetAs(64512))));
}

#[test]
fn valid_open_sends_keepalive_and_goes_to_open_confirm() {
    let mut f = open_sent(cfg());
    let out = f.handle(Input::Received(peer_open(64500, 90, mp_both())));
    assert!(out.contains(&Output::Send(Message::Keepalive)));
    assert_eq!(f.state(), State::OpenConfirm);
}

#[test]
fn keepalive_in_open_confirm_establishes_the_session() {
    let f = established(cfg(), 90);
    assert_eq!(f.state(), State::Established);
    let n = f.negotiated().unwrap();
    assert_eq!(
        (n.remote_as, n.families.len(), n.route_refresh),
        (64500, 2, true)
    );
}

#[test]
fn hold_time_is_the_smaller_of_both_and_keepalive_a_third_of_it() {
    let f = established(cfg(), 30);
    let n = f.negotiated().unwrap();
    assert_eq!((n.hold_time, n.keepalive), (30, 10));
}

#[test]
fn configured_keepalive_is_used_when_shorter_than_a_third() {
    let mut c = cfg();
    c.keepalive = Some(5);
    assert_eq!(established(c, 90).negotiated().unwrap().keepalive, 5);
}

#[test]
fn hold_time_zero_disables_hold_and_keepalive_timers() {
    let mut f = open_sent(cfg());
    let out = f.handle(Input::Received(peer_open(64500, 0, mp_both())));
    assert!(out.contains(&Output::Cancel(Timer::Hold)));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Arm(Timer::Keepalive, _)))
    );
}

#[test]
fn hold_timer_expiry_sends_notification_4_0() {
    let mut f = established(cfg(), 90);
    let out = f.handle(Input::Expired(Timer::Hold));
    assert_eq!(sent_notification(&out), Some((4, 0)));
    assert!(out.contains(&Output::Disconnect));
    assert_eq!(f.state(), State::Idle);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Arm(Timer::ConnectRetry, _))),
        "reconnects later"
    );
}

#[test]
fn any_message_in_established_restarts_the_hold_timer() {
    let mut f = established(cfg(), 90);
    for m in [Message::Keepalive, Message::Update(Update::default())] {
        assert_eq!(
            f.handle(Input::Received(m)),
            [Output::Arm(Timer::Hold, Duration::from_secs(90))]
        );
    }
}

#[test]
fn keepalive_timer_sends_keepalive_and_rearms() {
    let mut f = established(cfg(), 90);
    assert_eq!(
        f.handle(Input::Expired(Timer::Keepalive)),
        [
            Output::Send(Message::Keepalive),
            Output::Arm(Timer::Keepalive, Duration::from_secs(30))
        ]
    );
}

#[test]
fn sending_an_update_rearms_the_keepalive_timer() {
    let mut f = established(cfg(), 90);
    assert_eq!(
        f.handle(Input::UpdateSent),
        [Output::Arm(Timer::Keepalive, Duration::from_secs(30))]
    );
}

#[test]
fn bad_peer_as_sends_2_2() {
    let mut f = open_sent(cfg());
    let out = f.handle(Input::Received(peer_open(64999, 90, mp_both())));
    assert_eq!(sent_notification(&out), Some((2, 2)));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn dynamic_internal_accepts_only_our_as_and_external_only_another() {
    let mut c = cfg();
    c.remote_as = RemoteAs::Internal;
    let mut f1 = open_sent(c.clone());
    assert_eq!(
        sent_notification(&f1.handle(Input::Received(peer_open(64500, 90, mp_both())))),
        Some((2, 2))
    );
    let mut f2 = open_sent(c.clone());
    assert_eq!(
        sent_notification(&f2.handle(Input::Received(peer_open(64512, 90, mp_both())))),
        None
    );
    c.remote_as = RemoteAs::External;
    let mut f3 = open_sent(c);
    assert_eq!(
        sent_notification(&f3.handle(Input::Received(peer_open(64512, 90, mp_both())))),
        Some((2, 2))
    );
}

#[test]
fn ibgp_peer_with_our_own_identifier_sends_2_3() {
    let mut c = cfg();
    c.remote_as = RemoteAs::Fixed(64512);
    let mut f = open_sent(c);
    let open = Message::Open(Open::new(
        64512,
        90,
        Ipv4Addr::new(192, 0, 2, 10),
        mp_both(),
    ));
    assert_eq!(
        sent_notification(&f.handle(Input::Received(open))),
        Some((2, 3))
    );
}

#[test]
fn no_common_address_family_sends_unsupported_capability_2_7() {
    let mut c = cfg();
    c.families = vec![AfiSafi::IPV6_UNICAST];
    let mut f = open_sent(c);
    // A peer with no multiprotocol capability speaks IPv4 unicast only (RFC 4760 §8).
    let out = f.handle(Input::Received(peer_open(64500, 90, vec![])));
    assert_eq!(sent_notification(&out), Some((2, 7)));
}

#[test]
fn two_octet_peer_is_accepted_with_2_octet_as_paths_unless_our_as_needs_4() {
    let mut f = open_sent(cfg());
    let open = Open {
        version: 4,
        my_as: 64500,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: mp_both(),
    };
    f.handle(Input::Received(Message::Open(open.clone())));
    f.handle(Input::Received(Message::Keepalive));
    assert!(!f.negotiated().unwrap().ctx.four_octet_as);
    let mut c = cfg();
    c.local_as = 4_200_000_000;
    let mut g = open_sent(c);
    assert_eq!(
        sent_notification(&g.handle(Input::Received(Message::Open(open)))),
        Some((2, 7))
    );
}

#[test]
fn update_in_open_confirm_is_an_fsm_error_5_2() {
    let mut f = open_sent(cfg());
    f.handle(Input::Received(peer_open(64500, 90, mp_both())));
    assert_eq!(
        sent_notification(&f.handle(Input::Received(Message::Update(Update::default())))),
        Some((5, 2))
    );
}

#[test]
fn open_in_established_is_an_fsm_error_5_3() {
    let mut f = established(cfg(), 90);
    assert_eq!(
        sent_notification(&f.handle(Input::Received(peer_open(64500, 90, mp_both())))),
        Some((5, 3))
    );
}

#[test]
fn keepalive_in_open_sent_is_an_fsm_error_5_1() {
    let mut f = open_sent(cfg());
    assert_eq!(
        sent_notification(&f.handle(Input::Received(Message::Keepalive))),
        Some((5, 1))
    );
}

#[test]
fn received_notification_closes_without_a_reply() {
    let mut f = established(cfg(), 90);
    let out = f.handle(Input::Received(Message::Notification(Notification::cease(
        2,
    ))));
    assert_eq!(sent_notification(&out), None);
    assert!(out.contains(&Output::SessionDown(Down::Received(Notification::cease(2)))));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn a_decode_error_sends_the_notification_it_maps_to() {
    let mut f = established(cfg(), 90);
    let out = f.handle(Input::Malformed(DecodeError::MalformedAttributeList(
        "x".into(),
    )));
    assert_eq!(sent_notification(&out), Some((3, 1)));
}

#[test]
fn stop_sends_cease_and_does_not_reconnect() {
    let mut f = established(cfg(), 90);
    let out = f.handle(Input::Stop { cease: 2 });
    assert_eq!(sent_notification(&out), Some((6, 2)));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Arm(Timer::ConnectRetry, _)))
    );
    assert!(out.contains(&Output::Cancel(Timer::ConnectRetry)));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn route_refresh_asks_to_resend_routes_of_a_negotiated_family() {
    let mut f = established(cfg(), 90);
    let out = f.handle(Input::Received(Message::RouteRefresh(RouteRefresh {
        family: AfiSafi::IPV6_UNICAST,
        subtype: 0,
    })));
    assert!(out.contains(&Output::ResendRoutes(AfiSafi::IPV6_UNICAST)));
}

#[test]
fn connect_retry_backs_off_exponentially_and_resets_once_established() {
    let mut f = Fsm::new(cfg());
    f.handle(Input::Start);
    let delays: Vec<Duration> = (0..5)
        .map(|_| {
            let out = f.handle(Input::TcpFailed);
            f.handle(Input::Expired(Timer::ConnectRetry));
            out.iter()
                .find_map(|o| match o {
                    Output::Arm(Timer::ConnectRetry, d) => Some(*d),
                    _ => None,
                })
                .unwrap()
        })
        .collect();
    assert_eq!(delays, [1, 2, 4, 8, 8].map(Duration::from_secs));
    f.handle(Input::TcpConnected);
    f.handle(Input::Received(peer_open(64500, 90, mp_both())));
    f.handle(Input::Received(Message::Keepalive));
    let out = f.handle(Input::TcpClosed);
    assert!(
        out.contains(&Output::Arm(Timer::ConnectRetry, Duration::from_secs(1))),
        "{out:?}"
    );
}

#[test]
fn tcp_closed_in_established_reports_the_session_down_and_retries() {
    let mut f = established(cfg(), 90);
    let out = f.handle(Input::TcpClosed);
    assert!(out.contains(&Output::SessionDown(Down::TcpClosed)));
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn restarting_flag_is_announced_after_a_restart() {
    let mut f = Fsm::new(cfg());
    f.set_restarting(true);
    f.handle(Input::Start);
    let out = f.handle(Input::TcpConnected);
    let open = out
        .iter()
        .find_map(|o| match o {
            Output::Send(Message::Open(o)) => Some(o.clone()),
            _ => None,
        })
        .unwrap();
    assert!(open.has(|c| matches!(c, Capability::GracefulRestart(g) if g.restarted)));
}

#[test]
fn passive_start_waits_in_active_without_connecting_and_takes_the_peers_connection() {
    let mut c = cfg();
    c.passive = true;
    let mut f = Fsm::new(c);
    assert_eq!(
        f.handle(Input::Start),
        [Output::StateChanged(State::Active)]
    );
    let out = f.handle(Input::TcpConnected);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Send(Message::Open(_))))
    );
    assert_eq!(f.state(), State::OpenSent);
    // After the session drops, retrying means waiting again, never connecting.
    let out = f.handle(Input::TcpClosed);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Arm(Timer::ConnectRetry, _)))
    );
    let out = f.handle(Input::Expired(Timer::ConnectRetry));
    assert!(!out.contains(&Output::Connect), "{out:?}");
    assert_eq!(f.state(), State::Active);
}

#[test]
fn a_connection_from_the_peer_is_taken_while_idle_between_retries_but_not_after_stop() {
    let mut f = established(cfg(), 90);
    f.handle(Input::TcpClosed);
    assert_eq!(f.state(), State::Idle);
    f.handle(Input::TcpConnected);
    assert_eq!(f.state(), State::OpenSent);
    f.handle(Input::Stop { cease: 2 });
    assert!(f.handle(Input::TcpConnected).is_empty());
    assert_eq!(f.state(), State::Idle);
}

#[test]
fn losing_a_collision_sends_cease_7_and_waits_for_the_winning_connection() {
    let mut f = open_sent(cfg());
    f.handle(Input::Received(peer_open(64500, 90, mp_both())));
    assert_eq!(f.state(), State::OpenConfirm);
    let out = f.handle(Input::CollisionLost);
    assert_eq!(sent_notification(&out), Some((6, 7)));
    assert!(out.contains(&Output::Disconnect));
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Arm(Timer::ConnectRetry, _))),
        "the other connection carries on: no retry"
    );
    assert_eq!(f.state(), State::Active);
    assert!(f.negotiated().is_none());
    f.handle(Input::TcpConnected);
    f.handle(Input::Received(peer_open(64500, 90, mp_both())));
    f.handle(Input::Received(Message::Keepalive));
    assert_eq!(f.state(), State::Established);
    // An Established session never loses a collision.
    assert!(f.handle(Input::CollisionLost).is_empty());
}

#[test]
fn collision_keeps_the_connection_opened_by_the_higher_bgp_identifier() {
    let low = Ipv4Addr::new(192, 0, 2, 1);
    let high = Ipv4Addr::new(198, 51, 100, 1);
    for existing in [State::OpenSent, State::OpenConfirm] {
        // We (high) opened the existing connection; the peer's (low) arrives: ours stays.
        assert_eq!(
            resolve_collision(high, low, existing, true, false),
            Keep::Existing
        );
        // We are lower: the peer's connection wins, whichever came first.
        assert_eq!(
            resolve_collision(low, high, existing, true, false),
            Keep::New
        );
        assert_eq!(
            resolve_collision(low, high, existing, false, true),
            Keep::Existing
        );
        assert_eq!(
            resolve_collision(high, low, existing, false, true),
            Keep::New
        );
        // Identifiers compare as unsigned numbers, not as signed ones.
        let top = Ipv4Addr::new(203, 0, 113, 1);
        assert_eq!(
            resolve_collision(top, Ipv4Addr::new(127, 0, 0, 1), existing, true, false),
            Keep::Existing
        );
    }
    // A second connection from the peer replaces its first; Established always stays.
    assert_eq!(
        resolve_collision(high, low, State::OpenSent, false, false),
        Keep::New
    );
    assert_eq!(
        resolve_collision(low, high, State::Established, true, false),
        Keep::Existing
    );
}

proptest::proptest! {
    /// No configured (hold, keepalive) and no hold time in the peer's OPEN panics: 1 and 2 are
    /// refused with 2/6 (RFC 4271 §6.2), 0 turns both timers off, any other gives a keepalive
    /// of at least 1 s and at most a third of the hold time.
    #[test]
    fn no_pair_of_timers_panics(ours in proptest::num::u16::ANY, keepalive in proptest::option::of(proptest::num::u16::ANY), theirs in proptest::num::u16::ANY) {
        let mut f = open_sent(timers(ours, keepalive));
        let mut out = f.handle(Input::Received(peer_open(64500, theirs, mp_both())));
        if matches!(theirs, 1 | 2) {
            proptest::prop_assert_eq!(sent_notification(&out), Some((2, 6)));
            return Ok(());
        }
        proptest::prop_assert_eq!(sent_notification(&out), None);
        let (hold, ka) = negotiate_timers(ours, keepalive, theirs);
        if ours == 0 || theirs == 0 {
            proptest::prop_assert_eq!((hold, ka), (0, 0));
        } else {
            proptest::prop_assert!(hold >= 3 && hold == ours.min(theirs).max(3));
            proptest::prop_assert!(ka >= 1 && ka <= hold / 3, "hold {} keepalive {}", hold, ka);
        }
        out.extend(f.handle(Input::Received(Message::Keepalive)));
        proptest::prop_assert!(out.iter().any(|o| matches!(o, Output::Established(_))), "{:?}", out);
        let sent = timers(ours, keepalive).open().hold_time;
        proptest::prop_assert!(!matches!(sent, 1 | 2), "we sent hold time {}", sent);
        if ka > 0 {
            proptest::prop_assert!(out.contains(&Output::Arm(Timer::Keepalive, Duration::from_secs(u64::from(ka)))), "{:?}", out);
        }
    }
}

#[test]
fn peer_hold_time_of_1_or_2_is_refused_with_2_6() {
    for hold in [1, 2] {
        let mut f = open_sent(cfg());
        let out = f.handle(Input::Received(peer_open(64500, hold, mp_both())));
        assert_eq!(sent_notification(&out), Some((2, 6)), "hold {hold}");
    }
}
