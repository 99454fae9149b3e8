//! Passive side: one TCP listener (port 179 by default) shared by every session. A connection
//! is handed to the session whose peer address it comes from; one from anybody else is closed
//! at once and counted. A session that also connects out may end up with two connections to the
//! same peer: the session resolves that collision (RFC 4271 §6.8).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::session::{Event, Session};

type Peers = Arc<Mutex<HashMap<IpAddr, mpsc::UnboundedSender<Event>>>>;

/// A BGP listener. Dropping it stops accepting; registered sessions keep their connections.
#[derive(Debug)]
pub struct Listener {
    peers: Peers,
    refused: Arc<AtomicU64>,
    local: SocketAddr,
    fd: std::os::fd::RawFd,
    task: JoinHandle<()>,
}

impl Listener {
    /// Listens on `addr` (within a tokio runtime). `[::]` also takes IPv4 peers.
    pub async fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let l = TcpListener::bind(addr).await?;
        let local = l.local_addr()?;
        let fd = l.as_raw_fd();
        // The kernel answers a SYN with the listener's TTL, before a session can set its own:
        // 255 lets a GTSM peer (RFC 5082) accept the SYN-ACK and harms no other peer.
        crate::sys::set_ttl(fd, false, 255)?;
        if local.is_ipv6() {
            crate::sys::set_ttl(fd, true, 255)?;
        }
        let peers: Peers = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let (p, r) = (peers.clone(), refused.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, from)) = l.accept().await else {
                    // Out of descriptors or similar: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let ip = from.ip().to_canonical();
                let to = lock(&p).get(&ip).cloned();
                match to {
                    Some(tx) if tx.send(Event::Accepted(stream)).is_ok() => {}
                    _ => {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Listener {
            peers,
            refused,
            local,
            fd,
            task,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Hands connections from the session's peer to it, with its TCP-MD5 key on the listener.
    pub fn register(&self, session: &Session) -> io::Result<()> {
        if let Some(pw) = &session.md5_password {
            let peer = match (self.local.ip(), session.peer) {
                (IpAddr::V6(_), IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
                (_, p) => p,
            };
            crate::sys::set_tcp_md5(self.fd, peer, pw.as_bytes())?;
        }
        lock(&self.peers).insert(session.peer, session.events.clone());
        Ok(())
    }

    /// Stops handing connections from `peer` to its session.
    pub fn unregister(&self, peer: IpAddr) {
        if lock(&self.peers).remove(&peer).is_some() {
            let peer = match (self.local.ip(), peer) {
                (IpAddr::V6(_), IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
                (_, p) => p,
            };
            // An empty key removes the peer's key, if it had one.
            let _ = crate::sys::set_tcp_md5(self.fd, peer, &[]);
        }
    }

    /// Connections refused because no session was registered for their address.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
