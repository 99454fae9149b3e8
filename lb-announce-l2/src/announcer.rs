//! `L2Announcer`: makes the set of addresses this node answers for equal to a desired set.
//!
//! ```text
//!  announce(desired) ─cmd─► supervisor ── owns: wanted set, per-address state, interfaces, timers
//!                              │  changes the shared Announced table in place, address by
//!                              │  address (a change costs what it changes; withdraw is instant)
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lb_core::announce::{AnnounceError, Announcer, Change, Protocol};
use lb_core::metrics::prometheus_client::encoding::DescriptorEncoder;
use lb_core::metrics::{Kind, family, single};
use lb_core::objects::ServiceKey;
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
    /// Changed in place, address by address: a change costs what it changes. Receive tasks
    /// hold the read lock only while they decide one frame.
    answering: RwLock<Announced>,
    probing: RwLock<HashSet<IpAddr>>,
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
    Update(Vec<(IpAddr, Option<Interfaces>)>, oneshot::Sender<()>),
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
    /// What the `Announcer` side was handed, by address and service: an address several
    /// services share is answered on the union of their interfaces.
    scopes: Mutex<Scopes>,
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
            answering: RwLock::new(Announced::default()),
            probing: RwLock::new(HashSet::new()),
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
            grouped: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            claims_tx,
        };
        let supervisor = tokio::spawn(sup.run(rx, claims_rx));
        Ok(L2Announcer {
            shared,
            commands: tx,
            supervisor,
            scopes: Mutex::new(Scopes::default()),
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

    /// Changes the answered set address by address: `Some(scope)` answers for the address on
    /// those interfaces (announcing it if it is new), `None` withdraws it; the others stay as
    /// they are. What this costs grows with the change, not with the set. Returns as
    /// [`L2Announcer::set`] does.
    pub async fn update(
        &self,
        changes: Vec<(IpAddr, Option<Interfaces>)>,
    ) -> Result<(), AnnounceError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || AnnounceError::Stopped {
            protocol: Protocol::Layer2,
        };
        self.commands
            .send(Command::Update(changes, tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    fn scopes(&self) -> std::sync::MutexGuard<'_, Scopes> {
        self.scopes.lock().unwrap_or_else(|e| e.into_inner())
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
        let set = self.scopes().whole(desired)?;
        self.set(set).await
    }

    /// Touches only the addresses of the change: the supervisor answers for them anew (or no
    /// longer), and the rest of the table stays as it is.
    async fn change(&self, change: Change<'_>) -> Result<(), AnnounceError> {
        let changes = self.scopes().change(change.withdrawn, change.added)?;
        self.update(changes).await
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

/// The interfaces of a layer 2 announcement; an error for any other.
fn layer2(a: &Announcement) -> Result<&Interfaces, AnnounceError> {
    match &a.how {
        How::Layer2 { interfaces } => Ok(interfaces),
        How::Bgp { .. } => Err(AnnounceError::WrongProtocol {
            protocol: Protocol::Layer2,
            got: Protocol::of(a),
            ip: a.ip,
        }),
    }
}

/// What the layer 2 announcements handed over ask for, by address and service: an address
/// several services share is answered on the union of their interfaces.
#[derive(Debug, Default)]
struct Scopes(BTreeMap<IpAddr, BTreeMap<ServiceKey, Interfaces>>);

impl Scopes {
    /// Takes `desired` as the whole set; returns each address's interfaces.
    fn whole(
        &mut self,
        desired: &[Announcement],
    ) -> Result<BTreeMap<IpAddr, Interfaces>, AnnounceError> {
        let mut by_ip: BTreeMap<IpAddr, BTreeMap<ServiceKey, Interfaces>> = BTreeMap::new();
        for a in desired {
            by_ip
                .entry(a.ip)
                .or_default()
                .insert(a.service.clone(), layer2(a)?.clone());
        }
        self.0 = by_ip;
        Ok(self
            .0
            .iter()
            .filter_map(|(ip, s)| Some((*ip, Self::union(s)?)))
            .collect())
    }

    /// Takes a change; returns the interfaces of each address it touched (`None`: no longer
    /// announced). Nothing changes when an announcement is not layer 2.
    fn change(
        &mut self,
        withdrawn: &[Announcement],
        added: &[Announcement],
    ) -> Result<Vec<(IpAddr, Option<Interfaces>)>, AnnounceError> {
        for a in withdrawn.iter().chain(added) {
            layer2(a)?;
        }
        let mut touched = BTreeSet::new();
        for a in withdrawn {
            if let Some(s) = self.0.get_mut(&a.ip) {
                s.remove(&a.service);
                if s.is_empty() {
                    self.0.remove(&a.ip);
                }
            }
            touched.insert(a.ip);
        }
        for a in added {
            self.0
                .entry(a.ip)
                .or_default()
                .insert(a.service.clone(), layer2(a)?.clone());
            touched.insert(a.ip);
        }
        Ok(touched
            .into_iter()
            .map(|ip| (ip, self.0.get(&ip).and_then(Self::union)))
            .collect())
    }

    /// The interfaces an address is answered on: the union of its services' (none: no
    /// service).
    fn union(by_service: &BTreeMap<ServiceKey, Interfaces>) -> Option<Interfaces> {
        by_service.values().cloned().reduce(Interfaces::union)
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
    /// The solicited-node groups this interface should be in, with how many answered or
    /// probed addresses need each.
    groups: HashMap<Mac, usize>,
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
    /// The interfaces (by index) each IPv6 address counts in the groups of (see
    /// [`OpenIface::groups`]).
    grouped: HashMap<IpAddr, Vec<u32>>,
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
                    Some(Command::Update(changes, done)) => {
                        self.update(changes, false);
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

    /// Makes the answered set exactly `desired`.
    fn set(&mut self, desired: BTreeMap<IpAddr, Interfaces>) {
        let mut changes: Vec<(IpAddr, Option<Interfaces>)> = self
            .wanted
            .keys()
            .filter(|ip| !desired.contains_key(ip))
            .map(|ip| (*ip, None))
            .collect();
        changes.extend(desired.into_iter().map(|(ip, s)| (ip, Some(s))));
        self.update(changes, true);
    }

    /// Answers for each address of `changes` on its interfaces from now on, or no longer
    /// (`None`); every other address stays as it is. Interfaces are scanned again when
    /// `rescan` says so or when a scope names one that is not open.
    fn update(&mut self, changes: Vec<(IpAddr, Option<Interfaces>)>, rescan: bool) {
        let mut gone = Vec::new();
        let mut new = Vec::new();
        let mut widened = Vec::new();
        let mut names_closed = false;
        for (ip, scope) in changes {
            let Some(scope) = scope else {
                if self.wanted.remove(&ip).is_some() {
                    self.states.remove(&ip);
                    // No stale series for an address this node no longer has (MetalLB #1342).
                    self.shared.counters().per_ip.remove(&ip);
                    self.shared.emit(Event::Withdrawn(ip));
                    gone.push(ip);
                }
                continue;
            };
            if !rescan && let Interfaces::Only(names) = &scope {
                names_closed |= names.iter().any(|n| !self.ifaces.contains_key(n));
            }
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
        if rescan || names_closed {
            self.rescan();
        }
        // A takeover of many addresses puts them in the table and then announces each:
        // O(addresses), the first gratuitous frame goes out as soon as its batch is in the
        // table. Withdrawn and widened addresses change in the table at once.
        let (probe, take): (Vec<IpAddr>, Vec<IpAddr>) = new
            .into_iter()
            .partition(|ip| self.fresh.remove(ip) && self.cfg.probe.is_some());
        gone.extend(&widened);
        self.publish(&gone);
        self.start_probes(&probe);
        self.activate_all(&take);
        for ip in widened {
            if matches!(self.states.get(&ip), Some(AddrState::Active { .. })) {
                self.gratuitous(ip);
            }
        }
        self.write_status(&gone);
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
        self.publish(ips);
        for ip in ips {
            self.shared.emit(Event::Probing(*ip));
            self.run_job(Job::ProbeRound { ip: *ip, round: 0 });
        }
        self.write_status(ips);
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
        // A few hundred addresses first, so that their frames leave within a millisecond or
        // so, then the rest.
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
        self.publish(ips);
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
        self.write_status(ips);
    }

    fn on_claim(&mut self, c: Claim) {
        match self.states.get(&c.ip) {
            Some(AddrState::Probing) => {
                let since = SystemTime::now();
                self.states
                    .insert(c.ip, AddrState::Conflict { mac: c.mac, since });
                self.shared.count(c.ip, |k| k.conflicts += 1);
                self.publish(&[c.ip]);
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
        self.write_status(&[c.ip]);
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

    /// Puts `ips` in the tables the receive tasks answer from and watch as their state and
    /// scope say (or takes them out), and counts them in their interfaces' solicited-node
    /// groups (joining and leaving the groups whose count went to or from zero): only these
    /// addresses are touched, each looked up once.
    fn publish(&mut self, ips: &[IpAddr]) {
        if ips.is_empty() {
            return;
        }
        let Supervisor {
            shared,
            states,
            wanted,
            ifaces,
            grouped,
            ..
        } = self;
        let mut touched: HashMap<u32, Vec<Mac>> = HashMap::new();
        {
            let mut answering = shared.answering.write().unwrap_or_else(|e| e.into_inner());
            let mut probing = shared.probing.write().unwrap_or_else(|e| e.into_inner());
            answering.reserve(ips.len());
            for ip in ips {
                // The interfaces it is answered or probed on: what its groups follow.
                let on = match (states.get(ip), wanted.get(ip)) {
                    (Some(AddrState::Active { .. }), Some(scope)) => {
                        answering.set(*ip, scope.clone());
                        probing.remove(ip);
                        Some(scope)
                    }
                    (Some(AddrState::Probing), Some(scope)) => {
                        answering.remove(*ip);
                        probing.insert(*ip);
                        Some(scope)
                    }
                    _ => {
                        answering.remove(*ip);
                        probing.remove(ip);
                        None
                    }
                };
                if let IpAddr::V6(a) = ip {
                    regroup(ifaces, grouped, &mut touched, *a, on);
                }
            }
        }
        for (index, macs) in touched {
            if let Some(o) = ifaces.values_mut().find(|o| o.info.index == index) {
                o.sync_groups(Some(&macs));
            }
        }
    }

    /// Counts every address in the groups again (the interfaces changed), and joins and
    /// leaves to match.
    fn regroup_all(&mut self) {
        self.grouped.clear();
        for o in self.ifaces.values_mut() {
            o.groups.clear();
        }
        let ips: Vec<IpAddr> = self
            .states
            .keys()
            .filter(|ip| ip.is_ipv6())
            .copied()
            .collect();
        self.publish(&ips);
        for o in self.ifaces.values_mut() {
            o.sync_groups(None);
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
        self.regroup_all();
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
        self.write_status_all();
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
            groups: HashMap::new(),
        })
    }

    /// Writes the status of `ips` (and only theirs) where [`L2Announcer::status`] reads it.
    fn write_status(&self, ips: &[IpAddr]) {
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        for ip in ips {
            match self.status_of(*ip, status.get(ip)) {
                Some(st) => status.insert(*ip, st),
                None => status.remove(ip),
            };
        }
    }

    /// Writes the status of every address (the interfaces changed).
    fn write_status_all(&self) {
        let mut status = self.shared.status.lock().unwrap_or_else(|e| e.into_inner());
        let out = self
            .states
            .keys()
            .filter_map(|ip| Some((*ip, self.status_of(*ip, status.get(ip))?)))
            .collect();
        *status = out;
    }

    /// Where `ip` stands now (`old`: its last status, for the last conflict seen).
    fn status_of(&self, ip: IpAddr, old: Option<&AddressStatus>) -> Option<AddressStatus> {
        let st = self.states.get(&ip)?;
        let state = match st {
            AddrState::Probing => State::Probing,
            AddrState::Active { since } => State::Announcing { since: *since },
            AddrState::Conflict { mac, since } => State::Conflict {
                mac: *mac,
                since: *since,
            },
        };
        let interfaces = match st {
            AddrState::Active { .. } => self.ifaces_for(ip).map(|o| o.info.name.clone()).collect(),
            _ => Vec::new(),
        };
        Some(AddressStatus {
            ip,
            state,
            interfaces,
            last_conflict: old.and_then(|s| s.last_conflict),
        })
    }
}

/// Counts IPv6 address `a` in the solicited-node groups of the interfaces of `on` (none: of
/// none), and out of those it counted in before; notes in `touched` the groups whose
/// interface must check its membership.
fn regroup(
    ifaces: &mut BTreeMap<String, OpenIface>,
    grouped: &mut HashMap<IpAddr, Vec<u32>>,
    touched: &mut HashMap<u32, Vec<Mac>>,
    a: std::net::Ipv6Addr,
    on: Option<&Interfaces>,
) {
    let ip = IpAddr::V6(a);
    let now: Vec<u32> = match on {
        Some(scope) => ifaces
            .values()
            .filter(|o| scope.includes(&o.info.name))
            .map(|o| o.info.index)
            .collect(),
        None => Vec::new(),
    };
    let before = grouped.remove(&ip).unwrap_or_default();
    if now != before {
        let mac = multicast_mac(&solicited_node(&a));
        let mut count = |index: u32, up: bool| {
            if let Some(o) = ifaces.values_mut().find(|o| o.info.index == index) {
                if up {
                    *o.groups.entry(mac).or_default() += 1;
                } else if let Some(n) = o.groups.get_mut(&mac) {
                    *n -= 1;
                    if *n == 0 {
                        o.groups.remove(&mac);
                    }
                }
            }
            touched.entry(index).or_default().push(mac);
        };
        for index in before.iter().filter(|i| !now.contains(i)) {
            count(*index, false);
        }
        for index in now.iter().filter(|i| !before.contains(i)) {
            count(*index, true);
        }
    }
    if !now.is_empty() {
        grouped.insert(ip, now);
    }
}

impl OpenIface {
    /// Joins and leaves solicited-node groups to match [`OpenIface::groups`]: for the groups
    /// in `changed` alone, or for all of them (`None`). Thousands of groups (a takeover of
    /// thousands of IPv6 addresses) would cost thousands of joins, each searching the kernel's
    /// lists: past `ALL_MULTICAST_FROM` the socket takes every multicast frame instead (the
    /// responder still answers only for its own targets), and goes back to groups below half
    /// of it.
    fn sync_groups(&mut self, changed: Option<&[Mac]>) {
        let name = self.info.name.clone();
        let n = self.groups.len();
        let from = Supervisor::ALL_MULTICAST_FROM;
        let many = n > from || (self.all_multicast && n > from / 2);
        // Crossing the bound changes every group: all of them are reconciled.
        let changed = changed.filter(|_| many == self.all_multicast);
        if many && !self.all_multicast {
            match self.ip6.all_multicast(true) {
                Ok(()) => self.all_multicast = true,
                Err(e) => tracing::warn!(interface = %name, %e, "receiving all multicast"),
            }
        }
        let in_groups = !(self.all_multicast && many);
        let want = |mac: &Mac| in_groups && self.groups.contains_key(mac);
        let macs: Vec<Mac> = match changed {
            Some(c) => c.to_vec(),
            None => self.groups.keys().chain(&self.joined).copied().collect(),
        };
        for mac in macs {
            let (wanted, joined) = (want(&mac), self.joined.contains(&mac));
            if wanted && !joined {
                if let Err(e) = self.ip6.join(mac) {
                    tracing::warn!(interface = %name, %e, "joining a solicited-node group");
                } else {
                    self.joined.insert(mac);
                }
            } else if !wanted && joined {
                let _ = self.ip6.leave(mac);
                self.joined.remove(&mac);
            }
        }
        if self.all_multicast && !many && self.ip6.all_multicast(false).is_ok() {
            self.all_multicast = false;
        }
    }

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
        // The table is read under its lock for this one frame (the supervisor changes it in
        // place); the answer goes out after.
        let verdict = {
            let answering = shared.answering.read().unwrap_or_else(|e| e.into_inner());
            responder::respond(&answering, &iface, frame, &mut out)
        };
        match verdict {
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
                let claim = {
                    let probing = shared.probing.read().unwrap_or_else(|e| e.into_inner());
                    if probing.is_empty() {
                        None
                    } else {
                        responder::claim(&iface, frame).filter(|(ip, _)| probing.contains(ip))
                    }
                };
                if let Some((ip, mac)) = claim {
                    let _ = claims.try_send(Claim { ip, mac });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn announcement(svc: u8, ip: u8, ifaces: u8) -> Announcement {
        let interfaces = match ifaces {
            0 => Interfaces::All,
            n => Interfaces::Only((0..n).map(|i| format!("eth{i}")).collect()),
        };
        Announcement {
            service: ServiceKey::new("default", format!("svc-{svc}")),
            ip: IpAddr::from([192, 0, 2, ip]),
            how: How::Layer2 { interfaces },
        }
    }

    /// Sets of announcements: at most one a service and address.
    fn set() -> impl Strategy<Value = Vec<Announcement>> {
        proptest::collection::btree_map((0u8..4, 1u8..5), 0u8..3, 0..8).prop_map(|m| {
            m.into_iter()
                .map(|((svc, ip), ifaces)| announcement(svc, ip, ifaces))
                .collect()
        })
    }

    proptest! {
        /// The table a sequence of changes leaves, applied address by address, is the one the
        /// whole set gives: shared addresses get the union of their services' interfaces and
        /// go only when their last service does.
        #[test]
        fn changes_give_what_the_whole_set_gives(sets in proptest::collection::vec(set(), 1..12)) {
            let mut scopes = Scopes::default();
            let mut table: BTreeMap<IpAddr, Interfaces> = BTreeMap::new();
            let mut before: Vec<Announcement> = Vec::new();
            for now in sets {
                let (withdrawn, added) = lb_core::announce::difference(&before, &now);
                for (ip, scope) in scopes.change(&withdrawn, &added).expect("layer 2") {
                    match scope {
                        Some(s) => table.insert(ip, s),
                        None => table.remove(&ip),
                    };
                }
                let whole = Scopes::default().whole(&now).expect("layer 2");
                prop_assert_eq!(&table, &whole);
                let mut want: BTreeMap<IpAddr, Interfaces> = BTreeMap::new();
                for a in &now {
                    let s = layer2(a).expect("layer 2").clone();
                    let s = match want.remove(&a.ip) {
                        Some(old) => old.union(s),
                        None => s,
                    };
                    want.insert(a.ip, s);
                }
                prop_assert_eq!(&table, &want);
                before = now;
            }
        }
    }

    #[test]
    fn a_bgp_announcement_is_refused_and_changes_nothing() {
        let mut scopes = Scopes::default();
        let l2 = announcement(1, 1, 0);
        scopes
            .change(&[], std::slice::from_ref(&l2))
            .expect("layer 2");
        let bgp = Announcement {
            how: How::Bgp { routes: Vec::new() },
            ..announcement(2, 2, 0)
        };
        assert!(matches!(
            scopes.change(std::slice::from_ref(&l2), &[bgp]),
            Err(AnnounceError::WrongProtocol { .. })
        ));
        assert_eq!(scopes.0.len(), 1);
    }
}
