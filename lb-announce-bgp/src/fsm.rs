//! The BGP finite state machine (RFC 4271 §8) as a pure function: `Input` in, `Output`s out.
//! It never reads a clock and never touches a socket; timers are outputs the driver arms, and
//! their expiry comes back as an input.
//!
//! ```text
//!  Idle ──Start──► Connect ──TcpConnected──► OpenSent ──OPEN ok──► OpenConfirm ──KEEPALIVE──► Established
//!    ▲               │  ▲                      │                        │                       │
//!    │     TcpFailed ▼  │ ConnectRetry timer   │ error / hold expiry / NOTIFICATION / TCP closed │
//!    └───────────── Active ◄──────────────────┴────────────────────────┴───────────────────────┘
//! ```
//! Every way down goes through `Idle` with a connect-retry timer that backs off exponentially
//! (reset once a session is Established); a NOTIFICATION is sent first where RFC 4271 says so.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::{
    AfiSafi, Capability, Context, DecodeError, GracefulRestart, Message, Notification, Open,
};

/// How the remote AS is checked (MetalLB's `peerASN` / `dynamicASN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteAs {
    /// Exactly this AS.
    Fixed(u32),
    /// Any AS equal to ours.
    Internal,
    /// Any AS different from ours.
    External,
}

/// One session's settings, as the state machine needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// What the peer's AS must be.
    pub remote_as: RemoteAs,
    /// Proposed hold time, seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// Upper bound on the keepalive interval, if configured; otherwise hold time / 3.
    pub keepalive: Option<u16>,
    /// The address families offered (Multiprotocol capabilities).
    pub families: Vec<AfiSafi>,
    /// Announce graceful restart: the restart time, and whether we are restarting now.
    pub graceful_restart: Option<(u16, bool)>,
    /// First connect-retry delay; it doubles on each failure up to `connect_retry_max`.
    pub connect_retry: Duration,
    /// The longest connect-retry delay.
    pub connect_retry_max: Duration,
    /// Never open the connection; wait for the peer to (RFC 4271 PassiveTcpEstablishment).
    pub passive: bool,
}

impl Config {
    /// A session from `local_as` (identified by `router_id`) to a peer whose AS is
    /// `remote_as`: hold time 90 s, IPv4 and IPv6 unicast offered, no graceful restart,
    /// connect retries from 1 s doubling to 120 s, connecting out as well as accepting.
    pub fn new(local_as: u32, router_id: Ipv4Addr, remote_as: RemoteAs) -> Self {
        Config {
            local_as,
            router_id,
            remote_as,
            hold_time: 90,
            keepalive: None,
            families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            graceful_restart: None,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(120),
            passive: false,
        }
    }

    /// The OPEN we send.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        if self.families.contains(&AfiSafi::IPV4_UNICAST) {
            // IPv4 prefixes may carry an IPv6 next hop on an IPv6-only session (RFC 8950).
            caps.push(Capability::ExtendedNextHop(vec![(
                AfiSafi::IPV4_UNICAST,
                2,
            )]));
        }
        if let Some((time, restarting)) = self.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restarted: restarting,
                notification: false,
                time,
                families: self.families.iter().map(|f| (*f, true)).collect(),
            }));
        }
        // A hold time of 1 or 2 would be refused by the peer (RFC 4271 §6.2): 3 is the least.
        let hold = if self.hold_time == 0 {
            0
        } else {
            self.hold_time.max(3)
        };
        Open::new(self.local_as, hold, self.router_id, caps)
    }
}

/// RFC 4271 §8.2.2 session states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Not trying.
    Idle,
    /// Waiting for our connection to open.
    Connect,
    /// Waiting for the peer to connect, or to retry.
    Active,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for a KEEPALIVE.
    OpenConfirm,
    /// Routes can be exchanged.
    Established,
}

/// The machine's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// Between connection attempts.
    ConnectRetry,
    /// The peer has been silent too long.
    Hold,
    /// Time to send a KEEPALIVE.
    Keepalive,
}

// `Received` carries a whole message, most often an UPDATE whose contents are already on the
// heap; boxing it would add an allocation per message.
/// What the state machine reacts to.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// Administrative start (ManualStart).
    Start,
    /// Administrative stop: Cease with this RFC 4486 subcode (2 shutdown, 3 de-configured).
    Stop {
        /// The subcode.
        cease: u8,
    },
    /// The TCP connection opened.
    TcpConnected,
    /// The TCP connection could not be opened.
    TcpFailed,
    /// The TCP connection closed.
    TcpClosed,
    /// A message arrived.
    Received(Message),
    /// The bytes received could not be decoded.
    Malformed(DecodeError),
    /// A timer fired.
    Expired(Timer),
    /// We sent an UPDATE: it counts as a keepalive (RFC 4271 §4.4).
    UpdateSent,
    /// The connection this machine runs lost a collision (RFC 4271 §6.8, see
    /// [`resolve_collision`]): it is closed with Cease 7 and the machine waits in Active for
    /// the connection that won.
    CollisionLost,
}

/// What the session agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS.
    pub remote_as: u32,
    /// The peer's BGP identifier.
    pub remote_id: Ipv4Addr,
    /// 0 when keepalives are off.
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs (0 when the hold time is 0).
    pub keepalive: u16,
    /// Families both sides offered.
    pub families: Vec<AfiSafi>,
    /// How messages are encoded on this session (4-octet AS, extended messages).
    pub ctx: Context,
    /// Whether the peer takes ROUTE-REFRESH.
    pub route_refresh: bool,
    /// The peer's graceful restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Both sides offered IPv4 unicast with IPv6 next hops (RFC 8950 extended next hop).
    pub ipv4_over_ipv6_next_hop: bool,
}

/// Why a session went down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Down {
    /// We sent this NOTIFICATION.
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// The TCP connection closed.
    TcpClosed,
    /// The TCP connection failed.
    TcpFailed,
}

/// What the caller does for the state machine, in order.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Open the TCP connection.
    Connect,
    /// Close the TCP connection (after sending what precedes this output).
    Disconnect,
    /// Send this message.
    Send(Message),
    /// Start (or restart) the timer.
    Arm(Timer, Duration),
    /// Stop the timer.
    Cancel(Timer),
    /// The state is now this.
    StateChanged(State),
    /// The session is up, with these terms.
    Established(Negotiated),
    /// The session went down; the Adj-RIB-Out must be re-sent on the next session.
    SessionDown(Down),
    /// The peer asked for our routes of this family again (RFC 2918).
    ResendRoutes(AfiSafi),
}

/// The large hold time used while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests
/// four minutes).
const OPEN_WAIT: Duration = Duration::from_secs(240);

/// The RFC 4271 state machine of one session, with no IO: feed it [`Input`]s, carry out its [`Output`]s.
#[derive(Clone, Debug)]
pub struct Fsm {
    cfg: Config,
    state: State,
    retry: Duration,
    negotiated: Option<Negotiated>,
    /// Between Start and Stop: a connection the peer opens is taken even in Idle, while the
    /// machine waits to retry.
    started: bool,
}

/// Which of two connections to the same peer survives (RFC 4271 §6.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The existing connection.
    Existing,
    /// The new connection.
    New,
}

/// RFC 4271 §6.8 connection collision: with the existing connection in `existing_state`, a new
/// one whose OPEN names `remote_id` arrives. An Established connection always stays. Otherwise
/// the connection opened by the speaker with the higher BGP Identifier (compared as unsigned
/// 32-bit numbers) survives. Two connections opened by the peer mean it gave up the first.
pub fn resolve_collision(
    local_id: Ipv4Addr,
    remote_id: Ipv4Addr,
    existing_state: State,
    existing_outbound: bool,
    new_outbound: bool,
) -> Keep {
    if existing_state == State::Established {
        return Keep::Existing;
    }
    if existing_outbound == new_outbound {
        return Keep::New;
    }
    let ours_wins = u32::from(local_id) > u32::from(remote_id);
    if ours_wins == existing_outbound {
        Keep::Existing
    } else {
        Keep::New
    }
}

impl Fsm {
    /// A machine in Idle.
    pub fn new(cfg: Config) -> Self {
        let retry = cfg.connect_retry;
        Fsm {
            cfg,
            state: State::Idle,
            retry,
            negotiated: None,
            started: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What the session agreed on, while established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The graceful-restart "restarting" flag we announce: set after a restart until the first
    /// session is up.
    pub fn set_restarting(&mut self, restarting: bool) {
        if let Some((_, r)) = &mut self.cfg.graceful_restart {
            *r = restarting;
        }
    }

    fn go(&mut self, s: State, out: &mut Vec<Output>) {
        if self.state != s {
            self.state = s;
            out.push(Output::StateChanged(s));
        }
    }

    /// Reacts to `input`; returns what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match (self.state, input) {
            (State::Idle, Input::Start) => {
                self.started = true;
                self.connect_or_wait(&mut out);
            }
            (_, Input::Start) => {}
            (State::Idle, Input::Stop { .. }) => {
                self.started = false;
                out.push(Output::Cancel(Timer::ConnectRetry));
            }
            (s, Input::Stop { cease }) => {
                self.started = false;
                if s >= State::OpenSent {
                    out.push(Output::Send(Message::Notification(Notification::cease(
                        cease,
                    ))));
                }
                self.close(Down::Sent(Notification::cease(cease)), false, &mut out);
                out.push(Output::Cancel(Timer::ConnectRetry));
                self.retry = self.cfg.connect_retry;
            }
            (State::Idle, Input::Expired(Timer::ConnectRetry))
            | (State::Active, Input::Expired(Timer::ConnectRetry)) => {
                self.connect_or_wait(&mut out);
            }
            (State::Idle, Input::TcpConnected) if !self.started => {}
            (State::Idle | State::Connect | State::Active, Input::TcpConnected) => {
                out.push(Output::Cancel(Timer::ConnectRetry));
                out.push(Output::Send(Message::Open(self.cfg.open())));
                out.push(Output::Arm(Timer::Hold, OPEN_WAIT));
                self.go(State::OpenSent, &mut out);
            }
            // A second connection while one is opening is a collision: the driver resolves it
            // (RFC 4271 §6.8) and this machine keeps the connection it has.
            (_, Input::TcpConnected) => {}
            (State::Connect | State::Active, Input::TcpFailed) => {
                self.go(State::Active, &mut out);
                self.arm_retry(&mut out);
            }
            (_, Input::TcpFailed) => self.close(Down::TcpFailed, true, &mut out),
            (State::Idle | State::Connect | State::Active, Input::TcpClosed) => {
                self.go(State::Active, &mut out);
                self.arm_retry(&mut out);
            }
            (_, Input::TcpClosed) => self.close(Down::TcpClosed, true, &mut out),
            (s, Input::Expired(Timer::Hold)) if s >= State::OpenSent => {
                // RFC 4271 §8.2.2: HoldTimer_Expires -> NOTIFICATION Hold Timer Expired.
                self.fail(Notification::hold_timer_expired(), &mut out);
            }
            (State::OpenConfirm | State::Established, Input::Expired(Timer::Keepalive)) => {
                out.push(Output::Send(Message::Keepalive));
                self.arm_keepalive(&mut out);
            }
            (_, Input::Expired(_)) => {}
            (State::Established, Input::UpdateSent) => self.arm_keepalive(&mut out),
            (_, Input::UpdateSent) => {}
            (s, Input::Malformed(e)) if s >= State::OpenSent => {
                self.fail(e.notification(), &mut out)
            }
            (_, Input::Malformed(_)) => {}
            (s, Input::Received(m)) if s >= State::OpenSent => self.on_message(m, &mut out),
            (_, Input::Received(_)) => {}
            (State::OpenSent | State::OpenConfirm, Input::CollisionLost) => {
                out.push(Output::Send(Message::Notification(Notification::cease(7))));
                out.push(Output::Disconnect);
                out.push(Output::Cancel(Timer::Hold));
                out.push(Output::Cancel(Timer::Keepalive));
                self.negotiated = None;
                self.go(State::Active, &mut out);
            }
            (_, Input::CollisionLost) => {}
        }
        out
    }

    /// Opens the connection, or in passive mode waits in Active for the peer's.
    fn connect_or_wait(&mut self, out: &mut Vec<Output>) {
        if self.cfg.passive {
            self.go(State::Active, out);
        } else {
            self.go(State::Connect, out);
            out.push(Output::Connect);
        }
    }

    fn on_message(&mut self, m: Message, out: &mut Vec<Output>) {
        match (self.state, m) {
            (_, Message::Notification(n)) => {
                // RFC 4271 §8.2.2: a NOTIFICATION closes the session with no reply.
                self.close(Down::Received(n), true, out);
            }
            (State::OpenSent, Message::Open(open)) => match self.check_open(&open) {
                Ok(neg) => {
                    out.push(Output::Send(Message::Keepalive));
                    if neg.hold_time > 0 {
                        out.push(Output::Arm(Timer::Hold, secs(neg.hold_time)));
                    } else {
                        out.push(Output::Cancel(Timer::Hold));
                    }
                    self.negotiated = Some(neg);
                    self.arm_keepalive(out);
                    self.go(State::OpenConfirm, out);
                }
                Err(n) => self.fail(n, out),
            },
            (State::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(out);
                self.go(State::Established, out);
                self.retry = self.cfg.connect_retry;
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            (State::Established, Message::Keepalive | Message::Update(_)) => self.restart_hold(out),
            (State::Established, Message::RouteRefresh(rr)) => {
                self.restart_hold(out);
                let ours = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.families.contains(&rr.family));
                if ours {
                    out.push(Output::ResendRoutes(rr.family));
                }
            }
            // RFC 4271 §8.2.2 Event 21-28 in the wrong state: FSM Error, subcode by state
            // (RFC 6608).
            (s, _) => {
                let sub = match s {
                    State::OpenSent => 1,
                    State::OpenConfirm => 2,
                    _ => 3,
                };
                self.fail(Notification::new(5, sub), out);
            }
        }
    }

    fn check_open(&self, open: &Open) -> Result<Negotiated, Notification> {
        let remote_as = open.asn();
        let ok_as = match self.cfg.remote_as {
            RemoteAs::Fixed(a) => remote_as == a,
            RemoteAs::Internal => remote_as == self.cfg.local_as,
            RemoteAs::External => remote_as != self.cfg.local_as,
        };
        if !ok_as {
            return Err(Notification::new(2, 2));
        }
        // RFC 4271 §6.2: a hold time of one or two seconds MUST be rejected (the decoder does
        // too; an OPEN built in code reaches here unchecked).
        if matches!(open.hold_time, 1 | 2) {
            return Err(Notification::new(2, 6));
        }
        // RFC 6286 §2.2: on an iBGP session the identifiers must differ.
        if remote_as == self.cfg.local_as && open.bgp_id == self.cfg.router_id {
            return Err(Notification::new(2, 3));
        }
        let four_octet_as = open.has(|c| matches!(c, Capability::FourOctetAs(_)));
        if !four_octet_as && self.cfg.local_as > u32::from(u16::MAX) {
            // Our AS cannot be written in a 2-octet AS_PATH: refuse with the capability we need.
            let mut data = vec![65, 4];
            data.extend_from_slice(&self.cfg.local_as.to_be_bytes());
            return Err(Notification {
                code: 2,
                subcode: 7,
                data,
            });
        }
        let theirs = open.families();
        let families: Vec<AfiSafi> = self
            .cfg
            .families
            .iter()
            .filter(|f| theirs.contains(f))
            .copied()
            .collect();
        if families.is_empty() {
            // RFC 5492 §5: Unsupported Capability, with the capabilities we need.
            let mut data = Vec::new();
            for f in &self.cfg.families {
                data.extend_from_slice(&[1, 4]);
                data.extend_from_slice(&f.afi.to_be_bytes());
                data.extend_from_slice(&[0, f.safi]);
            }
            return Err(Notification {
                code: 2,
                subcode: 7,
                data,
            });
        }
        let (hold_time, keepalive) =
            negotiate_timers(self.cfg.hold_time, self.cfg.keepalive, open.hold_time);
        Ok(Negotiated {
            remote_as,
            remote_id: open.bgp_id,
            hold_time,
            keepalive,
            families,
            ctx: Context { four_octet_as },
            route_refresh: open.has(|c| matches!(c, Capability::RouteRefresh)),
            peer_graceful_restart: open.capabilities.iter().find_map(|c| match c {
                Capability::GracefulRestart(g) => Some(g.clone()),
                _ => None,
            }),
            ipv4_over_ipv6_next_hop: self.cfg.families.contains(&AfiSafi::IPV4_UNICAST)
                && open.has(|c| {
                    matches!(c, Capability::ExtendedNextHop(v)
                        if v.contains(&(AfiSafi::IPV4_UNICAST, 2)))
                }),
        })
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            out.push(Output::Arm(Timer::Hold, secs(n.hold_time)));
        }
    }

    fn arm_keepalive(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated
            && n.keepalive > 0
        {
            out.push(Output::Arm(Timer::Keepalive, secs(n.keepalive)));
        }
    }

    fn arm_retry(&mut self, out: &mut Vec<Output>) {
        out.push(Output::Arm(Timer::ConnectRetry, self.retry));
        self.retry = (self.retry * 2).min(self.cfg.connect_retry_max);
    }

    /// Sends a NOTIFICATION and closes.
    fn fail(&mut self, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::Send(Message::Notification(n.clone())));
        self.close(Down::Sent(n), true, out);
    }

    /// Closes the connection and goes to Idle; with `retry`, a reconnect is scheduled.
    fn close(&mut self, why: Down, retry: bool, out: &mut Vec<Output>) {
        out.push(Output::Disconnect);
        out.push(Output::Cancel(Timer::Hold));
        out.push(Output::Cancel(Timer::Keepalive));
        let was_up = self.negotiated.take().is_some() || self.state >= State::OpenSent;
        if was_up {
            out.push(Output::SessionDown(why));
        }
        self.go(State::Idle, out);
        if retry {
            self.arm_retry(out);
        }
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// The session's (hold time, keepalive interval), seconds, from ours and the peer's OPEN
/// (RFC 4271 §4.2, §10): the smaller hold time; 0 turns both off; otherwise the keepalive is
/// the configured one, or a third of the hold time, kept within 1 ..= hold / 3. A hold time of
/// 1 or 2 (which no OPEN may carry and `check` refuses) counts as 3. Total: no pair of inputs
/// panics or gives a keepalive the hold timer cannot be refreshed by.
pub fn negotiate_timers(ours: u16, keepalive: Option<u16>, theirs: u16) -> (u16, u16) {
    let hold = match ours.min(theirs) {
        0 => return (0, 0),
        h => h.max(3),
    };
    let most = hold / 3;
    (hold, keepalive.unwrap_or(most).clamp(1, most))
}
