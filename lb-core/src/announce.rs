//! The `Announcer` trait: make what the network is told equal to a desired set.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::plan::{Announcement, How};

/// An announcement protocol, to hand each announcer its part of a plan. Shown (and
/// serialized) as MetalLB names it in metrics and status: `layer2`, `bgp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Protocol {
    /// ARP / NDP: one node answers for the address.
    #[serde(rename = "layer2")]
    Layer2,
    /// BGP: nodes advertise the address to routers.
    #[serde(rename = "bgp")]
    Bgp,
}

impl Protocol {
    /// The protocol of an announcement.
    pub fn of(a: &Announcement) -> Protocol {
        match a.how {
            How::Layer2 { .. } => Protocol::Layer2,
            How::Bgp { .. } => Protocol::Bgp,
        }
    }

    /// MetalLB's name for it: `layer2` or `bgp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Layer2 => "layer2",
            Protocol::Bgp => "bgp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An announcer failed to apply a desired set; what it had announced stays as it was where it
/// could not change it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// It was handed an announcement of another protocol.
    #[error("{protocol} announcer: handed a {got} announcement for {ip}")]
    WrongProtocol {
        /// The announcer's protocol.
        protocol: Protocol,
        /// The announcement's.
        got: Protocol,
        /// The announcement's address.
        ip: IpAddr,
    },
    /// Routes name peers it has no session with.
    #[error("{protocol} announcer: no session for peer(s) {}", .peers.join(", "))]
    NoSession {
        /// The announcer's protocol.
        protocol: Protocol,
        /// The peers, by name.
        peers: Vec<String>,
    },
    /// A plan has announcements of a protocol that no announcer speaks.
    #[error("no {protocol} announcer for {count} announcement(s)")]
    NoAnnouncer {
        /// The protocol nobody speaks.
        protocol: Protocol,
        /// How many announcements went unannounced.
        count: usize,
    },
    /// The announcer's task has stopped.
    #[error("{protocol} announcer: it has stopped")]
    Stopped {
        /// The announcer's protocol.
        protocol: Protocol,
    },
    /// Anything else an announcer reports (one of your own, say), with its cause.
    #[error("{protocol} announcer: {source}")]
    Other {
        /// The announcer's protocol.
        protocol: Protocol,
        /// What went wrong.
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
}

impl AnnounceError {
    /// The protocol of the announcer that failed.
    pub fn protocol(&self) -> Protocol {
        match self {
            AnnounceError::WrongProtocol { protocol, .. }
            | AnnounceError::NoSession { protocol, .. }
            | AnnounceError::NoAnnouncer { protocol, .. }
            | AnnounceError::Stopped { protocol }
            | AnnounceError::Other { protocol, .. } => *protocol,
        }
    }
}

/// A change of what one announcer announces, from the set it was last handed: what a change of
/// a few services among many costs should be what changed, not the whole set. See
/// [`Announcer::change`].
pub struct Change<'a> {
    /// Announcements handed before that are no longer wanted (equal to how they were handed).
    pub withdrawn: &'a [Announcement],
    /// Announcements wanted now that were not handed before. One that only changed how it is
    /// announced is in both lists: withdrawn as it was, added as it is.
    pub added: &'a [Announcement],
    /// The whole set after the change (every announcement of this announcer's protocol), built
    /// when called: what an announcer that applies whole sets asks for.
    pub whole: &'a (dyn Fn() -> Vec<Announcement> + Send + Sync),
}

/// The change from set `before` to set `now`: (withdrawn, added), each in its set's order. For
/// a caller that holds whole sets and wants to hand an announcer the difference.
pub fn difference(
    before: &[Announcement],
    now: &[Announcement],
) -> (Vec<Announcement>, Vec<Announcement>) {
    let (b, n): (BTreeSet<&Announcement>, BTreeSet<&Announcement>) =
        (before.iter().collect(), now.iter().collect());
    (
        before.iter().filter(|a| !n.contains(a)).cloned().collect(),
        now.iter().filter(|a| !b.contains(a)).cloned().collect(),
    )
}

impl Debug for Change<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("withdrawn", &self.withdrawn)
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

/// Makes the network's view match `desired`. Implementations are idempotent: calling
/// `announce` again with the same set changes nothing and sends nothing new; an address missing
/// from the set is withdrawn. `announce(&[])` withdraws everything.
#[async_trait]
pub trait Announcer: Send + Sync + Debug {
    /// The protocol this announcer speaks; it is handed only announcements of this protocol.
    fn protocol(&self) -> Protocol;

    /// Makes the announced set equal to `desired`.
    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError>;

    /// Applies a change of the set last handed (by `announce` or `change`): afterwards the
    /// announced set must be what `announce(&(change.whole)())` would make it. An announcer
    /// that keeps what it announces by address applies the two lists alone, so that a change
    /// costs what it changes; the default hands `announce` the whole set.
    ///
    /// After an error the caller hands the whole set again (by `announce`) before the next
    /// change.
    async fn change(&self, change: Change<'_>) -> Result<(), AnnounceError> {
        self.announce(&(change.whole)()).await
    }

    /// Addresses that are new to the cluster (just allocated, not taken over from another
    /// node): an announcer may check that nobody else uses them before it claims them (the
    /// layer 2 announcer probes them with ARP / DAD first). Called before the `announce` that
    /// hands them over. The default does nothing.
    fn note_new_addresses(&self, fresh: &BTreeSet<IpAddr>) {
        let _ = fresh;
    }

    /// Members appeared (a partition healed, a node joined): neighbours may have learned
    /// another node for an address meanwhile, so say again what is announced (gratuitous
    /// ARP / unsolicited NA). The default does nothing.
    fn reannounce(&self) {}

    /// Writes the announcer's metrics (for `/metrics`) with [`crate::metrics::family`]. The
    /// default has none.
    fn collect_metrics(
        &self,
        out: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let _ = out;
        Ok(())
    }

    /// Withdraws everything it announced (BGP: a Cease to each peer) before the process goes.
    /// The default announces the empty set.
    async fn shutdown(&self) {
        let _ = self.announce(&[]).await;
    }
}

/// An announcer that records every desired set it is given and "announces" by remembering it:
/// the double for tests and for dry runs that print what would be announced.
#[derive(Debug)]
pub struct RecordingAnnouncer {
    protocol: Protocol,
    history: Mutex<Vec<Vec<Announcement>>>,
    fresh: Mutex<BTreeSet<IpAddr>>,
    reannounced: std::sync::atomic::AtomicUsize,
}

impl RecordingAnnouncer {
    /// A recorder that takes announcements of `protocol`.
    pub fn new(protocol: Protocol) -> Self {
        RecordingAnnouncer {
            protocol,
            history: Mutex::new(Vec::new()),
            fresh: Mutex::default(),
            reannounced: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Every address it was told is new to the cluster.
    pub fn fresh(&self) -> BTreeSet<IpAddr> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How often it was asked to say everything again.
    pub fn reannounced(&self) -> usize {
        self.reannounced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What is announced now.
    pub fn current(&self) -> Vec<Announcement> {
        self.lock().last().cloned().unwrap_or_default()
    }

    /// Every distinct set announced, oldest first. Repeating the current set adds nothing.
    pub fn history(&self) -> Vec<Vec<Announcement>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Announcement>>> {
        // A panic elsewhere while holding the lock leaves valid data behind; keep using it.
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Announcer for RecordingAnnouncer {
    fn protocol(&self) -> Protocol {
        self.protocol
    }

    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
        if let Some(wrong) = desired.iter().find(|a| Protocol::of(a) != self.protocol) {
            return Err(AnnounceError::WrongProtocol {
                protocol: self.protocol,
                got: Protocol::of(wrong),
                ip: wrong.ip,
            });
        }
        let mut set = desired.to_vec();
        set.sort();
        set.dedup();
        let mut history = self.lock();
        if history.last() != Some(&set) {
            history.push(set);
        }
        Ok(())
    }

    fn note_new_addresses(&self, fresh: &BTreeSet<IpAddr>) {
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(fresh);
    }

    fn reannounce(&self) {
        self.reannounced
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
