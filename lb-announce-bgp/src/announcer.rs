//! `BgpAnnouncer`: lb-core's [`Announcer`] for BGP. One [`Session`] per configured peer; each
//! call to `announce` hands every session its share of the desired routes, and the sessions
//! send only the difference. A `change` (some services' announcements withdrawn or added)
//! merges again only the prefixes it touches, from what every announcement asks of them, and
//! hands each session those prefixes alone: its cost is the change's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use lb_core::announce::{AnnounceError, Announcer, Change, Protocol};
use lb_core::config::{BgpPeer, Community, PeerAsn, PeerTarget};
use lb_core::metrics::prometheus_client::encoding::DescriptorEncoder;
use lb_core::metrics::{Kind, family};
use lb_core::objects::ServiceKey;
use lb_core::plan::{Announcement, How};

use crate::bfd::{
    self,
    driver::{Bfd, BfdStatus, PeerBfd},
};
use crate::fsm::{self, RemoteAs, State};
use crate::listen::Listener;
use crate::packet::AfiSafi;
use crate::session::{PeerConfig, RouteAttrs, Session, SessionStatus};

/// MetalLB's native speaker defaults: hold time 90 s, reconnect backoff up to 2 minutes.
const DEFAULT_HOLD: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const GRACEFUL_RESTART_TIME: u16 = 120;

/// A valid MetalLB `BGPPeer` this speaker cannot serve yet (that peer alone is skipped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// `vrf`: the peer is reached through a VRF.
    #[error("BGPPeer {peer}: vrf {vrf} is not supported yet")]
    Vrf {
        /// The BGPPeer's name.
        peer: String,
        /// The VRF it names.
        vrf: String,
    },
    /// The peer is reached in a way this build does not know.
    #[error("BGPPeer {peer}: this build cannot reach it ({target:?})")]
    Target {
        /// The BGPPeer's name.
        peer: String,
        /// How it is reached.
        target: PeerTarget,
    },
}

/// The session configuration for a MetalLB `BGPPeer`.
pub fn peer_config(
    peer: &BgpPeer,
    router_id: Ipv4Addr,
    password: Option<String>,
) -> Result<PeerConfig, PeerError> {
    if let Some(v) = &peer.vrf {
        return Err(PeerError::Vrf {
            peer: peer.name.clone(),
            vrf: v.clone(),
        });
    }
    let (ip, interface) = match &peer.target {
        PeerTarget::Address(ip) => (*ip, None),
        // Unnumbered: the address is the neighbour heard on the interface (see
        // `crate::neighbor`); only the port is taken from here.
        PeerTarget::Interface(i) => (Ipv6Addr::UNSPECIFIED.into(), Some(i.clone())),
        other => {
            return Err(PeerError::Target {
                peer: peer.name.clone(),
                target: other.clone(),
            });
        }
    };
    let hold = peer
        .hold_time
        .unwrap_or(DEFAULT_HOLD)
        .as_secs()
        .min(u64::from(u16::MAX)) as u16;
    Ok(PeerConfig {
        fsm: fsm::Config {
            local_as: peer.local_asn.unwrap_or(peer.my_asn),
            router_id: peer.router_id.unwrap_or(router_id),
            remote_as: match peer.peer_asn {
                PeerAsn::Fixed(a) => RemoteAs::Fixed(a),
                PeerAsn::Internal => RemoteAs::Internal,
                PeerAsn::External => RemoteAs::External,
            },
            hold_time: hold,
            keepalive: peer
                .keepalive_time
                .map(|k| k.as_secs().min(u64::from(u16::MAX)) as u16),
            families: vec![AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST],
            graceful_restart: peer
                .graceful_restart
                .then_some((GRACEFUL_RESTART_TIME, false)),
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(120),
            passive: false,
        },
        address: SocketAddr::new(ip, peer.port),
        interface,
        source: peer.source_address,
        next_hop_v4: None,
        next_hop_v6: None,
        connect_timeout: peer.connect_time.unwrap_or(CONNECT_TIMEOUT),
        md5_password: password,
        // eBGP peers are one hop away unless `ebgpMultiHop` says otherwise (as FRR does);
        // iBGP keeps the kernel's default.
        ttl: match (peer.is_ibgp(), peer.ebgp_multihop) {
            (true, _) => None,
            (false, false) => Some(1),
            (false, true) => Some(255),
        },
        ttl_security: None,
    })
}

/// Per peer, the routes to announce: every BGP announcement's prefixes with their attributes.
/// A prefix that several announcements give one peer (an aggregate covering several services)
/// gets the union of their communities and the highest localPref.
pub fn routes_per_peer(
    desired: &[Announcement],
) -> BTreeMap<String, BTreeMap<IpNetwork, RouteAttrs>> {
    let mut c = Contributions::default();
    c.whole(desired);
    c.all()
}

/// What each announcement asks of each peer's prefixes: a prefix several announcements give
/// one peer gets what [`routes_per_peer`] makes of theirs. Kept so that a change re-merges the
/// prefixes it touches alone.
#[derive(Debug, Default)]
struct Contributions(BTreeMap<String, BTreeMap<IpNetwork, ByAnnouncement>>);

/// The attributes each announcement (service, address) asks for one prefix of one peer.
type ByAnnouncement = BTreeMap<(ServiceKey, IpAddr), Vec<RouteAttrs>>;

/// Each (peer, prefix, attributes) an announcement asks for.
fn asks(a: &Announcement) -> Vec<(&String, IpNetwork, RouteAttrs)> {
    let How::Bgp { routes } = &a.how else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in routes {
        let mut attrs = RouteAttrs {
            local_pref: r.local_pref,
            ..Default::default()
        };
        for c in &r.communities {
            match *c {
                Community::Legacy(v) => attrs.communities.push(v),
                Community::Large(g, l1, l2) => attrs.large_communities.push((g, l1, l2)),
            }
        }
        for peer in &r.peers {
            out.push((peer, r.prefix, attrs.clone()));
        }
    }
    out
}

impl Contributions {
    /// Takes `desired` as the whole set.
    fn whole(&mut self, desired: &[Announcement]) {
        self.0.clear();
        self.change(&[], desired);
    }

    /// Takes a change; returns, per peer, each prefix it touched with its attributes now
    /// (`None`: no longer announced to that peer).
    #[allow(clippy::type_complexity)]
    fn change(
        &mut self,
        withdrawn: &[Announcement],
        added: &[Announcement],
    ) -> BTreeMap<String, Vec<(IpNetwork, Option<RouteAttrs>)>> {
        let mut touched: BTreeSet<(String, IpNetwork)> = BTreeSet::new();
        for a in withdrawn {
            let key = (a.service.clone(), a.ip);
            for (peer, prefix, _) in asks(a) {
                if let Some(prefixes) = self.0.get_mut(peer) {
                    if let Some(by) = prefixes.get_mut(&prefix) {
                        by.remove(&key);
                        if by.is_empty() {
                            prefixes.remove(&prefix);
                        }
                    }
                    if prefixes.is_empty() {
                        self.0.remove(peer);
                    }
                }
                touched.insert((peer.clone(), prefix));
            }
        }
        for a in added {
            let key = (a.service.clone(), a.ip);
            for (peer, prefix, attrs) in asks(a) {
                self.0
                    .entry(peer.clone())
                    .or_default()
                    .entry(prefix)
                    .or_default()
                    .entry(key.clone())
                    .or_default()
                    .push(attrs);
                touched.insert((peer.clone(), prefix));
            }
        }
        let mut out: BTreeMap<String, Vec<(IpNetwork, Option<RouteAttrs>)>> = BTreeMap::new();
        for (peer, prefix) in touched {
            let now = self
                .0
                .get(&peer)
                .and_then(|p| p.get(&prefix))
                .map(|by| merged(by.values().flatten()));
            out.entry(peer).or_default().push((prefix, now));
        }
        out
    }

    /// The peers that have routes.
    fn peers(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// Every peer's routes.
    fn all(&self) -> BTreeMap<String, BTreeMap<IpNetwork, RouteAttrs>> {
        self.0
            .iter()
            .map(|(peer, prefixes)| {
                let routes = prefixes
                    .iter()
                    .map(|(p, by)| (*p, merged(by.values().flatten())))
                    .collect();
                (peer.clone(), routes)
            })
            .collect()
    }
}

/// What several announcements' attributes for one prefix to one peer make: the union of their
/// communities and the highest localPref.
fn merged<'a>(attrs: impl Iterator<Item = &'a RouteAttrs>) -> RouteAttrs {
    let mut out = RouteAttrs::default();
    for a in attrs {
        out.communities.extend(&a.communities);
        out.large_communities.extend(&a.large_communities);
        out.local_pref = out.local_pref.max(a.local_pref);
    }
    out.communities.sort_unstable();
    out.communities.dedup();
    out.large_communities.sort_unstable();
    out.large_communities.dedup();
    out
}

/// The BGP announcer. Must be created within a tokio runtime.
#[derive(Debug)]
pub struct BgpAnnouncer {
    /// name → (the configuration it runs with, the session).
    sessions: Arc<Mutex<BTreeMap<String, (PeerConfig, Session)>>>,
    /// The BFD sessions of the peers whose BGPPeer names a BFDProfile (started with the first).
    bfd: Mutex<Option<Bfd>>,
    /// Peers valid for MetalLB that this speaker cannot serve (a vrf), with why:
    /// skipped alone; their routes wait for them and are no error.
    skipped: Mutex<Vec<(String, String)>>,
    /// What the announcements handed over ask of each peer (for [`Announcer::change`]).
    contributions: Mutex<Contributions>,
    /// Sessions were started since the routes were last handed to every session: the next
    /// change hands each session all its routes.
    new_sessions: std::sync::atomic::AtomicBool,
}

/// Peers by name: (name, what).
pub type Named<T> = Vec<(String, T)>;

/// The sessions `config` asks of `node`: (name, configuration) for each peer this speaker can
/// serve, and the others with why they are skipped (that peer alone waits).
pub fn sessions_for(
    config: &lb_core::config::Config,
    node: &str,
    router_id: Ipv4Addr,
) -> (Named<PeerConfig>, Named<String>) {
    let me = config.node(node);
    let mut sessions = Vec::new();
    let mut skipped = Vec::new();
    for p in lb_core::plan::peers_of(config, &me) {
        match peer_config(p, router_id, config.password_for(p)) {
            Ok(c) => sessions.push((p.name.clone(), c)),
            Err(why) => skipped.push((p.name.clone(), why.to_string())),
        }
    }
    (sessions, skipped)
}

/// The BFD sessions `config` asks of `node`: one per served peer whose BGPPeer names a
/// BFDProfile, with that profile's timers; multihop for an `ebgpMultiHop` peer (as FRR does).
pub fn bfd_for(
    config: &lb_core::config::Config,
    sessions: &Named<PeerConfig>,
) -> BTreeMap<String, PeerBfd> {
    sessions
        .iter()
        // An unnumbered peer's address is learned once the session runs: BFD for it is not
        // run yet (`check` says so).
        .filter(|(_, c)| c.interface.is_none())
        .filter_map(|(name, c)| {
            let peer = config.peers.get(name)?;
            let profile = config.bfd_profiles.get(peer.bfd_profile.as_ref()?)?;
            let ms = |v: u32| Duration::from_millis(u64::from(v));
            let mut timers = bfd::fsm::Config::new(
                ms(profile.transmit_interval),
                ms(profile.receive_interval),
                u8::try_from(profile.detect_multiplier).unwrap_or(u8::MAX),
            );
            timers.passive = profile.passive_mode;
            let mut b = PeerBfd::single_hop(c.address.ip(), timers);
            b.local = c.source;
            b.multihop = peer.ebgp_multihop;
            b.min_ttl = u8::try_from(profile.minimum_ttl).unwrap_or(254);
            Some((name.clone(), b))
        })
        .collect()
}

/// What [`BgpAnnouncer::reconcile`] did, by peer name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Peers whose session started.
    pub started: Vec<String>,
    /// Peers removed (sent a Cease).
    pub stopped: Vec<String>,
    /// Peers whose settings changed (the session was restarted with the new ones).
    pub restarted: Vec<String>,
}

impl BgpAnnouncer {
    /// Starts one session per (name, configuration).
    pub fn start(peers: impl IntoIterator<Item = (String, PeerConfig)>) -> Self {
        BgpAnnouncer {
            sessions: Arc::new(Mutex::new(
                peers
                    .into_iter()
                    .map(|(n, c)| {
                        let s = Session::start(c.clone());
                        (n, (c, s))
                    })
                    .collect(),
            )),
            bfd: Mutex::default(),
            skipped: Mutex::default(),
            contributions: Mutex::default(),
            new_sessions: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts the sessions `config` asks of `node` (see [`sessions_for`]); the peers it cannot
    /// serve are logged and shown by [`BgpAnnouncer::skipped`].
    pub fn for_node(config: &lb_core::config::Config, node: &str, router_id: Ipv4Addr) -> Self {
        let (sessions, skipped) = sessions_for(config, node, router_id);
        let bfd = bfd_for(config, &sessions);
        let a = BgpAnnouncer::start(sessions);
        a.set_skipped(skipped);
        a.set_bfd(bfd);
        a
    }

    /// Moves the sessions to what `config` asks of `node`, one peer at a time (see
    /// [`BgpAnnouncer::reconcile`]).
    pub async fn reconfigure(
        &self,
        config: &lb_core::config::Config,
        node: &str,
        router_id: Ipv4Addr,
        grace: Duration,
    ) -> Reconciled {
        let (sessions, skipped) = sessions_for(config, node, router_id);
        self.set_skipped(skipped);
        let bfd = bfd_for(config, &sessions);
        let done = self.reconcile(sessions, grace).await;
        self.set_bfd(bfd);
        done
    }

    /// Makes the BFD sessions exactly `peers` (by BGP peer name; see [`bfd_for`]). When one
    /// goes from Up to Down, that peer's BGP session drops at once (RFC 5882) and reconnects as
    /// usual.
    pub fn set_bfd(&self, peers: BTreeMap<String, PeerBfd>) {
        let mut bfd = self.bfd.lock().unwrap_or_else(|e| e.into_inner());
        if bfd.is_none() && peers.is_empty() {
            return;
        }
        let b = bfd.get_or_insert_with(|| {
            let sessions = self.sessions.clone();
            Bfd::start(Arc::new(move |name: &str| {
                let sessions = sessions.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, s)) = sessions.get(name) {
                    tracing::warn!(peer = %name, "BFD went down: dropping the BGP session");
                    s.peer_down();
                }
            }))
        });
        b.set_peers(peers);
    }

    /// BFD packets dropped before any session took them, by reason (see [`Bfd::dropped`]).
    pub fn bfd_dropped(&self) -> BTreeMap<&'static str, u64> {
        self.bfd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Bfd::dropped)
            .unwrap_or_default()
    }

    /// Each peer's BFD session status, by peer name.
    pub fn bfd_statuses(&self) -> BTreeMap<String, BfdStatus> {
        self.bfd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Bfd::statuses)
            .unwrap_or_default()
    }

    fn set_skipped(&self, skipped: Vec<(String, String)>) {
        for (peer, why) in &skipped {
            tracing::warn!(%peer, "skipped: {why}");
        }
        *self.skipped.lock().unwrap_or_else(|e| e.into_inner()) = skipped;
    }

    /// The peers skipped because this speaker cannot serve them, with why.
    pub fn skipped(&self) -> Vec<(String, String)> {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (PeerConfig, Session)>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the sessions those of `peers`, touching only what changed: a new peer's session
    /// starts, a removed one gets a Cease (within `grace`), and one whose configuration
    /// changed (timers, address, a rotated password) is stopped and started again. Every
    /// other session keeps running with its routes. New and restarted sessions start with no
    /// routes: call [`Announcer::announce`] after. A [`Listener`] made earlier does not know
    /// the new sessions: register them with it.
    pub async fn reconcile(
        &self,
        peers: impl IntoIterator<Item = (String, PeerConfig)>,
        grace: Duration,
    ) -> Reconciled {
        let want: BTreeMap<String, PeerConfig> = peers.into_iter().collect();
        let mut done = Reconciled::default();
        let mut to_stop = Vec::new();
        {
            let mut sessions = self.lock();
            let names: Vec<String> = sessions.keys().cloned().collect();
            for name in names {
                match want.get(&name) {
                    Some(c) if sessions.get(&name).is_some_and(|(old, _)| old == c) => {}
                    Some(_) => {
                        if let Some((_, s)) = sessions.remove(&name) {
                            to_stop.push(s);
                        }
                        done.restarted.push(name);
                    }
                    None => {
                        if let Some((_, s)) = sessions.remove(&name) {
                            to_stop.push(s);
                        }
                        done.stopped.push(name);
                    }
                }
            }
        }
        // The old sessions say goodbye before their replacements connect, so a peer never
        // sees two connections from us at once.
        for s in to_stop {
            s.stop(grace).await;
        }
        let mut sessions = self.lock();
        for (name, c) in want {
            if let std::collections::btree_map::Entry::Vacant(e) = sessions.entry(name) {
                if !done.restarted.contains(e.key()) {
                    done.started.push(e.key().clone());
                }
                let s = Session::start(c.clone());
                e.insert((c, s));
            }
        }
        if !done.started.is_empty() || !done.restarted.is_empty() {
            self.new_sessions
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        done
    }

    fn contributions(&self) -> std::sync::MutexGuard<'_, Contributions> {
        self.contributions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Peers with routes and no session that are not skipped: their routes wait, as an error.
    fn without_session<'a>(&self, peers: impl Iterator<Item = &'a String>) -> Vec<String> {
        let skipped: BTreeSet<String> = self.skipped().into_iter().map(|(n, _)| n).collect();
        let sessions = self.lock();
        peers
            .filter(|p| !sessions.contains_key(*p) && !skipped.contains(*p))
            .cloned()
            .collect()
    }

    /// Each peer's session status, by peer name.
    pub fn statuses(&self) -> BTreeMap<String, SessionStatus> {
        self.lock()
            .iter()
            .map(|(n, (_, s))| (n.clone(), s.status()))
            .collect()
    }

    /// Writes each session's metrics under MetalLB's native speaker metric names, and the
    /// peers this build skips (`lb_bgp_peer_skipped`).
    pub fn collect(&self, out: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let skipped = self.skipped();
        family(
            out,
            "lb_bgp_peer_skipped",
            "A BGPPeer this build cannot serve (see /status and the log).",
            Kind::Gauge,
            skipped.iter().map(|(p, _)| ([("peer", p.as_str())], 1)),
        )?;
        let st = self.statuses();
        /// (name, kind, help, value of a session)
        type Metric = (&'static str, Kind, &'static str, fn(&SessionStatus) -> u64);
        let metrics: [Metric; 5] = [
            (
                "metallb_bgp_session_up",
                Kind::Gauge,
                "BGP session state (1 is up, 0 is down)",
                |s| u64::from(s.state == State::Established),
            ),
            (
                "metallb_bgp_updates_total",
                Kind::Counter,
                "Number of BGP UPDATE messages sent",
                |s| s.updates_sent,
            ),
            (
                "lb_bgp_updates_received_total",
                Kind::Counter,
                "Number of BGP UPDATE messages received",
                |s| s.updates_received,
            ),
            (
                "metallb_bgp_announced_prefixes_total",
                Kind::Gauge,
                "Number of prefixes currently being advertised on the BGP session",
                |s| s.prefixes_announced as u64,
            ),
            (
                "lb_bgp_routes_refused",
                Kind::Gauge,
                "Routes not sent because their path attributes do not fit one UPDATE",
                |s| s.routes_refused as u64,
            ),
        ];
        let bfd = self.bfd_statuses();
        /// (MetalLB's name, kind, help, value of a BFD session)
        type BfdMetric = (&'static str, Kind, &'static str, fn(&BfdStatus) -> u64);
        let bfd_metrics: [BfdMetric; 5] = [
            (
                "metallb_bfd_session_up",
                Kind::Gauge,
                "BFD session state (1 is up, 0 is down)",
                |s| u64::from(s.state == bfd::packet::State::Up),
            ),
            (
                "metallb_bfd_control_packet_input",
                Kind::Untyped,
                "Number of received BFD control packets",
                |s| s.counters.received,
            ),
            (
                "metallb_bfd_control_packet_output",
                Kind::Untyped,
                "Number of sent BFD control packets",
                |s| s.counters.sent,
            ),
            (
                "metallb_bfd_session_up_events",
                Kind::Untyped,
                "Number of times the BFD session came up",
                |s| s.counters.up_events,
            ),
            (
                "metallb_bfd_session_down_events",
                Kind::Untyped,
                "Number of times the BFD session went down",
                |s| s.counters.down_events,
            ),
        ];
        family(
            out,
            "lb_bfd_dropped_total",
            "BFD packets dropped before any session took them, by reason",
            Kind::Counter,
            self.bfd_dropped()
                .into_iter()
                .map(|(reason, n)| ([("reason", reason)], n)),
        )?;
        for (name, kind, help, get) in bfd_metrics {
            let series = bfd
                .iter()
                .map(|(peer, s)| ([("peer", peer.as_str())], get(s)));
            family(out, name, help, kind, series)?;
        }
        for (name, kind, help, get) in metrics {
            let series = st
                .iter()
                .map(|(peer, s)| ([("peer", peer.as_str())], get(s)));
            family(out, name, help, kind, series)?;
        }
        Ok(())
    }

    /// Also takes connections that the peers open, on `addr` (`[::]:179` for every address);
    /// MetalLB's speaker only connects out. Keep the listener as long as the announcer.
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<Listener> {
        let l = Listener::bind(addr).await?;
        for (_, s) in self.lock().values() {
            l.register(s)?;
        }
        Ok(l)
    }

    /// Takes the BFD sessions administratively down, sends Cease to every peer and closes the
    /// sessions.
    pub async fn stop(&self, grace: Duration) {
        let bfd = self.bfd.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(b) = bfd {
            b.stop().await;
        }
        let sessions = std::mem::take(&mut *self.lock());
        for (_, (_, s)) in sessions {
            s.stop(grace).await;
        }
    }
}

#[async_trait]
impl Announcer for BgpAnnouncer {
    fn protocol(&self) -> Protocol {
        Protocol::Bgp
    }

    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
        if let Some(a) = desired.iter().find(|a| !matches!(a.how, How::Bgp { .. })) {
            return Err(AnnounceError::WrongProtocol {
                protocol: Protocol::Bgp,
                got: Protocol::of(a),
                ip: a.ip,
            });
        }
        self.contributions().whole(desired);
        self.new_sessions
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut per_peer = routes_per_peer(desired);
        // A skipped peer has no session: its routes wait for it, they are no error.
        for (name, _) in self.skipped() {
            per_peer.remove(&name);
        }
        let sessions = self.lock();
        for (name, (_, s)) in sessions.iter() {
            s.set_routes(per_peer.remove(name).unwrap_or_default());
        }
        if !per_peer.is_empty() {
            let names: Vec<String> = per_peer.into_keys().collect();
            return Err(AnnounceError::NoSession {
                protocol: Protocol::Bgp,
                peers: names,
            });
        }
        Ok(())
    }

    /// Hands each session only the prefixes the change touched, merged again from what every
    /// announcement asks of them (after sessions were started, every session all its routes).
    async fn change(&self, change: Change<'_>) -> Result<(), AnnounceError> {
        if let Some(a) = change
            .withdrawn
            .iter()
            .chain(change.added)
            .find(|a| !matches!(a.how, How::Bgp { .. }))
        {
            return Err(AnnounceError::WrongProtocol {
                protocol: Protocol::Bgp,
                got: Protocol::of(a),
                ip: a.ip,
            });
        }
        let (per_peer, missing) = {
            let mut c = self.contributions();
            let per_peer = c.change(change.withdrawn, change.added);
            let missing = self.without_session(c.peers());
            (per_peer, missing)
        };
        if self
            .new_sessions
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            let mut all = self.contributions().all();
            for (name, (_, s)) in self.lock().iter() {
                s.set_routes(all.remove(name).unwrap_or_default());
            }
        } else {
            let sessions = self.lock();
            for (name, changes) in per_peer {
                if let Some((_, s)) = sessions.get(&name) {
                    s.change_routes(changes);
                }
            }
        }
        if !missing.is_empty() {
            return Err(AnnounceError::NoSession {
                protocol: Protocol::Bgp,
                peers: missing,
            });
        }
        Ok(())
    }

    fn collect_metrics(&self, out: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        self.collect(out)
    }

    /// A Cease to every peer (2 s to say it), then the sessions close.
    async fn shutdown(&self) {
        self.stop(Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {

    mod contributions {
        use super::*;
        use proptest::prelude::*;

        fn announcement(svc: u8, ip: u8, routes: &[(u8, u8, Option<u32>, u8)]) -> Announcement {
            Announcement {
                service: ServiceKey::new("default", format!("svc-{svc}")),
                ip: IpAddr::from([203, 0, 113, ip]),
                how: How::Bgp {
                    routes: routes
                        .iter()
                        .map(|(len, peers, lp, comm)| BgpRoute {
                            prefix: IpNetwork::new(IpAddr::from([203, 0, 113, ip]), 24 + len % 9)
                                .map(|n| IpNetwork::new(n.network(), n.prefix()).expect("prefix"))
                                .expect("prefix"),
                            peers: (0..3)
                                .filter(|p| peers & (1 << p) != 0)
                                .map(|p| format!("peer{p}"))
                                .collect(),
                            local_pref: *lp,
                            communities: vec![Community::Legacy(u32::from(*comm))],
                        })
                        .collect(),
                },
            }
        }

        /// Sets of announcements: at most one a service and address; addresses close enough
        /// that their aggregates meet.
        fn set() -> impl Strategy<Value = Vec<Announcement>> {
            let route = (0u8..9, 0u8..8, proptest::option::of(100u32..103), 0u8..3);
            proptest::collection::btree_map(
                (0u8..4, 0u8..4),
                proptest::collection::vec(route, 0..3),
                0..6,
            )
            .prop_map(|m| {
                m.into_iter()
                    .map(|((svc, ip), routes)| announcement(svc, ip, &routes))
                    .collect()
            })
        }

        proptest! {
            /// What a sequence of changes leaves each peer, prefix by prefix, is what
            /// `routes_per_peer` makes of the whole set.
            #[test]
            fn changes_give_each_peer_what_the_whole_set_gives(
                sets in proptest::collection::vec(set(), 1..12)
            ) {
                let mut c = Contributions::default();
                let mut table: BTreeMap<String, BTreeMap<IpNetwork, RouteAttrs>> = BTreeMap::new();
                let mut before: Vec<Announcement> = Vec::new();
                for now in sets {
                    let (withdrawn, added) = lb_core::announce::difference(&before, &now);
                    for (peer, changes) in c.change(&withdrawn, &added) {
                        let routes = table.entry(peer.clone()).or_default();
                        for (prefix, attrs) in changes {
                            match attrs {
                                Some(a) => routes.insert(prefix, a),
                                None => routes.remove(&prefix),
                            };
                        }
                        if routes.is_empty() {
                            table.remove(&peer);
                        }
                    }
                    let whole = routes_per_peer(&now);
                    prop_assert_eq!(&table, &whole);
                    prop_assert_eq!(&c.all(), &whole);
                    before = now;
                }
            }
        }
    }
    use super::*;
    use lb_core::objects::ServiceKey;
    use lb_core::plan::{BgpRoute, Interfaces};

    fn ann(ip: &str, routes: Vec<BgpRoute>) -> Announcement {
        Announcement {
            service: ServiceKey::new("a", "s"),
            ip: ip.parse().unwrap(),
            how: How::Bgp { routes },
        }
    }

    fn route(prefix: &str, peers: &[&str], lp: Option<u32>, c: Vec<Community>) -> BgpRoute {
        BgpRoute {
            prefix: prefix.parse().unwrap(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
            local_pref: lp,
            communities: c,
        }
    }

    #[test]
    fn routes_are_split_per_peer_with_their_attributes() {
        let d = [ann(
            "203.0.113.10",
            vec![
                route(
                    "203.0.113.10/32",
                    &["r1", "r2"],
                    None,
                    vec![Community::Legacy(7), Community::Large(1, 2, 3)],
                ),
                route("203.0.113.0/24", &["r1"], Some(200), vec![]),
            ],
        )];
        let m = routes_per_peer(&d);
        assert_eq!(m["r1"].len(), 2);
        assert_eq!(m["r2"].len(), 1);
        let a = &m["r2"][&"203.0.113.10/32".parse::<IpNetwork>().unwrap()];
        assert_eq!(
            (a.communities.clone(), a.large_communities.clone()),
            (vec![7], vec![(1, 2, 3)])
        );
        assert_eq!(
            m["r1"][&"203.0.113.0/24".parse::<IpNetwork>().unwrap()].local_pref,
            Some(200)
        );
    }

    #[test]
    fn one_prefix_from_several_services_merges_communities_and_keeps_the_highest_local_pref() {
        // The highest on either service.
        for (first, second) in [(100, 200), (200, 100)] {
            let d = [
                ann(
                    "203.0.113.10",
                    vec![route(
                        "203.0.113.0/24",
                        &["r1"],
                        Some(first),
                        vec![Community::Legacy(1)],
                    )],
                ),
                ann(
                    "203.0.113.11",
                    vec![route(
                        "203.0.113.0/24",
                        &["r1"],
                        Some(second),
                        vec![Community::Legacy(2), Community::Legacy(1)],
                    )],
                ),
            ];
            let a = &routes_per_peer(&d)["r1"][&"203.0.113.0/24".parse::<IpNetwork>().unwrap()];
            assert_eq!(a.communities, [1, 2]);
            assert_eq!(a.local_pref, Some(200));
        }
    }

    #[test]
    fn layer2_announcements_are_not_bgp_routes() {
        let d = [Announcement {
            service: ServiceKey::new("a", "s"),
            ip: "192.0.2.1".parse().unwrap(),
            how: How::Layer2 {
                interfaces: Interfaces::All,
            },
        }];
        assert!(routes_per_peer(&d).is_empty());
    }

    #[test]
    fn metallb_peer_maps_to_a_session_config() {
        let l = lb_core::load_str(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r1}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1, peerPort: 1790, holdTime: 9s, sourceAddress: 192.0.2.10, enableGracefulRestart: true}\n",
        );
        let p = &l.config.peers["r1"];
        let c = peer_config(p, Ipv4Addr::new(192, 0, 2, 10), None).unwrap();
        assert_eq!(c.address, "192.0.2.1:1790".parse().unwrap());
        assert_eq!(
            (c.fsm.local_as, c.fsm.remote_as, c.fsm.hold_time),
            (64512, RemoteAs::Fixed(64500), 9)
        );
        assert_eq!(c.fsm.keepalive, Some(3));
        assert_eq!(c.source, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(c.fsm.graceful_restart, Some((120, false)));
        let u = lb_core::load_str(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: u}\nspec: {myASN: 1, peerASN: 2, interface: eth0}\n",
        );
        let u = peer_config(&u.config.peers["u"], Ipv4Addr::new(192, 0, 2, 10), None).unwrap();
        assert_eq!(
            u.interface.as_deref(),
            Some("eth0"),
            "unnumbered: found on eth0"
        );
        assert_eq!(u.address.port(), 179);
        assert_eq!(u.ttl, Some(1), "eBGP one hop away");
    }

    #[test]
    fn a_peer_naming_a_bfd_profile_gets_a_bfd_session_with_its_timers() {
        let l = lb_core::load_str(
            "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: fast}\nspec: {receiveInterval: 100, transmitInterval: 50, detectMultiplier: 4, passiveMode: true, minimumTtl: 250}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: near}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1, sourceAddress: 192.0.2.10, bfdProfile: fast}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: far}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1, ebgpMultiHop: true, bfdProfile: fast}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: plain}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.2}\n",
        );
        assert!(l.is_valid(), "{:?}", l.errors);
        let (sessions, _) = sessions_for(&l.config, "n1", Ipv4Addr::new(192, 0, 2, 10));
        let bfd = bfd_for(&l.config, &sessions);
        assert_eq!(bfd.keys().collect::<Vec<_>>(), ["far", "near"]);
        let near = &bfd["near"];
        let ms = Duration::from_millis;
        assert_eq!(near.peer, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(near.local, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(
            (
                near.config.desired_min_tx,
                near.config.required_min_rx,
                near.config.detect_mult,
                near.config.passive
            ),
            (ms(50), ms(100), 4, true)
        );
        assert!(!near.multihop);
        assert!(bfd["far"].multihop && bfd["far"].min_ttl == 250);
    }

    #[test]
    fn echo_mode_is_a_warning_that_says_it_runs_without() {
        let l = lb_core::load_str(
            "apiVersion: metallb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: e}\nspec: {echoMode: true}\n",
        );
        assert!(l.is_valid());
        assert!(l.config.bfd_profiles.contains_key("e"));
        let w: Vec<String> = l.errors.iter().map(ToString::to_string).collect();
        assert!(
            w.iter()
                .any(|w| w.contains("echoMode") && w.contains("asynchronous mode")),
            "{w:?}"
        );
    }

    /// A passive session (it never connects out: nothing leaves this machine).
    fn passive(hold: u16, password: Option<&str>) -> PeerConfig {
        let l = lb_core::load_str(
            "apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1}\n",
        );
        let mut c = peer_config(
            &l.config.peers["r"],
            Ipv4Addr::new(192, 0, 2, 10),
            password.map(str::to_string),
        )
        .unwrap();
        c.fsm.passive = true;
        c.fsm.hold_time = hold;
        c
    }

    #[tokio::test]
    async fn reconcile_touches_only_the_peers_that_changed() {
        let a = BgpAnnouncer::start([
            ("a".to_string(), passive(90, None)),
            ("b".to_string(), passive(90, Some("first"))),
            ("c".to_string(), passive(90, None)),
        ]);
        let grace = Duration::from_millis(100);
        let r = a
            .reconcile(
                [
                    ("a".to_string(), passive(90, None)),
                    ("b".to_string(), passive(90, Some("second"))),
                    ("d".to_string(), passive(90, None)),
                ],
                grace,
            )
            .await;
        assert_eq!(
            r,
            Reconciled {
                started: vec!["d".into()],
                stopped: vec!["c".into()],
                restarted: vec!["b".into()],
            }
        );
        assert_eq!(
            a.statuses().into_keys().collect::<Vec<_>>(),
            ["a", "b", "d"]
        );
        let same = a
            .reconcile(
                [
                    ("a".to_string(), passive(90, None)),
                    ("b".to_string(), passive(90, Some("second"))),
                    ("d".to_string(), passive(90, None)),
                ],
                grace,
            )
            .await;
        assert_eq!(same, Reconciled::default());
        a.stop(grace).await;
    }
}
