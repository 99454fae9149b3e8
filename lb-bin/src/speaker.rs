//! `lb-bin speaker`: one per node (a DaemonSet). Watches the cluster through lb-k8s, elects L2
//! owners with the same SWIM membership as standalone mode (members found from the Nodes),
//! and drives the announcers.
//!
//! ```text
//!  API watches ─► lb_k8s Store ─┐
//!  SwimElector (seeds: Nodes' InternalIPs) ─ live members ─► speaker::Core::decide ─► Plan
//!        Plan ─► Announcers (L2, BGP)   Plan ─► ServiceL2Status / ServiceBGPStatus, events
//! ```
//! While the API server is unreachable the store keeps what it last saw, so announcements
//! continue and only membership moves them.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::stop::Stop;
use futures::StreamExt;
use lb_core::elect::LeaderElector;
use lb_k8s::metrics::Metrics;
use lb_k8s::speaker::ObjectChange;
use lb_k8s::speaker::{ApiWriter, Core, kinds};
use lb_k8s::store::{Changed, Store};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::announcers::Announcers;
use crate::members::{JOIN_GRACE, Keyring, Roster, Security, SwimElector, wait_for_others};
use crate::standalone::{SharedMetrics, SharedStatus, StatusAnnouncement};
use lb_core::config::Config;

/// The longest one round of API writes (status objects, events) may take before it is cut off
/// and retried; it runs beside the decision loop, never in it.
const API_ROUND: Duration = Duration::from_secs(10);

/// Everything `lb-bin speaker` is told.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// What decides the announcements.
    pub k8s: lb_k8s::speaker::Options,
    /// Membership (UDP).
    pub bind: SocketAddr,
    /// The address other speakers reach this one at; default: this Node's InternalIP.
    pub advertise: Option<IpAddr>,
    /// Where `/metrics`, `/healthz` and `/status` are served.
    pub http: Option<SocketAddr>,
    /// The Secret (in the speaker's namespace) whose `secretkey` seals the membership, as
    /// MetalLB's `memberlist`; reloaded when it changes.
    pub secret_name: String,
    /// Talk to other speakers with plain datagrams (no Secret needed).
    pub insecure_membership: bool,
}

impl Options {
    /// A speaker deciding by `k8s`: membership on UDP 7946 sealed with the Secret
    /// `memberlist`, its address the Node's, no HTTP.
    pub fn new(k8s: lb_k8s::speaker::Options) -> Self {
        Options {
            k8s,
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            http: None,
            secret_name: "memberlist".into(),
            insecure_membership: false,
        }
    }
}

/// Why the membership Secret gives no keys.
#[derive(Debug, thiserror::Error)]
enum SecretKeyError {
    #[error("Secret {0} has no secretkey")]
    Missing(String),
    #[error("Secret {secret}: secretkey: {source}")]
    Bad {
        secret: String,
        source: lb_core::members::seal::KeyError,
    },
}

/// The membership keys from the Secret, if it exists.
fn secret_keys(config: &Config, opts: &Options) -> Option<Result<Keyring, SecretKeyError>> {
    let ns = &opts.k8s.namespace;
    let name = &opts.secret_name;
    let data = config.secrets.get(&(ns.clone(), name.clone()))?;
    let secret = format!("{ns}/{name}");
    Some(match data.get("secretkey") {
        Some(text) => Keyring::parse(text).map_err(|source| SecretKeyError::Bad { secret, source }),
        None => Err(SecretKeyError::Missing(secret)),
    })
}

/// What the speaker's decision loop keeps between passes.
struct Speaker {
    opts: Options,
    rid: Ipv4Addr,
    core: Core,
    store: Store,
    elector: SwimElector,
    /// The roster the membership has now.
    roster_now: Roster,
    /// The ids of the membership keys in use.
    key_ids: Vec<String>,
    announcers: Announcers,
    runtime: lb_core::Runtime,
    /// The configuration the announcers were started for.
    started_for: Config,
    state: StateReport,
    api_writes: ApiWriter,
    write_client: kube::Client,
    metrics: Metrics,
    status: SharedStatus,
    /// What changed since the last pass.
    todo: Changed,
    /// The next pass reads every object (the first one does).
    whole: bool,
}

impl Speaker {
    /// Decides from what the watches show and `members`, and applies it: the roster and keys
    /// of the membership, the announcers (only what changed moves), the plan, the status
    /// objects (by the API writer) and `/status`.
    async fn pass(&mut self, members: &BTreeSet<String>) {
        let started = std::time::Instant::now();
        let mut changed = std::mem::take(&mut self.todo);
        changed.merge(self.store.take_changed());
        // A change of Services, EndpointSlices, Nodes or members is decided from what the Core
        // kept and applied as the change it is (a member that leaves moves only the services
        // it announced); anything else (another kind, a relist) reads every object again and
        // applies the whole plan.
        let kinds: BTreeSet<&str> = changed.objects.keys().map(|(k, _, _)| k.as_str()).collect();
        tracing::debug!(
            ?kinds,
            relisted = changed.relisted,
            whole = self.whole,
            "pass"
        );
        let decided = if !std::mem::take(&mut self.whole) && !changed.relisted {
            self.core.change(
                object_changes(&changed, &self.store),
                members,
                &self.opts.k8s,
            )
        } else {
            None
        };
        match decided {
            Some(decided) => {
                tracing::debug!(services = decided.len(), "a change, applied as one");
                self.apply_change(decided, members, started).await
            }
            None => {
                tracing::debug!("a whole decision");
                self.apply_whole(members, started).await
            }
        }
    }

    /// A whole decision, applied whole.
    async fn apply_whole(&mut self, members: &BTreeSet<String>, started: std::time::Instant) {
        let node = self.opts.k8s.node_name.clone();
        let mut d = self
            .core
            .decide(self.store.values(), members, &self.opts.k8s);
        crate::members::without_l2_if_refused(members, &mut d.plan.announcements);
        self.metrics.config(true, d.stale);
        let ns = &self.opts.k8s.namespace;
        self.state
            .report(&self.write_client, ns, &node, &d.config_errors);
        self.configure(&d.config, &node).await;
        let applied = self
            .runtime
            .apply(&d.plan, &BTreeSet::new(), crate::standalone::now_secs())
            .await;
        self.api_writes.want(&node, &d.plan);
        self.metrics.set_announced(announced_rows(&d.plan, &node));
        let announcements = StatusAnnouncement::keyed(&applied.announced);
        self.finish(members, started, &applied.errors, d.config_errors, |st| {
            st.announcements = announcements;
        });
    }

    /// The services `decided` again, each with this node's part, applied as a change: each announcer, the status
    /// objects, the metrics and `/status` get those services' difference alone, so the pass
    /// costs what changed.
    async fn apply_change(
        &mut self,
        mut parts: Vec<lb_k8s::speaker::Decided>,
        members: &BTreeSet<String>,
        started: std::time::Instant,
    ) {
        let node = self.opts.k8s.node_name.clone();
        for (_, part) in &mut parts {
            crate::members::without_l2_if_refused(members, part);
        }
        let config_errors = self.core.config_errors();
        self.metrics.config(true, self.core.stale());
        let ns = &self.opts.k8s.namespace;
        self.state
            .report(&self.write_client, ns, &node, &config_errors);
        let applied = self
            .runtime
            .apply_change(
                parts.iter().cloned(),
                &BTreeSet::new(),
                crate::standalone::now_secs(),
            )
            .await;
        self.api_writes.want_change(&node, &parts);
        let row = |a: &lb_core::Announcement| announced_row(a, &node);
        self.metrics.change_announced(
            applied.withdrawn.iter().map(row).collect(),
            applied.added.iter().map(|(a, _)| row(a)).collect(),
        );
        self.finish(members, started, &applied.errors, config_errors, |st| {
            for a in &applied.withdrawn {
                st.announcements.remove(&StatusAnnouncement::key(a));
            }
            for (a, t) in &applied.added {
                st.announcements
                    .insert(StatusAnnouncement::key(a), StatusAnnouncement::of(a, *t));
            }
        });
    }

    /// What every pass ends with: readiness, metrics and `/status` (`announced` updates its
    /// announcements).
    fn finish(
        &mut self,
        members: &BTreeSet<String>,
        started: std::time::Instant,
        errors: &[lb_core::announce::AnnounceError],
        config_errors: Vec<String>,
        announced: impl FnOnce(&mut crate::standalone::Status),
    ) {
        let apply_errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        for e in &apply_errors {
            error!("announcing: {e}");
        }
        self.metrics
            .reconciled(started.elapsed(), apply_errors.is_empty());
        // Not ready while the plan did not apply (an announcer refused it).
        self.metrics.set_ready(apply_errors.is_empty());
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.node = self.opts.k8s.node_name.clone();
        st.ready = apply_errors.is_empty();
        st.apply_errors = apply_errors;
        st.skipped_peers = self.announcers.skipped().to_vec();
        st.bfd = self.announcers.bfd();
        st.members = members.iter().cloned().collect();
        announced(&mut st);
        st.api_error = self.api_writes.outcome().error;
        st.config_errors = config_errors;
    }

    /// The membership's roster and keys, and the announcers, from a whole decision's
    /// configuration (only what changed moves).
    async fn configure(&mut self, config: &Config, node: &str) {
        let r = roster(config, node);
        if r != self.roster_now {
            self.elector.set_roster(Some(r.clone()));
            self.roster_now = r;
        }
        if !self.opts.insecure_membership {
            reload_keys(&self.elector, config, &self.opts, &mut self.key_ids);
        }
        if self.started_for != *config {
            // Only what changed moves: one peer's edit (a rotated Secret password included)
            // re-establishes that session alone; new sessions start empty and get the plan
            // below.
            match self.announcers.update(config, node, self.rid).await {
                Ok(()) => {
                    self.runtime.set_announcers(self.announcers.list());
                    self.started_for = config.clone();
                }
                Err(e) => error!("new announcers refused, the old ones stay: {e:#}"),
            }
        }
    }
}

/// The objects in `changed`, each as the store shows it now (`None`: deleted).
fn object_changes(changed: &Changed, store: &Store) -> Vec<ObjectChange> {
    changed
        .objects
        .keys()
        .map(|(plural, ns, name)| {
            let obj = store.get(plural, ns, name);
            ((plural.clone(), ns.clone(), name.clone()), obj)
        })
        .collect()
}

/// A speaker in the membership.
struct Joined {
    elector: SwimElector,
    /// This node's address.
    own: IpAddr,
    /// The Nodes, bound to their addresses.
    roster_now: Roster,
    /// Whether other Nodes have addresses to join.
    has_seeds: bool,
}

/// Joins the membership: this node's address, the Secret's keys (waited for), the Nodes as
/// the roster; `None` if stopped meanwhile.
async fn join(
    core: &mut Core,
    store: &Store,
    opts: &Options,
    stop: &mut Stop,
) -> Result<Option<Joined>> {
    let node = &opts.k8s.node_name;
    let (own, seeds) = own_address(store, opts)?;
    let has_seeds = !seeds.is_empty();
    let advertise = SocketAddr::new(own, opts.bind.port());
    let security = tokio::select! {
        s = security(core, store, opts) => s,
        _ = stop.wait() => return Ok(None),
    };
    let only_me = BTreeSet::from([node.clone()]);
    let roster_now = roster(
        &core.decide(store.values(), &only_me, &opts.k8s).config,
        node,
    );
    let mut o = crate::members::Options::new(node.clone(), opts.bind, security);
    o.advertise = advertise;
    o.seeds = seeds;
    o.roster = Some(roster_now.clone());
    let elector = SwimElector::start(o).await.map_err(|source| Error::Bind {
        flag: "--bind",
        addr: opts.bind,
        source,
    })?;
    info!(node = %node, %advertise, "joined membership");
    Ok(Some(Joined {
        elector,
        own,
        roster_now,
        has_seeds,
    }))
}

/// This node's membership address (`--advertise-address`, else its Node's) and the others'
/// (the seeds).
fn own_address(store: &Store, opts: &Options) -> Result<(IpAddr, Vec<SocketAddr>)> {
    let node = &opts.k8s.node_name;
    let addrs = node_addresses(store);
    let own = match opts.advertise {
        Some(ip) => ip,
        None => match addrs.iter().find(|(n, _)| n == node) {
            Some((_, ip)) => *ip,
            None => return Err(Error::NoNodeAddress { node: node.clone() }),
        },
    };
    let seeds = addrs
        .iter()
        .filter(|(n, _)| n != node)
        .map(|(_, ip)| SocketAddr::new(*ip, opts.bind.port()))
        .collect();
    Ok((own, seeds))
}

/// How the membership is secured: the Secret's keys, waited for (announcing nothing) while the
/// Secret is missing or bad: without it a speaker cannot tell the others from strangers, and
/// the controller creates it. `--insecure-membership` does without.
async fn security(core: &mut Core, store: &Store, opts: &Options) -> Security {
    if opts.insecure_membership {
        warn!(
            "--insecure-membership: anyone who reaches UDP port {} can join and steer which node owns each address",
            opts.bind.port()
        );
        return Security::Insecure;
    }
    let only_me = BTreeSet::from([opts.k8s.node_name.clone()]);
    let mut changes = store.changes();
    let mut waited = 0u32;
    loop {
        let d = core.decide(store.values(), &only_me, &opts.k8s);
        match secret_keys(&d.config, opts) {
            Some(Ok(keys)) => return Security::Sealed(keys),
            Some(Err(e)) if waited.is_multiple_of(50) => {
                error!("membership key: {e}; waiting for a good one")
            }
            None if waited.is_multiple_of(50) => warn!(
                "waiting for Secret {}/{} (key secretkey) to seal the membership; the controller creates it",
                opts.k8s.namespace, opts.secret_name
            ),
            _ => {}
        }
        waited += 1;
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Takes the Secret's keys when they changed; a Secret gone or bad keeps the running keys.
fn reload_keys(elector: &SwimElector, config: &Config, opts: &Options, ids: &mut Vec<String>) {
    match secret_keys(config, opts) {
        Some(Ok(keys)) => {
            let now: Vec<String> = keys.ids().iter().map(ToString::to_string).collect();
            if now != *ids {
                info!(keys = ?now, "membership keys reloaded from the Secret");
                elector.set_keys(keys);
                *ids = now;
            }
        }
        Some(Err(e)) => error!("membership key refused, the running keys stay: {e}"),
        None => warn!("the membership Secret is gone; the running keys stay"),
    }
}

/// ConfigurationState speaker-<node>, written when what it says changes, by a task of its
/// own: the decision loop does not wait for the API server.
#[derive(Debug, Default)]
struct StateReport {
    /// What the object says now.
    said: std::sync::Arc<std::sync::Mutex<Option<Vec<String>>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StateReport {
    fn report(&mut self, client: &kube::Client, namespace: &str, node: &str, errors: &[String]) {
        let said = self.said.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if said.as_deref() == Some(errors) || self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let (client, ns, errors) = (client.clone(), namespace.to_string(), errors.to_vec());
        let (reporter, done) = (
            lb_k8s::configstate::Reporter::speaker(node),
            self.said.clone(),
        );
        self.task = Some(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                lb_k8s::configstate::report(client, &ns, &reporter, &errors),
            )
            .await;
            match r {
                Ok(Ok(())) => *done.lock().unwrap_or_else(|e| e.into_inner()) = Some(errors),
                Ok(Err(e)) => warn!("writing ConfigurationState {}: {e}", reporter.name),
                Err(_) => warn!("writing ConfigurationState {}: timed out", reporter.name),
            }
        }));
    }
}

/// `metallb_speaker_announced`'s rows: (service, protocol, node, address).
fn announced_rows(plan: &lb_core::Plan, node: &str) -> Vec<[String; 4]> {
    plan.announcements
        .iter()
        .map(|a| announced_row(a, node))
        .collect()
}

/// One announcement's row of `metallb_speaker_announced`.
fn announced_row(a: &lb_core::Announcement, node: &str) -> [String; 4] {
    [
        a.service.to_string(),
        lb_core::Protocol::of(a).to_string(),
        node.to_string(),
        a.ip.to_string(),
    ]
}

/// The known nodes: every Node, bound to its InternalIPs.
fn roster(config: &Config, me: &str) -> Roster {
    let mut r: Roster = config
        .nodes
        .values()
        .map(|n| (n.name.clone(), n.addresses.iter().copied().collect()))
        .collect();
    r.entry(me.to_string()).or_default();
    r
}

/// The InternalIP (else first address) of every Node, by name.
fn node_addresses(store: &Store) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for n in store.of_kind("nodes") {
        let name = n
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let addrs = n
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pick = |t: Option<&str>| {
            addrs.iter().find_map(|a| {
                let ty = a.get("type").and_then(Value::as_str);
                if t.is_some() && ty != t {
                    return None;
                }
                a.get("address")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpAddr>().ok())
            })
        };
        if let Some(ip) = pick(Some("InternalIP")).or_else(|| pick(None)) {
            out.push((name, ip));
        }
    }
    out
}

/// Runs until SIGTERM or SIGINT.
pub async fn run(clients: lb_k8s::Clients, opts: Options) -> Result<()> {
    let (watch_client, write_client) = (clients.watch, clients.write);
    let node = opts.k8s.node_name.clone();
    let metrics = Metrics::default();
    let status = SharedStatus::default();
    let text = SharedMetrics::default();
    let renderer = crate::standalone::MetricsRenderer::default();
    if let Some(addr) = opts.http {
        crate::http::spawn(addr, status.clone(), text.clone()).await?;
    }
    let store = Store::default();
    let watches: Vec<_> = kinds(&opts.k8s)
        .into_iter()
        .map(|k| store.spawn_watch(watch_client.clone(), k))
        .collect();
    let mut stop = Stop::new()?;
    info!(node = %node, "waiting for the first list of every watched kind");
    let mut changes = store.changes();
    while !store.synced() {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => warn!("still waiting for the API server"),
            _ = stop.wait() => return Ok(()),
        }
    }
    let mut core = Core::default();
    let Some(Joined {
        elector,
        own,
        roster_now,
        has_seeds,
    }) = join(&mut core, &store, &opts, &mut stop).await?
    else {
        return Ok(());
    };
    let rid = crate::announcers::router_id(&node, own);
    let mut members_stream = elector.watch();
    // A speaker that (re)starts alone would elect itself owner of every address for a moment
    // and claim them all by gratuitous ARP: give the membership a moment to find the others.
    if has_seeds && !wait_for_others(&mut members_stream).await {
        warn!("no other speaker answered within {JOIN_GRACE:?}; going on alone");
    }

    // Status objects and events go through a task of their own: the loop below never waits
    // for the API server, so a hung or failing API cannot delay a takeover.
    let api_writes = ApiWriter::spawn(
        write_client.clone(),
        store.clone(),
        opts.k8s.clone(),
        node.clone(),
        API_ROUND,
        metrics.clone(),
    );
    let first = core.decide(store.values(), &elector.current().members, &opts.k8s);
    let announcers = Announcers::start(&first.config, &node, rid, false)?;
    let mut members: BTreeSet<String> = elector.current().members;
    let mut sp = Speaker {
        runtime: lb_core::Runtime::new(node.clone(), announcers.list()),
        announcers,
        started_for: first.config,
        key_ids: elector.status().key_ids,
        elector,
        roster_now,
        rid,
        core,
        store: store.clone(),
        state: StateReport::default(),
        api_writes,
        write_client,
        metrics: metrics.clone(),
        status: status.clone(),
        opts,
        todo: Changed::default(),
        whole: true,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dirty = true;
    loop {
        status.lock().unwrap_or_else(|e| e.into_inner()).turned = Some(std::time::Instant::now());
        if std::mem::take(&mut dirty) {
            sp.pass(&members).await;
        }
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { break; }
                let mut changed = store.take_changed();
                // A change the Core decides alone is served at once; a burst of others, each
                // a whole decision, settles into one.
                if !lb_k8s::speaker::decided_alone(&changed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    changed.merge(store.take_changed());
                }
                sp.todo.merge(changed);
                dirty = true;
            }
            m = members_stream.next() => {
                let Some(m) = m else {
                    return Err(Error::MembershipStopped);
                };
                if m.members != members {
                    info!(members = ?m.members, "membership changed");
                    let grew = !m.members.is_subset(&members);
                    members = m.members;
                    dirty = true;
                    if grew {
                        sp.runtime.reannounce();
                    }
                }
            }
            _ = tick.tick() => {
                let m = sp.elector.status();
                let mut parts = vec![metrics.collector("speaker")];
                parts.extend(sp.runtime.collectors());
                parts.push(Box::new(m.clone()));
                renderer.render(&text, parts);
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                st.membership = m;
                st.bfd = sp.announcers.bfd();
                // The API writer's latest word, whether or not a pass ran since.
                st.api_error = sp.api_writes.outcome().error;
            }
            _ = stop.wait() => break,
        }
    }
    info!("stopping: leaving the cluster so that others take over");
    if let Err(e) = sp.elector.resign().await {
        warn!("leaving: {e}");
    }
    status.lock().unwrap_or_else(|e| e.into_inner()).ready = false;
    sp.runtime.shutdown().await;
    // Others announce what this node did: its status objects go.
    if !sp.api_writes.clear(&node, Duration::from_secs(2)).await {
        warn!("could not remove this node's status objects within 2 s");
    }
    for w in watches {
        w.abort();
    }
    Ok(())
}
