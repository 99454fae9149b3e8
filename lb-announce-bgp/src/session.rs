//! The session driver: one tokio task per peer that connects, frames messages, runs the
//! [`crate::fsm`] and keeps the peer's Adj-RIB-Out equal to the desired routes.
//!
//! ```text
//!  set_routes ─cmd─► driver ──Input──► Fsm ──Outputs──► connect / send / timers / RIB sync
//!                      ▲  ▲
//!   reader task ─frame─┘  └─ connect task (result)
//! ```
//! On Established the whole Adj-RIB-Out is sent, then End-of-RIB per family; afterwards a change
//! of the desired routes sends only the difference, with prefixes that share attributes packed
//! together. A route refresh from the peer re-sends the family.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::fsm::{self, Down, Fsm, Input, Negotiated, Output, State, Timer};
use crate::packet::{
    AfiSafi, AsPath, Context, DecodeError, Decoded, Message, Open, Origin, PathAttributes, Update,
    UpdateBuilder, message_len,
};

/// The attributes of one route besides its prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteAttrs {
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Sent to iBGP peers only.
    pub local_pref: Option<u32>,
}

/// One peer's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerConfig {
    /// The state machine's settings.
    pub fsm: fsm::Config,
    /// Where the peer is reached. With `interface`, only its port counts.
    pub address: SocketAddr,
    /// Unnumbered: the peer is the router heard on this interface, reached on its link-local
    /// address (see [`crate::neighbor`]); IPv4 prefixes then go with an IPv6 next hop when the
    /// peer takes them so (RFC 8950).
    pub interface: Option<String>,
    /// Source address to connect from.
    pub source: Option<IpAddr>,
    /// Next hop for IPv6 prefixes when the session runs over IPv4 (and the reverse); by default
    /// the session's own local address is used for its family.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 prefixes over an IPv4 session.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// TCP-MD5 password (RFC 2385).
    pub md5_password: Option<String>,
    /// TTL (IPv4) / hop limit (IPv6) of our packets; `None` keeps the kernel's default (64).
    /// eBGP peers are conventionally one hop away (1) unless configured as multihop (255).
    pub ttl: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and drop the peer's packets that crossed more than
    /// this many hops (1: directly connected). Takes precedence over `ttl`.
    pub ttl_security: Option<u8>,
}

impl PeerConfig {
    /// A session to `address` with the kernel's defaults for everything optional.
    pub fn new(fsm: fsm::Config, address: SocketAddr) -> Self {
        PeerConfig {
            fsm,
            address,
            interface: None,
            source: None,
            next_hop_v4: None,
            next_hop_v6: None,
            connect_timeout: Duration::from_secs(10),
            md5_password: None,
            ttl: None,
            ttl_security: None,
        }
    }

    /// Applies the TTL / GTSM settings to a socket of this session.
    pub(crate) fn apply_ttl(&self, fd: std::os::fd::RawFd, ipv6: bool) -> io::Result<()> {
        match (self.ttl_security, self.ttl) {
            (Some(hops), _) => {
                crate::sys::set_ttl(fd, ipv6, 255)?;
                crate::sys::set_min_ttl(fd, ipv6, 255u8.saturating_sub(hops.max(1) - 1))
            }
            (None, Some(ttl)) => crate::sys::set_ttl(fd, ipv6, ttl),
            (None, None) => Ok(()),
        }
    }
}

/// What a session looks like from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    /// The state machine's state.
    pub state: State,
    /// When the session last became established (none while down).
    pub established_since: Option<SystemTime>,
    /// Prefixes in the Adj-RIB-Out (announced to the peer now).
    pub prefixes_announced: usize,
    /// UPDATEs sent.
    pub updates_sent: u64,
    /// UPDATEs received.
    pub updates_received: u64,
    /// Why the session last went down.
    pub last_down: Option<String>,
    /// ROUTE-REFRESH requests answered late (at most one full resend per second per family).
    pub refreshes_deferred: u64,
    /// Routes not sent because their attributes do not fit one UPDATE.
    pub routes_refused: usize,
}

impl Default for SessionStatus {
    fn default() -> Self {
        SessionStatus {
            state: State::Idle,
            established_since: None,
            prefixes_announced: 0,
            updates_sent: 0,
            updates_received: 0,
            last_down: None,
            refreshes_deferred: 0,
            routes_refused: 0,
        }
    }
}

// `Frame` carries a decoded message; boxing it would add an allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Event {
    SetRoutes(BTreeMap<IpNetwork, RouteAttrs>),
    ChangeRoutes(Vec<(IpNetwork, Option<RouteAttrs>)>),
    Stop,
    PeerDown,
    Connected(io::Result<TcpStream>),
    /// The peer connected to a [`Listener`](crate::listen::Listener).
    Accepted(TcpStream),
    /// A second connection's first message (its OPEN) and the bytes after it, or nothing if
    /// it closed or sent something else first.
    CandidateOpen(Option<Candidate>),
    /// A message read from connection `id`, with the credit its reader took for it: the
    /// reader stops reading the socket while [`FRAMES_IN_FLIGHT`] are unhandled.
    Frame(u64, Result<Decoded, DecodeError>, Credit),
    Closed(u64),
}

/// Messages a connection's reader may have decoded and not yet seen handled: beyond this it
/// stops reading, and TCP's window tells the peer to wait (a flood costs no memory).
pub(crate) const FRAMES_IN_FLIGHT: usize = 64;
/// A full resend of the routes (ROUTE-REFRESH) at most this often per family; requests in
/// between are answered together when it has passed.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// A connection's reader: splits the byte stream into messages and hands each, decoded, to
/// the session as [`Event::Frame`] with a credit; with [`FRAMES_IN_FLIGHT`] credits out it
/// stops reading, so a peer that sends faster than the session handles fills its own TCP
/// window, not our memory. Ends with [`Event::Closed`] or a framing error.
async fn read_messages(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    rest: Vec<u8>,
    id: u64,
    events: mpsc::UnboundedSender<Event>,
    four_octet: Arc<AtomicBool>,
) {
    let window = Arc::new(tokio::sync::Semaphore::new(FRAMES_IN_FLIGHT));
    let mut buf: Vec<u8> = Vec::with_capacity(65536);
    buf.extend_from_slice(&rest);
    let mut chunk = vec![0u8; 65536];
    loop {
        match message_len(&buf) {
            Err(e) => {
                let _ = events.send(Event::Frame(id, Err(e), None));
                return;
            }
            Ok(Some(len)) if buf.len() >= len => {
                // Back-pressure: wait for the session to handle what it was given.
                let Ok(credit) = window.clone().acquire_owned().await else {
                    return;
                };
                // AS_PATH width follows what the session negotiated (4-octet until then).
                let ctx = Context {
                    four_octet_as: four_octet.load(Ordering::Relaxed),
                };
                let msg: Vec<u8> = buf.drain(..len).collect();
                let _ = events.send(Event::Frame(id, Message::decode(&msg, &ctx), Some(credit)));
                continue;
            }
            Ok(_) => {}
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::Closed(id));
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One message's place in a reader's window; released when dropped.
pub(crate) type Credit = Option<tokio::sync::OwnedSemaphorePermit>;

/// A running session. Dropping it aborts the task; [`Session::stop`] sends Cease first.
#[derive(Debug)]
pub struct Session {
    pub(crate) events: mpsc::UnboundedSender<Event>,
    status: watch::Receiver<SessionStatus>,
    task: Option<JoinHandle<()>>,
    pub(crate) peer: IpAddr,
    pub(crate) md5_password: Option<String>,
}

impl Session {
    /// Starts the session (within a tokio runtime): it connects at once and keeps reconnecting.
    pub fn start(cfg: PeerConfig) -> Session {
        let (tx, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(SessionStatus::default());
        let fsm = Fsm::new(cfg.fsm.clone());
        let (peer, md5_password) = (cfg.address.ip(), cfg.md5_password.clone());
        let discovery = cfg.interface.as_deref().map(|i| {
            let d = crate::neighbor::Discovery::start(i);
            let rx = d.watch();
            (d, rx)
        });
        let driver = Driver {
            discovery,
            cfg,
            fsm,
            events: tx.clone(),
            timers: HashMap::new(),
            conn: None,
            conn_id: 0,
            desired: BTreeMap::new(),
            sent: BTreeMap::new(),
            refused: BTreeSet::new(),
            status: status_tx,
            four_octet: Arc::new(AtomicBool::new(true)),
            candidate: false,
            link_local: None,
            other_next_hop: None,
            global_v6: None,
            refreshed: HashMap::new(),
            refresh_due: HashMap::new(),
        };
        let task = tokio::spawn(driver.run(rx));
        Session {
            events: tx,
            status,
            task: Some(task),
            peer,
            md5_password,
        }
    }

    /// Replaces the routes to announce; the peer gets only the difference.
    pub fn set_routes(&self, routes: BTreeMap<IpNetwork, RouteAttrs>) {
        let _ = self.events.send(Event::SetRoutes(routes));
    }

    /// Changes some routes (`None`: withdrawn), the others stay: the peer gets the difference,
    /// and the work is that of the change.
    pub fn change_routes(&self, changes: Vec<(IpNetwork, Option<RouteAttrs>)>) {
        let _ = self.events.send(Event::ChangeRoutes(changes));
    }

    /// The path to the peer failed, as BFD reports it (RFC 5882 §4.2): the session goes down
    /// at once rather than when the hold timer expires, and reconnects as usual.
    pub fn peer_down(&self) {
        let _ = self.events.send(Event::PeerDown);
    }

    /// The session's status now.
    pub fn status(&self) -> SessionStatus {
        self.status.borrow().clone()
    }

    /// The status as it changes.
    pub fn watch(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Sends Cease (administrative shutdown) and closes; waits at most `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.events.send(Event::Stop);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Session {
    /// The task ends with its owner: its connection closes without a NOTIFICATION, as when a
    /// process dies (a dropped JoinHandle alone would leave the task running).
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            c.reader.abort();
        }
    }
}

/// A second connection whose OPEN has been read.
pub(crate) struct Candidate {
    stream: TcpStream,
    outbound: bool,
    open: Open,
    /// Bytes received after the OPEN.
    rest: Vec<u8>,
}

struct Conn {
    writer: OwnedWriteHalf,
    reader: JoinHandle<()>,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    /// Opened by us (rather than accepted): decides connection collisions.
    outbound: bool,
}

struct Driver {
    cfg: PeerConfig,
    /// An unnumbered peer's neighbour discovery, and the neighbour as it is learned.
    discovery: Option<(
        crate::neighbor::Discovery,
        watch::Receiver<crate::neighbor::Neighbor>,
    )>,
    fsm: Fsm,
    events: mpsc::UnboundedSender<Event>,
    timers: HashMap<Timer, Instant>,
    conn: Option<Conn>,
    /// Identifies the current connection, so events of an old reader are ignored.
    conn_id: u64,
    desired: BTreeMap<IpNetwork, RouteAttrs>,
    sent: BTreeMap<IpNetwork, RouteAttrs>,
    /// Desired routes whose attributes no UPDATE can hold: not sent.
    refused: BTreeSet<IpNetwork>,
    status: watch::Sender<SessionStatus>,
    /// The AS_PATH width the reader decodes with.
    four_octet: Arc<AtomicBool>,
    /// A second connection is having its OPEN read (at most one at a time).
    candidate: bool,
    /// Our link-local address on the interface shared with an on-link IPv6 peer: the second
    /// IPv6 next hop (RFC 2545 §3).
    link_local: Option<Ipv6Addr>,
    /// The next hop for the other family than the session's (`dualStackAddressFamily`): an
    /// address of that family on the interface that holds the session's local address.
    other_next_hop: Option<IpAddr>,
    /// A session from a link-local address (unnumbered): a global IPv6 address of the same
    /// interface, the first of the two IPv6 next hops, if it has one.
    global_v6: Option<Ipv6Addr>,
    /// When each family's routes were last resent in full for a ROUTE-REFRESH.
    refreshed: HashMap<AfiSafi, Instant>,
    /// Refreshes asked too soon, answered at this time.
    refresh_due: HashMap<AfiSafi, Instant>,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        self.feed(Input::Start).await;
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            let refresh = self
                .refresh_due
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(f, at)| (*f, *at));
            tokio::select! {
                ev = rx.recv() => match ev {
                    None => return,
                    Some(Event::Stop) => {
                        self.feed(Input::Stop { cease: 2 }).await;
                        return;
                    }
                    Some(Event::PeerDown) => self.feed(Input::TcpClosed).await,
                    Some(Event::SetRoutes(r)) => {
                        self.desired = r;
                        if self.fsm.state() == State::Established && self.sync().await.is_err() {
                            self.feed(Input::TcpClosed).await;
                        }
                    }
                    Some(Event::ChangeRoutes(changes)) => {
                        let mut only = BTreeSet::new();
                        for (p, a) in changes {
                            match a {
                                Some(a) => self.desired.insert(p, a),
                                None => self.desired.remove(&p),
                            };
                            only.insert(p);
                        }
                        if self.fsm.state() == State::Established
                            && self.sync_over(Some(&only)).await.is_err()
                        {
                            self.feed(Input::TcpClosed).await;
                        }
                    }
                    Some(Event::Connected(Ok(stream))) => self.new_connection(stream, true).await,
                    Some(Event::Accepted(stream)) => self.new_connection(stream, false).await,
                    Some(Event::CandidateOpen(c)) => self.candidate_open(c).await,
                    // A failed attempt matters only while it is what the session waits for,
                    // not once the peer's own connection has been taken.
                    Some(Event::Connected(Err(e))) if self.conn.is_none() => {
                        self.status.send_modify(|s| s.last_down = Some(format!("connect: {e}")));
                        self.feed(Input::TcpFailed).await;
                    }
                    Some(Event::Connected(Err(_))) => {}
                    Some(Event::Frame(id, ..)) | Some(Event::Closed(id)) if id != self.conn_id => {}
                    Some(Event::Frame(_, Ok(d), _credit)) => {
                        if matches!(d.message, Message::Update(_)) {
                            self.status.send_modify(|s| s.updates_received += 1);
                        }
                        self.feed(Input::Received(d.message)).await;
                    }
                    Some(Event::Frame(_, Err(e), _credit)) => self.feed(Input::Malformed(e)).await,
                    Some(Event::Closed(_)) => self.feed(Input::TcpClosed).await,
                },
                Some(()) = neighbor_changed(self.discovery.as_mut().map(|(_, rx)| rx)) => {
                    self.neighbor_changed().await;
                }
                _ = sleep_until(next.map(|(_, at)| at)) => {
                    if let Some((t, _)) = next {
                        self.timers.remove(&t);
                        self.feed(Input::Expired(t)).await;
                    }
                }
                _ = sleep_until(refresh.map(|(_, at)| at)) => {
                    if let Some((family, _)) = refresh
                        && self.fsm.state() == State::Established
                        && let Some(input) = self.act(Output::ResendRoutes(family)).await
                    {
                        self.feed(input).await;
                    } else if let Some((family, _)) = refresh {
                        self.refresh_due.remove(&family);
                    }
                }
            }
        }
    }

    /// Runs one input through the FSM and carries out what it says.
    async fn feed(&mut self, input: Input) {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for out in self.fsm.handle(input) {
                if let Some(next) = self.act(out).await {
                    queue.push_back(next);
                }
            }
        }
    }

    /// Carries out one output; returns an input it caused (a failed write closes the session).
    async fn act(&mut self, out: Output) -> Option<Input> {
        match out {
            Output::Connect => self.connect(),
            Output::Disconnect => {
                if let Some(mut c) = self.conn.take() {
                    let _ = c.writer.shutdown().await;
                    c.reader.abort();
                }
                self.conn_id += 1;
            }
            Output::Send(m) => {
                let ctx = self.ctx();
                if self.write(&m.to_bytes(&ctx)).await.is_err() {
                    return Some(Input::TcpClosed);
                }
            }
            Output::Arm(t, d) => {
                self.timers.insert(t, Instant::now() + d);
            }
            Output::Cancel(t) => {
                self.timers.remove(&t);
            }
            Output::StateChanged(s) => self.status.send_modify(|st| st.state = s),
            Output::Established(neg) => {
                self.four_octet
                    .store(neg.ctx.four_octet_as, Ordering::Relaxed);
                self.status
                    .send_modify(|s| s.established_since = Some(SystemTime::now()));
                let conn = self.conn.as_ref().map(|c| (c.local, c.outbound));
                tracing::info!(
                    peer = %self.cfg.address.ip(),
                    local = ?conn.map(|c| c.0),
                    outbound = ?conn.map(|c| c.1),
                    hold = neg.hold_time,
                    "BGP session established"
                );
                self.sent.clear();
                if self.sync().await.is_err() {
                    return Some(Input::TcpClosed);
                }
                let families = self
                    .negotiated()
                    .map(|n| n.families.clone())
                    .unwrap_or_default();
                for f in families {
                    let eor = Message::Update(Update::end_of_rib(f)).to_bytes(&self.ctx());
                    if self.write(&eor).await.is_err() {
                        return Some(Input::TcpClosed);
                    }
                }
            }
            Output::SessionDown(why) => {
                self.sent.clear();
                let text = match why {
                    Down::Sent(n) => format!("sent NOTIFICATION {n}"),
                    Down::Received(n) => format!("received NOTIFICATION {n}"),
                    Down::TcpClosed => "connection closed".into(),
                    Down::TcpFailed => "connection failed".into(),
                };
                tracing::info!(peer = %self.cfg.address.ip(), "BGP session down: {text}");
                self.status.send_modify(|s| {
                    s.established_since = None;
                    s.prefixes_announced = 0;
                    s.last_down = Some(text);
                });
            }
            Output::ResendRoutes(family) => {
                // At most one full resend per second per family: a peer asking more often is
                // answered once the second has passed, with one resend for all its requests.
                let now = Instant::now();
                if let Some(last) = self.refreshed.get(&family)
                    && now.saturating_duration_since(*last) < REFRESH_EVERY
                {
                    self.refresh_due
                        .entry(family)
                        .or_insert(*last + REFRESH_EVERY);
                    self.status.send_modify(|s| s.refreshes_deferred += 1);
                    return None;
                }
                self.refreshed.insert(family, now);
                self.refresh_due.remove(&family);
                let fam: Vec<IpNetwork> = self
                    .sent
                    .keys()
                    .filter(|p| family_of(p) == family)
                    .copied()
                    .collect();
                for p in fam {
                    self.sent.remove(&p);
                }
                if self.sync().await.is_err() {
                    return Some(Input::TcpClosed);
                }
            }
        }
        None
    }

    fn negotiated(&self) -> Option<&Negotiated> {
        self.fsm.negotiated()
    }

    fn ctx(&self) -> Context {
        self.negotiated().map(|n| n.ctx).unwrap_or_default()
    }

    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(c) = &mut self.conn else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        match tokio::time::timeout(Duration::from_secs(10), c.writer.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Where the peer is now: its configured address, or for an unnumbered peer the neighbour
    /// heard on the interface (none yet: not reachable).
    fn peer_address(&self) -> io::Result<SocketAddr> {
        match (&self.discovery, &self.cfg.interface) {
            (Some((d, rx)), Some(interface)) => match *rx.borrow() {
                Some(n) => Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                    *n.ip(),
                    self.cfg.address.port(),
                    0,
                    n.scope_id(),
                ))),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    d.error().unwrap_or_else(|| {
                        format!("no router advertisement heard on {interface} yet")
                    }),
                )),
            },
            _ => Ok(self.cfg.address),
        }
    }

    /// The unnumbered peer's neighbour was learned or changed: a connection to another address
    /// is dropped, and a session waiting to retry connects now.
    async fn neighbor_changed(&mut self) {
        let Ok(now) = self.peer_address() else {
            return;
        };
        match &self.conn {
            Some(c) if c.remote.is_some_and(|r| r.ip() != now.ip()) => {
                self.status.send_modify(|s| {
                    s.last_down = Some(format!("the neighbour is now {}", now.ip()))
                });
                self.feed(Input::TcpClosed).await;
            }
            Some(_) => {}
            None => {
                if self.timers.remove(&Timer::ConnectRetry).is_some() {
                    self.feed(Input::Expired(Timer::ConnectRetry)).await;
                }
            }
        }
    }

    fn connect(&mut self) {
        let cfg = self.cfg.clone();
        let events = self.events.clone();
        let address = self.peer_address();
        tokio::spawn(async move {
            let attempt = async {
                let address = address?;
                let socket = if address.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                if let Some(pw) = &cfg.md5_password {
                    crate::sys::set_tcp_md5(socket.as_raw_fd(), address.ip(), pw.as_bytes())?;
                }
                cfg.apply_ttl(socket.as_raw_fd(), address.is_ipv6())?;
                if let Some(src) = cfg.source {
                    socket.bind(SocketAddr::new(src, 0))?;
                }
                socket.connect(address).await
            };
            let r = match tokio::time::timeout(cfg.connect_timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            };
            let _ = events.send(Event::Connected(r));
        });
    }

    /// A connection we opened or the peer opened. The first one is the session's; one that
    /// arrives while the session's is opening is a collision, resolved once its OPEN is read;
    /// any other is refused with Cease 7 (Connection Collision Resolution).
    async fn new_connection(&mut self, stream: TcpStream, outbound: bool) {
        let state = self.fsm.state();
        if !outbound
            && let Err(e) = self
                .cfg
                .apply_ttl(stream.as_raw_fd(), self.cfg.address.is_ipv6())
        {
            self.status
                .send_modify(|s| s.last_down = Some(format!("accept: {e}")));
            return;
        }
        if self.conn.is_none() && state <= State::Active {
            self.adopt(stream, outbound, Vec::new()).await;
        } else if matches!(state, State::OpenSent | State::OpenConfirm) && !self.candidate {
            self.candidate = true;
            let events = self.events.clone();
            tokio::spawn(async move {
                let c = read_open(stream, outbound).await;
                let _ = events.send(Event::CandidateOpen(c));
            });
        } else {
            refuse(stream).await;
        }
    }

    /// The OPEN on a second connection has been read: keep one of the two (RFC 4271 §6.8).
    async fn candidate_open(&mut self, c: Option<Candidate>) {
        self.candidate = false;
        let Some(Candidate {
            stream,
            outbound: new_outbound,
            open,
            rest,
        }) = c
        else {
            return;
        };
        let state = self.fsm.state();
        if let Some(existing) = &self.conn {
            let keep = fsm::resolve_collision(
                self.cfg.fsm.router_id,
                open.bgp_id,
                state,
                existing.outbound,
                new_outbound,
            );
            if keep == fsm::Keep::Existing {
                refuse(stream).await;
                return;
            }
            self.feed(Input::CollisionLost).await;
        }
        self.adopt(stream, new_outbound, rest).await;
        self.feed(Input::Received(Message::Open(open))).await;
    }

    async fn adopt(&mut self, stream: TcpStream, outbound: bool, rest: Vec<u8>) {
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            self.feed(Input::TcpFailed).await;
            return;
        };
        // An IPv4 peer accepted on a dual-stack listener shows as ::ffff:a.b.c.d.
        let local = SocketAddr::new(local.ip().to_canonical(), local.port());
        let remote = stream.peer_addr().ok();
        self.link_local = match (local.ip(), self.cfg.address.ip()) {
            // From a link-local address the session's own address is the link-local next hop.
            (IpAddr::V6(l), _) if l.is_unicast_link_local() => None,
            (IpAddr::V6(l), IpAddr::V6(p)) => {
                std::fs::read_to_string("/proc/thread-self/net/if_inet6")
                    .ok()
                    .and_then(|t| link_local_next_hop(&t, l, p))
            }
            _ => None,
        };
        let addrs = crate::sys::interface_addresses().unwrap_or_default();
        self.other_next_hop = other_family_next_hop(&addrs, local.ip());
        self.global_v6 = match local.ip() {
            IpAddr::V6(l) if l.is_unicast_link_local() => global_v6_beside(&addrs, l),
            _ => None,
        };
        self.conn_id += 1;
        let id = self.conn_id;
        let (reader, writer) = stream.into_split();
        let events = self.events.clone();
        self.four_octet.store(true, Ordering::Relaxed);
        let four_octet = self.four_octet.clone();
        let reader = tokio::spawn(read_messages(reader, rest, id, events, four_octet));
        self.conn = Some(Conn {
            writer,
            reader,
            local,
            remote,
            outbound,
        });
        self.feed(Input::TcpConnected).await;
    }

    /// Sends what differs between the Adj-RIB-Out and the desired routes.
    async fn sync(&mut self) -> io::Result<()> {
        self.sync_over(None).await
    }

    /// [`Self::sync`] for the prefixes of `only` alone (all: `None`): a change of a few routes
    /// costs what it changes.
    async fn sync_over(&mut self, only: Option<&BTreeSet<IpNetwork>>) -> io::Result<()> {
        let Some(neg) = self.negotiated().cloned() else {
            return Ok(());
        };
        let local = self.conn.as_ref().map(|c| c.local.ip());
        let ibgp = neg.remote_as == self.cfg.fsm.local_as;
        // The session's own address for its family; for the other, the configured one, else
        // one of that family on the same interface.
        let nh4 = self.cfg.next_hop_v4.or(match (local, self.other_next_hop) {
            (Some(IpAddr::V4(a)), _) | (_, Some(IpAddr::V4(a))) => Some(a),
            _ => None,
        });
        let nh6: Vec<Ipv6Addr> = match (self.cfg.next_hop_v6, local) {
            // From a link-local address (unnumbered): the interface's global address if it
            // has one, then the link-local one (RFC 2545 §3); or the link-local one alone.
            (None, Some(IpAddr::V6(l))) if l.is_unicast_link_local() => {
                self.global_v6.into_iter().chain([l]).collect()
            }
            (configured, _) => configured
                .or(match (local, self.other_next_hop) {
                    (Some(IpAddr::V6(a)), _) | (_, Some(IpAddr::V6(a))) => Some(a),
                    _ => None,
                })
                .into_iter()
                .chain(self.link_local)
                .collect(),
        };
        // Without an IPv4 next hop, IPv4 prefixes go with the IPv6 ones to a peer that takes
        // them so (RFC 8950; the builder puts them in MP_REACH_NLRI).
        let v4_over_v6 = nh4.is_none() && neg.ipv4_over_ipv6_next_hop && !nh6.is_empty();
        let carried = |p: &IpNetwork| {
            let f = family_of(p);
            neg.families.contains(&f)
                && match p {
                    IpNetwork::V4(_) => nh4.is_some() || v4_over_v6,
                    IpNetwork::V6(_) => !nh6.is_empty(),
                }
        };
        let sent: Box<dyn Iterator<Item = &IpNetwork>> = match only {
            Some(o) => Box::new(o.iter().filter(|p| self.sent.contains_key(p))),
            None => Box::new(self.sent.keys()),
        };
        let withdraw: Vec<IpNetwork> = sent
            .filter(|p| !self.desired.contains_key(p) || !carried(p))
            .copied()
            .collect();
        let desired: Box<dyn Iterator<Item = (&IpNetwork, &RouteAttrs)>> = match only {
            Some(o) => Box::new(o.iter().filter_map(|p| self.desired.get_key_value(p))),
            None => Box::new(self.desired.iter()),
        };
        let mut groups: BTreeMap<&RouteAttrs, Vec<IpNetwork>> = BTreeMap::new();
        for (p, a) in desired {
            if carried(p) && self.sent.get(p) != Some(a) {
                groups.entry(a).or_default().push(*p);
            }
        }
        let builder = UpdateBuilder::new(neg.ctx);
        let mut msgs = builder.withdraw(&withdraw);
        let mut refused: BTreeSet<IpNetwork> = BTreeSet::new();
        for (attrs, prefixes) in &groups {
            let pa = PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(if ibgp {
                    AsPath::default()
                } else {
                    AsPath::sequence(&[self.cfg.fsm.local_as])
                }),
                next_hop: nh4,
                local_pref: if ibgp {
                    attrs.local_pref.or(Some(100))
                } else {
                    None
                },
                communities: attrs.communities.clone(),
                large_communities: attrs.large_communities.clone(),
                ..Default::default()
            };
            match builder.try_announce(&pa, prefixes, &nh6) {
                Ok(m) => msgs.extend(m),
                // Attributes no UPDATE can hold (`check` refuses such configurations): these
                // routes are not sent (counted in `routes_refused`), the others are, and the
                // session stays up.
                Err(_) => {
                    refused.extend(prefixes.iter().copied());
                }
            }
        }
        match only {
            Some(o) => {
                for p in o {
                    match self.desired.get(p) {
                        Some(a) if carried(p) && !refused.contains(p) => {
                            self.sent.insert(*p, a.clone());
                        }
                        _ => {
                            self.sent.remove(p);
                        }
                    }
                }
                self.refused.retain(|p| !o.contains(p));
                self.refused.extend(refused);
            }
            None => {
                self.sent = self
                    .desired
                    .iter()
                    .filter(|(p, _)| carried(p) && !refused.contains(p))
                    .map(|(p, a)| (*p, a.clone()))
                    .collect();
                self.refused = refused;
            }
        }
        let refused_now = self.refused.len();
        self.status.send_modify(|s| s.routes_refused = refused_now);
        let count = msgs.len() as u64;
        for m in msgs {
            self.write(&m).await?;
        }
        if count > 0 {
            // Our UPDATEs count as keepalives (RFC 4271 §4.4).
            for out in self.fsm.handle(Input::UpdateSent) {
                if let Output::Arm(t, d) = out {
                    self.timers.insert(t, Instant::now() + d);
                }
            }
        }
        let n = self.sent.len();
        self.status.send_modify(|s| {
            s.updates_sent += count;
            s.prefixes_announced = n;
        });
        Ok(())
    }
}

/// How long a second connection may take to send its OPEN.
const CANDIDATE_OPEN_WAIT: Duration = Duration::from_secs(10);

/// Reads the first message of a second connection; it must be an OPEN.
async fn read_open(mut stream: TcpStream, outbound: bool) -> Option<Candidate> {
    let read = async {
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(len) = message_len(&buf).ok()?
                && buf.len() >= len
            {
                let d = Message::decode(&buf[..len], &Context::default()).ok()?;
                let Message::Open(open) = d.message else {
                    return None;
                };
                return Some((open, buf[len..].to_vec()));
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (open, rest) = tokio::time::timeout(CANDIDATE_OPEN_WAIT, read)
        .await
        .ok()
        .flatten()?;
    Some(Candidate {
        stream,
        outbound,
        open,
        rest,
    })
}

/// Closes a connection that lost a collision or came when the session had one already.
async fn refuse(mut stream: TcpStream) {
    let bytes =
        Message::Notification(crate::packet::Notification::cease(7)).to_bytes(&Context::default());
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    let _ = stream.shutdown().await;
}

/// Our link-local address on the interface that holds `local`, when `peer` is in one of that
/// interface's prefixes; `if_inet6` is the text of `/proc/net/if_inet6`.
pub fn link_local_next_hop(if_inet6: &str, local: Ipv6Addr, peer: Ipv6Addr) -> Option<Ipv6Addr> {
    // "20010db8000000000000000000000010 02 40 00 80 eth0": address, ifindex, prefix length,
    // scope, flags, name; all hex.
    let rows: Vec<(Ipv6Addr, u8, u8, &str)> = if_inet6
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [addr, _, plen, scope, _, name] = f.as_slice() else {
                return None;
            };
            let a = Ipv6Addr::from(u128::from_str_radix(addr, 16).ok()?);
            let plen = u8::from_str_radix(plen, 16).ok()?;
            let scope = u8::from_str_radix(scope, 16).ok()?;
            Some((a, plen, scope, *name))
        })
        .collect();
    let (_, plen, _, name) = rows.iter().find(|r| r.0 == local)?;
    let on_link = ipnetwork::Ipv6Network::new(local, *plen)
        .ok()
        .is_some_and(|n| n.contains(peer) && *plen < 128);
    if !on_link {
        return None;
    }
    rows.iter()
        .find(|r| r.3 == *name && r.2 == 0x20 && r.0.is_unicast_link_local())
        .map(|r| r.0)
}

/// A global IPv6 address on the interface that holds the link-local address `local`, from
/// `addrs` (interface name, address).
pub fn global_v6_beside(addrs: &[(String, IpAddr)], local: Ipv6Addr) -> Option<Ipv6Addr> {
    let (dev, _) = addrs.iter().find(|(_, a)| *a == IpAddr::V6(local))?;
    addrs.iter().find_map(|(d, a)| match a {
        IpAddr::V6(v6)
            if d == dev
                && !v6.is_loopback()
                && !v6.is_unicast_link_local()
                && !v6.is_unspecified() =>
        {
            Some(*v6)
        }
        _ => None,
    })
}

/// The next hop for the family the session does not run over: an address of that family on
/// the interface that holds `local` (global for IPv6, not link-local), from `addrs` (interface
/// name, address).
pub fn other_family_next_hop(addrs: &[(String, IpAddr)], local: IpAddr) -> Option<IpAddr> {
    let (dev, _) = addrs.iter().find(|(_, a)| *a == local)?;
    addrs
        .iter()
        .filter(|(d, _)| d == dev)
        .map(|(_, a)| *a)
        .find(|a| match (local, a) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => {
                !v6.is_loopback() && !v6.is_unicast_link_local() && !v6.is_unspecified()
            }
            (IpAddr::V6(_), IpAddr::V4(v4)) => !v4.is_loopback() && !v4.is_unspecified(),
            _ => false,
        })
}

fn family_of(p: &IpNetwork) -> AfiSafi {
    match p {
        IpNetwork::V4(_) => AfiSafi::IPV4_UNICAST,
        IpNetwork::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// Resolves when an unnumbered peer's neighbour changes (`None` when the watch is gone);
/// pending forever for a numbered peer.
async fn neighbor_changed(
    rx: Option<&mut watch::Receiver<crate::neighbor::Neighbor>>,
) -> Option<()> {
    match rx {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that sends far faster than the session handles (here: a session that handles
    /// nothing) fills its own TCP window: the reader holds [`FRAMES_IN_FLIGHT`] messages and
    /// stops reading; once they are handled it goes on, and nothing is lost.
    #[tokio::test]
    async fn a_message_flood_stops_the_reader_at_its_window_and_loses_nothing() {
        const SENT: usize = 100_000;
        let (mut peer, ours) = tokio::io::duplex(4096);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_messages(
            ours,
            Vec::new(),
            7,
            tx,
            Arc::new(AtomicBool::new(true)),
        ));
        let mut keepalive = Vec::new();
        Message::Keepalive.encode(&Context::default(), &mut keepalive);
        let flood = tokio::spawn(async move {
            for _ in 0..SENT {
                peer.write_all(&keepalive).await.unwrap();
            }
            peer
        });
        // Give the flood every chance to get in: it cannot.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!flood.is_finished(), "the peer wrote all it wanted");
        assert_eq!(rx.len(), FRAMES_IN_FLIGHT, "decoded and unhandled");
        // Handling the messages releases their credits: all of them arrive, in order.
        let mut got = 0;
        while got < SENT {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(Event::Frame(7, Ok(d), credit))) => {
                    assert_eq!(d.message, Message::Keepalive);
                    drop(credit);
                    got += 1;
                }
                other => panic!("after {got}: {:?}", other.map(|e| e.map(|_| ()))),
            }
        }
        drop(flood.await.unwrap());
        assert!(matches!(rx.recv().await, Some(Event::Closed(7))));
        reader.await.unwrap();
    }

    const IF_INET6: &str = "\
00000000000000000000000000000001 01 80 10 80       lo
20010db8000000000000000000000010 02 40 00 80     eth0
fe800000000000000c9a3ffffe0b1a2b 02 40 20 80     eth0
20010db8000100000000000000000005 03 40 00 80     eth1
fe800000000000000000000000000099 03 40 20 80     eth1
";

    #[test]
    fn the_other_familys_next_hop_is_on_the_sessions_interface() {
        let a = |d: &str, ip: &str| (d.to_string(), ip.parse::<IpAddr>().unwrap());
        let addrs = [
            a("lo", "127.0.0.1"),
            a("lo", "::1"),
            a("eth0", "192.0.2.10"),
            a("eth0", "fe80::1"),
            a("eth0", "2001:db8::10"),
            a("eth1", "198.51.100.10"),
            a("eth1", "2001:db8:1::10"),
        ];
        let nh = |l: &str| other_family_next_hop(&addrs, l.parse().unwrap());
        assert_eq!(nh("192.0.2.10"), Some("2001:db8::10".parse().unwrap()));
        assert_eq!(nh("2001:db8::10"), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(nh("2001:db8:1::10"), Some("198.51.100.10".parse().unwrap()));
        assert_eq!(nh("127.0.0.1"), None, "loopback has only ::1");
        assert_eq!(nh("203.0.113.1"), None, "not ours");
    }

    #[test]
    fn an_unnumbered_sessions_global_next_hop_is_on_its_interface() {
        let a = |d: &str, ip: &str| (d.to_string(), ip.parse::<IpAddr>().unwrap());
        let addrs = [
            a("eth0", "fe80::10"),
            a("eth0", "192.0.2.10"),
            a("eth0", "2001:db8::10"),
            a("eth1", "fe80::11"),
            a("eth1", "198.51.100.10"),
        ];
        let g = |l: &str| global_v6_beside(&addrs, l.parse().unwrap());
        assert_eq!(g("fe80::10"), Some("2001:db8::10".parse().unwrap()));
        assert_eq!(
            g("fe80::11"),
            None,
            "eth1 has only its link-local IPv6 address"
        );
        assert_eq!(g("fe80::99"), None, "not ours");
    }

    #[test]
    fn link_local_next_hop_is_the_interface_of_an_on_link_peer() {
        let ll = |l: &str, p: &str| {
            link_local_next_hop(IF_INET6, l.parse().unwrap(), p.parse().unwrap())
        };
        assert_eq!(
            ll("2001:db8::10", "2001:db8::1"),
            Some("fe80::c9a:3fff:fe0b:1a2b".parse().unwrap())
        );
        assert_eq!(
            ll("2001:db8:1::5", "2001:db8:1::1"),
            Some("fe80::99".parse().unwrap())
        );
        // Not on-link (multihop), an address that is not ours, a /128 on loopback.
        assert_eq!(ll("2001:db8::10", "2001:db8:2::1"), None);
        assert_eq!(ll("2001:db8::11", "2001:db8::1"), None);
        assert_eq!(ll("::1", "::1"), None);
        assert_eq!(
            link_local_next_hop("garbage\n", "::1".parse().unwrap(), "::1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn gtsm_sets_ttl_255_and_the_minimum_from_the_hop_count() {
        let mut c = PeerConfig::new(
            fsm::Config {
                local_as: 1,
                router_id: Ipv4Addr::new(192, 0, 2, 1),
                remote_as: fsm::RemoteAs::Fixed(2),
                hold_time: 90,
                keepalive: None,
                families: vec![AfiSafi::IPV4_UNICAST],
                graceful_restart: None,
                connect_retry: Duration::from_secs(1),
                connect_retry_max: Duration::from_secs(1),
                passive: false,
            },
            "192.0.2.2:179".parse().unwrap(),
        );
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.ttl = Some(1);
        c.apply_ttl(s.as_raw_fd(), false).unwrap();
        assert_eq!(s.ttl().unwrap(), 1);
        c.ttl_security = Some(2);
        c.apply_ttl(s.as_raw_fd(), false).unwrap();
        assert_eq!(s.ttl().unwrap(), 255);
        assert_eq!(min_ttl(&s), 254);
        c.ttl_security = Some(1);
        c.apply_ttl(s.as_raw_fd(), false).unwrap();
        assert_eq!(min_ttl(&s), 255);
    }

    fn min_ttl(s: &std::net::UdpSocket) -> i32 {
        crate::sys::get_min_ttl(s.as_raw_fd()).unwrap()
    }
}
