//! `L2Announcer`: makes the set of addresses this node answers for equal to a desired set.
//!
//! ```text
//!  announce(desired) ─cmd─► supervisor ── owns: wanted set, per-address state, interfaces, timers
//!                              │  publishes Arc<Announced> (swapped whole: withdraw is instant)
//!                              ▼
//!  per interface: ARP socket, IPv6 socket ─► receive task ─► responder::respond ─► reply
//!                              │ claims on probed/owned addresses
//!                              └──────────────► supervisor (conflicts)
//! ```
//!
//! Per address: a newly assigned address (see [`L2Announcer::note_new_addresses`]) is probed
//! first (RFC 5227 ARP probe, DAD solicitation for IPv6) and announced only if nobody answers;
//! any other address (a takeover) is announced at once. Announcing means answering, plus
//! gratuitous ARP (request and reply) or an unsolicited NA with Override, sent at once and then
//! repeated; an optional refresh repeats them forever.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lb_core::announce::{AnnounceError, Announcer, Protocol};
use lb_core::metrics::prometheus_client::encoding::DescriptorEncoder;
use lb_core::metrics::{Kind, family, single};
use lb_core::plan::{Announcement, How, Interfaces};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::iface::{self, DEFAULT_EXCLUDES, Link};
use crate::link::{ETH_P_ARP, ETH_P_IPV6, PacketSocket};
use crate::responder::{self, Announced, Interface, Verdict};
use crate::wire::ndisc::{multicast_mac, solicited_node};
use crate::wire::{MAX_FRAME_LEN, Mac};

/// Probing before the first announcement of a new address.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeConfig {
    /// Probes sent per attempt.
    pub count: u32,
    /// Between probes.
    pub interval: Duration,
    /// Wait after the last probe for an answer.
    pub wait: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            count: 3,
            interval: Duration::from_millis(100),
            wait: Duration::from_millis(300),
        }
    }
}

/// How the layer 2 announcer behaves; [`Config::default`] is what lb-bin runs with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Interface name patterns never used unless an advertisement names them.
    pub excludes: Vec<String>,
    /// How often interfaces are rescanned (appearing, going down, coming back).
    pub rescan: Duration,
    /// Gratuitous rounds after the first one, at `gratuitous_interval`.
    pub gratuitous_repeats: u32,
    /// Between gratuitous rounds.
    pub gratuitous_interval: Duration,
    /// Re-send gratuitous frames for every address this often (MetalLB #2910).
    pub refresh: Option<Duration>,
    /// Probe newly assigned addresses; `None` announces them at once.
    pub probe: Option<ProbeConfig>,
    /// After a conflict, probe again this much later.
    pub conflict_retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            excludes: DEFAULT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
            rescan: Duration::from_secs(1),
            gratuitous_repeats: 3,
            gratuitous_interval: Duration::from_secs(1),
            refresh: None,
            probe: Some(ProbeConfig::default()),
            conflict_retry: Duration::from_secs(30),
        }
    }
}

/// Where an address stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Checking that nobody else uses it.
    Probing,
    /// Answered for, since this time.
    Announcing {
        /// When announcing began.
        since: SystemTime,
    },
    /// Another station answered the probe; retried later.
    Conflict {
        /// The station that answered.
        mac: Mac,
        /// When.
        since: SystemTime,
    },
}

/// One address as the announcer serves it (`/status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressStatus {
    /// The address.
    pub ip: IpAddr,
    /// Where it stands.
    pub state: State,
    /// Interfaces it is answered on now.
    pub interfaces: Vec<String>,
    /// The last foreign station seen claiming it while announced.
    pub last_conflict: Option<(Mac, SystemTime)>,
}

/// Per-address counters, under MetalLB's metric names where they exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpCounters {
    /// `metallb_layer2_requests_received`
    pub requests_received: u64,
    /// `metallb_layer2_responses_sent`
    pub responses_sent: u64,
    /// `metallb_layer2_gratuitous_sent`
    pub gratuitous_sent: u64,
    /// `lb_layer2_conflicts_total`
    pub conflicts: u64,
}

/// The announcer's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per address.
    pub per_ip: BTreeMap<IpAddr, IpCounters>,
    /// Frames dropped as malformed (`lb_layer2_malformed_frames_total`).
    pub malformed_frames: u64,
    /// Frames the kernel refused to send (`lb_layer2_send_errors_total`).
    pub send_errors: u64,
}

impl Counters {
    /// Writes the counters as metrics: MetalLB's per-address ones under MetalLB's names.
    pub fn collect(&self, out: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        type Metric = (&'static str, &'static str, Kind, fn(&IpCounters) -> u64);
        let metrics: [Metric; 4] = [
            (
                "metallb_layer2_requests_received",
                "ARP/NDP requests received for announced addresses",
                Kind::Untyped,
                |c| c.requests_received,
            ),
            (
                "metallb_layer2_responses_sent",
                "ARP/NDP responses sent",
                Kind::Untyped,
                |c| c.responses_sent,
            ),
            (
                "metallb_layer2_gratuitous_sent",
                "gratuitous ARP / unsolicited NA sent",
                Kind::Untyped,
                |c| c.gratuitous_sent,
            ),
            (
                "lb_layer2_conflicts_total",
                "another station seen using an address of ours",
                Kind::Counter,
                |c| c.conflicts,
            ),
        ];
        for (name, help, kind, get) in metrics {
            let series = self
                .per_ip
                .iter()
                .map(|(ip, c)| ([("ip", ip.to_string())], get(c)));
            family(out, name, help, kind, series)?;
        }
        single(
            out,
            "lb_layer2_malformed_frames_total",
            "frames dropped as malformed",
            Kind::Counter,
            self.malformed_frames,
        )?;
        single(
            out,
            "lb_layer2_send_errors_total",
            "frames the kernel refused to send",
            Kind::Counter,
            self.send_errors,
        )
    }
}

impl lb_core::metrics::prometheus_client::collector::Collector for Counters {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.collect(&mut out)
    }
}

/// Something that happened, for logs, status writers and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Probing began.
    Probing(IpAddr),
    /// Answered for, and the first gratuitous round was sent.
    Announcing(IpAddr),
    /// Another station answered a probe for `ip`, or claimed it while announced.
    Conflict {
        /// The address.
        ip: IpAddr,
        /// The other station.
        mac: Mac,
    },
    /// No longer answered for.
    Withdrawn(IpAddr),
    /// An interface came up (or appeared) and answers now.
    InterfaceUp(String),
    /// An interface went down (or vanished).
    InterfaceDown(String),
}

/// Why the announcer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// No raw packet socket: the process lacks CAP_NET_RAW.
    #[error(
        "cannot open a raw packet socket ({0}); the layer 2 announcer needs CAP_NET_RAW (run as root or grant the capability)"
    )]
    Permission(std::io::Error),
}

struct Shared {
    answering: RwLock<Arc<Announced>>,
    probing: RwLock<Arc<HashSet<IpAddr>>>,
    counters: Mutex<Counters>,
    status: Mutex<BTreeMap<IpAddr, AddressStatus>>,
    events: broadcast::Sender<Event>,
}

impl Shared {
    fn count(&self, ip: IpAddr, f: impl FnOnce(&mut IpCounters)) {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        f(c.per_ip.entry(ip).or_default());
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, e: Event) {
        tracing::info!(event = ?e, "layer2");
        let _ = self.events.send(e);
    }
}

enum Command {
    Set(BTreeMap<IpAddr, Interfaces>, oneshot::Sender<()>),
    NoteFresh(Vec<IpAddr>),
    Reannounce,
    Shutdown(oneshot::Sender<()>),
}

/// The layer 2 announcer. Dropping it stops its tasks; `shutdown` also withdraws first.
#[derive(Debug)]
pub struct L2Announcer {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    supervisor: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl L2Announcer {
    /// Starts the announcer (within a tokio runtime). Fails at once without CAP_NET_RAW.
    pub fn start(config: Config) -> Result<L2Announcer, StartError> {
        // Loopback (index 1) always exists: opening a socket on it proves the permission.
        PacketSocket::open(1, ETH_P_ARP).map_err(StartError::Permission)?;
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            answering: RwLock::new(Arc::new(Announced::default())),
            probing: RwLock::new(Arc::new(HashSet::new())),
            counters: Mutex::new(Counters::default()),
            status: Mutex::new(BTreeMap::new()),
            events,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let (claims_tx, claims_rx) = mpsc::channel(1024);
        let sup = Supervisor {
            cfg: config,
            shared: shared.clone(),
            wanted: BTreeMap::new(),
            fresh: HashSet::new(),
            states: BTreeMap::new(),
            ifaces: BTreeMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            claims_tx,
        };
        let supervisor = tokio::spawn(sup.run(rx, claims_rx));
        Ok(L2Announcer {
            shared,
            commands: tx,
            supervisor,
        })
    }

    /// Marks addresses as newly assigned: the next time they are to be announced they are
    /// probed first. Addresses not marked (a takeover from another node) are announced at once.
    pub fn note_new_addresses(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let _ = self
            .commands
            .send(Command::NoteFresh(ips.into_iter().collect()));
    }

    /// Sends the gratuitous frames again, in full rounds, for every address answered now, as on
    /// a takeover. For after a partition heals: clients that were on the other side may have
    /// learned another node's MAC for addresses this one kept announcing.
    pub fn reannounce(&self) {
        let _ = self.commands.send(Command::Reannounce);
    }

    /// Makes the answered set equal to `desired`. Returns once withdrawn addresses are no longer
    /// answered and the first gratuitous round of takeovers is sent.
    pub async fn set(&self, desired: BTreeMap<IpAddr, Interfaces>) -> Result<(), AnnounceError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || AnnounceError::Stopped {
            protocol: Protocol::Layer2,
        };
        self.commands
            .send(Command::Set(desired, tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Events as they happen (a slow receiver misses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// Every announced or probed address and where it stands.
    pub fn status(&self) -> Vec<AddressStatus> {
        let s = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        s.values().cloned().collect()
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.shared.counters().clone()
    }

    /// Withdraws everything, then stops (the task ends; dropping the announcer after is
    /// all that is left).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        self.supervisor.abort();
    }
}

impl Drop for L2Announcer {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

#[async_trait]
impl Announcer for L2Announcer {
    fn protocol(&self) -> Protocol {
        Protocol::Layer2
    }

    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
        let mut set = BTreeMap::new();
        for a in desired {
            let How::Layer2 { interfaces } = &a.how else {
                return Err(AnnounceError::WrongProtocol {
                    protocol: Protocol::Layer2,
                    got: Protocol::of(a),
                    ip: a.ip,
                });
            };
            let scope = match set.remove(&a.ip) {
                Some(old) => Interfaces::union(old, interfaces.clone()),
                None => interfaces.clone(),
            };
            set.insert(a.ip, scope);
        }
        self.set(set).await
    }

    fn note_new_addresses(&self, fresh: &BTreeSet<IpAddr>) {
        L2Announcer::note_new_addresses(self, fresh.iter().copied());
    }

    fn reannounce(&self) {
        L2Announcer::reannounce(self);
    }

    fn collect_metrics(&self, out: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        self.counters().collect(out)
    }

    async fn shutdown(&self) {
        L2Announcer::shutdown(self).await;
    }
}

// ---- supervisor --------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum AddrState {
    Probing,
    Active { since: SystemTime },
    Conflict { mac: Mac, since: SystemTime },
}

#[derive(Clone, Copy, Debug)]
enum Job {
    Gratuitous { ip: IpAddr, remaining: u32 },
    ProbeRound { ip: IpAddr, round: u32 },
    ProbeDone { ip: IpAddr },
    Retry { ip: IpAddr },
    Refresh,
}

struct Claim {
    ip: IpAddr,
    mac: Mac,
}

struct OpenIface {
    info: Interface,
    arp: Arc<PacketSocket>,
    ip6: Arc<PacketSocket>,
    tasks: Vec<JoinHandle<()>>,
    joined: BTreeSet<Mac>,
    /// Receiving every multicast frame instead of the groups in `joined`.
    all_multicast: bool,
}

impl Drop for OpenIface {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Supervisor {
    cfg: Config,
    shared: Arc<Shared>,
    wanted: BTreeMap<IpAddr, Interfaces>,
    fresh: HashSet<IpAddr>,
    states: BTreeMap<IpAddr, AddrState>,
    ifaces: BTreeMap<String, OpenIface>,
    timers: BTreeMap<(Instant, u64), Job>,
    seq: u64,
    claims_tx: mpsc::Sender<Claim>,
}

impl Supervisor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut claims: mpsc::Receiver<Claim>,
    ) {
        self.rescan();
        let mut rescan = tokio::time::interval(self.cfg.rescan);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if let Some(every) = self.cfg.refresh {
            self.schedule(every, Job::Refresh);
        }
        loop {
            let next = self.timers.keys().next().map(|(at, _)| *at);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Set(desired, done)) => {
                        self.set(desired);
                        let _ = done.send(());
                    }
                    Some(Command::NoteFresh(ips)) => self.fresh.extend(ips),
                    Some(Command::Reannounce) => {
                        for ip in self.active() {
                            self.run_job(Job::Gratuitous {
                                ip,
                                remaining: self.cfg.gratuitous_repeats,
                            });
                        }
                    }
                    Some(Command::Shutdown(done)) => {
                        self.set(BTreeMap::new());
                        self.ifaces.clear();
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some(c) = claims.recv() => self.on_claim(c),
                _ = rescan.tick() => self.rescan(),
                _ = sleep_until(next) => self.fire_due(),
            }
        }
    }

    fn schedule(&mut self, after: Duration, job: Job) {
        self.seq += 1;
        self.timers.insert((Instant::now() + after, self.seq), job);
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.run_job(job);
        }
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Gratuitous { ip, remaining } => {
                if matches!(self.states.get(&ip), Some(AddrState::Active { .. })) {
                    self.gratuitous(ip);
                    if remaining > 0 {
                        self.schedule(
                            self.cfg.gratuitous_interval,
                            Job::Gratuitous {
                                ip,
                                remaining: remaining - 1,
                            },
                        );
                    }
                }
            }
            Job::ProbeRound { ip, round } => {
                if self.states.get(&ip) != Some(&AddrState::Probing) {
                    return;
                }
                let mut buf = [0u8; MAX_FRAME_LEN];
                for o in self.ifaces_for(ip) {
                    let n = responder::probe_frame(&o.info, ip, &mut buf);
                    if o.socket_for(ip).send(&buf[..n]).is_err() {
                        self.shared.counters().send_errors += 1;
                    }
                }
                let probe = self.cfg.probe.clone().unwrap_or_default();
                if round + 1 < probe.count {
                    self.schedule(
                        probe.interval,
                        Job::ProbeRound {
                            ip,
                            round: round + 1,
                        },
                    );
                } else {
                    self.schedule(probe.wait, Job::ProbeDone { ip });
                }
            }
            Job::ProbeDone { ip } => {
                if self.states.get(&ip) == Some(&AddrState::Probing) {
                    self.activate(ip);
                }
            }
            Job::Retry { ip } => {
                if matches!(self.states.get(&ip), Some(AddrState::Conflict { .. })) {
                    self.start_probe(ip);
                }
            }
            Job::Refresh => {
                for ip in self.active() {
                    self.gratuitous(ip);
                }
                if let Some(every) = self.cfg.refresh {
                    self.schedule(every, Job::Refresh);
                }
            }
        }
    }

    fn set(&mut self, desired: BTreeMap<IpAddr, Interfaces>) {
        let gone: Vec<IpAddr> = self
            .wanted
            .keys()
            .filter(|ip| !desired.contains_key(ip))
            .copied()
            .collect();
        for ip in gone {
            self.wanted.remove(&ip);
            self.states.remove(&ip);
            // No stale series for an address this node no longer has (MetalLB #1342).
            self.shared.counters().per_ip.remove(&ip);
            self.shared.emit(Event::Withdrawn(ip));
        }
        let mut new = Vec::new();
        let mut widened = Vec::new();
        for (ip, scope) in desired {
            match self.wanted.entry(ip) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(scope);
                    new.push(ip);
                }
                std::collections::btree_map::Entry::Occupied(mut e) if *e.get() != scope => {
                    e.insert(scope);
                    widened.push(ip);
                }
                std::collections::btree_map::Entry::Occupied(_) => {}
            }
        }
        // Interfaces named by the new set may have been excluded by pattern until now.
        self.rescan();
        // A takeover of many addresses publishes once and then announces each: O(addresses),
        // the first gratuitous frame goes out as soon as the table is published. Withdrawn and
        // widened addresses are in that same publication (or in one of their own when nothing
        // is new).
        let (probe, take): (Vec<IpAddr>, Vec<IpAddr>) = new
            .into_iter()
            .partition(|ip| self.fresh.remove(ip) && self.cfg.probe.is_some());
        if probe.is_empty() && take.is_empty() {
            self.publish();
        }
        self.start_probes(&probe);
        self.activate_all(&take);
        for ip in widened {
            if matches!(self.states.get(&ip), Some(AddrState::Active { .. })) {
                self.gratuitous(ip);
            }
        }
        self.write_status();
    }

    fn start_probe(&mut self, ip: IpAddr) {
        self.start_probes(&[ip]);
    }

    /// Starts probing `ips`: one publication for all of them.
    fn start_probes(&mut self, ips: &[IpAddr]) {
        if ips.is_empty() {
            return;
        }
        for ip in ips {
            self.states.insert(*ip, AddrState::Probing);
        }
        self.publish();
        for ip in ips {
            self.shared.emit(Event::Probing(*ip));
            self.run_job(Job::ProbeRound { ip: *ip, round: 0 });
        }
        self.write_status();
    }

    fn activate(&mut self, ip: IpAddr) {
        self.activate_all(&[ip]);
    }

    /// Answers for `ips` from now on: one publication of the table for all of them, then each
    /// one's gratuitous frames in turn.
    fn activate_all(&mut self, ips: &[IpAddr]) {
        if ips.is_empty() {
            return;
        }
        // Publishing costs the whole table: a few hundred addresses first, so their frames
        // leave within a millisecond or so, then the rest in one more publication.
        if ips.len() > Self::FIRST_BATCH * 2 {
            let (first, rest) = ips.split_at(Self::FIRST_BATCH);
            self.activate_batch(first);
            self.activate_batch(rest);
        } else {
            self.activate_batch(ips);
        }
    }

    /// [`Self::activate_all`] in one publication.
    fn activate_batch(&mut self, ips: &[IpAddr]) {
        let since = SystemTime::now();
        for ip in ips {
            self.states.insert(*ip, AddrState::Active { since });
        }
        self.publish();
        for ip in ips {
            self.gratuitous(*ip);
            if self.cfg.gratuitous_repeats > 0 {
                self.schedule(
                    self.cfg.gratuitous_interval,
                    Job::Gratuitous {
                        ip: *ip,
                        remaining: self.cfg.gratuitous_repeats - 1,
                    },
                );
            }
            self.shared.emit(Event::Announcing(*ip));
        }
        self.write_status();
    }

    fn on_claim(&mut self, c: Claim) {
        match self.states.get(&c.ip) {
            Some(AddrState::Probing) => {
                let since = SystemTime::now();
                self.states
                    .insert(c.ip, AddrState::Conflict { mac: c.mac, since });
                self.shared.count(c.ip, |k| k.conflicts += 1);
                self.publish();
                self.schedule(self.cfg.conflict_retry, Job::Retry { ip: c.ip });
                self.shared.emit(Event::Conflict {
                    ip: c.ip,
                    mac: c.mac,
                });
            }
            Some(AddrState::Active { .. }) => {
                let mut s = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(st) = s.get_mut(&c.ip) {
                    st.last_conflict = Some((c.mac, SystemTime::now()));
                }
                drop(s);
                self.shared.emit(Event::Conflict {
                    ip: c.ip,
                    mac: c.mac,
                });
            }
            _ => {}
        }
        self.write_status();
    }

    /// The addresses answered for now.
    fn active(&self) -> Vec<IpAddr> {
        self.states
            .iter()
            .filter(|(_, s)| matches!(s, AddrState::Active { .. }))
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Sends the announcement frames for `ip` on every interface it is answered on.
    fn gratuitous(&self, ip: IpAddr) {
        let mut sent = 0u64;
        let mut errors = 0u64;
        for o in self.ifaces_for(ip) {
            responder::announcement_frames(&o.info, ip, |f| match o.socket_for(ip).send(f) {
                Ok(()) => sent += 1,
                Err(_) => errors += 1,
            });
        }
        self.shared.count(ip, |c| c.gratuitous_sent += sent);
        self.shared.counters().send_errors += errors;
    }

    fn ifaces_for(&self, ip: IpAddr) -> impl Iterator<Item = &OpenIface> {
        let scope = self.wanted.get(&ip);
        self.ifaces
            .values()
            .filter(move |o| scope.is_some_and(|s| s.includes(&o.info.name)))
    }

    /// A takeover announces this many addresses before publishing the rest.
    const FIRST_BATCH: usize = 256;

    /// Solicited-node groups joined one by one up to this many per interface.
    const ALL_MULTICAST_FROM: usize = 256;

    /// Publishes what the receive tasks answer for and watch, and the multicast groups.
    fn publish(&mut self) {
        let mut answering = Announced::default();
        let mut probing = HashSet::new();
        for (ip, state) in &self.states {
            let Some(scope) = self.wanted.get(ip) else {
                continue;
            };
            match state {
                AddrState::Active { .. } => answering.insert(*ip, scope.clone()),
                AddrState::Probing => {
                    probing.insert(*ip);
                }
                AddrState::Conflict { .. } => {}
            }
        }
        *self
            .shared
            .answering
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(answering);
        *self
            .shared
            .probing
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(probing);
        self.sync_groups();
    }

    /// Joins the solicited-node group of every IPv6 address answered or probed on an
    /// interface, and leaves the others.
    fn sync_groups(&mut self) {
        for (name, o) in self.ifaces.iter_mut() {
            let want: BTreeSet<Mac> = self
                .states
                .iter()
                .filter(|(_, s)| !matches!(s, AddrState::Conflict { .. }))
                .filter_map(|(ip, _)| match ip {
                    IpAddr::V6(a) if self.wanted.get(ip).is_some_and(|s| s.includes(name)) => {
                        Some(multicast_mac(&solicited_node(a)))
                    }
                    _ => None,
                })
                .collect();
            // Thousands of groups (a takeover of thousands of IPv6 addresses) would cost
            // thousands of joins, each searching the kernel's lists: past `ALL_MULTICAST_FROM`
            // the socket takes every multicast frame instead (the responder still answers only
            // for its own targets), and goes back to groups below half of it.
            let many = want.len() > Self::ALL_MULTICAST_FROM
                || (o.all_multicast && want.len() > Self::ALL_MULTICAST_FROM / 2);
            if many && !o.all_multicast {
                match o.ip6.all_multicast(true) {
                    Ok(()) => o.all_multicast = true,
                    Err(e) => tracing::warn!(interface = %name, %e, "receiving all multicast"),
                }
            }
            let want = if o.all_multicast && many {
                BTreeSet::new()
            } else {
                want
            };
            for mac in want.difference(&o.joined.clone()) {
                if let Err(e) = o.ip6.join(*mac) {
                    tracing::warn!(interface = %name, %e, "joining a solicited-node group");
                } else {
                    o.joined.insert(*mac);
                }
            }
            for mac in o.joined.clone().difference(&want) {
                let _ = o.ip6.leave(*mac);
                o.joined.remove(mac);
            }
            if o.all_multicast && !many && o.ip6.all_multicast(false).is_ok() {
                o.all_multicast = false;
            }
        }
    }

    /// Opens interfaces that became usable, closes those that went away or down; a reopened
    /// interface gets a gratuitous round for what it answers.
    fn rescan(&mut self) {
        let named: BTreeSet<&str> = self
            .wanted
            .values()
            .flat_map(|s| match s {
                Interfaces::All => Vec::new(),
                Interfaces::Only(set) => set.iter().map(String::as_str).collect(),
            })
            .collect();
        let links: BTreeMap<String, Link> = iface::scan()
            .into_iter()
            .filter(|l| {
                l.usable(&self.cfg.excludes, named.contains(l.name.as_str()))
                    .is_ok()
            })
            .map(|l| (l.name.clone(), l))
            .collect();
        let stale: Vec<String> = self
            .ifaces
            .iter()
            .filter(|(name, o)| {
                links
                    .get(*name)
                    .is_none_or(|l| l.index != o.info.index || l.mac != o.info.mac)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.ifaces.remove(&name);
            self.shared.emit(Event::InterfaceDown(name));
        }
        let mut opened = Vec::new();
        for (name, l) in links {
            if self.ifaces.contains_key(&name) {
                continue;
            }
            let info = Interface {
                index: l.index,
                name: name.clone(),
                mac: l.mac,
                link_local: l.link_local,
            };
            match self.open(info) {
                Ok(o) => {
                    self.ifaces.insert(name.clone(), o);
                    opened.push(name);
                }
                Err(e) => tracing::warn!(interface = %name, %e, "cannot open packet sockets"),
            }
        }
        if opened.is_empty() {
            return;
        }
        self.sync_groups();
        for name in opened {
            self.shared.emit(Event::InterfaceUp(name.clone()));
            let active: Vec<IpAddr> = self
                .states
                .iter()
                .filter(|(ip, s)| {
                    matches!(s, AddrState::Active { .. })
                        && self.wanted.get(*ip).is_some_and(|sc| sc.includes(&name))
                })
                .map(|(ip, _)| *ip)
                .collect();
            if let Some(o) = self.ifaces.get(&name) {
                for ip in active {
                    let mut sent = 0;
                    responder::announcement_frames(&o.info, ip, |f| {
                        if o.socket_for(ip).send(f).is_ok() {
                            sent += 1;
                        }
                    });
                    self.shared.count(ip, |c| c.gratuitous_sent += sent);
                }
            }
        }
        self.write_status();
    }

    fn open(&self, info: Interface) -> std::io::Result<OpenIface> {
        let arp = Arc::new(PacketSocket::open(info.index, ETH_P_ARP)?);
        let ip6 = Arc::new(PacketSocket::open(info.index, ETH_P_IPV6)?);
        let tasks = [&arp, &ip6]
            .into_iter()
            .map(|s| {
                tokio::spawn(receive(
                    s.clone(),
                    info.clone(),
                    self.shared.clone(),
                    self.claims_tx.clone(),
                ))
            })
            .collect();
        Ok(OpenIface {
            info,
            arp,
            ip6,
            tasks,
            joined: BTreeSet::new(),
            all_multicast: false,
        })
    }

    fn write_status(&self) {
        let mut out = BTreeMap::new();
        let old = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (ip, st) in &self.states {
            let state = match st {
                AddrState::Probing => State::Probing,
                AddrState::Active { since } => State::Announcing { since: *since },
                AddrState::Conflict { mac, since } => State::Conflict {
                    mac: *mac,
                    since: *since,
                },
            };
            let interfaces = match st {
                AddrState::Active { .. } => {
                    self.ifaces_for(*ip).map(|o| o.info.name.clone()).collect()
                }
                _ => Vec::new(),
            };
            out.insert(
                *ip,
                AddressStatus {
                    ip: *ip,
                    state,
                    interfaces,
                    last_conflict: old.get(ip).and_then(|s| s.last_conflict),
                },
            );
        }
        *self.shared.status.lock().unwrap_or_else(|e| e.into_inner()) = out;
    }
}

impl OpenIface {
    fn socket_for(&self, ip: IpAddr) -> &PacketSocket {
        match ip {
            IpAddr::V4(_) => &self.arp,
            IpAddr::V6(_) => &self.ip6,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Receives frames on one socket and answers them.
async fn receive(
    sock: Arc<PacketSocket>,
    iface: Interface,
    shared: Arc<Shared>,
    claims: mpsc::Sender<Claim>,
) {
    let mut buf = vec![0u8; 9216];
    let mut out = [0u8; MAX_FRAME_LEN];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // The interface went away: the next rescan closes this task.
                tracing::debug!(interface = %iface.name, %e, "receive");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let frame = &buf[..n];
        let answering = shared
            .answering
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match responder::respond(&answering, &iface, frame, &mut out) {
            Verdict::Reply { ip, len } => {
                let sent = sock.send(&out[..len]).is_ok();
                shared.count(ip, |c| {
                    c.requests_received += 1;
                    c.responses_sent += u64::from(sent);
                });
                if !sent {
                    shared.counters().send_errors += 1;
                }
            }
            Verdict::Conflict { ip, mac, len } => {
                if len > 0 && sock.send(&out[..len]).is_err() {
                    shared.counters().send_errors += 1;
                }
                shared.count(ip, |c| c.conflicts += 1);
                let _ = claims.try_send(Claim { ip, mac });
            }
            Verdict::Malformed(e) => {
                tracing::debug!(interface = %iface.name, %e, "malformed frame");
                shared.counters().malformed_frames += 1;
            }
            Verdict::Ignore(_) => {
                let probing = shared
                    .probing
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if !probing.is_empty()
                    && let Some((ip, mac)) = responder::claim(&iface, frame)
                    && probing.contains(&ip)
                {
                    let _ = claims.try_send(Claim { ip, mac });
                }
            }
        }
    }
}
