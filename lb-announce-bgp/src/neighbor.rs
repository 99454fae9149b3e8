//! The neighbour of an unnumbered peer: one tokio task per interface that sends a Router
//! Solicitation at start and a Router Advertisement (lifetime 0) every [`ADVERTISE_EVERY`] and
//! in answer to a solicitation, and learns the peer's link-local address from what the router
//! sends ([`crate::nd::Learner`]). Messages that arrive with a hop limit other than 255, from a
//! source that is not link-local, or malformed, are dropped and counted.

use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::nd::{self, Learner, Message};

/// How often we advertise ourselves (FRR's interval on an unnumbered interface is 10 s too).
pub const ADVERTISE_EVERY: Duration = Duration::from_secs(10);
/// A neighbour silent this long may be replaced by another one heard on the link.
pub const STALE_AFTER: Duration = Duration::from_secs(60);
/// The least time between two advertisements sent in answer to solicitations.
const ANSWER_AT_MOST_EVERY: Duration = Duration::from_secs(3);
/// How long to wait before opening the interface again when it is missing.
const REOPEN_AFTER: Duration = Duration::from_secs(5);

/// What the discovery shows: the neighbour (with its interface as scope id), once heard.
pub type Neighbor = Option<SocketAddrV6>;

/// A running discovery on one interface. Dropping it stops the task.
#[derive(Debug)]
pub struct Discovery {
    neighbor: watch::Receiver<Neighbor>,
    error: watch::Receiver<Option<String>>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Discovery {
    /// Starts on `interface` (within a tokio runtime). The socket is opened here, in the
    /// caller's network namespace; if the interface is missing, the task tries again every
    /// few seconds and [`Discovery::error`] says why.
    pub fn start(interface: &str) -> Discovery {
        let (ntx, neighbor) = watch::channel(None);
        let (etx, error) = watch::channel(None);
        let dropped = Arc::new(AtomicU64::new(0));
        let first = open(interface);
        let task = tokio::spawn(run(interface.to_string(), first, ntx, etx, dropped.clone()));
        Discovery {
            neighbor,
            error,
            dropped,
            task,
        }
    }

    /// The neighbour as it is learned and changes.
    pub fn watch(&self) -> watch::Receiver<Neighbor> {
        self.neighbor.clone()
    }

    /// Why the interface cannot be used now, if it cannot.
    pub fn error(&self) -> Option<String> {
        self.error.borrow().clone()
    }

    /// Messages dropped: malformed, hop limit not 255, or a source that is not link-local.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A raw ICMPv6 socket on `interface` that takes router solicitations and advertisements and
/// sends to all-nodes with hop limit 255, and the interface's index.
/// (tokio's `UdpSocket` drives any datagram socket: readiness, `recvmsg` and `sendto` are the
/// same calls for a raw one.)
fn open(interface: &str) -> io::Result<(UdpSocket, u32)> {
    let index = crate::sys::interface_index(interface)?;
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(interface.as_bytes()))?;
    crate::sys::icmp6_filter(
        s.as_raw_fd(),
        &[nd::ROUTER_SOLICITATION, nd::ROUTER_ADVERTISEMENT],
    )?;
    crate::sys::set_recv_ttl(s.as_raw_fd(), true)?;
    s.set_multicast_hops_v6(u32::from(nd::HOP_LIMIT))?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_loop_v6(false)?;
    s.set_nonblocking(true)?;
    Ok((UdpSocket::from_std(std::net::UdpSocket::from(s))?, index))
}

fn send(s: &UdpSocket, index: u32, message: &[u8], to: Ipv6Addr) -> io::Result<usize> {
    s.try_send_to(message, SocketAddrV6::new(to, 0, 0, index).into())
}

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

async fn run(
    interface: String,
    mut opened: io::Result<(UdpSocket, u32)>,
    neighbor: watch::Sender<Neighbor>,
    error: watch::Sender<Option<String>>,
    dropped: Arc<AtomicU64>,
) {
    let (socket, index) = loop {
        match opened {
            Ok(o) => break o,
            Err(e) => {
                let why = format!("interface {interface}: {e}");
                tracing::warn!("unnumbered peer: {why}");
                error.send_replace(Some(why));
                tokio::time::sleep(REOPEN_AFTER).await;
                opened = open(&interface);
            }
        }
    };
    error.send_replace(None);
    let start = Instant::now();
    let mut learner = Learner::new(STALE_AFTER);
    let _ = send(&socket, index, &nd::router_solicitation(), ALL_ROUTERS);
    let mut next_advert = Instant::now();
    let mut last_answer: Option<Instant> = None;
    let mut buf = [0u8; 1500];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_advert) => {
                if let Err(e) = send(&socket, index, &nd::router_advertisement(0), ALL_NODES) {
                    tracing::debug!(%interface, "router advertisement: {e}");
                }
                next_advert = Instant::now() + ADVERTISE_EVERY;
            }
            r = socket.readable() => {
                if r.is_err() {
                    // Not expected of a registered socket; do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let got = socket.try_io(Interest::READABLE, || {
                    crate::sys::recv_with_ttl(socket.as_raw_fd(), &mut buf)
                });
                let Ok((n, from, hops)) = got else { continue };
                let std::net::IpAddr::V6(from) = from.ip() else { continue };
                let message = match (hops, nd::decode(&buf[..n])) {
                    (Some(nd::HOP_LIMIT), Ok(m)) if from.is_unicast_link_local() => m,
                    _ => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                if message == Message::RouterSolicitation
                    && last_answer.is_none_or(|t| t.elapsed() >= ANSWER_AT_MOST_EVERY)
                {
                    last_answer = Some(Instant::now());
                    let _ = send(&socket, index, &nd::router_advertisement(0), ALL_NODES);
                }
                // Only a router's advertisement says who the peer is; a host soliciting is
                // answered, never taken for it.
                if matches!(message, Message::RouterAdvertisement { .. })
                    && learner.heard(from, start.elapsed())
                {
                    tracing::info!(%interface, neighbor = %from, "unnumbered peer heard");
                    neighbor.send_replace(Some(SocketAddrV6::new(from, 0, 0, index)));
                }
            }
        }
    }
}
