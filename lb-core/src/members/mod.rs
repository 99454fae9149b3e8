//! Membership between nodes: SWIM (foca) over sealed datagrams, so that every node derives each
//! L2 address's owner from the same live set, and no stranger can steer it.
//!
//! ```text
//!  datagram ─► seal::Opener (key, replay window) ─► identity checks (roster, source address)
//!                                                        │ payload
//!                                                        ▼
//!                 Swim (foca; pure, driven with `now`) ─► datagrams ─► seal::Sealer ─► wire
//!                                                        │
//!                                                        ▼ live members that are known nodes
//! ```
//! [`Swim`] does no IO and reads no clock: tests run whole clusters on a simulated network with
//! simulated time. The tokio edge (a UDP socket and a `LeaderElector`) lives in lb-bin.
//!
//! A datagram is dropped, and counted by reason ([`seal::Reject::label`]), before foca sees it
//! when it does not open with a key of the ring, is a replay, comes from a name that is not a
//! known node (the roster), or speaks for a name or address it does not own.

pub mod agree;
pub mod seal;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Codec, Config, Foca, Identity, NoCustomBroadcast, OwnedNotification,
    PostcardCodec, Timer,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};

use seal::{KeyId, Keyring, Kind, Opener, Reject, Sealer};

/// The first bytes of an unsealed data datagram (`--insecure-membership`): then the sender's
/// name (length, bytes) and the payload.
const PLAIN_DATA_MAGIC: [u8; 4] = *b"LBd\x00";
/// Data datagrams held for the caller at most; older ones are dropped first.
const INBOX: usize = 4096;

/// One run of one node. A node that restarts, or finds itself declared down, comes back as the
/// next generation: a new identity at the same address that wins over the old one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The node's name.
    pub name: String,
    /// Where its membership socket is reached.
    pub addr: SocketAddr,
    /// Its run: grows by one each time the node rejoins.
    pub generation: u64,
}

impl Identity for Member {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Timings for a LAN, chosen so that a crashed node is declared down in about 0.1 s while a
/// live one is not, with loss and busy cores:
/// - every node probes one other every `probe_period`; one that answers neither directly
///   (within `probe_rtt`) nor through others by the end of the period is suspected;
/// - a suspected node hears of it through gossip (every 15 ms) and refutes it; one that has
///   not refuted within `suspect_to_down_after` is declared down;
/// - a live node declared down all the same (a stall, a burst of loss) renews its identity and
///   is back as soon as it hears of it (foca's `TurnUndead`, and announces to down members
///   every 200 ms).
pub fn lan_config() -> Config {
    let mut c = Config::simple();
    c.probe_period = Duration::from_millis(40);
    c.probe_rtt = Duration::from_millis(20);
    c.num_indirect_probes = NonZeroUsize::MIN.saturating_add(2);
    c.suspect_to_down_after = Duration::from_millis(60);
    c.max_transmissions = NonZeroU8::new(10).unwrap_or(NonZeroU8::MIN);
    c.remove_down_after = Duration::from_secs(15);
    c.notify_down_members = true;
    // Room for the seal and the longest node name inside a 1400-byte datagram.
    c.max_packet_size = NonZeroUsize::new(1400 - seal::OVERHEAD - 253).unwrap_or(NonZeroUsize::MIN);
    c.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::MIN,
    });
    // After a partition, or a false Down, the sides were declared down to each other: this
    // heals it.
    c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(200),
        num_members: NonZeroUsize::MIN.saturating_add(2),
    });
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(15),
        num_members: NonZeroUsize::MIN.saturating_add(1),
    });
    c
}

/// While alone, the seeds (`--join`) are asked again this often: nodes may start in any order.
const SEED_RETRY: Duration = Duration::from_millis(500);
/// A node refused by the others (a key hint) stays out of ownership this long after the last.
const REFUSED_FOR: Duration = Duration::from_secs(5);
/// A key hint goes to one address at most this often.
const HINT_EVERY: Duration = Duration::from_secs(1);

/// The known nodes: name → its addresses (empty: any address). A member not listed is no L2
/// candidate and its datagrams are refused.
pub type Roster = BTreeMap<String, BTreeSet<IpAddr>>;

/// What the membership counted; rendered as metrics and `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Datagrams accepted.
    pub accepted: u64,
    /// Datagrams refused, by reason ([`Reject::label`]).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Members this node saw go down (a crash, a leave, or a false suspicion).
    pub members_down: u64,
    /// Times this node found itself declared down and came back under a new generation.
    pub rejoins: u64,
    /// Key hints received: another node could not open our datagrams.
    pub key_hints: u64,
    /// "You are down" notices withheld because the member had refuted its suspicion (see
    /// `Swim::drain`).
    pub undead_withheld: u64,
}

/// A refusal worth telling the operator about (the caller logs it, rate-limited).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A datagram from `from` was refused.
    Rejected {
        /// The sender.
        from: SocketAddr,
        /// Why.
        why: Reject,
    },
    /// `from` could not open our datagrams: it holds `theirs` and we seal with `ours`.
    KeyMismatch {
        /// The sender.
        from: SocketAddr,
        /// The key ids it sealed with.
        theirs: Vec<KeyId>,
        /// The key id we seal with (none when unsealed).
        ours: Option<KeyId>,
    },
    /// This node was declared down by the others and came back as a new generation.
    Rejoined,
}

/// The SWIM state of this node; time is a `Duration` since an arbitrary start, given by the
/// caller.
pub struct Swim {
    foca: Foca<Member, PostcardCodec, SmallRng, NoCustomBroadcast>,
    rt: AccumulatingRuntime<Member>,
    /// Due timers, earliest first; `seq` keeps equal times in submission order.
    timers: BinaryHeap<Reverse<(Duration, u64, TimerSlot)>>,
    seq: u64,
    seeds: Vec<SocketAddr>,
    next_seed_try: Duration,
    /// `None`: plain datagrams (`--insecure-membership`, or a node alone).
    keys: Option<Keyring>,
    sealer: Sealer,
    opener: Opener,
    roster: Option<Roster>,
    hinted: HashMap<IpAddr, Duration>,
    /// The key each peer last sealed with, or said it holds: during a rotation a node seals to
    /// a peer with a key that peer can open.
    peer_keys: HashMap<SocketAddr, KeyId>,
    /// When another node last said it cannot open our datagrams.
    refused_at: Option<Duration>,
    now: Duration,
    stats: Stats,
    events: Vec<Event>,
    inbox: std::collections::VecDeque<(String, Vec<u8>)>,
}

/// A foca timer in the heap (ordered by due time and sequence only).
struct TimerSlot(Timer<Member>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl std::fmt::Debug for Swim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Swim")
            .field("identity", self.foca.identity())
            .field("members", &self.members())
            .finish()
    }
}

/// A datagram to send.
pub type Datagram = (SocketAddr, Vec<u8>);

impl Swim {
    /// This node, the addresses of the nodes to join through, and the keys (`None`: plain
    /// datagrams). `me.generation` is also the run's epoch in every sealed datagram, so it must
    /// grow from one run to the next (the start time in milliseconds).
    pub fn new(
        me: Member,
        config: Config,
        seeds: Vec<SocketAddr>,
        rng_seed: u64,
        keys: Option<Keyring>,
    ) -> Swim {
        let seeds = seeds.into_iter().filter(|s| *s != me.addr).collect();
        let sealer = Sealer::new(&me.name, me.generation);
        Swim {
            foca: Foca::new(me, config, SmallRng::seed_from_u64(rng_seed), PostcardCodec),
            rt: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            seq: 0,
            seeds,
            next_seed_try: Duration::ZERO,
            keys,
            sealer,
            opener: Opener::new(),
            roster: None,
            hinted: HashMap::new(),
            peer_keys: HashMap::new(),
            refused_at: None,
            now: Duration::ZERO,
            stats: Stats::default(),
            events: Vec::new(),
            inbox: std::collections::VecDeque::new(),
        }
    }

    /// This node's own identity.
    pub fn identity(&self) -> &Member {
        self.foca.identity()
    }

    /// Replaces the keys (rotation). A node cannot switch between sealed and plain while it
    /// runs: `None` is ignored by a sealed node.
    pub fn set_keys(&mut self, keys: Keyring) {
        self.keys = Some(keys);
    }

    /// The keys' ids, the sending key first; empty when datagrams are plain.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.as_ref().map(Keyring::ids).unwrap_or_default()
    }

    /// Sets the known nodes; `None` accepts any name (every holder of the key).
    pub fn set_roster(&mut self, roster: Option<Roster>) {
        self.roster = roster;
    }

    /// Counters of what was refused and why.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Refusals and rejoins since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Live members that may own addresses, this node included: with a roster, only the known
    /// nodes speaking from their own addresses. Empty while this node is alone because the
    /// others refuse its key: it would otherwise own every address beside them.
    pub fn members(&self) -> BTreeSet<String> {
        if self.refused() {
            return BTreeSet::new();
        }
        self.foca
            .iter_members()
            .map(|m| m.id())
            .filter(|m| self.known(&m.name, m.addr.ip()))
            .map(|m| m.name.clone())
            .chain(std::iter::once(self.foca.identity().name.clone()))
            .collect()
    }

    /// Alone, and told by another node within the last few seconds (`REFUSED_FOR`) that it cannot open our datagrams.
    pub fn refused(&self) -> bool {
        self.foca.num_members() == 0
            && self
                .refused_at
                .is_some_and(|at| self.now < at + REFUSED_FOR)
    }

    fn known(&self, name: &str, ip: IpAddr) -> bool {
        match &self.roster {
            None => true,
            Some(r) => r
                .get(name)
                .is_some_and(|ips| ips.is_empty() || ips.contains(&ip)),
        }
    }

    /// A datagram arrived from `from`.
    pub fn handle_data(&mut self, now: Duration, from: SocketAddr, data: &[u8]) -> Vec<Datagram> {
        self.now = self.now.max(now);
        let mut out = Vec::new();
        match self.accept(now, from, data, &mut out) {
            Ok(Some(payload)) => {
                self.stats.accepted += 1;
                if self.foca.handle_data(&payload, &mut self.rt).is_err() {
                    self.reject(from, Reject::Undecodable);
                }
            }
            Ok(None) => {}
            Err(why) => self.reject(from, why),
        }
        out.extend(self.drain(now));
        out
    }

    fn reject(&mut self, from: SocketAddr, why: Reject) {
        *self.stats.rejected.entry(why.label()).or_default() += 1;
        self.events.push(Event::Rejected { from, why });
    }

    /// Opens and checks a datagram: the payload for foca, `None` for a key hint.
    fn accept(
        &mut self,
        now: Duration,
        from: SocketAddr,
        data: &[u8],
        out: &mut Vec<Datagram>,
    ) -> Result<Option<Vec<u8>>, Reject> {
        if let Some(theirs) = seal::read_hint(data) {
            self.stats.key_hints += 1;
            // A hint cannot be authenticated (the two hold different keys): only one from a
            // seed or a known node's address may keep this node out of ownership, so that a
            // stranger cannot silence a node that is alone.
            if self.seeds.iter().any(|s| s.ip() == from.ip())
                || self
                    .roster
                    .as_ref()
                    .is_some_and(|r| r.values().any(|ips| ips.contains(&from.ip())))
            {
                self.refused_at = Some(now);
            }
            if let Some(keys) = &self.keys
                && let Some(id) = theirs.iter().find(|id| keys.holds(**id))
            {
                self.note_peer_key(from, *id);
            }
            let ours = self.keys.as_ref().and_then(|k| k.ids().first().copied());
            self.events.push(Event::KeyMismatch { from, theirs, ours });
            return Ok(None);
        }
        let opened = match &self.keys {
            Some(keys) => match self.opener.open(keys, data) {
                Ok(o) => Some(o),
                Err(Reject::Malformed)
                    if decodes_as_plain(data) || data.starts_with(&PLAIN_DATA_MAGIC) =>
                {
                    self.hint(now, from, out);
                    return Err(Reject::Unsealed);
                }
                Err(e @ Reject::UnknownKey(_)) => {
                    self.hint(now, from, out);
                    return Err(e);
                }
                Err(e) => return Err(e),
            },
            None if data.starts_with(&seal::MAGIC) || data.starts_with(&seal::DATA_MAGIC) => {
                self.hint(now, from, out);
                let id = data.get(4..8).and_then(|b| b.try_into().ok());
                return Err(Reject::UnknownKey(KeyId(id.unwrap_or_default())));
            }
            None => None,
        };
        if opened.as_ref().is_some_and(|o| o.kind == Kind::Data) {
            let Some(o) = opened else {
                return Err(Reject::Malformed);
            };
            self.check_data_sender(from, &o.sender)?;
            self.opener.record(&o);
            self.note_peer_key(from, o.key);
            self.push_inbox(o.sender, o.payload);
            return Ok(None);
        }
        if opened.is_none()
            && let Some(rest) = data.strip_prefix(&PLAIN_DATA_MAGIC)
        {
            let (&n, rest) = rest.split_first().ok_or(Reject::Malformed)?;
            let n = usize::from(n);
            if rest.len() < n {
                return Err(Reject::Malformed);
            }
            let sender = std::str::from_utf8(&rest[..n]).map_err(|_| Reject::Malformed)?;
            self.check_data_sender(from, sender)?;
            self.push_inbox(sender.to_string(), rest[n..].to_vec());
            return Ok(None);
        }
        let payload = opened.as_ref().map_or(data, |o| o.payload.as_slice());
        let src = PostcardCodec
            .decode_header(&mut &payload[..])
            .map_err(|_| Reject::Undecodable)?
            .src;
        self.check_identity(from, opened.as_ref().map(|o| o.sender.as_str()), &src)?;
        // Only a datagram whose sender checked out moves the replay window: an impostor's
        // newer run must not shut out the genuine node.
        Ok(Some(match opened {
            Some(o) => {
                self.opener.record(&o);
                self.note_peer_key(from, o.key);
                o.payload
            }
            None => data.to_vec(),
        }))
    }

    /// The sender of an opened datagram must be a known node, speak for itself, and from its
    /// own address.
    fn check_identity(
        &self,
        from: SocketAddr,
        sealed_by: Option<&str>,
        src: &Member,
    ) -> Result<(), Reject> {
        if let Some(name) = sealed_by
            && name != src.name
        {
            return Err(Reject::Identity(format!(
                "sealed by {name:?} but speaks as {:?}",
                src.name
            )));
        }
        let me = self.foca.identity();
        if src.name == me.name {
            return Err(if src.addr == me.addr && from.ip() == me.addr.ip() {
                Reject::Ourselves
            } else {
                Reject::Identity(format!("claims this node's name {:?}", src.name))
            });
        }
        if let Some(roster) = &self.roster {
            let Some(ips) = roster.get(&src.name) else {
                return Err(Reject::UnknownNode(src.name.clone()));
            };
            let own = |ip: IpAddr| ips.is_empty() || ips.contains(&ip);
            if !(own(from.ip()) && own(src.addr.ip())) {
                return Err(Reject::Identity(format!(
                    "{:?} speaks from {} as {}, but its node's addresses are {ips:?}",
                    src.name,
                    from.ip(),
                    src.addr
                )));
            }
        }
        if from.ip() != src.addr.ip() {
            return Err(Reject::Identity(format!(
                "{:?} claims address {} but speaks from {}",
                src.name,
                src.addr,
                from.ip()
            )));
        }
        if let Some(other) = self
            .foca
            .iter_members()
            .map(|m| m.id())
            .find(|m| (m.addr == src.addr) != (m.name == src.name))
        {
            return Err(Reject::Identity(format!(
                "{:?} at {} claims the name or address of live member {:?} at {}",
                src.name, src.addr, other.name, other.addr
            )));
        }
        Ok(())
    }

    /// Data is taken only from a live member that may own addresses, from its own address.
    fn check_data_sender(&self, from: SocketAddr, sender: &str) -> Result<(), Reject> {
        let live = self.foca.iter_members().map(|m| m.id()).any(|m| {
            m.name == sender && m.addr.ip() == from.ip() && self.known(&m.name, from.ip())
        });
        if live {
            Ok(())
        } else {
            Err(Reject::UnknownNode(sender.to_string()))
        }
    }

    fn push_inbox(&mut self, sender: String, payload: Vec<u8>) {
        if self.inbox.len() >= INBOX {
            self.inbox.pop_front();
        }
        self.inbox.push_back((sender, payload));
    }

    /// Data the live members sent: (sender, payload), oldest first.
    pub fn take_inbox(&mut self) -> Vec<(String, Vec<u8>)> {
        self.inbox.drain(..).collect()
    }

    /// `payload` for every live member, sealed as data.
    pub fn broadcast_data(&mut self, payload: &[u8]) -> Vec<Datagram> {
        self.data_recipients()
            .into_iter()
            .map(|addr| (addr, self.seal_data(addr, payload)))
            .collect()
    }

    /// The live members' addresses: where [`Swim::broadcast_data`] sends.
    pub fn data_recipients(&self) -> Vec<SocketAddr> {
        self.foca.iter_members().map(|m| m.id().addr).collect()
    }

    /// `payload` for `addr`, sealed as data now. A sealed datagram carries a counter that the
    /// receiver's replay window must still hold: data held back to be paced is sealed when it
    /// is sent, not when it is queued.
    pub fn seal_data(&mut self, addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
        match &self.keys {
            Some(k) => {
                let prefer = self.peer_keys.get(&addr).copied();
                self.sealer.seal_with(k, prefer, Kind::Data, payload)
            }
            None => {
                let name = self.sealer.name().as_bytes();
                let mut d = PLAIN_DATA_MAGIC.to_vec();
                d.push(name.len() as u8);
                d.extend_from_slice(name);
                d.extend_from_slice(payload);
                d
            }
        }
    }

    fn note_peer_key(&mut self, peer: SocketAddr, id: KeyId) {
        if self.peer_keys.len() >= 4096 && !self.peer_keys.contains_key(&peer) {
            self.peer_keys.clear();
        }
        self.peer_keys.insert(peer, id);
    }

    /// Tells `from` (at most once a second) that we could not open its datagram.
    fn hint(&mut self, now: Duration, from: SocketAddr, out: &mut Vec<Datagram>) {
        if self
            .hinted
            .get(&from.ip())
            .is_some_and(|at| now < *at + HINT_EVERY)
        {
            return;
        }
        if self.hinted.len() >= 1024 {
            self.hinted.clear();
        }
        self.hinted.insert(from.ip(), now);
        out.push((from, seal::hint(self.keys.as_ref())));
    }

    /// When [`Swim::tick`] must run next.
    pub fn next_due(&self) -> Duration {
        let timer = self
            .timers
            .peek()
            .map_or(Duration::MAX, |Reverse((at, _, _))| *at);
        if self.alone() {
            timer.min(self.next_seed_try)
        } else {
            timer
        }
    }

    fn alone(&self) -> bool {
        !self.seeds.is_empty() && self.foca.num_members() == 0
    }

    /// Runs the timers due at `now`, and asks the seeds again while alone.
    pub fn tick(&mut self, now: Duration) -> Vec<Datagram> {
        self.now = self.now.max(now);
        while let Some(Reverse((at, _, _))) = self.timers.peek()
            && *at <= now
        {
            let Some(Reverse((_, _, TimerSlot(t)))) = self.timers.pop() else {
                break;
            };
            let _ = self.foca.handle_timer(t, &mut self.rt);
        }
        if self.alone() && now >= self.next_seed_try {
            self.next_seed_try = now + SEED_RETRY;
            for s in self.seeds.clone() {
                let seed = Member {
                    name: String::new(),
                    addr: s,
                    generation: 0,
                };
                let _ = self.foca.announce(seed, &mut self.rt);
            }
        }
        self.drain(now)
    }

    /// Leaves: tells others this node is down, so they take over at once.
    pub fn leave(&mut self, now: Duration) -> Vec<Datagram> {
        let _ = self.foca.leave_cluster(&mut self.rt);
        self.drain(now)
    }

    fn drain(&mut self, now: Duration) -> Vec<Datagram> {
        let mut out = Vec::new();
        while let Some((to, data)) = self.rt.to_send() {
            if self.is_spurious_turn_undead(&to, &data) {
                self.stats.undead_withheld += 1;
                continue;
            }
            let data = match &self.keys {
                Some(k) => {
                    let prefer = self.peer_keys.get(&to.addr).copied();
                    self.sealer.seal_with(k, prefer, Kind::Membership, &data)
                }
                None => data.to_vec(),
            };
            out.push((to.addr, data));
        }
        while let Some((after, t)) = self.rt.to_schedule() {
            self.seq += 1;
            self.timers
                .push(Reverse((now + after, self.seq, TimerSlot(t))));
        }
        // The member set is read from foca itself; notifications are only counted.
        while let Some(n) = self.rt.to_notify() {
            match n {
                OwnedNotification::MemberDown(_) => self.stats.members_down += 1,
                OwnedNotification::Rejoin(_) => {
                    self.stats.rejoins += 1;
                    self.events.push(Event::Rejoined);
                }
                _ => {}
            }
        }
        out
    }
}

impl Swim {
    /// foca 1.0 sends `TurnUndead` ("you are down") when a suspicion's timer fires even if the
    /// member refuted it meanwhile and was never declared down. The member then takes a new
    /// generation, and until the others learn it their probes of the old one go unanswered:
    /// with 5 % loss that ended in a real false Down about once in ten minutes of three nodes
    /// (found in the simulation). Only a member this node no longer holds active is told.
    fn is_spurious_turn_undead(&self, to: &Member, data: &[u8]) -> bool {
        let mut buf = data;
        let Ok(h) = Codec::<Member>::decode_header(&mut PostcardCodec, &mut buf) else {
            return false;
        };
        matches!(h.message, foca::Message::TurnUndead)
            && self.foca.iter_members().any(|m| m.id() == to)
    }
}

/// Whether `data` reads as a plain foca datagram (a node without a key).
fn decodes_as_plain(data: &[u8]) -> bool {
    let mut buf = data;
    Codec::<Member>::decode_header(&mut PostcardCodec, &mut buf).is_ok()
}

#[cfg(test)]
mod tests;
