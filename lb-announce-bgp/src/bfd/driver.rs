//! BFD sessions over UDP, one tokio task for all of them. Single hop (RFC 5881): received on
//! port 3784, sent from a port of 49152–65535 of the session's own with TTL / hop limit 255,
//! and only packets that arrive with 255 are taken (a packet from further away is forged or
//! misrouted). Multihop (RFC 5883): port 4784, packets taken from the profile's `minimumTtl`
//! up. Packets are matched to sessions by Your Discriminator, or by the sender's address while
//! it is 0.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::fsm::{Config, Counters, Machine, Output};
use super::packet::{ControlPacket, Diag, State};
use crate::sys;

/// The single hop port (RFC 5881).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// The multihop port (RFC 5883).
pub const MULTIHOP_PORT: u16 = 4784;

/// One peer's BFD session, as the BGP side asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerBfd {
    /// The peer's address.
    pub peer: IpAddr,
    /// The address to send from (the BGP session's source address), if set.
    pub local: Option<IpAddr>,
    /// The profile's timers.
    pub config: Config,
    /// Multihop (RFC 5883) rather than single hop.
    pub multihop: bool,
    /// Multihop: the least TTL accepted (`minimumTtl`).
    pub min_ttl: u8,
}

impl PeerBfd {
    /// A single hop session to `peer` with `config`.
    pub fn single_hop(peer: IpAddr, config: Config) -> Self {
        PeerBfd {
            peer,
            local: None,
            config,
            multihop: false,
            min_ttl: 254,
        }
    }
}

/// A session as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdStatus {
    /// The peer's address.
    pub peer: IpAddr,
    /// The session state.
    pub state: State,
    /// Why it last left Up.
    pub diag: Diag,
    /// Our discriminator.
    pub local_discr: u32,
    /// The peer's (0 while unknown).
    pub remote_discr: u32,
    /// The interval packets go out at now (before jitter).
    pub tx_interval: Duration,
    /// The silence after which the session goes down.
    pub detection_time: Duration,
    /// Packets and state changes counted.
    pub counters: Counters,
    /// Why the session cannot run (its sockets could not be opened), if so.
    pub error: Option<String>,
}

/// Received packets dropped before any session took them, by reason.
type Dropped = Arc<std::sync::Mutex<BTreeMap<&'static str, u64>>>;

/// Called with the peer's name when its BFD session goes from Up to Down.
pub type OnDown = Arc<dyn Fn(&str) + Send + Sync>;

enum Command {
    Set(BTreeMap<String, PeerBfd>),
    Stop(oneshot::Sender<()>),
}

/// The BFD sessions of a speaker. Dropping it ends them without a word to the peers; call
/// [`Bfd::stop`] to take them administratively down first.
#[derive(Debug)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<BTreeMap<String, BfdStatus>>,
    dropped: Dropped,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Bfd {
    /// Starts the task (within a tokio runtime); `on_down` hears of each session that goes
    /// down.
    pub fn start(on_down: OnDown) -> Bfd {
        let (commands, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(BTreeMap::new());
        let dropped = Dropped::default();
        let driver = Driver {
            dropped: dropped.clone(),
            origin: Instant::now(),
            sessions: BTreeMap::new(),
            sockets: BTreeMap::new(),
            next_discr: first_discr(),
            status: status_tx,
            on_down,
        };
        let task = tokio::spawn(driver.run(rx));
        Bfd {
            commands,
            status,
            dropped,
            task,
        }
    }

    /// Makes the sessions exactly `peers` (by peer name): new ones start, removed ones are
    /// taken administratively down, changed timers are applied by a Poll Sequence.
    pub fn set_peers(&self, peers: BTreeMap<String, PeerBfd>) {
        let _ = self.commands.send(Command::Set(peers));
    }

    /// Every session's status, by peer name.
    pub fn statuses(&self) -> BTreeMap<String, BfdStatus> {
        self.status.borrow().clone()
    }

    /// Received packets dropped before any session took them, by reason: `malformed` (RFC
    /// 5880 §6.8.6 checks), `no_session` (for no session of ours), `wrong_source` (a session's
    /// discriminator from another address), `ttl` (below 255 single hop, below `minimumTtl`
    /// multihop).
    pub fn dropped(&self) -> BTreeMap<&'static str, u64> {
        self.dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The statuses as they change.
    pub fn watch(&self) -> watch::Receiver<BTreeMap<String, BfdStatus>> {
        self.status.clone()
    }

    /// Takes every session administratively down (the peers do not count it as a failure)
    /// and ends the task.
    pub async fn stop(self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        }
        self.task.abort();
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A random first discriminator, so that a restarted speaker's sessions are told apart from
/// its last run's.
fn first_discr() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| {
            d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16)
        });
    (t | 1) & 0x7fff_ffff
}

struct Session {
    peer: PeerBfd,
    machine: Machine,
    /// Connected to the peer, from the session's own source port.
    socket: Option<UdpSocket>,
    error: Option<String>,
}

/// The receiving sockets: (multihop, IPv6) → socket.
type Receivers = BTreeMap<(bool, bool), Option<UdpSocket>>;

struct Driver {
    origin: Instant,
    sessions: BTreeMap<String, Session>,
    sockets: Receivers,
    next_discr: u32,
    status: watch::Sender<BTreeMap<String, BfdStatus>>,
    on_down: OnDown,
    dropped: Dropped,
}

/// A socket bound to `addr` with SO_REUSEADDR, non-blocking, for tokio.
fn udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv6() {
        socket2::Domain::IPV6
    } else {
        socket2::Domain::IPV4
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The receiving socket of a port and family.
fn receiver(multihop: bool, ipv6: bool) -> io::Result<UdpSocket> {
    let port = if multihop {
        MULTIHOP_PORT
    } else {
        SINGLE_HOP_PORT
    };
    let ip: IpAddr = if ipv6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let s = udp(SocketAddr::new(ip, port))?;
    sys::set_recv_ttl(s.as_raw_fd(), ipv6)?;
    UdpSocket::from_std(s)
}

/// A session's sending socket: from a port of 49152–65535, TTL 255, connected to the peer.
fn sender(p: &PeerBfd, seed: u32) -> io::Result<UdpSocket> {
    let ipv6 = p.peer.is_ipv6();
    let local = p.local.unwrap_or(if ipv6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    });
    let port = if p.multihop {
        MULTIHOP_PORT
    } else {
        SINGLE_HOP_PORT
    };
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
    for i in 0..64u32 {
        let src = 49152 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 977)) % 16384) as u16;
        match udp(SocketAddr::new(local, src)) {
            Ok(s) => {
                sys::set_ttl(s.as_raw_fd(), ipv6, 255)?;
                s.connect(SocketAddr::new(p.peer, port))?;
                return UdpSocket::from_std(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Driver {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = [0u8; 256];
        let mut refresh = tokio::time::interval(Duration::from_secs(1));
        loop {
            let deadline = self
                .sessions
                .values()
                .map(|s| s.machine.deadline())
                .min()
                .unwrap_or(Duration::MAX)
                .min(self.now() + Duration::from_secs(3600));
            let at = self.origin + deadline;
            tokio::select! {
                c = commands.recv() => match c {
                    Some(Command::Set(peers)) => self.set(peers),
                    Some(Command::Stop(done)) => {
                        self.stop();
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                r = recv_any(&self.sockets, &mut buf) => {
                    if let Some((n, from, ttl, multihop)) = r {
                        self.received(&buf[..n], from, ttl, multihop);
                    }
                }
                _ = tokio::time::sleep_until(at) => self.tick(),
                _ = refresh.tick() => self.publish(),
            }
        }
    }

    fn set(&mut self, peers: BTreeMap<String, PeerBfd>) {
        let now = self.now();
        self.sessions.retain(|name, s| {
            let keep = peers.get(name).is_some_and(|p| {
                p.peer == s.peer.peer && p.local == s.peer.local && p.multihop == s.peer.multihop
            });
            if !keep && let Some(sock) = &s.socket {
                // Removed: the peer is told (AdminDown), so it does not count a failure.
                for o in s.machine.admin_down(now) {
                    if let Output::Send(p) = o {
                        let _ = sock.try_send(&p.encode());
                    }
                }
            }
            keep
        });
        for (name, p) in peers {
            if let Some(s) = self.sessions.get_mut(&name) {
                if s.peer.config != p.config {
                    let out = s.machine.reconfigure(p.config, now);
                    Self::send_now(s, &out);
                }
                // A new minimum TTL applies from the next packet.
                s.peer = p;
                continue;
            }
            let discr = self.next_discr;
            self.next_discr = self.next_discr.wrapping_add(1).max(1);
            let key = (p.multihop, p.peer.is_ipv6());
            self.sockets.entry(key).or_insert_with(|| {
                receiver(key.0, key.1)
                    .map_err(|e| warn!("BFD: cannot receive on the {} port: {e}", port_name(key.0)))
                    .ok()
            });
            let (socket, error) = match (self.sockets.get(&key), sender(&p, discr)) {
                (Some(Some(_)), Ok(s)) => (Some(s), None),
                (_, Err(e)) => (None, Some(format!("sending socket: {e}"))),
                (_, Ok(_)) => (
                    None,
                    Some(format!("cannot receive on UDP {}", port_name(key.0))),
                ),
            };
            if let Some(e) = &error {
                warn!(peer = %name, "BFD session cannot run: {e}");
            } else {
                info!(peer = %name, address = %p.peer, discriminator = discr, "BFD session started");
            }
            self.sessions.insert(
                name,
                Session {
                    machine: Machine::new(p.config, discr, now),
                    peer: p,
                    socket,
                    error,
                },
            );
        }
        self.publish();
    }

    fn send_now(s: &Session, out: &[Output]) {
        let Some(sock) = &s.socket else { return };
        for o in out {
            if let Output::Send(p) = o {
                let _ = sock.try_send(&p.encode());
            }
        }
    }

    /// Carries out a session's outputs; a session that left Up is reported.
    fn carry_out(&self, name: &str, s: &Session, out: Vec<Output>) -> bool {
        let mut changed = false;
        for o in &out {
            match o {
                Output::Send(p) => {
                    if let Some(sock) = &s.socket
                        && let Err(e) = sock.try_send(&p.encode())
                    {
                        warn!(peer = %name, "BFD send: {e}");
                    }
                }
                Output::StateChanged { from, to, diag } => {
                    changed = true;
                    info!(peer = %name, %from, %to, %diag, "BFD session state");
                    if *from == State::Up {
                        (self.on_down)(name);
                    }
                }
            }
        }
        changed
    }

    fn drop_packet(&self, reason: &'static str) {
        *self
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    fn received(&mut self, b: &[u8], from: SocketAddr, ttl: Option<u8>, multihop: bool) {
        let Ok(p) = ControlPacket::decode(b) else {
            self.drop_packet("malformed");
            return;
        };
        let name = self
            .sessions
            .iter()
            .find(|(_, s)| {
                s.peer.multihop == multihop
                    && if p.your_discr != 0 {
                        s.machine.local_discr() == p.your_discr
                    } else {
                        s.peer.peer == from.ip()
                    }
            })
            .map(|(n, _)| n.clone());
        let Some(name) = name else {
            self.drop_packet("no_session");
            return;
        };
        let now = self.now();
        let Some(s) = self.sessions.get_mut(&name) else {
            return;
        };
        // The sender must be the peer, and near enough (RFC 5881 §5, RFC 5883 §5).
        let min_ttl = if multihop { s.peer.min_ttl } else { 255 };
        if s.peer.peer != from.ip() {
            self.drop_packet("wrong_source");
            return;
        }
        if ttl.is_none_or(|t| t < min_ttl) {
            self.drop_packet("ttl");
            return;
        }
        let out = s.machine.receive(&p, now);
        let s = &self.sessions[&name];
        if self.carry_out(&name, s, out) {
            self.publish();
        }
    }

    fn tick(&mut self) {
        let now = self.now();
        let mut changed = false;
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in names {
            let Some(s) = self.sessions.get_mut(&name) else {
                continue;
            };
            if s.machine.deadline() > now {
                continue;
            }
            let out = s.machine.tick(now);
            let s = &self.sessions[&name];
            changed |= self.carry_out(&name, s, out);
        }
        if changed {
            self.publish();
        }
    }

    fn stop(&mut self) {
        let now = self.now();
        for s in self.sessions.values_mut() {
            let out = s.machine.admin_down(now);
            Self::send_now(s, &out);
        }
        self.publish();
    }

    fn publish(&self) {
        let st = self
            .sessions
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    BfdStatus {
                        peer: s.peer.peer,
                        state: s.machine.state(),
                        diag: s.machine.diag(),
                        local_discr: s.machine.local_discr(),
                        remote_discr: s.machine.remote_discr(),
                        tx_interval: s.machine.tx_interval(),
                        detection_time: s.machine.detection_time(),
                        counters: s.machine.counters(),
                        error: s.error.clone(),
                    },
                )
            })
            .collect();
        self.status.send_replace(st);
    }
}

fn port_name(multihop: bool) -> &'static str {
    if multihop { "4784 (multihop)" } else { "3784" }
}

/// The next datagram on any receiving socket: (length, sender, TTL, multihop); `None` when a
/// socket woke with nothing to read. Pending forever when there is no socket.
async fn recv_any(
    sockets: &Receivers,
    buf: &mut [u8],
) -> Option<(usize, SocketAddr, Option<u8>, bool)> {
    let get = |multihop: bool, v6: bool| sockets.get(&(multihop, v6)).and_then(Option::as_ref);
    let slots = [
        get(false, false),
        get(false, true),
        get(true, false),
        get(true, true),
    ];
    let i = tokio::select! {
        r = readable(slots[0]) => r.map(|()| 0),
        r = readable(slots[1]) => r.map(|()| 1),
        r = readable(slots[2]) => r.map(|()| 2),
        r = readable(slots[3]) => r.map(|()| 3),
    }
    .ok()?;
    let s = slots[i]?;
    match s.try_io(Interest::READABLE, || {
        sys::recv_with_ttl(s.as_raw_fd(), buf)
    }) {
        Ok((n, from, ttl)) => Some((n, unmap(from), ttl, i >= 2)),
        Err(_) => None,
    }
}

async fn readable(s: Option<&UdpSocket>) -> io::Result<()> {
    match s {
        Some(s) => s.readable().await,
        None => std::future::pending().await,
    }
}

/// An IPv4-mapped IPv6 sender as the IPv4 address it is.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}
