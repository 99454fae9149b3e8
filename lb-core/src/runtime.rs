//! The announcing runtime: one node's loop step, written once for standalone mode, the
//! Kubernetes speaker and operators that embed the crates.
//!
//! ```text
//!  Config + allocations ─┐
//!  LeaderElector (live members) ─► plan (one set of rules decides every owner) ─► Plan
//!  Plan ─► local addresses first (optional) ─► each Announcer its protocol's part
//!       ─► stale local addresses off ─► Applied (errors, when each announcement began)
//! ```
//!
//! The runtime holds no sockets and does no IO of its own: the announcers and the optional
//! [`LocalAddresses`] do. Where the configuration and the allocations come from (a file and a
//! ledger the nodes agree on, the Kubernetes API, an operator's own resources) is the
//! caller's business, and so is when to call [`Runtime::pass`] (on a change of configuration,
//! allocations or membership).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use crate::alloc::Allocation;
use crate::announce::{AnnounceError, Announcer, Change, Protocol};
use crate::config::Config;
use crate::elect::LeaderElector;
use crate::objects::ServiceKey;
use crate::plan::{Announcement, MissingEndpoints, Plan, PlanInput, plan};

/// Addresses the host itself holds while this node announces them (a dummy interface), so
/// that local sockets get their traffic. They go on before the announcement and come off after
/// it is withdrawn.
pub trait LocalAddresses: Send + Debug {
    /// Adds every address of `want` that is missing; returns what failed, one error an address.
    fn add(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError>;
    /// Makes the set exactly `want`; returns what failed, one error an address.
    fn sync(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError>;
    /// Takes off the addresses of `gone` (none of them is in `want`, the whole set now);
    /// returns what failed. The default makes the set exactly `want`.
    fn remove(&mut self, gone: &BTreeSet<IpAddr>, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        let _ = gone;
        self.sync(want)
    }
    /// Whether the host differs from what was last asked (something failed): the caller
    /// retries with [`Runtime::retry_local`]. The default: never.
    fn pending(&self) -> bool {
        false
    }
}

/// What [`LocalAddresses`] could not do for one address, with the cause.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{address}: {source}")]
#[non_exhaustive]
pub struct LocalError {
    /// The address that could not be put on or taken off.
    pub address: IpAddr,
    /// Why (for lb-bin's dummy interface, the failed `ip` command and what it said).
    pub source: Arc<dyn std::error::Error + Send + Sync>,
}

impl LocalError {
    /// An error for `address` caused by `source`.
    pub fn new(address: IpAddr, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        LocalError {
            address,
            source: Arc::new(source),
        }
    }
}

/// How a pass plans (the rules that differ between standalone hosts and a cluster). Made by
/// [`Rules::standalone`] or [`Rules::cluster`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rules {
    /// Whether a service without EndpointSlices is served everywhere (standalone hosts serve
    /// locally) or nowhere (Kubernetes).
    pub missing_endpoints: MissingEndpoints,
    /// Announce from nodes labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub ignore_exclude_label: bool,
}

impl Rules {
    /// Standalone hosts: every node serves; the exclude label is honoured.
    pub fn standalone() -> Rules {
        Rules {
            missing_endpoints: MissingEndpoints::ServeEverywhere,
            ignore_exclude_label: false,
        }
    }

    /// A Kubernetes cluster: only nodes with ready endpoints serve ETP Local services.
    pub fn cluster(ignore_exclude_label: bool) -> Rules {
        Rules {
            missing_endpoints: MissingEndpoints::NoEndpoints,
            ignore_exclude_label,
        }
    }
}

/// What one [`Runtime::apply`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Applied {
    /// What each announcer refused; the node is not ready while this is not empty.
    pub errors: Vec<AnnounceError>,
    /// What [`LocalAddresses`] could not do (retry with [`Runtime::retry_local`]).
    pub local_errors: Vec<LocalError>,
    /// Each announcement of the plan with when it began (Unix seconds, from `now`).
    pub announced: Vec<(Announcement, u64)>,
}

/// What one [`Runtime::apply_change`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AppliedChange {
    /// What each announcer refused, and protocols that have announcements and no announcer:
    /// the node is not ready while this is not empty.
    pub errors: Vec<AnnounceError>,
    /// What [`LocalAddresses`] could not do (retry with [`Runtime::retry_local`]).
    pub local_errors: Vec<LocalError>,
    /// Announcements no longer made (as they were).
    pub withdrawn: Vec<Announcement>,
    /// Announcements made now that were not before, with when each began (Unix seconds; an
    /// address of a service that only changed how it is announced keeps its start).
    pub added: Vec<(Announcement, u64)>,
}

/// Tells `a` which addresses of `part` are new to the cluster (of `fresh`), if any.
fn note_fresh(a: &dyn Announcer, part: &[Announcement], fresh: &BTreeSet<IpAddr>) {
    let mine: BTreeSet<IpAddr> = part
        .iter()
        .map(|x| x.ip)
        .filter(|ip| fresh.contains(ip))
        .collect();
    if !mine.is_empty() {
        a.note_new_addresses(&mine);
    }
}

/// One node's announcers driven from plans. See the module docs.
#[derive(Debug)]
pub struct Runtime {
    node: String,
    announcers: Vec<Arc<dyn Announcer>>,
    local: Option<Box<dyn LocalAddresses>>,
    since: BTreeMap<(ServiceKey, IpAddr), u64>,
    members: BTreeSet<String>,
    want_local: BTreeSet<IpAddr>,
    /// What is announced, by service: the last plan with the changes since.
    current: BTreeMap<ServiceKey, Vec<Announcement>>,
    /// How many announcements of `current` each protocol has.
    counts: BTreeMap<Protocol, usize>,
    /// How many announcements of `current` hold each address (one address may serve several
    /// services): it leaves the host when the last one goes.
    local_refs: BTreeMap<IpAddr, usize>,
    /// Protocols whose announcer refused its last part: it is handed its whole part next.
    whole_next: BTreeSet<Protocol>,
}

impl Runtime {
    /// A runtime for node `node` handing plans to `announcers` (each gets the announcements of
    /// its [`Announcer::protocol`]; a protocol with no announcer is reported in
    /// [`Applied::errors`] when a plan has announcements of it).
    pub fn new(node: impl Into<String>, announcers: Vec<Arc<dyn Announcer>>) -> Runtime {
        Runtime {
            node: node.into(),
            announcers,
            local: None,
            since: BTreeMap::new(),
            members: BTreeSet::new(),
            want_local: BTreeSet::new(),
            current: BTreeMap::new(),
            counts: BTreeMap::new(),
            local_refs: BTreeMap::new(),
            whole_next: BTreeSet::new(),
        }
    }

    /// Also keeps the announced addresses on the host (before they are announced).
    pub fn with_local(mut self, local: Box<dyn LocalAddresses>) -> Runtime {
        self.local = Some(local);
        self
    }

    /// The node this runtime announces for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Replaces the announcers (a protocol turned on or off); the next pass hands them their
    /// part.
    pub fn set_announcers(&mut self, announcers: Vec<Arc<dyn Announcer>>) {
        self.announcers = announcers;
        // New announcers start empty: each gets its whole part with the next change.
        self.whole_next.extend([Protocol::Layer2, Protocol::Bgp]);
    }

    /// The announcers' metrics, as collectors for [`crate::metrics::render`].
    pub fn collectors(&self) -> Vec<Box<dyn prometheus_client::collector::Collector>> {
        self.announcers
            .iter()
            .map(|a| {
                Box::new(crate::metrics::AnnouncerMetrics(a.clone()))
                    as Box<dyn prometheus_client::collector::Collector>
            })
            .collect()
    }

    /// The plan for this node: `plan`'s rules over the elector's live members, the only place
    /// where ownership is decided.
    pub fn plan(
        &self,
        config: &Config,
        allocations: &BTreeMap<ServiceKey, Allocation>,
        members: &BTreeSet<String>,
        rules: Rules,
    ) -> Plan {
        plan(&PlanInput::new(
            config,
            allocations,
            members,
            &self.node,
            rules,
        ))
    }

    /// Notes the live members; returns whether they grew (a node joined, a partition
    /// healed): then, after applying the new plan, call [`Runtime::reannounce`].
    pub fn note_members(&mut self, members: &BTreeSet<String>) -> bool {
        let grew = !members.is_subset(&self.members) && !self.members.is_empty();
        self.members = members.clone();
        grew
    }

    /// Every announcer says again what it announces (neighbours may have learned another
    /// node for an address while members were apart).
    pub fn reannounce(&self) {
        for a in &self.announcers {
            a.reannounce();
        }
    }

    /// One whole step: plans from `elector`'s current members and applies the plan. `fresh`
    /// are addresses new to the cluster (see [`Announcer::note_new_addresses`]).
    pub async fn pass(
        &mut self,
        config: &Config,
        allocations: &BTreeMap<ServiceKey, Allocation>,
        elector: &dyn LeaderElector,
        rules: Rules,
        fresh: &BTreeSet<IpAddr>,
        now: u64,
    ) -> (Plan, Applied) {
        let members = elector.current().members;
        let grew = self.note_members(&members);
        let p = self.plan(config, allocations, &members, rules);
        let applied = self.apply(&p, fresh, now).await;
        if grew {
            self.reannounce();
        }
        (p, applied)
    }

    /// Hands each announcer its part of `plan`: new local addresses first, so that the first
    /// packet an announcement draws is delivered; addresses no longer announced come off the
    /// host after the announcers let go of them.
    pub async fn apply(&mut self, plan: &Plan, fresh: &BTreeSet<IpAddr>, now: u64) -> Applied {
        let mut applied = Applied::default();
        let want: BTreeSet<IpAddr> = plan.announcements.iter().map(|a| a.ip).collect();
        self.want_local = want.clone();
        if let Some(l) = &mut self.local {
            applied.local_errors = l.add(&want);
        }
        let mut parts: BTreeMap<Protocol, Vec<Announcement>> = BTreeMap::new();
        for a in &plan.announcements {
            parts.entry(Protocol::of(a)).or_default().push(a.clone());
        }
        for a in &self.announcers {
            let part = parts.remove(&a.protocol()).unwrap_or_default();
            note_fresh(a.as_ref(), &part, fresh);
            match a.announce(&part).await {
                Ok(()) => {
                    self.whole_next.remove(&a.protocol());
                }
                Err(e) => {
                    self.whole_next.insert(a.protocol());
                    applied.errors.push(e);
                }
            }
        }
        for (protocol, part) in parts {
            applied.errors.push(AnnounceError::NoAnnouncer {
                protocol,
                count: part.len(),
            });
        }
        if let Some(l) = &mut self.local {
            let more = l.sync(&want);
            if !more.is_empty() {
                applied.local_errors = more;
            }
        }
        self.keep(plan);
        let keys: BTreeSet<(ServiceKey, IpAddr)> = plan
            .announcements
            .iter()
            .map(|a| (a.service.clone(), a.ip))
            .collect();
        self.since.retain(|k, _| keys.contains(k));
        applied.announced = plan
            .announcements
            .iter()
            .map(|a| {
                let t = *self.since.entry((a.service.clone(), a.ip)).or_insert(now);
                (a.clone(), t)
            })
            .collect();
        applied
    }

    /// Keeps `plan` as what is announced, for the changes after it.
    fn keep(&mut self, plan: &Plan) {
        self.current.clear();
        self.counts.clear();
        self.local_refs.clear();
        for a in &plan.announcements {
            *self.counts.entry(Protocol::of(a)).or_default() += 1;
            *self.local_refs.entry(a.ip).or_default() += 1;
            self.current
                .entry(a.service.clone())
                .or_default()
                .push(a.clone());
        }
    }

    /// Applies a change of some services' announcements: `parts` gives each changed service's
    /// announcements now (none: it is no longer announced). Every other service keeps what the
    /// last [`Runtime::apply`] and the changes since gave it. As in a plan, a service has at
    /// most one announcement an address and protocol. Each announcer is handed its
    /// protocol's difference by [`Announcer::change`] (the whole part again after it refused
    /// one), new local addresses go on first and addresses no longer announced come off after.
    /// What this costs grows with the change, not with what is announced.
    pub async fn apply_change(
        &mut self,
        parts: impl IntoIterator<Item = (ServiceKey, Vec<Announcement>)>,
        fresh: &BTreeSet<IpAddr>,
        now: u64,
    ) -> AppliedChange {
        let mut out = AppliedChange::default();
        let mut withdrawn: BTreeMap<Protocol, Vec<Announcement>> = BTreeMap::new();
        let mut added: BTreeMap<Protocol, Vec<Announcement>> = BTreeMap::new();
        for (key, mut now_part) in parts {
            now_part.sort();
            now_part.dedup();
            let before = self.current.remove(&key).unwrap_or_default();
            for a in before.iter().filter(|a| now_part.binary_search(a).is_err()) {
                withdrawn
                    .entry(Protocol::of(a))
                    .or_default()
                    .push(a.clone());
            }
            for a in now_part.iter().filter(|a| !before.contains(a)) {
                added.entry(Protocol::of(a)).or_default().push(a.clone());
            }
            if !now_part.is_empty() {
                self.current.insert(key, now_part);
            }
        }
        // Counts and the host's addresses: new ones go on before anything is announced.
        let mut on = BTreeSet::new();
        let mut off = BTreeSet::new();
        for a in added.values().flatten() {
            *self.counts.entry(Protocol::of(a)).or_default() += 1;
            let n = self.local_refs.entry(a.ip).or_default();
            *n += 1;
            if *n == 1 {
                on.insert(a.ip);
            }
        }
        for a in withdrawn.values().flatten() {
            if let Some(n) = self.counts.get_mut(&Protocol::of(a)) {
                *n = n.saturating_sub(1);
            }
            if let Some(n) = self.local_refs.get_mut(&a.ip) {
                *n -= 1;
                if *n == 0 {
                    self.local_refs.remove(&a.ip);
                    on.remove(&a.ip);
                    off.insert(a.ip);
                }
            }
        }
        off.retain(|ip| !self.local_refs.contains_key(ip));
        self.want_local.extend(on.iter().copied());
        for ip in &off {
            self.want_local.remove(ip);
        }
        if let Some(l) = &mut self.local
            && !on.is_empty()
        {
            out.local_errors = l.add(&on);
        }
        for a in &self.announcers {
            let protocol = a.protocol();
            let none = Vec::new();
            let gone = withdrawn.get(&protocol).unwrap_or(&none);
            let new = added.get(&protocol).unwrap_or(&none);
            let whole = self.whole_next.contains(&protocol);
            if gone.is_empty() && new.is_empty() && !whole {
                continue;
            }
            note_fresh(a.as_ref(), new, fresh);
            let current = &self.current;
            let part = move || -> Vec<Announcement> {
                current
                    .values()
                    .flatten()
                    .filter(|x| Protocol::of(x) == protocol)
                    .cloned()
                    .collect()
            };
            let r = if whole {
                a.announce(&part()).await
            } else {
                a.change(Change {
                    withdrawn: gone,
                    added: new,
                    whole: &part,
                })
                .await
            };
            match r {
                Ok(()) => {
                    self.whole_next.remove(&protocol);
                }
                Err(e) => {
                    self.whole_next.insert(protocol);
                    out.errors.push(e);
                }
            }
        }
        // A protocol with announcements and no announcer is an error for as long as it lasts.
        let spoken: BTreeSet<Protocol> = self.announcers.iter().map(|a| a.protocol()).collect();
        for (protocol, count) in &self.counts {
            if *count > 0 && !spoken.contains(protocol) {
                out.errors.push(AnnounceError::NoAnnouncer {
                    protocol: *protocol,
                    count: *count,
                });
            }
        }
        if let Some(l) = &mut self.local
            && !off.is_empty()
        {
            let more = l.remove(&off, &self.want_local);
            if !more.is_empty() {
                out.local_errors = more;
            }
        }
        // When each announcement began: an address that stays with its service (only how it
        // is announced changed) keeps its start.
        out.withdrawn = withdrawn.into_values().flatten().collect();
        let added: Vec<Announcement> = added.into_values().flatten().collect();
        let staying: BTreeSet<(&ServiceKey, IpAddr)> =
            added.iter().map(|a| (&a.service, a.ip)).collect();
        for a in &out.withdrawn {
            let still = self
                .current
                .get(&a.service)
                .is_some_and(|part| part.iter().any(|x| x.ip == a.ip));
            if !staying.contains(&(&a.service, a.ip)) && !still {
                self.since.remove(&(a.service.clone(), a.ip));
            }
        }
        out.added = added
            .into_iter()
            .map(|a| {
                let t = *self.since.entry((a.service.clone(), a.ip)).or_insert(now);
                (a, t)
            })
            .collect();
        out
    }

    /// Whether [`LocalAddresses`] has something to retry.
    pub fn local_pending(&self) -> bool {
        self.local.as_ref().is_some_and(|l| l.pending())
    }

    /// Tries again what [`LocalAddresses`] could not do; returns what still fails.
    pub fn retry_local(&mut self) -> Vec<LocalError> {
        let want = self.want_local.clone();
        match &mut self.local {
            Some(l) => l.sync(&want),
            None => Vec::new(),
        }
    }

    /// Withdraws everything: each announcer's [`Announcer::shutdown`], then the local
    /// addresses come off.
    pub async fn shutdown(&mut self) -> Vec<LocalError> {
        for a in &self.announcers {
            a.shutdown().await;
        }
        self.want_local.clear();
        match &mut self.local {
            Some(l) => l.sync(&BTreeSet::new()),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordingAnnouncer;
    use crate::elect::StaticElector;

    #[derive(Debug, Default)]
    struct Host {
        have: BTreeSet<IpAddr>,
        /// What the announcers had been told when each add happened.
        log: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl LocalAddresses for Host {
        fn add(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
            self.have.extend(want);
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push("add".into());
            Vec::new()
        }
        fn sync(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
            self.have = want.clone();
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push("sync".into());
            Vec::new()
        }
    }

    fn config() -> Config {
        crate::config::load_values([
            serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "lan", "namespace": "metallb-system"},
                "spec": {"addresses": ["192.0.2.10-192.0.2.20"]}}),
            serde_json::json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                "metadata": {"name": "lan", "namespace": "metallb-system"}, "spec": {}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
        ])
        .config
    }

    fn allocations(ip: &str) -> BTreeMap<ServiceKey, Allocation> {
        BTreeMap::from([(
            ServiceKey::new("default", "web"),
            Allocation {
                pool: "lan".into(),
                ips: vec![ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))],
            },
        )])
    }

    #[tokio::test]
    async fn a_pass_plans_from_the_electors_members_and_hands_each_announcer_its_part() {
        let l2 = Arc::new(RecordingAnnouncer::new(Protocol::Layer2));
        let mut rt = Runtime::new("n1", vec![l2.clone() as Arc<dyn Announcer>]);
        let alone = StaticElector::new("n1", ["n1".to_string()]);
        let fresh = BTreeSet::from(["192.0.2.10".parse().unwrap_or(IpAddr::from([0; 4]))]);
        let (p, applied) = rt
            .pass(
                &config(),
                &allocations("192.0.2.10"),
                &alone,
                Rules::standalone(),
                &fresh,
                100,
            )
            .await;
        assert_eq!(p.announcements.len(), 1);
        assert!(applied.errors.is_empty(), "{:?}", applied.errors);
        assert_eq!(l2.current(), p.announcements);
        assert_eq!(l2.fresh(), fresh);
        assert_eq!(applied.announced[0].1, 100);
        // Later passes keep when it began.
        let (_, again) = rt
            .pass(
                &config(),
                &allocations("192.0.2.10"),
                &alone,
                Rules::standalone(),
                &BTreeSet::new(),
                200,
            )
            .await;
        assert_eq!(again.announced[0].1, 100);
        // The owner by plan's rules among two members may be the other node: then nothing.
        let two = StaticElector::new("n1", ["n1".to_string(), "n2".to_string()]);
        let (p2, _) = rt
            .pass(
                &config(),
                &allocations("192.0.2.10"),
                &two,
                Rules::standalone(),
                &BTreeSet::new(),
                300,
            )
            .await;
        let owner = crate::plan::owner_of(
            &BTreeSet::from(["n1".to_string(), "n2".to_string()]),
            "192.0.2.10",
        );
        assert_eq!(p2.announcements.is_empty(), owner.as_deref() != Some("n1"));
        // Members grew: the announcer says everything again.
        assert_eq!(l2.reannounced(), 1);
    }

    #[tokio::test]
    async fn local_addresses_go_on_before_the_announcement_and_off_after() {
        #[derive(Debug)]
        struct Logging(Arc<std::sync::Mutex<Vec<String>>>);
        #[async_trait::async_trait]
        impl Announcer for Logging {
            fn protocol(&self) -> Protocol {
                Protocol::Layer2
            }
            async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
                self.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("announce {}", desired.len()));
                Ok(())
            }
        }
        let host = Host::default();
        let log = host.log.clone();
        let mut rt =
            Runtime::new("n1", vec![Arc::new(Logging(log.clone()))]).with_local(Box::new(host));
        let alone = StaticElector::new("n1", ["n1".to_string()]);
        rt.pass(
            &config(),
            &allocations("192.0.2.10"),
            &alone,
            Rules::standalone(),
            &BTreeSet::new(),
            1,
        )
        .await;
        rt.pass(
            &config(),
            &BTreeMap::new(),
            &alone,
            Rules::standalone(),
            &BTreeSet::new(),
            2,
        )
        .await;
        let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(
            log,
            ["add", "announce 1", "sync", "add", "announce 0", "sync"],
            "an address is on the host before it is announced, and off after"
        );
    }

    #[tokio::test]
    async fn a_protocol_without_an_announcer_is_an_error_not_a_silence() {
        let mut rt = Runtime::new("n1", Vec::new());
        let alone = StaticElector::new("n1", ["n1".to_string()]);
        let (_, applied) = rt
            .pass(
                &config(),
                &allocations("192.0.2.10"),
                &alone,
                Rules::standalone(),
                &BTreeSet::new(),
                1,
            )
            .await;
        assert_eq!(applied.errors.len(), 1);
        assert!(
            applied.errors[0]
                .to_string()
                .contains("no layer2 announcer"),
            "{:?}",
            applied.errors
        );
    }
}
