//! Standalone mode: a load balancer without Kubernetes. The configuration file holds the same
//! `metallb.io` kinds and `v1` Services as `check` / `plan` read.
//!
//! ```text
//!  FILE (load, reload on SIGHUP or change) ─► allocate (claims from --state-dir first) ─► state
//!  SwimElector (membership) ─ live members ─┐            │ allocations
//!                                           ▼            ▼
//!                                   plan for this node ─► L2 announcer, BGP announcer,
//!                                                          dummy interface (local delivery)
//!  SIGTERM: leave the cluster, withdraw, BGP Cease, clear the dummy interface.
//! ```
//! A pass reads the current config, allocations and members and leaves the plan a whole pass
//! would make. It keeps that plan by service: a change of the members alone, or of some
//! services alone (in the file or in the ledger followed), re-plans what it can move and hands
//! the announcers the difference; anything else re-plans every service, and the announcers
//! make the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::stop::Stop;
use futures::StreamExt;
use lb_core::config::{Config, DocumentCache, Reloaded, load_str_cached, reload_str};
use lb_core::elect::LeaderElector;
use lb_core::metrics::prometheus_client::collector::Collector;
use lb_core::metrics::prometheus_client::encoding::DescriptorEncoder;
use lb_core::metrics::{Kind, single};
use lb_core::objects::ServiceKey;
use lb_core::parts::Parts;
use lb_core::plan::{Announcement, How};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::announcers::Announcers;
use crate::local::LocalDelivery;
use crate::members::{MembershipStatus, Roster, Security, SwimElector, read_key_file};
use crate::state::State;
use lb_core::members::agree::{self, Agreement, Moved, Reassembly};

/// A ledger is sent in pieces of at most this many bytes (one sealed datagram each).
const LEDGER_CHUNK: usize = 1000;
/// A node repeats the ledger it follows this often while a member may lack it
/// ([`Node::ledger_owed`]): a new allocator hears it, and a lost chunk is sent again.
const LEDGER_EVERY: Duration = Duration::from_secs(1);
/// A member's repeat of a ledger this node follows is answered at most this often.
const ANSWER_EVERY: Duration = Duration::from_secs(5);

/// Everything `lb-bin standalone` is told.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The configuration file (reloaded on change and on SIGHUP).
    pub config: PathBuf,
    /// This node's name.
    pub node_name: String,
    /// `--join`: members to join (host:port).
    pub join: Vec<String>,
    /// The membership's UDP address.
    pub bind: SocketAddr,
    /// Where the allocations are kept across restarts.
    pub state_dir: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/status` are served.
    pub http: Option<SocketAddr>,
    /// The dummy interface for local delivery; `None` turns it off.
    pub local_delivery: Option<String>,
    /// Decide everything, announce nothing: print each new plan instead (needs no root).
    pub dry_run: bool,
    /// The membership keys (MetalLB's `memberlist` `secretkey` format; several apart by an
    /// empty line, the sending key first); reloaded when the file changes.
    pub secret_key_file: Option<PathBuf>,
    /// Talk to other nodes with plain datagrams: anyone who reaches the port can join.
    pub insecure_membership: bool,
}

impl Options {
    /// A node named `node_name` serving the configuration file `config`, alone (no `--join`),
    /// membership on UDP 7946, no state directory, no HTTP, no local delivery.
    pub fn new(config: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        Options {
            config: config.into(),
            node_name: node_name.into(),
            join: Vec::new(),
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            state_dir: None,
            http: None,
            local_delivery: None,
            dry_run: false,
            secret_key_file: None,
            insecure_membership: false,
        }
    }
}

/// What `/status` shows and `/readyz` reads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// Whether the last plan was applied in full.
    pub ready: bool,
    /// The live members.
    pub members: Vec<String>,
    /// What this node announces (shown as a list), by service, address and protocol: a
    /// change of some services changes their entries alone.
    #[serde(serialize_with = "values")]
    pub announcements: BTreeMap<AnnouncementKey, StatusAnnouncement>,
    /// The last configuration that was refused, with its errors.
    pub config_errors: Vec<String>,
    /// Keys, counters of refused datagrams, key trouble.
    pub membership: MembershipStatus,
    /// The node that allocates for the cluster (standalone mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<String>,
    /// Services whose address is not agreed yet: the live members' ledgers differ, or the
    /// allocator has not decided them. Not announced until they are.
    pub disputed: Vec<String>,
    /// The last addresses an allocation moved off a contested claim, and why.
    pub moved: Vec<Moved>,
    /// Services moved off contested addresses since start.
    pub moved_total: u64,
    /// Which allocator's ledger, and which version, each member last said it follows.
    pub ledgers: BTreeMap<String, (String, (u64, u64))>,
    /// Times this node sent the ledger it follows (or a delta of it) to the members since
    /// start (standalone).
    pub ledger_sends: u64,
    /// Deltas of the allocator's ledger this node took in place of the ledger whole.
    pub ledger_deltas: u64,
    /// Why the key file was last refused (the previous keys keep running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file_error: Option<String>,
    /// Why the last write of `--state-dir/allocations.json` failed (retried every 250 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// Writes of the state file that failed since start.
    pub state_write_failures: u64,
    /// Why the last plan did not apply (an announcer refused it); `/readyz` fails meanwhile.
    pub apply_errors: Vec<String>,
    /// Addresses that could not be put on (or taken off) the dummy interface; retried.
    pub local_delivery_errors: Vec<String>,
    /// BGPPeers this build cannot serve (a vrf), with why: skipped alone.
    pub skipped_peers: Vec<(String, String)>,
    /// The BFD sessions, by BGP peer name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub bfd: BTreeMap<String, crate::announcers::BfdView>,
    /// Why the last write to the Kubernetes API failed (speaker; retried every second).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_error: Option<String>,
    /// When the main loop last turned (`/healthz` fails when that is too long ago).
    #[serde(skip)]
    pub turned: Option<std::time::Instant>,
    /// Where an unreadable state file found at start was moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_moved_aside: Option<PathBuf>,
}

/// How [`Status::announcements`] are keyed: (service, address, protocol).
pub type AnnouncementKey = (ServiceKey, IpAddr, lb_core::Protocol);

/// A map shown as the list of its values.
fn values<K, V: Serialize, S: serde::Serializer>(
    map: &BTreeMap<K, V>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(map.values())
}

/// One announcement in `/status`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StatusAnnouncement {
    /// The service (`namespace/name`).
    pub service: String,
    /// The address.
    pub ip: IpAddr,
    /// Layer 2 or BGP.
    pub protocol: lb_core::Protocol,
    /// Interfaces answered on (layer 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<String>>,
    /// Peers announced to (BGP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<String>>,
    /// Seconds since the Unix epoch when this node started announcing it.
    pub since: u64,
}

impl StatusAnnouncement {
    /// An announcement's key in [`Status::announcements`].
    pub fn key(a: &Announcement) -> AnnouncementKey {
        (a.service.clone(), a.ip, lb_core::Protocol::of(a))
    }

    /// Announcements with when each began, as [`Status::announcements`] holds them.
    pub fn keyed<'a>(
        announced: impl IntoIterator<Item = &'a (Announcement, u64)>,
    ) -> BTreeMap<AnnouncementKey, StatusAnnouncement> {
        announced
            .into_iter()
            .map(|(a, t)| (Self::key(a), Self::of(a, *t)))
            .collect()
    }

    /// How `/status` shows an announcement that started at `since` (Unix seconds).
    pub fn of(a: &Announcement, since: u64) -> StatusAnnouncement {
        let (protocol, interfaces, peers) = match &a.how {
            How::Layer2 { interfaces } => (
                lb_core::Protocol::Layer2,
                Some(match interfaces {
                    lb_core::plan::Interfaces::All => vec!["*".to_string()],
                    lb_core::plan::Interfaces::Only(set) => set.iter().cloned().collect(),
                }),
                None,
            ),
            How::Bgp { routes } => {
                let peers: BTreeSet<String> = routes
                    .iter()
                    .flat_map(|r| r.peers.iter().cloned())
                    .collect();
                (
                    lb_core::Protocol::Bgp,
                    None,
                    Some(peers.into_iter().collect()),
                )
            }
        };
        StatusAnnouncement {
            service: a.service.to_string(),
            ip: a.ip,
            protocol,
            interfaces,
            peers,
            since,
        }
    }
}

/// The status, shared with the HTTP server.
pub type SharedStatus = Arc<Mutex<Status>>;

/// The announcers' metrics text for `/metrics`, refreshed after every pass and every second.
pub type SharedMetrics = Arc<Mutex<String>>;

/// Renders metrics into a [`SharedMetrics`] on a blocking thread: with 100,000 announcements
/// the text takes tens of milliseconds, which the loop that serves takeovers must not wait
/// for. While one render runs, another asked for is skipped (the next tick renders).
#[derive(Clone, Debug, Default)]
pub struct MetricsRenderer {
    busy: Arc<std::sync::atomic::AtomicBool>,
}

impl MetricsRenderer {
    /// Renders `parts` into `text` off the calling thread (within a tokio runtime).
    pub fn render(&self, text: &SharedMetrics, parts: Vec<Box<dyn Collector>>) {
        use std::sync::atomic::Ordering;
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let (text, busy) = (text.clone(), self.busy.clone());
        tokio::task::spawn_blocking(move || {
            let rendered = lb_core::metrics::render(parts);
            *text.lock().unwrap_or_else(|e| e.into_inner()) = rendered;
            busy.store(false, Ordering::Release);
        });
    }
}

/// Reads and validates the file; a file with errors is refused with all of them.
pub fn load(path: &Path) -> Result<Config> {
    load_cached(path, &mut DocumentCache::default())
}

/// [`load`] for a file read again: the documents `cache` holds from the last read are not
/// parsed again.
pub fn load_cached(path: &Path, cache: &mut DocumentCache) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let l = load_str_cached(&text, cache);
    if !l.is_valid() {
        return Err(Error::InvalidConfig {
            path: path.to_path_buf(),
            errors: l.errors,
        });
    }
    for w in &l.errors {
        warn!("config: {w}");
    }
    Ok(l.config)
}

/// The address others reach this node's membership at: the bind address, or the source
/// address towards the first seed.
fn advertise_addr(bind: SocketAddr, seeds: &[SocketAddr]) -> Result<SocketAddr> {
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    let Some(seed) = seeds.first() else {
        warn!(
            "--bind {bind} with no --join: this node runs alone; bind its own address for others to join it"
        );
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bind.port()));
    };
    let towards = || {
        let probe = std::net::UdpSocket::bind(SocketAddr::new(bind.ip(), 0))?;
        probe.connect(seed)?;
        probe.local_addr()
    };
    let ip = towards()
        .map_err(|source| Error::Advertise {
            seed: *seed,
            source,
        })?
        .ip();
    Ok(SocketAddr::new(ip, bind.port()))
}

/// A standalone node's own metrics: agreement on allocations and the state file.
#[derive(Debug)]
struct NodeMetrics {
    disputed: u64,
    moved: u64,
    state_write_failures: u64,
    state_write_pending: bool,
}

impl Collector for NodeMetrics {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> std::fmt::Result {
        for (name, help, kind, value) in [
            (
                "lb_allocation_disputed",
                "Services whose address the live members do not agree on yet (not announced).",
                Kind::Gauge,
                self.disputed,
            ),
            (
                "lb_allocation_moved_total",
                "Services the allocator moved off a contested address.",
                Kind::Counter,
                self.moved,
            ),
            (
                "lb_state_write_failures_total",
                "Writes of the state file that failed.",
                Kind::Counter,
                self.state_write_failures,
            ),
            (
                "lb_state_write_pending",
                "Whether the state file misses the last allocations (a write failed; retried).",
                Kind::Gauge,
                u64::from(self.state_write_pending),
            ),
        ] {
            single(&mut out, name, help, kind, value)?;
        }
        Ok(())
    }
}

/// Errors as the status shows them.
fn words<E: std::fmt::Display>(errors: &[E]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(opts: Options, status: SharedStatus, metrics: SharedMetrics) -> Result<()> {
    // Stamped before the read: an edit made while the node starts is read at the first poll.
    let config_stamp = Stamp::of(&opts.config);
    let mut documents = DocumentCache::default();
    let config = load_cached(&opts.config, &mut documents)?;
    documents.taken();
    let state = State::open(opts.state_dir.as_deref());
    let (elector, router_id, alone) = join(&opts, &config).await?;
    let announcers = Announcers::start(&config, &opts.node_name, router_id, opts.dry_run)?;
    let mut runtime = lb_core::Runtime::new(opts.node_name.clone(), announcers.list());
    if let Some(dev) = opts.local_delivery.as_deref().filter(|_| !opts.dry_run) {
        runtime = runtime.with_local(Box::new(LocalDelivery::setup(dev)?));
    }
    let mut members_stream = elector.watch();
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signal)?;
    let mut stop = Stop::new()?;
    // A changed file is seen within this, and an allocator that waits for the others' ledgers
    // decides within this of the wait's end.
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    let mut data = elector.take_data().ok_or(Error::MembershipStopped)?;
    let agreement = Agreement::new(
        &opts.node_name,
        elector.status().generation,
        state.saved.clone(),
    );
    status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .state_moved_aside = state.moved_aside.clone();
    // With seeds, give the membership a moment to find the cluster first, so that a node
    // starting alongside others does not announce everything for an instant.
    if !opts.join.is_empty() {
        crate::members::wait_for_others(&mut members_stream).await;
    }
    let mut node = Node {
        key_stamp: opts.secret_key_file.as_deref().and_then(Stamp::of),
        config_stamp,
        members: elector.current().members,
        opts,
        config,
        documents,
        state,
        elector,
        router_id,
        alone,
        announcers,
        runtime,
        agreement,
        ledgers: Reassembly::default(),
        unsure: BTreeSet::new(),
        started: std::time::Instant::now(),
        last_sent: std::time::Instant::now(),
        repeat_heard: false,
        answered: BTreeMap::new(),
        previous: None,
        state_owed: false,
        last_agreed: BTreeMap::new(),
        kept: None,
        since_kept: None,
        since_decided: None,
        config_gen: 0,
        printed: None,
        status,
        metrics,
        renderer: MetricsRenderer::default(),
    };
    // The members found so far learn this node's ledger (empty yet) at once: an allocator
    // waits for every member's before it decides.
    node.tell_ledger();
    let mut dirty = true;
    // Set when members appeared since the last pass.
    let mut grew = false;
    loop {
        node.status().turned = Some(std::time::Instant::now());
        if std::mem::take(&mut dirty) {
            node.pass(std::mem::take(&mut grew)).await;
        }
        tokio::select! {
            m = members_stream.next() => {
                let Some(m) = m else {
                    return Err(Error::MembershipStopped);
                };
                if m.members != node.members {
                    info!(members = ?m.members, "membership changed");
                    grew = !m.members.is_subset(&node.members);
                    node.members = m.members;
                    if grew {
                        // A newcomer (or a new allocator) learns the cluster's ledger at once.
                        node.tell_ledger();
                    }
                    dirty = true;
                }
            }
            _ = hup.recv() => {
                info!("SIGHUP: reloading {}", node.opts.config.display());
                dirty = node.reload().await;
            }
            d = data.recv() => {
                let Some((from, chunk)) = d else {
                    return Err(Error::MembershipStopped);
                };
                dirty |= node.heard(&from, &chunk);
            }
            _ = poll.tick() => dirty |= node.poll().await,
            _ = stop.wait() => break,
        }
    }
    info!("stopping: leaving the cluster so that others take over");
    if let Err(e) = node.elector.resign().await {
        warn!("leaving: {e}");
    }
    node.status().ready = false;
    for e in node.runtime.shutdown().await {
        error!("local delivery: {e}");
    }
    Ok(())
}

/// Joins the membership: the `--join` seeds resolved, this node's address towards them, the
/// key, the Nodes of the file as the roster. Returns the elector, the BGP router id and
/// whether this node runs alone (no `--join`, no key).
async fn join(opts: &Options, config: &Config) -> Result<(SwimElector, Ipv4Addr, bool)> {
    let mut seeds = Vec::new();
    for j in &opts.join {
        let found = tokio::net::lookup_host(j)
            .await
            .map_err(|source| Error::Resolve {
                name: j.clone(),
                source,
            })?;
        seeds.extend(found);
    }
    let advertise = advertise_addr(opts.bind, &seeds)?;
    let router_id = crate::announcers::router_id(&opts.node_name, advertise.ip());
    let security = security(opts)?;
    let alone =
        opts.join.is_empty() && matches!(security, Security::Insecure) && !opts.insecure_membership;
    if !alone && config.nodes.is_empty() {
        warn!(
            "the configuration names no Node: any holder of the membership key may join and own addresses; list the nodes as v1 Node objects (with their InternalIP) to bind names to addresses"
        );
    }
    let mut o = crate::members::Options::new(opts.node_name.clone(), opts.bind, security);
    o.advertise = advertise;
    o.seeds = seeds;
    o.roster = roster(config, &opts.node_name, alone);
    let elector = SwimElector::start(o).await.map_err(|source| Error::Bind {
        flag: "--bind",
        addr: opts.bind,
        source,
    })?;
    info!(node = %opts.node_name, %advertise, sealed = elector.status().sealed, "joined membership");
    Ok((elector, router_id, alone))
}

/// A standalone node between passes.
struct Node {
    opts: Options,
    config: Config,
    /// The file's documents as last parsed: a reload parses only those edited.
    documents: DocumentCache,
    state: State,
    elector: SwimElector,
    router_id: Ipv4Addr,
    /// No `--join` and no key: the roster is this node alone.
    alone: bool,
    announcers: Announcers,
    runtime: lb_core::Runtime,
    agreement: Agreement,
    ledgers: Reassembly,
    /// The live members.
    members: BTreeSet<String>,
    /// Services whose allocation the last pass was unsure of.
    unsure: BTreeSet<String>,
    started: std::time::Instant,
    /// When this node last sent the ledger it follows.
    last_sent: std::time::Instant,
    /// A member sent again a ledger this node follows: it may not know that this node does.
    repeat_heard: bool,
    /// The repeat last answered, by member, and when.
    answered: BTreeMap<String, (LedgerId, std::time::Instant)>,
    /// Addresses allocated in the previous pass, each with the number of services that hold
    /// it. Only an address that appears after that is
    /// new to the whole cluster (every node reads the same file); at start-up this node
    /// cannot tell, and probing an address another node announces would read as a conflict.
    previous: Option<BTreeMap<IpAddr, usize>>,
    /// The allocations changed since the state file was last written.
    state_owed: bool,
    /// What the last pass agreed: a state write that failed is retried with it.
    last_agreed: BTreeMap<ServiceKey, lb_core::Allocation>,
    /// The plan in force by service, and what it was planned from.
    kept: Option<Kept>,
    /// The services the configurations taken in since the kept plan changed (objects or
    /// EndpointSlices); None when one changed more than services, which needs a whole pass.
    since_kept: Option<BTreeSet<ServiceKey>>,
    /// The same since this node's last decision as the allocator: the next decides only
    /// those services (with those left pending) when it can.
    since_decided: Option<BTreeSet<ServiceKey>>,
    /// Counts the configurations taken in: a reload that changed something adds one.
    config_gen: u64,
    /// The announcements a dry run last printed.
    printed: Option<BTreeMap<AnnouncementKey, StatusAnnouncement>>,
    /// The key file and the configuration file as last read.
    key_stamp: Option<Stamp>,
    config_stamp: Option<Stamp>,
    status: SharedStatus,
    metrics: SharedMetrics,
    renderer: MetricsRenderer,
}

/// The plan in force by service, with what it was planned from besides the configuration
/// and the agreed allocations (named by the generation of the one and the ledger of the
/// other): while those stay, a change of the members is served from it.
struct Kept {
    parts: Parts,
    members: BTreeSet<String>,
    config_gen: u64,
    ledger: (String, (u64, u64)),
}

/// A ledger by who decided it and its version.
type LedgerId = (String, (u64, u64));

/// The ledger this node follows, by who decided it and its version.
fn ledger_id(agreement: &Agreement) -> LedgerId {
    let l = agreement.current();
    (l.decided_by.clone(), l.version)
}

impl Node {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the ledger this node follows to every member.
    fn tell_ledger(&mut self) {
        // Alone, nobody hears it: not encoded (100,000 entries are tens of milliseconds). A
        // member that comes is sent it when first heard.
        if self.members.iter().any(|m| *m != self.opts.node_name) {
            self.elector
                .broadcast(agree::chunks(self.agreement.current(), LEDGER_CHUNK));
            self.status().ledger_sends += 1;
        }
        self.last_sent = std::time::Instant::now();
    }

    /// Sends the members how the ledger this node follows changed: the delta from the version
    /// before when one made it (a few entries where the ledger may hold 100,000), else the
    /// ledger whole. A member without the version before waits for the ledger whole, which
    /// [`Node::ledger_owed`] sends it.
    fn tell_change(&mut self) {
        let Some(delta) = self.agreement.delta() else {
            return self.tell_ledger();
        };
        if self.members.iter().any(|m| *m != self.opts.node_name) {
            self.elector
                .broadcast(agree::delta_chunks(delta, LEDGER_CHUNK));
            self.status().ledger_sends += 1;
        }
        self.last_sent = std::time::Instant::now();
    }

    /// Whether a live member may lack the ledger this node follows: it said it follows
    /// another, or was not heard, or sent again a ledger it had sent (as a member does when
    /// it has not heard this node follow it). Then the ledger is repeated; when every member
    /// follows the same one, nothing is sent (at 100,000 services a ledger is 5 MB: three
    /// nodes repeating theirs every second starved the membership of its probes).
    fn ledger_owed(&self) -> bool {
        if self.repeat_heard {
            return true;
        }
        let mine = ledger_id(&self.agreement);
        let followed = self.agreement.followed();
        self.members
            .iter()
            .filter(|m| **m != self.opts.node_name)
            .any(|m| followed.get(m) != Some(&mine))
    }

    /// The allocator decides when it may (it has every member's ledger, or waited long enough)
    /// and tells the others.
    fn allocate(&mut self) {
        self.agreement.retain_members(&self.members);
        self.answered.retain(|m, _| self.members.contains(m));
        if !self
            .agreement
            .may_decide(self.started.elapsed(), &self.members)
        {
            return;
        }
        let d = match self.since_decided.take() {
            Some(touched) => self.agreement.decide_services(&self.config, &touched),
            None => self.agreement.decide(&self.config),
        };
        self.since_decided = Some(BTreeSet::new());
        for (k, why) in &d.outcome.pending {
            warn!(service = %k, "pending: {why}");
        }
        for m in &d.moved {
            warn!(service = %m.service, from = ?m.from, to = ?m.to, "address moved: {}", m.why);
        }
        if !d.moved.is_empty() {
            let mut st = self.status();
            st.moved_total += d.moved.len() as u64;
            st.moved = d.moved.clone();
        }
        if let Some(version) = d.ledger {
            let services = self.agreement.current().entries.len();
            info!(
                ?version,
                services,
                whole = d.whole,
                decided = if d.whole {
                    services
                } else {
                    d.outcome.allocated.len() + d.outcome.pending.len()
                },
                // Entries sent as a delta; none: the ledger whole.
                delta = self.agreement.delta().map(|d| d.set.len() + d.gone.len()),
                "allocated; telling the others"
            );
            self.tell_change();
        }
    }

    /// One pass; `grew`: members appeared since the last pass. A change of the members alone
    /// is served from the plan in force first (a member that left moves only what it won,
    /// before the allocator's work); then, if this node is the allocator, it allocates. When
    /// the configurations taken in or the ledger followed changed only services (their
    /// objects, slices or allocations), those services are planned again and the difference
    /// applied. When a configuration changed more, or nothing is kept, the pass is whole:
    /// follow the agreed allocations, plan every service and apply the plan.
    async fn pass(&mut self, grew: bool) {
        let members = self.members.clone();
        let served = self.members_change(&members, grew).await;
        self.allocate();
        let current = self.kept.as_ref().is_some_and(|k| {
            k.config_gen == self.config_gen && k.ledger == ledger_id(&self.agreement)
        });
        let mut changes: Vec<lb_core::AppliedChange> = Vec::new();
        let whole_grew = grew && served.is_none();
        let members_only = served.is_some() && current;
        changes.extend(served);
        // Not only the members changed: only services (a change), or more (a whole pass).
        if !members_only {
            match self.services_change(&members).await {
                Some(applied) => changes.push(applied),
                None => return self.whole(&members, whole_grew).await,
            }
        }
        if let Some(last) = changes.last() {
            // The last call's refusals: a refused announcer got its whole part again in it.
            let errors = last.errors.clone();
            let local_errors: Vec<lb_core::LocalError> = changes
                .iter()
                .flat_map(|c| c.local_errors.iter().cloned())
                .collect();
            self.finish(&members, &errors, &local_errors, |st| {
                for applied in &changes {
                    for a in &applied.withdrawn {
                        st.announcements.remove(&StatusAnnouncement::key(a));
                    }
                    for (a, t) in &applied.added {
                        st.announcements
                            .insert(StatusAnnouncement::key(a), StatusAnnouncement::of(a, *t));
                    }
                }
            });
        }
    }

    /// Serves a pass in which, since the kept plan, the members stayed and only services
    /// changed: in the configurations taken in (their objects or EndpointSlices) or in the
    /// ledger followed (their allocations). Re-plans those services alone and applies the
    /// difference (`/status` is the caller's). Returns None when it cannot: nothing is kept,
    /// the members differ, or a configuration changed more than services.
    async fn services_change(
        &mut self,
        members: &BTreeSet<String>,
    ) -> Option<lb_core::AppliedChange> {
        let since = self.since_kept.as_ref()?;
        let kept = self.kept.as_ref()?;
        if members.is_empty() || kept.members != *members {
            return None;
        }
        let mut touched = since.clone();
        // The allocations followed: brought up to date for the services that changed, in the
        // configuration or in the ledger, when the ledger can list its changes; else read
        // whole and compared.
        let fresh = match self.agreement.take_changed() {
            Some(changed) if self.previous.is_some() => {
                let mut scope = touched.clone();
                scope.extend(changed);
                let moved = self.agreement.agreed_services(
                    &self.config,
                    &scope,
                    &mut self.last_agreed,
                    &mut self.unsure,
                );
                let fresh = self.follow_moved(&moved);
                touched.extend(moved.into_iter().map(|(k, _)| k));
                fresh
            }
            _ => {
                let (agreed, unsure) = self.agreement.agreed(&self.config);
                let moved = lb_core::parts::differing(&self.last_agreed, &agreed);
                self.unsure = unsure.into_iter().collect();
                // No allocation changed: no address is new, and the state file holds them
                // already (a failed write is retried by the poll).
                let fresh = if moved.is_empty() && self.previous.is_some() {
                    BTreeSet::new()
                } else {
                    self.follow(&agreed)
                };
                touched.extend(moved);
                self.last_agreed = agreed;
                fresh
            }
        };
        let input = lb_core::PlanInput::new(
            &self.config,
            &self.last_agreed,
            members,
            &self.opts.node_name,
            lb_core::Rules::standalone(),
        );
        let kept = self.kept.as_mut()?;
        let parts = kept.parts.services_changed(&input, &touched);
        kept.config_gen = self.config_gen;
        kept.ledger = ledger_id(&self.agreement);
        self.since_kept = Some(BTreeSet::new());
        let changed = parts.len();
        let applied = self.runtime.apply_change(parts, &fresh, now_secs()).await;
        info!(
            services = touched.len(),
            changed, "services changed: a change, applied as one"
        );
        self.save_state();
        Some(applied)
    }

    /// Takes `agreed` as the allocations followed: the addresses new to the cluster since the
    /// last are returned (those are probed before they are announced), and the state file is
    /// owed a write ([`Node::save_state`], after the plan is applied).
    fn follow(&mut self, agreed: &BTreeMap<ServiceKey, lb_core::Allocation>) -> BTreeSet<IpAddr> {
        let mut allocated: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for ip in agreed.values().flat_map(|a| a.ips.iter()) {
            *allocated.entry(*ip).or_default() += 1;
        }
        let fresh: BTreeSet<IpAddr> = match &self.previous {
            Some(p) => allocated
                .keys()
                .filter(|ip| !p.contains_key(ip))
                .copied()
                .collect(),
            None => BTreeSet::new(),
        };
        // Only addresses the cluster's allocator adds after this node first followed a
        // ledger are new to the cluster: the first ledger adopted (at start, or after a
        // restart) holds addresses others announce, and probing them would delay a takeover.
        if !self.agreement.current().decided_by.is_empty() {
            self.previous = Some(allocated);
        }
        self.state_owed = true;
        fresh
    }

    /// [`Node::follow`] for the services `moved` alone (each with the allocation it had), whose
    /// allocations in `last_agreed` changed: the same addresses are new, without a read of
    /// every allocation. Needs the addresses of an earlier pass.
    fn follow_moved(
        &mut self,
        moved: &[(ServiceKey, Option<lb_core::Allocation>)],
    ) -> BTreeSet<IpAddr> {
        self.state_owed |= !moved.is_empty();
        let Some(previous) = &mut self.previous else {
            return BTreeSet::new();
        };
        let now = |k: &ServiceKey| self.last_agreed.get(k).map(|a| a.ips.as_slice());
        let fresh: BTreeSet<IpAddr> = moved
            .iter()
            .flat_map(|(k, _)| now(k).unwrap_or_default())
            .filter(|ip| !previous.contains_key(ip))
            .copied()
            .collect();
        for (k, was) in moved {
            for ip in was.iter().flat_map(|a| a.ips.iter()) {
                if let Some(n) = previous.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        previous.remove(ip);
                    }
                }
            }
            for ip in now(k).unwrap_or_default() {
                *previous.entry(*ip).or_default() += 1;
            }
        }
        fresh
    }

    /// Writes the state file when the allocations followed changed since the last write. A
    /// failed write is retried every poll and shown; what was agreed is announced all the
    /// same (the file still holds the last set written, which a restart claims only until
    /// the others' ledgers arrive).
    fn save_state(&mut self) {
        if std::mem::take(&mut self.state_owed) {
            let _ = self.state.save(&self.last_agreed);
        }
    }

    /// Serves a pass in which nothing but the members changed since the kept plan (which
    /// may be no change at all): re-plans what the change can move and applies the
    /// difference (`/status` is the caller's). Returns None when it cannot: nothing is kept,
    /// the configuration or the ledger followed changed, or this node is refused (no members)
    /// now or then.
    async fn members_change(
        &mut self,
        members: &BTreeSet<String>,
        grew: bool,
    ) -> Option<lb_core::AppliedChange> {
        let ledger = ledger_id(&self.agreement);
        let kept = self
            .kept
            .as_mut()
            .filter(|k| k.config_gen == self.config_gen && k.ledger == ledger)?;
        if members.is_empty() || kept.members.is_empty() {
            return None;
        }
        if *members == kept.members {
            // Nothing moved; an announcer that refused its last part gets it again, and what
            // is still refused stays reported.
            return Some(
                self.runtime
                    .apply_change(Vec::new(), &BTreeSet::new(), now_secs())
                    .await,
            );
        }
        let input = lb_core::PlanInput::new(
            &self.config,
            &self.last_agreed,
            members,
            &self.opts.node_name,
            lb_core::Rules::standalone(),
        );
        let parts = kept.parts.members_changed(&input, &kept.members);
        kept.members = members.clone();
        let moved = parts.len();
        self.runtime.note_members(members);
        let applied = self
            .runtime
            .apply_change(parts, &BTreeSet::new(), now_secs())
            .await;
        if grew {
            self.runtime.reannounce();
        }
        info!(
            members = members.len(),
            services = moved,
            "members changed: a change, applied as one"
        );
        Some(applied)
    }

    /// A whole pass: follow the agreed allocations, plan every service, apply the plan.
    async fn whole(&mut self, members: &BTreeSet<String>, grew: bool) {
        // Read whole: the changes listed so far are in it.
        let _ = self.agreement.take_changed();
        let (agreed, unsure) = self.agreement.agreed(&self.config);
        self.unsure = unsure.into_iter().collect();
        let fresh = self.follow(&agreed);
        self.runtime.note_members(members);
        let input = lb_core::PlanInput::new(
            &self.config,
            &agreed,
            members,
            &self.opts.node_name,
            lb_core::Rules::standalone(),
        );
        let parts = Parts::plan_all(&input);
        let mut p = parts.plan();
        self.kept = Some(Kept {
            parts,
            members: members.clone(),
            config_gen: self.config_gen,
            ledger: ledger_id(&self.agreement),
        });
        self.since_kept = Some(BTreeSet::new());
        self.last_agreed = agreed;
        crate::members::without_l2_if_refused(members, &mut p.announcements);
        // New addresses go on the dummy interface before they are announced, so the first
        // packet a gratuitous ARP draws is delivered; old ones come off after.
        let applied = self.runtime.apply(&p, &fresh, now_secs()).await;
        self.save_state();
        if grew {
            self.runtime.reannounce();
        }
        info!(
            members = members.len(),
            announcements = p.announcements.len(),
            "plan applied"
        );
        self.finish(members, &applied.errors, &applied.local_errors, |st| {
            st.announcements = StatusAnnouncement::keyed(&applied.announced);
        });
    }

    /// What every pass ends with: `/status` (`announced` updates its announcements), the
    /// dry run's print and the metrics.
    fn finish(
        &mut self,
        members: &BTreeSet<String>,
        errors: &[lb_core::announce::AnnounceError],
        local_errors: &[lb_core::LocalError],
        announced: impl FnOnce(&mut Status),
    ) {
        for e in local_errors {
            error!("local delivery: {e} (retried)");
        }
        let apply_errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for e in &apply_errors {
            error!("announcing: {e}");
        }
        let mut disputed = self.agreement.disputed(members);
        disputed.extend(self.unsure.iter().cloned());
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.node = self.opts.node_name.clone();
        // Not ready while the plan did not apply (an announcer refused it).
        st.ready = apply_errors.is_empty();
        st.apply_errors = apply_errors;
        st.skipped_peers = self.announcers.skipped();
        st.bfd = self.announcers.bfd();
        st.local_delivery_errors = words(local_errors);
        st.members = members.iter().cloned().collect();
        st.allocator = agree::allocator(members).cloned();
        st.state_error = self.state.error.clone();
        st.state_write_failures = self.state.failures;
        st.disputed = disputed.into_iter().collect();
        st.ledgers = self.agreement.followed();
        announced(&mut st);
        if self.opts.dry_run && self.printed.as_ref() != Some(&st.announcements) {
            print_plan(&st);
            self.printed = Some(st.announcements.clone());
        }
        drop(st);
        self.publish_metrics();
    }

    /// A chunk of another member's ledger; returns whether a pass is due (a ledger adopted,
    /// or one the allocator must weigh).
    fn heard(&mut self, from: &str, chunk: &[u8]) -> bool {
        let received = match self.ledgers.push_any(from, chunk) {
            Ok(Some(r)) => r,
            Ok(None) => return false,
            Err(e) => {
                warn!(from = %from, "ledger refused: {e}");
                return false;
            }
        };
        let id = match &received {
            agree::Received::Ledger(l) => (l.decided_by.clone(), l.version),
            agree::Received::Delta(d) => (d.decided_by.clone(), d.version),
        };
        let again = self.agreement.followed().get(from) == Some(&id);
        let (heard, by_delta) = match received {
            agree::Received::Ledger(l) => (self.agreement.hear(from, l, &self.members), false),
            agree::Received::Delta(d) => (self.agreement.hear_delta(from, d, &self.members), true),
        };
        // The same ledger from the same member, and this node follows it: the member may
        // repeat it because it has not heard that this node does. Answered once a while per
        // member and ledger: an answer is a repeat for the others, and answering every one
        // would keep the members sending to each other for ever.
        if again && id == ledger_id(&self.agreement) {
            let now = std::time::Instant::now();
            let due = self
                .answered
                .get(from)
                .is_none_or(|(last, at)| *last != id || now.duration_since(*at) >= ANSWER_EVERY);
            if due {
                self.answered.insert(from.to_string(), (id, now));
                self.repeat_heard = true;
            }
        }
        if heard.first {
            // A member heard for the first time gets this node's ledger whole (it may have
            // sent its own before it knew this node).
            self.tell_ledger();
        } else if heard.adopted && by_delta {
            // The others learn at once that this node follows it: the delta, relayed.
            self.status().ledger_deltas += 1;
            self.tell_change();
        } else if heard.adopted {
            self.tell_ledger();
        }
        let due = heard.adopted || agree::allocator(&self.members) == Some(&self.opts.node_name);
        if !due {
            // What the others follow changed: the disputes, without a pass.
            let mut disputed = self.agreement.disputed(&self.members);
            disputed.extend(self.unsure.iter().cloned());
            let followed = self.agreement.followed();
            let mut st = self.status();
            st.disputed = disputed.into_iter().collect();
            st.ledgers = followed;
        }
        due
    }

    /// The periodic work: retries (local addresses, the state file), metrics, the ledger
    /// repeated, the key file and the configuration file followed. Returns whether a pass is
    /// due.
    async fn poll(&mut self) -> bool {
        let mut due = false;
        if self.runtime.local_pending() {
            let errors = self.runtime.retry_local();
            self.status().local_delivery_errors = words(&errors);
        }
        if self.state.owes_write() {
            let _ = self.state.save(&self.last_agreed);
            let (error, failures) = (self.state.error.clone(), self.state.failures);
            let mut st = self.status();
            st.state_error = error;
            st.state_write_failures = failures;
        }
        self.publish_metrics();
        if agree::allocator(&self.members) == Some(&self.opts.node_name)
            && self.agreement.current().decided_by != self.opts.node_name
        {
            // Waiting for the others' ledgers: try again.
            due = true;
        }
        if self.last_sent.elapsed() >= LEDGER_EVERY && self.ledger_owed() {
            self.repeat_heard = false;
            self.tell_ledger();
        }
        if let Some(path) = &self.opts.secret_key_file {
            let m = Stamp::of(path);
            if m != self.key_stamp {
                self.key_stamp = m;
                reload_keys(path, &self.elector, &self.status);
            }
        }
        if Stamp::of(&self.opts.config) != self.config_stamp {
            info!("{} changed: reloading", self.opts.config.display());
            due |= self.reload().await;
        }
        due
    }

    /// Loads the file again (see [`reload`]) and gives the membership its roster; returns
    /// whether the configuration changed.
    async fn reload(&mut self) -> bool {
        // Stamped before the read: a write that lands during it is read at the next poll.
        self.config_stamp = Stamp::of(&self.opts.config);
        let changed = reload(
            &self.opts,
            &mut self.config,
            &mut self.documents,
            &mut self.announcers,
            &mut self.runtime,
            self.router_id,
            &self.status,
        )
        .await;
        if let Some(touched) = &changed {
            self.config_gen += 1;
            let add = |since: Option<BTreeSet<ServiceKey>>| match (since, touched) {
                (Some(mut since), Some(touched)) => {
                    since.extend(touched.iter().cloned());
                    Some(since)
                }
                _ => None,
            };
            self.since_kept = add(self.since_kept.take());
            self.since_decided = add(self.since_decided.take());
        }
        self.elector
            .set_roster(roster(&self.config, &self.opts.node_name, self.alone));
        changed.is_some()
    }

    /// `/metrics`: the announcers', the membership's and this node's own.
    fn publish_metrics(&self) {
        let m = self.elector.status();
        let mut parts = self.runtime.collectors();
        parts.push(Box::new(m.clone()));
        let mut st = self.status();
        parts.push(Box::new(NodeMetrics {
            disputed: st.disputed.len() as u64,
            moved: st.moved_total,
            state_write_failures: st.state_write_failures,
            state_write_pending: st.state_error.is_some(),
        }));
        self.renderer.render(&self.metrics, parts);
        st.membership = m;
        st.bfd = self.announcers.bfd();
    }
}

/// How the membership is secured: a key file seals it; without one a node that talks to others
/// needs `--insecure-membership`, and a node with no `--join` runs alone.
fn security(opts: &Options) -> Result<Security> {
    match &opts.secret_key_file {
        Some(path) => {
            if opts.insecure_membership {
                warn!("--insecure-membership is ignored: --secret-key-file seals the membership");
            }
            let keys = read_key_file(path)?;
            Ok(Security::Sealed(keys))
        }
        None if opts.insecure_membership => {
            warn!(
                "--insecure-membership: anyone who reaches UDP port {} can join and steer which node owns each address",
                opts.bind.port()
            );
            Ok(Security::Insecure)
        }
        None if opts.join.is_empty() => Ok(Security::Insecure),
        None => Err(Error::NeedKey {
            port: opts.bind.port(),
        }),
    }
}

/// The nodes that may be members: alone, only this one; else the file's Nodes (bound to their
/// addresses) and this one; a file with no Node accepts any holder of the key.
fn roster(config: &Config, me: &str, alone: bool) -> Option<Roster> {
    if !alone && config.nodes.is_empty() {
        return None;
    }
    let mut r: Roster = BTreeMap::new();
    if !alone {
        for n in config.nodes.values() {
            r.insert(n.name.clone(), n.addresses.iter().copied().collect());
        }
    }
    r.entry(me.to_string()).or_default();
    Some(r)
}

/// Reads the key file again; a bad one is refused and the running keys stay.
fn reload_keys(path: &Path, elector: &SwimElector, status: &SharedStatus) {
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    match read_key_file(path) {
        Ok(keys) => {
            let ids: Vec<String> = keys.ids().iter().map(ToString::to_string).collect();
            info!(keys = ?ids, "membership keys reloaded from {}", path.display());
            elector.set_keys(keys);
            st.key_file_error = None;
        }
        Err(e) => {
            error!("refused the new key file, the running keys stay: {e}");
            st.key_file_error = Some(e.to_string());
        }
    }
}

/// Dry run: what this node would announce now.
#[allow(clippy::print_stdout)]
fn print_plan(st: &Status) {
    println!(
        "{} would announce ({} live: {}):",
        st.node,
        st.members.len(),
        st.members.join(", ")
    );
    for a in st.announcements.values() {
        let how = match (&a.interfaces, &a.peers) {
            (Some(i), _) => format!("on {}", i.join(",")),
            (_, Some(p)) => format!("to {}", p.join(",")),
            _ => String::new(),
        };
        println!("  {:<24} {:<18} {:<7} {how}", a.service, a.ip, a.protocol);
    }
}

/// What the poll compares to notice that a file changed. The modification time alone misses
/// a write that lands in the clock tick of the read before it (the kernel stamps files with a
/// coarse clock): a file truncated, read empty and then written within one tick keeps its time.
/// Its size tells those apart, and its inode a file replaced by a rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: (u64, u64),
}

impl Stamp {
    fn of(p: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).ok()?;
        Some(Self {
            modified: m.modified().ok(),
            len: m.len(),
            inode: (m.dev(), m.ino()),
        })
    }
}

/// Loads the file again; a bad one is refused and the running configuration stays. Returns
/// None when the configuration stayed, else the services it changed, or None when it changed
/// more (see [`Config::services_changed_since`]). An edit of Services and EndpointSlices alone
/// changes the configuration in force in place ([`lb_core::config::reload_str`]): the other
/// objects are neither copied nor compared.
async fn reload(
    opts: &Options,
    config: &mut Config,
    documents: &mut DocumentCache,
    announcers: &mut Announcers,
    runtime: &mut lb_core::Runtime,
    router_id: Ipv4Addr,
    status: &SharedStatus,
) -> Option<Option<BTreeSet<ServiceKey>>> {
    let refused = |errors: Vec<String>| {
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        st.config_errors = errors;
    };
    let text = match std::fs::read_to_string(&opts.config) {
        Ok(t) => t,
        Err(source) => {
            let e = Error::ReadConfig {
                path: opts.config.clone(),
                source,
            };
            error!("refused the new configuration, the old one keeps running: {e:#}");
            refused(format!("{e:#}").lines().map(str::to_string).collect());
            return None;
        }
    };
    if text.is_empty() {
        // Truncated and not yet written again (an edit in place): the next poll reads it.
        let e = Error::EmptyConfig {
            path: opts.config.clone(),
        };
        error!("refused the new configuration, the old one keeps running: {e:#}");
        refused(vec![e.to_string()]);
        return None;
    }
    let new = match reload_str(&text, documents, config) {
        Reloaded::Unchanged => {
            refused(Vec::new());
            return None;
        }
        Reloaded::Services { touched, findings } => {
            for w in &findings {
                warn!("config: {w}");
            }
            refused(Vec::new());
            return (!touched.is_empty()).then_some(Some(touched));
        }
        Reloaded::Whole(l) if !l.is_valid() => {
            let e = Error::InvalidConfig {
                path: opts.config.clone(),
                errors: l.errors,
            };
            error!("refused the new configuration, the old one keeps running: {e:#}");
            refused(format!("{e:#}").lines().map(str::to_string).collect());
            return None;
        }
        Reloaded::Whole(l) => {
            for w in &l.errors {
                warn!("config: {w}");
            }
            l.config
        }
    };
    refused(Vec::new());
    if new == *config {
        // Saved unchanged (or changed back): nothing to decide again.
        documents.taken();
        return None;
    }
    // Only what changed moves: one peer's edit touches that session alone.
    if let Err(e) = announcers.update(&new, &opts.node_name, router_id).await {
        error!("refused the new configuration, the old one keeps running: {e:#}");
        return None;
    }
    // A mode turned on or off: the runtime drives the new set from the next pass.
    runtime.set_announcers(announcers.list());
    let touched = new.services_changed_since(config);
    *config = new;
    documents.taken();
    Some(touched)
}

#[cfg(test)]
mod tests {
    use super::Stamp;
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    /// A write the modification time cannot tell apart (the kernel's clock tick did not move,
    /// here set back by hand) is still noticed: by the size when the file was truncated and
    /// written again, by the inode when a rename replaced it.
    #[test]
    fn a_write_within_one_clock_tick_changes_the_stamp() {
        let dir = std::env::temp_dir().join(format!("lb-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lb.yaml");
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let write = |p: &std::path::Path, text: &str| {
            std::fs::write(p, text).unwrap();
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        write(&path, "");
        let empty = Stamp::of(&path);
        write(&path, "kind: Service\n");
        let full = Stamp::of(&path);
        assert!(empty.is_some());
        assert_ne!(empty, full, "a truncated file written again in one tick");
        write(&path, "kind: Service\n");
        assert_eq!(Stamp::of(&path), full, "an unchanged file keeps its stamp");
        let next = dir.join("lb.yaml.new");
        write(&next, "kind: Pervice\n");
        std::fs::rename(&next, &path).unwrap();
        assert_ne!(
            Stamp::of(&path),
            full,
            "a file replaced by a rename in one tick"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Stamp::of(&path), None);
    }
}
