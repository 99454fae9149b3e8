//! Membership between nodes: lb-core's [`Swim`] (SWIM over sealed datagrams) on a UDP socket,
//! published as lb-core's [`LeaderElector`], so that every node derives each L2 address's owner
//! from the same live set.
//!
//! ```text
//!  UDP socket ──datagram──► Swim (open, check, foca) ──► sealed datagrams to send
//!        ▲                        │  timers (due times)                     │
//!        └────────────────────────┼──────────────────────────────────────────┘
//!                                 ▼ live member names (known nodes), on every change
//!                       SwimElector (LeaderElector) ──watch──► plan / announcers
//!  set_keys / set_roster ──► the task          stats, refusals ──► /metrics, /status, log
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use lb_core::elect::{ElectError, LeaderElector, Membership};
pub use lb_core::members::seal::{KeyError, KeyId, Keyring};
pub use lb_core::members::{Event, Member, Roster, Stats, Swim, lan_config};
use lb_core::metrics::prometheus_client::collector::Collector;
use lb_core::metrics::prometheus_client::encoding::DescriptorEncoder;
use lb_core::metrics::{Kind, family, single};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

/// How a node's membership is secured.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Security {
    /// Datagrams sealed with these keys (the first seals, every one opens).
    Sealed(Keyring),
    /// Plain datagrams: `--insecure-membership`, or a node alone with no key.
    Insecure,
}

/// Everything the membership is told at start.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// This node's name.
    pub name: String,
    /// The UDP address to listen on.
    pub bind: SocketAddr,
    /// The address others reach this node at.
    pub advertise: SocketAddr,
    /// Members to join at start.
    pub seeds: Vec<SocketAddr>,
    /// Sealed with a key, or not.
    pub security: Security,
    /// The known nodes (`None`: any holder of the key).
    pub roster: Option<Roster>,
}

impl Options {
    /// Node `name` on `bind` (reached there), with no seeds and no roster.
    pub fn new(name: impl Into<String>, bind: SocketAddr, security: Security) -> Self {
        Options {
            name: name.into(),
            bind,
            advertise: bind,
            seeds: Vec::new(),
            security,
            roster: None,
        }
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It holds no valid keys.
    #[error("{}: {source}", path.display())]
    Keys {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with them.
        #[source]
        source: KeyError,
    },
}

/// Reads a key file: keys as in MetalLB's `memberlist` Secret, several apart by an empty line.
pub fn read_key_file(path: &Path) -> Result<Keyring, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Keyring::parse(&text).map_err(|source| KeyFileError::Keys {
        path: path.to_path_buf(),
        source,
    })
}

/// What `/status` shows of the membership.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MembershipStatus {
    /// Whether datagrams are sealed.
    pub sealed: bool,
    /// This run's generation (and epoch in sealed datagrams): its start time in milliseconds,
    /// plus one for each time it was declared down and came back.
    pub generation: u64,
    /// The ids of the keys held, the sending key first.
    pub key_ids: Vec<String>,
    /// Counters of refused datagrams.
    #[serde(flatten)]
    pub stats: Stats,
    /// The last key trouble seen, in words (another node without our key, or we without its).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_problem: Option<String>,
    /// Data datagrams waiting to be sent (paced: see [`PACE`]).
    pub data_queued: u64,
    /// Data datagrams dropped unsent because the queue was full (the oldest go).
    pub data_shed: u64,
    /// Data datagrams received but dropped because the node had not read the ones before.
    pub data_unread: u64,
}

/// Data datagrams (a ledger in chunks: 5,000 at 100,000 services) are sent at most this many
/// per [`PACE_GAP`], after the membership's own: sent at once, they filled the receivers'
/// socket buffers, and a probe queued behind them was answered too late (the members then
/// declared each other down and back for as long as ledgers kept coming). 16 per
/// millisecond is about 20 MB/s: a ledger of 1,000 services goes in 3 ms, of 100,000 in 0.3 s
/// per member.
pub const PACE: usize = 16;
/// See [`PACE`].
pub const PACE_GAP: Duration = Duration::from_millis(1);
/// At most this many data datagrams wait; beyond it the oldest are dropped (a ledger sent
/// again makes an older one useless).
const QUEUE_MAX: usize = 65_536;

/// `lb_members_rejected_total{reason}` and friends.
impl Collector for MembershipStatus {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> std::fmt::Result {
        let rejected = lb_core::members::seal::Reject::LABELS.iter().map(|reason| {
            let n = self.stats.rejected.get(reason).copied().unwrap_or(0);
            ([("reason", *reason)], n)
        });
        family(
            &mut out,
            "lb_members_rejected_total",
            "Membership datagrams dropped before SWIM saw them, by reason.",
            Kind::Counter,
            rejected,
        )?;
        for (name, help, v) in [
            (
                "lb_members_accepted_total",
                "Membership datagrams accepted.",
                self.stats.accepted,
            ),
            (
                "lb_members_down_total",
                "Members this node saw go down.",
                self.stats.members_down,
            ),
            (
                "lb_members_rejoins_total",
                "Times this node was declared down and came back.",
                self.stats.rejoins,
            ),
            (
                "lb_members_key_hints_total",
                "Times another node said it cannot open our datagrams.",
                self.stats.key_hints,
            ),
            (
                "lb_members_undead_withheld_total",
                "Suspicions refuted in time: the member was not told it is down.",
                self.stats.undead_withheld,
            ),
        ] {
            single(&mut out, name, help, Kind::Counter, v)?;
        }
        for (name, help, v) in [
            (
                "lb_members_data_shed_total",
                "Data datagrams dropped unsent: the paced queue was full.",
                self.data_shed,
            ),
            (
                "lb_members_data_unread_total",
                "Data datagrams received and dropped: the node had not read the ones before.",
                self.data_unread,
            ),
        ] {
            single(&mut out, name, help, Kind::Counter, v)?;
        }
        single(
            &mut out,
            "lb_members_data_queued",
            "Data datagrams waiting to be sent (paced).",
            Kind::Gauge,
            self.data_queued,
        )?;
        single(
            &mut out,
            "lb_members_sealed",
            "Whether membership datagrams are sealed with a key.",
            Kind::Gauge,
            u64::from(self.sealed),
        )
    }
}

/// Data from the live members: (sender, payload).
pub type DataReceiver = mpsc::Receiver<(String, Vec<u8>)>;

enum Control {
    Leave(oneshot::Sender<()>),
    Broadcast(Vec<Vec<u8>>),
    Keys(Keyring),
    Roster(Option<Roster>),
}

/// The tokio edge: a UDP socket driving a [`Swim`]; the live set is published as lb-core's
/// [`LeaderElector`]. The membership runs on a thread of its own (a one-thread runtime), so
/// that the node's work (a 5 MB ledger decoded, 100,000 services planned) never delays the
/// answer to a probe, which the others wait for only tens of milliseconds. Dropping it stops
/// that thread without a word (as a crash would); [`LeaderElector::resign`] leaves first.
#[derive(Debug)]
pub struct SwimElector {
    identity: String,
    view: watch::Receiver<Membership>,
    control: mpsc::UnboundedSender<Control>,
    status: Arc<Mutex<MembershipStatus>>,
    data: Mutex<Option<DataReceiver>>,
    task: std::thread::JoinHandle<()>,
}

/// A refusal is logged once per (source, reason) in this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

impl SwimElector {
    /// Joins the cluster.
    pub async fn start(opts: Options) -> std::io::Result<SwimElector> {
        let socket = bind(opts.bind)?;
        let me = Member {
            name: opts.name.clone(),
            addr: opts.advertise,
            // A restarted node is a new generation, so others replace its old identity at once;
            // it is also the run's epoch in sealed datagrams, which must grow across restarts.
            generation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let seed = u64::from_le_bytes(*b"lbswim00") ^ me.generation;
        let keys = match opts.security {
            Security::Sealed(k) => Some(k),
            Security::Insecure => None,
        };
        let mut swim = Swim::new(me, lan_config(), opts.seeds, seed, keys);
        swim.set_roster(opts.roster);
        let status = Arc::new(Mutex::new(MembershipStatus::default()));
        publish_status(&swim, &status, None, Pacing::default());
        let (tx, view) = watch::channel(Membership {
            members: swim.members(),
            epoch: 0,
        });
        let (control, mut control_rx) = mpsc::unbounded_channel::<Control>();
        // Data from the members, for the layer above (bounded: a slow reader loses the newest
        // news, counted, never the membership). Room for two members' ledgers of 100,000
        // services arriving while the node plans (about 12 MB at most).
        let (data_tx, data_rx) = mpsc::channel::<(String, Vec<u8>)>(8192);
        let start = Instant::now();
        let shared = status.clone();
        let body = async move {
            // Registered with the thread's own runtime.
            let socket = match UdpSocket::from_std(socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("the membership socket: {e}");
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            let mut logged: BTreeMap<(IpAddr, &'static str), Instant> = BTreeMap::new();
            let mut key_problem: Option<String> = None;
            let mut published = Instant::now();
            let mut changed = false;
            // Data waiting to be sent, and the counters of data dropped.
            // Unsealed: sealed as it is sent (see Swim::seal_data).
            let mut queue: std::collections::VecDeque<(SocketAddr, Arc<Vec<u8>>)> =
                std::collections::VecDeque::new();
            let mut pacing = Pacing::default();
            loop {
                let now = start.elapsed();
                let due = start + swim.next_due().min(now + Duration::from_secs(3600));
                let accepted = swim.stats().accepted;
                let mut out = tokio::select! {
                    r = socket.recv_from(&mut buf) => match r {
                        Ok((n, from)) => swim.handle_data(start.elapsed(), from, &buf[..n]),
                        Err(_) => Vec::new(),
                    },
                    _ = tokio::time::sleep_until(due) => {
                        changed = true;
                        swim.tick(start.elapsed())
                    }
                    _ = tokio::time::sleep(PACE_GAP), if !queue.is_empty() => Vec::new(),
                    c = control_rx.recv() => match c {
                        Some(Control::Keys(k)) => {
                            swim.set_keys(k);
                            key_problem = None;
                            Vec::new()
                        }
                        Some(Control::Roster(r)) => {
                            swim.set_roster(r);
                            changed = true;
                            Vec::new()
                        }
                        Some(Control::Broadcast(payloads)) => {
                            let to = swim.data_recipients();
                            for p in payloads.into_iter().map(Arc::new) {
                                queue.extend(to.iter().map(|a| (*a, p.clone())));
                            }
                            let over = queue.len().saturating_sub(QUEUE_MAX);
                            queue.drain(..over);
                            pacing.shed += over as u64;
                            Vec::new()
                        }
                        Some(Control::Leave(done)) => {
                            for (to, d) in swim.leave(start.elapsed()) {
                                let _ = socket.send_to(&d, to).await;
                            }
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    },
                };
                // Whatever else is queued, at once: a flood of junk is read and dropped in
                // batches, so that the genuine datagrams behind it wait as little as possible.
                for _ in 0..256 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => {
                            out.extend(swim.handle_data(start.elapsed(), from, &buf[..n]))
                        }
                        Err(_) => break,
                    }
                }
                changed |= swim.stats().accepted != accepted;
                for d in swim.take_inbox() {
                    if data_tx.try_send(d).is_err() {
                        pacing.unread += 1;
                    }
                }
                // The membership's own first, then a few of the data waiting.
                for (to, d) in out {
                    let _ = socket.send_to(&d, to).await;
                }
                for (to, p) in queue.drain(..queue.len().min(PACE)) {
                    let d = swim.seal_data(to, &p);
                    let _ = socket.send_to(&d, to).await;
                }
                pacing.queued = queue.len() as u64;
                for e in swim.take_events() {
                    if let Some(p) = log_event(&e, &mut logged) {
                        key_problem = Some(p);
                    }
                }
                if logged.len() > 4096 {
                    logged.clear();
                }
                // Counters are for people: ten times a second is enough.
                if published.elapsed() >= Duration::from_millis(100) {
                    publish_status(&swim, &shared, key_problem.clone(), pacing);
                    published = Instant::now();
                }
                // Only an accepted datagram, a timer or a new roster can change the members.
                if !std::mem::take(&mut changed) {
                    continue;
                }
                let members = swim.members();
                tx.send_if_modified(|m| {
                    if m.members == members {
                        return false;
                    }
                    m.members = members;
                    m.epoch += 1;
                    true
                });
            }
        };
        // The loop ends when the elector is dropped (its control channel closes) or leaves.
        let task = std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(body),
                    Err(e) => tracing::error!("the membership runtime: {e}"),
                }
            })?;
        Ok(SwimElector {
            identity: opts.name,
            view,
            control,
            status,
            data: Mutex::new(Some(data_rx)),
            task,
        })
    }

    /// Replaces the keys (rotation); the first seals from now on, every one opens.
    pub fn set_keys(&self, keys: Keyring) {
        let _ = self.control.send(Control::Keys(keys));
    }

    /// Sends each payload to every live member, sealed as data.
    pub fn broadcast(&self, payloads: Vec<Vec<u8>>) {
        let _ = self.control.send(Control::Broadcast(payloads));
    }

    /// The data the live members send, (sender, payload); there is one receiver, taken once.
    pub fn take_data(&self) -> Option<DataReceiver> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Replaces the known nodes.
    pub fn set_roster(&self, roster: Option<Roster>) {
        let _ = self.control.send(Control::Roster(roster));
    }

    /// Counters, keys and key trouble, for `/status` and `/metrics`.
    pub fn status(&self) -> MembershipStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the membership task still runs (it ends only on leave or a fatal socket error).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// The UDP socket, with a receive buffer large enough to ride out a burst (a flood of junk
/// must not push out the genuine datagrams behind it).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // Capped by net.core.rmem_max; a smaller buffer still works.
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The data queue's figures, for [`MembershipStatus`].
#[derive(Debug, Default, Clone, Copy)]
struct Pacing {
    queued: u64,
    shed: u64,
    unread: u64,
}

fn publish_status(
    swim: &Swim,
    status: &Mutex<MembershipStatus>,
    key_problem: Option<String>,
    pacing: Pacing,
) {
    let ids = swim.key_ids();
    let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
    st.sealed = !ids.is_empty();
    st.generation = swim.identity().generation;
    st.key_ids = ids.iter().map(ToString::to_string).collect();
    st.stats = swim.stats().clone();
    st.key_problem = key_problem;
    st.data_queued = pacing.queued;
    st.data_shed = pacing.shed;
    st.data_unread = pacing.unread;
}

/// Logs a refusal (once per source and reason every [`LOG_EVERY`]); returns the words for
/// `/status` when it is a key problem.
fn log_event(e: &Event, logged: &mut BTreeMap<(IpAddr, &'static str), Instant>) -> Option<String> {
    let mut due = |ip: IpAddr, what: &'static str| {
        let now = Instant::now();
        let fresh = logged
            .get(&(ip, what))
            .is_none_or(|t| now >= *t + LOG_EVERY);
        if fresh {
            logged.insert((ip, what), now);
        }
        fresh
    };
    match e {
        Event::Rejected { from, why } => {
            let problem = match why {
                lb_core::members::seal::Reject::UnknownKey(id) => Some(format!(
                    "{} seals its membership datagrams with key {id}, which this node does not hold",
                    from.ip()
                )),
                lb_core::members::seal::Reject::Unsealed => Some(format!(
                    "{} sends unsealed membership datagrams (it runs without a key)",
                    from.ip()
                )),
                _ => None,
            };
            if due(from.ip(), why.label()) {
                warn!(from = %from, reason = why.label(), "membership datagram refused: {why}");
            }
            problem
        }
        Event::KeyMismatch { from, theirs, ours } => {
            let theirs: Vec<String> = theirs.iter().map(ToString::to_string).collect();
            let p = match ours {
                Some(ours) => format!(
                    "{} cannot open this node's membership datagrams: it holds keys [{}], this node seals with {ours}; the keys differ",
                    from.ip(),
                    theirs.join(", ")
                ),
                None => format!(
                    "{} holds membership keys [{}] and this node none: give it the cluster's key (--secret-key-file)",
                    from.ip(),
                    theirs.join(", ")
                ),
            };
            if due(from.ip(), "key_hint") {
                warn!("{p}");
            }
            Some(p)
        }
        Event::Rejoined => {
            info!("this node was declared down by the others; it rejoined as a new generation");
            None
        }
        other => {
            info!("membership: {other:?}");
            None
        }
    }
}

#[async_trait]
impl LeaderElector for SwimElector {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn current(&self) -> Membership {
        self.view.borrow().clone()
    }

    fn watch(&self) -> BoxStream<'static, Membership> {
        lb_core::elect::watch_stream(self.view.clone())
    }

    async fn resign(&self) -> Result<(), ElectError> {
        let (done, wait) = oneshot::channel();
        self.control
            .send(Control::Leave(done))
            .map_err(|_| ElectError::Stopped)?;
        wait.await.map_err(|_| ElectError::Stopped)
    }
}

/// An empty member set means the others refuse this node's key (see `Swim::members`): it must
/// not answer for any L2 address, or it would answer for all of them beside their owners.
pub fn without_l2_if_refused(
    members: &std::collections::BTreeSet<String>,
    announcements: &mut Vec<lb_core::plan::Announcement>,
) {
    if members.is_empty() {
        announcements.retain(|a| !matches!(a.how, lb_core::plan::How::Layer2 { .. }));
    }
}

/// How long a node that has seeds waits for the others before its first plan.
pub const JOIN_GRACE: Duration = Duration::from_secs(2);

/// Waits (up to [`JOIN_GRACE`]) until `members` shows another node. A node that starts, or
/// restarts, alone would otherwise elect itself owner of every address for a moment and claim
/// them all. Returns false if nobody answered in time.
pub async fn wait_for_others(members: &mut BoxStream<'static, Membership>) -> bool {
    let joined = async {
        while let Some(m) = futures::StreamExt::next(members).await {
            if m.members.len() > 1 {
                return;
            }
        }
    };
    tokio::time::timeout(JOIN_GRACE, joined).await.is_ok()
}
