//! One BFD session in asynchronous mode (RFC 5880 §6) as a pure state machine: time is passed
//! in (`now`, from any fixed origin), packets in and out are values. The driver calls
//! [`Machine::receive`] for each packet of the session, [`Machine::tick`] when
//! [`Machine::deadline`] comes, and carries out the [`Output`]s.
//!
//! What it does of the RFC: the §6.2 state machine; the §6.8.6 reception rules after the
//! session is selected; transmission (§6.8.7) at the larger of our DesiredMinTxInterval and
//! the peer's RequiredMinRxInterval, jittered to 75–100 % (75–90 % with a multiplier of 1),
//! never while the peer asks for none (RequiredMinRxInterval 0), never in passive mode before
//! the peer speaks, and not while the peer's demand mode is active; the detection time
//! (§6.8.4) from the peer's multiplier and the larger of our RequiredMinRxInterval and its
//! DesiredMinTxInterval; a DesiredMinTxInterval of at least one second while not Up and a
//! Poll Sequence whenever an interval changes, including the switch to the configured rate
//! on reaching Up (§6.8.3); a Final for each Poll at once.

use std::time::Duration;

use super::packet::{ControlPacket, Diag, State};

/// The interval a session sends at while not Up, at the least (RFC 5880 §6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's configuration: a BFDProfile's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The least interval at which we want to send (transmitInterval).
    pub desired_min_tx: Duration,
    /// The least interval at which we can receive (receiveInterval).
    pub required_min_rx: Duration,
    /// Packets missed before the session is declared down (detectMultiplier).
    pub detect_mult: u8,
    /// Send nothing until the peer does (passiveMode).
    pub passive: bool,
}

impl Config {
    /// `tx` and `rx` intervals with multiplier `mult`, active.
    pub fn new(tx: Duration, rx: Duration, mult: u8) -> Self {
        Config {
            desired_min_tx: tx,
            required_min_rx: rx,
            detect_mult: mult.max(1),
            passive: false,
        }
    }
}

impl Default for Config {
    /// MetalLB's (and FRR's) defaults: 300 ms each way, a multiplier of 3.
    fn default() -> Self {
        Config::new(Duration::from_millis(300), Duration::from_millis(300), 3)
    }
}

/// What the driver does for the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send this packet to the peer.
    Send(ControlPacket),
    /// The session's state changed (`diag` says why it left Up).
    StateChanged {
        /// The state before.
        from: State,
        /// The state now.
        to: State,
        /// The local diagnostic now.
        diag: Diag,
    },
}

/// What a session has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Control packets received for the session.
    pub received: u64,
    /// Control packets sent.
    pub sent: u64,
    /// Times the session came Up.
    pub up_events: u64,
    /// Times it went from Up to Down.
    pub down_events: u64,
}

/// One BFD session.
#[derive(Clone, Debug)]
pub struct Machine {
    cfg: Config,
    state: State,
    diag: Diag,
    local_discr: u32,
    remote_discr: u32,
    remote_state: State,
    remote_demand: bool,
    /// The peer's RequiredMinRxInterval (starts at 1 µs, as the RFC says).
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_mult: u8,
    /// The DesiredMinTxInterval we advertise now (at least [`SLOW_TX`] while not Up).
    desired_tx: Duration,
    /// The one the transmit interval uses (a larger advertised one waits for the Final).
    tx_in_use: Duration,
    /// The RequiredMinRxInterval we advertise.
    required_rx: Duration,
    /// The one the detection time uses (a smaller advertised one waits for the Final).
    rx_in_use: Duration,
    /// A Poll Sequence is running.
    polling: bool,
    /// A Final is owed to the peer.
    final_owed: bool,
    last_rx: Option<Duration>,
    next_tx: Duration,
    /// Whether the peer has spoken (passive mode waits for it).
    heard: bool,
    /// Jitter state (deterministic: a 32-bit xorshift seeded with the discriminator).
    rng: u32,
    counters: Counters,
}

impl Machine {
    /// A session in Down with discriminator `local_discr` (not 0, unique on this system),
    /// starting at `now`.
    pub fn new(cfg: Config, local_discr: u32, now: Duration) -> Self {
        Machine {
            cfg,
            state: State::Down,
            diag: Diag::None,
            local_discr: local_discr.max(1),
            remote_discr: 0,
            remote_state: State::Down,
            remote_demand: false,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_mult: 0,
            desired_tx: cfg.desired_min_tx.max(SLOW_TX),
            tx_in_use: cfg.desired_min_tx.max(SLOW_TX),
            required_rx: cfg.required_min_rx,
            rx_in_use: cfg.required_min_rx,
            polling: false,
            final_owed: false,
            last_rx: None,
            next_tx: now,
            heard: false,
            rng: local_discr.max(1),
            counters: Counters::default(),
        }
    }

    /// The session state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The local diagnostic: why the session last left Up.
    pub fn diag(&self) -> Diag {
        self.diag
    }

    /// Our discriminator.
    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    /// The peer's discriminator (0 while unknown).
    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The configuration.
    pub fn config(&self) -> Config {
        self.cfg
    }

    /// The interval packets are sent at now, before jitter.
    pub fn tx_interval(&self) -> Duration {
        self.tx_in_use.max(self.remote_min_rx)
    }

    /// The time without a packet after which the session goes down (0 while nothing was
    /// heard).
    pub fn detection_time(&self) -> Duration {
        self.rx_in_use.max(self.remote_desired_tx) * u32::from(self.remote_mult)
    }

    /// Whether periodic packets go out now (RFC 5880 §6.8.7).
    fn transmitting(&self) -> bool {
        if self.cfg.passive && !self.heard {
            return false;
        }
        if self.remote_min_rx.is_zero() {
            return false;
        }
        // The peer's demand mode is active: it does not want our periodic packets, only a
        // Poll Sequence's (§6.6).
        !(self.remote_demand
            && self.state == State::Up
            && self.remote_state == State::Up
            && !self.polling)
    }

    /// When [`Machine::tick`] must be called next.
    pub fn deadline(&self) -> Duration {
        let mut d = Duration::MAX;
        if self.transmitting() || self.final_owed {
            d = d.min(self.next_tx);
        }
        if let Some(rx) = self.last_rx
            && matches!(self.state, State::Init | State::Up)
        {
            d = d.min(rx + self.detection_time());
        }
        d
    }

    fn jitter(&mut self, interval: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        // 75–100 % of the interval, 75–90 % with a multiplier of 1 (§6.8.7).
        let span = if self.cfg.detect_mult == 1 { 15 } else { 25 };
        let pct = 75 + self.rng % (span + 1);
        interval * pct / 100
    }

    fn packet(&self, poll: bool, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.diag,
            state: self.state,
            poll,
            final_,
            control_independent: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: micros(self.desired_tx),
            required_min_rx: micros(self.required_rx),
            required_min_echo_rx: 0,
        }
    }

    fn send(&mut self, out: &mut Vec<Output>, now: Duration) {
        // A Final answers the Poll on its own; P and F are never set together.
        let (poll, final_) = if self.final_owed {
            (false, true)
        } else {
            (self.polling, false)
        };
        self.final_owed = false;
        out.push(Output::Send(self.packet(poll, final_)));
        self.counters.sent += 1;
        let i = self.tx_interval();
        self.next_tx = now + self.jitter(i);
    }

    fn set_state(&mut self, to: State, diag: Diag, now: Duration, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.diag = diag;
        if to != State::Up {
            self.polling = false;
        }
        if to == State::Up {
            self.counters.up_events += 1;
        }
        if from == State::Up {
            self.counters.down_events += 1;
        }
        out.push(Output::StateChanged { from, to, diag });
        // The peer hears of a change at once, not at the next periodic packet.
        self.next_tx = now;
        // §6.8.3: at least one second while not Up; the configured rate once Up, switched to
        // by a Poll Sequence.
        let desired = if to == State::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW_TX)
        };
        self.change_intervals(desired, self.cfg.required_min_rx, now, out);
    }

    /// Applies new intervals: a Poll Sequence while Up; a smaller transmit interval or a
    /// larger receive interval applies at once, the others after the Final (§6.8.3).
    fn change_intervals(
        &mut self,
        desired_tx: Duration,
        required_rx: Duration,
        now: Duration,
        out: &mut Vec<Output>,
    ) {
        if desired_tx == self.desired_tx && required_rx == self.required_rx {
            return;
        }
        let up = self.state == State::Up;
        if !up || desired_tx < self.tx_in_use {
            self.tx_in_use = desired_tx;
        }
        if !up || required_rx > self.rx_in_use {
            self.rx_in_use = required_rx;
        }
        self.desired_tx = desired_tx;
        self.required_rx = required_rx;
        if up {
            self.polling = true;
            if self.transmitting() {
                self.send(out, now);
            }
        }
    }

    /// New timers (a changed BFDProfile): applied by a Poll Sequence while Up.
    pub fn reconfigure(&mut self, cfg: Config, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        self.cfg = cfg;
        let desired = if self.state == State::Up {
            cfg.desired_min_tx
        } else {
            cfg.desired_min_tx.max(SLOW_TX)
        };
        self.change_intervals(desired, cfg.required_min_rx, now, &mut out);
        out
    }

    /// Takes the session administratively down (on shutdown): the peer is told, and does not
    /// count it as a failure.
    pub fn admin_down(&mut self, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        self.set_state(State::AdminDown, Diag::AdminDown, now, &mut out);
        if self.heard || !self.cfg.passive {
            self.send(&mut out, now);
        }
        out
    }

    /// A packet the driver selected for this session (by Your Discriminator, or by address
    /// while it is 0), already through [`ControlPacket::decode`]'s checks.
    pub fn receive(&mut self, p: &ControlPacket, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        // §6.8.6: Your Discriminator 0 is only valid from a peer that is Down or AdminDown;
        // otherwise it must be ours.
        if p.your_discr == 0 && matches!(p.state, State::Init | State::Up) {
            return out;
        }
        if p.your_discr != 0 && p.your_discr != self.local_discr {
            return out;
        }
        self.counters.received += 1;
        self.heard = true;
        self.last_rx = Some(now);
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx));
        self.remote_desired_tx = Duration::from_micros(u64::from(p.desired_min_tx));
        self.remote_mult = p.detect_mult;
        if p.final_ && self.polling {
            // The Poll Sequence ends: the advertised intervals are now in use.
            self.polling = false;
            self.tx_in_use = self.desired_tx;
            self.rx_in_use = self.required_rx;
        }
        if self.state == State::AdminDown {
            return out;
        }
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.set_state(State::Down, Diag::NeighborDown, now, &mut out);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => {
                    self.set_state(State::Init, Diag::None, now, &mut out)
                }
                (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                    self.set_state(State::Up, Diag::None, now, &mut out)
                }
                (State::Up, State::Down) => {
                    self.set_state(State::Down, Diag::NeighborDown, now, &mut out)
                }
                _ => {}
            }
        }
        if p.poll {
            // A Final at once, whatever the transmit schedule (§6.8.7).
            self.final_owed = true;
            self.send(&mut out, now);
        } else if self.next_tx > now + self.tx_interval() && self.transmitting() {
            // The peer asked for a faster rate than we were sending at.
            self.next_tx = now;
        }
        if self.next_tx <= now && self.transmitting() {
            self.send(&mut out, now);
        }
        out
    }

    /// Time passed: the detection time may have expired, a packet may be due.
    pub fn tick(&mut self, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        if let Some(rx) = self.last_rx
            && matches!(self.state, State::Init | State::Up)
            && now >= rx + self.detection_time()
        {
            self.set_state(State::Down, Diag::Expired, now, &mut out);
            // §6.8.1: the peer's discriminator is forgotten when the detection time passes
            // in silence.
            self.remote_discr = 0;
            self.remote_state = State::Down;
            self.remote_demand = false;
            self.last_rx = None;
        }
        if (self.transmitting() || self.final_owed) && now >= self.next_tx {
            self.send(&mut out, now);
        }
        out
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn machine() -> Machine {
        Machine::new(Config::new(50 * MS, 50 * MS, 3), 0x1111, Duration::ZERO)
    }

    /// A packet from the peer (discriminator 0x2222) in `state`, with 100 ms intervals.
    fn peer(state: State, your: u32) -> ControlPacket {
        ControlPacket {
            diag: Diag::None,
            state,
            poll: false,
            final_: false,
            control_independent: false,
            demand: false,
            detect_mult: 3,
            my_discr: 0x2222,
            your_discr: your,
            desired_min_tx: 100_000,
            required_min_rx: 100_000,
            required_min_echo_rx: 0,
        }
    }

    fn sent(out: &[Output]) -> Vec<ControlPacket> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn changes(out: &[Output]) -> Vec<(State, State, Diag)> {
        out.iter()
            .filter_map(|o| match o {
                Output::StateChanged { from, to, diag } => Some((*from, *to, *diag)),
                _ => None,
            })
            .collect()
    }

    /// Brings `m` Up at `now` (Down → Init → Up), answering the Poll that follows.
    fn up(m: &mut Machine, now: Duration) {
        m.receive(&peer(State::Down, 0), now);
        m.receive(&peer(State::Up, m.local_discr()), now);
        assert_eq!(m.state(), State::Up);
    }

    #[test]
    fn rfc5880_6_8_6_down_goes_init_on_down_then_up_on_init() {
        let mut m = machine();
        let out = m.receive(&peer(State::Down, 0), Duration::ZERO);
        assert_eq!(changes(&out), [(State::Down, State::Init, Diag::None)]);
        assert_eq!(m.remote_discr(), 0x2222);
        let out = m.receive(&peer(State::Init, 0x1111), 10 * MS);
        assert_eq!(changes(&out), [(State::Init, State::Up, Diag::None)]);
        let mut n = machine();
        n.receive(&peer(State::Init, 0x1111), Duration::ZERO);
        assert_eq!(n.state(), State::Up, "Down goes straight Up on Init");
    }

    #[test]
    fn rfc5880_6_8_6_init_goes_up_on_init_or_up_and_waits_on_down() {
        for s in [State::Init, State::Up] {
            let mut m = machine();
            m.receive(&peer(State::Down, 0), Duration::ZERO);
            m.receive(&peer(s, 0x1111), MS);
            assert_eq!(m.state(), State::Up, "{s}");
        }
        let mut m = machine();
        m.receive(&peer(State::Down, 0), Duration::ZERO);
        m.receive(&peer(State::Down, 0), MS);
        assert_eq!(m.state(), State::Init);
    }

    #[test]
    fn rfc5880_6_8_6_up_goes_down_with_diag_3_when_the_peer_says_down_or_admin_down() {
        for s in [State::Down, State::AdminDown] {
            let mut m = machine();
            up(&mut m, Duration::ZERO);
            let out = m.receive(&peer(s, 0x1111), 10 * MS);
            assert_eq!(
                changes(&out),
                [(State::Up, State::Down, Diag::NeighborDown)],
                "{s}"
            );
            assert_eq!(sent(&out).last().map(|p| p.diag), Some(Diag::NeighborDown));
        }
    }

    #[test]
    fn rfc5880_6_8_6_admin_down_discards_every_packet_and_tells_the_peer() {
        let mut m = machine();
        up(&mut m, Duration::ZERO);
        let out = m.admin_down(10 * MS);
        assert_eq!(
            changes(&out),
            [(State::Up, State::AdminDown, Diag::AdminDown)]
        );
        assert_eq!(sent(&out).last().map(|p| p.state), Some(State::AdminDown));
        let out = m.receive(&peer(State::Up, 0x1111), 20 * MS);
        assert!(changes(&out).is_empty());
        assert_eq!(m.state(), State::AdminDown);
    }

    #[test]
    fn rfc5880_6_8_6_a_packet_for_another_session_or_unnumbered_while_up_is_discarded() {
        let mut m = machine();
        assert!(m.receive(&peer(State::Up, 0), Duration::ZERO).is_empty());
        assert!(
            m.receive(&peer(State::Down, 0x9999), Duration::ZERO)
                .is_empty()
        );
        assert_eq!(m.counters().received, 0);
        assert_eq!(m.remote_discr(), 0);
    }

    #[test]
    fn rfc5880_6_8_4_detection_time_expiry_takes_the_session_down_with_diag_1() {
        let mut m = machine();
        up(&mut m, Duration::ZERO);
        // Peer's multiplier 3 × max(our rx 50 ms, its tx 100 ms) = 300 ms.
        assert_eq!(m.detection_time(), 300 * MS);
        assert_eq!(m.deadline().min(300 * MS), m.deadline());
        assert!(changes(&m.tick(299 * MS)).is_empty());
        let out = m.tick(300 * MS);
        assert_eq!(changes(&out), [(State::Up, State::Down, Diag::Expired)]);
        // §6.8.1: the peer's discriminator is forgotten.
        assert_eq!(m.remote_discr(), 0);
        assert_eq!(sent(&out).last().map(|p| p.your_discr), Some(0));
        assert_eq!(m.counters().down_events, 1);
    }

    #[test]
    fn rfc5880_6_8_7_transmit_interval_is_the_larger_rate_jittered_75_to_100_percent() {
        let mut m = machine();
        up(&mut m, Duration::ZERO);
        // The Poll of reaching Up is answered: 50 ms in use, the peer wants 100 ms at least.
        let mut f = peer(State::Up, 0x1111);
        f.final_ = true;
        m.receive(&f, MS);
        assert_eq!(m.tx_interval(), 100 * MS);
        let mut now = MS;
        let mut gaps = Vec::new();
        for _ in 0..200 {
            let next = m.deadline().min(now + 200 * MS);
            let out = m.tick(next);
            if !sent(&out).is_empty() {
                gaps.push(next - now);
                now = next;
            }
            // Keep the session up.
            m.receive(&peer(State::Up, 0x1111), next);
        }
        assert!(gaps.len() > 100);
        for g in &gaps[1..] {
            assert!(*g >= 75 * MS && *g <= 100 * MS, "{g:?}");
        }
        // With a multiplier of 1, at most 90 %.
        let mut one = Machine::new(Config::new(100 * MS, 100 * MS, 1), 7, Duration::ZERO);
        for i in 0..100 {
            one.receive(&peer(State::Init, 7), i * MS);
            let j = one.jitter(100 * MS);
            assert!(j >= 75 * MS && j <= 90 * MS, "{j:?}");
        }
    }

    #[test]
    fn rfc5880_6_8_3_a_session_not_up_sends_once_a_second_at_most() {
        let mut m = machine();
        let out = m.tick(Duration::ZERO);
        let p = sent(&out)[0];
        assert_eq!((p.state, p.desired_min_tx), (State::Down, 1_000_000));
        assert!(m.deadline() >= 750 * MS);
        assert!(sent(&m.tick(700 * MS)).is_empty());
    }

    #[test]
    fn rfc5880_6_8_3_reaching_up_polls_for_the_fast_rate_and_a_final_ends_the_poll() {
        let mut m = machine();
        m.receive(&peer(State::Down, 0), Duration::ZERO);
        let out = m.receive(&peer(State::Init, 0x1111), MS);
        let p = sent(&out).pop().expect("a poll at once");
        assert!(p.poll && !p.final_);
        assert_eq!(p.desired_min_tx, 50_000);
        // Until the Final, packets keep the P bit.
        let mid = m.tick(m.deadline());
        assert!(sent(&mid).iter().all(|p| p.poll));
        let mut f = peer(State::Up, 0x1111);
        f.final_ = true;
        m.receive(&f, 200 * MS);
        let after = m.tick(m.deadline());
        assert!(sent(&after).iter().all(|p| !p.poll));
        // A later change of timers is polled for again, and a slower rate waits for the Final.
        let out = m.reconfigure(Config::new(500 * MS, 50 * MS, 3), 300 * MS);
        let p = sent(&out).pop().expect("a poll");
        assert!(p.poll && p.desired_min_tx == 500_000);
        assert_eq!(m.tx_interval(), 100 * MS, "still the old rate");
        m.receive(&f, 310 * MS);
        assert_eq!(m.tx_interval(), 500 * MS);
    }

    #[test]
    fn rfc5880_6_8_7_a_poll_is_answered_at_once_with_a_final_never_with_both_bits() {
        let mut m = machine();
        up(&mut m, Duration::ZERO);
        let mut p = peer(State::Up, 0x1111);
        p.poll = true;
        let out = m.receive(&p, 5 * MS);
        let answer = sent(&out);
        assert_eq!(answer.len(), 1);
        assert!(answer[0].final_ && !answer[0].poll);
    }

    #[test]
    fn rfc5880_6_8_7_a_remote_min_rx_of_zero_stops_periodic_packets() {
        let mut m = machine();
        up(&mut m, Duration::ZERO);
        let mut p = peer(State::Up, 0x1111);
        p.required_min_rx = 0;
        m.receive(&p, MS);
        for t in 2..50 {
            assert!(sent(&m.tick(t * 10 * MS)).is_empty());
            m.receive(&p, t * 10 * MS);
        }
    }

    #[test]
    fn rfc5880_6_1_passive_mode_sends_nothing_until_the_peer_speaks() {
        let mut cfg = Config::new(50 * MS, 50 * MS, 3);
        cfg.passive = true;
        let mut m = Machine::new(cfg, 5, Duration::ZERO);
        for t in 0..5 {
            assert!(sent(&m.tick(t * SLOW_TX)).is_empty());
        }
        let out = m.receive(&peer(State::Down, 0), 5 * SLOW_TX);
        assert_eq!(sent(&out).len(), 1, "answers once it is spoken to");
    }

    #[test]
    fn rfc5880_6_6_demand_mode_is_never_asked_and_the_peers_stops_our_packets() {
        let mut m = machine();
        let out = m.tick(Duration::ZERO);
        assert!(sent(&out).iter().all(|p| !p.demand));
        up(&mut m, MS);
        let mut p = peer(State::Up, 0x1111);
        p.demand = true;
        p.final_ = true;
        m.receive(&p, 2 * MS);
        p.final_ = false;
        // The peer keeps sending (demand is its wish for our side): we send nothing.
        for t in 1..20 {
            assert!(sent(&m.tick(t * 50 * MS)).is_empty());
            m.receive(&p, t * 50 * MS);
        }
        p.demand = false;
        m.receive(&p, 1000 * MS);
        assert!(!sent(&m.tick(m.deadline())).is_empty());
    }
}
