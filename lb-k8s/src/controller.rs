//! The controller: allocates addresses to LoadBalancer Services and writes them to the
//! Services' status, MetalLB's way.
//!
//! ```text
//!  watch Services, IPAddressPools, Namespaces ─► Store ─► Core::pass (pure) ─► Pass
//!                                                                  │
//!    leader? (a LeaderElector: the Lease; checked before every write)
//!                                   ─► PATCH Service /status, pool /status, Events
//! ```
//!
//! [`Core`] holds the allocator between passes, so an address written a moment ago is kept even
//! before the watch shows it; a replica that gains leadership starts a fresh Core, which
//! re-claims every address from the Services' status first (so a restart changes no address).
//! Events are remembered per service and sent only when they change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use lb_core::alloc::converge::{Input, input_of};
use lb_core::alloc::{Allocator, PoolAllocator, annotation, converge, converge_some};
use lb_core::config::{Severity, load_values};
use lb_core::objects::ServiceKey;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::crds::{IPAddressPool, IPAddressPoolStatus};
use crate::metrics::Metrics;
use crate::store::{Changed, Kind, Store};
use futures::StreamExt;

/// The annotation naming the pool an address came from.
pub fn pool_annotation() -> String {
    format!(
        "{}{}",
        annotation::PREFIX,
        annotation::IP_ALLOCATED_FROM_POOL
    )
}

/// What a Service's status should become. Empty `ips` clears it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceWrite {
    /// The Service.
    pub key: ServiceKey,
    /// Its addresses, primary family first.
    pub ips: Vec<IpAddr>,
    /// The pool they come from (the `ip-allocated-from-pool` annotation).
    pub pool: Option<String>,
}

impl ServiceWrite {
    /// The merge patch for the `/status` subresource: ingress and the pool annotation together.
    pub fn patch(&self) -> Value {
        let ingress: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string()}))
            .collect();
        json!({
            "metadata": {"annotations": {pool_annotation(): self.pool}},
            "status": {"loadBalancer": {"ingress": if ingress.is_empty() { Value::Null } else { Value::Array(ingress) }}},
        })
    }
}

/// `patch` with a precondition: it applies only while the object is at `resource_version`
/// (an empty one, for an object the store has not shown, adds none).
pub fn fenced(mut patch: Value, resource_version: &str) -> Value {
    if !resource_version.is_empty() {
        patch["metadata"]["resourceVersion"] = json!(resource_version);
    }
    patch
}

/// An event about a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEvent {
    /// The Service.
    pub key: ServiceKey,
    /// A Warning event; otherwise Normal.
    pub warning: bool,
    /// The event's reason (`IPAllocated`, `AllocationFailed`, ...).
    pub reason: &'static str,
    /// The event's message.
    pub message: String,
}

/// What one pass decided.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    /// Service status writes.
    pub writes: Vec<ServiceWrite>,
    /// Service events.
    pub events: Vec<ServiceEvent>,
    /// Each IPAddressPool's status.
    pub pools: BTreeMap<String, IPAddressPoolStatus>,
    /// Each pool's counts, for metrics.
    pub counts: BTreeMap<String, lb_core::alloc::PoolUsage>,
    /// Configuration errors (of every kind read), as text.
    pub config_errors: Vec<String>,
    /// The pools in use are the previous ones, because the newest have errors.
    pub stale: bool,
    /// Services whose address comes from a pool that failed to load and is not in force:
    /// kept as their status shows, nothing written for them.
    pub held: Vec<ServiceKey>,
    /// The services this pass decided (`None`: every one); `writes` and `events` are about
    /// these alone.
    pub scope: Option<BTreeSet<ServiceKey>>,
}

/// The controller's memory between passes. No IO.
#[derive(Debug, Default)]
pub struct Core {
    alloc: Option<PoolAllocator>,
    pools: Vec<lb_core::config::Pool>,
    last_event: BTreeMap<ServiceKey, (&'static str, String)>,
    /// Legacy-prefixed annotations each service has been told about.
    told_deprecated: BTreeMap<ServiceKey, Vec<String>>,
    /// What the last whole pass read, kept up to date by [`Core::change`]: none before the
    /// first whole pass, or while no pool has ever loaded.
    kept: Option<Kept>,
}

/// What a pass over a change of Services needs of everything else: the Services as read (so
/// that a pass over one of them touches no other), and what the other kinds decided.
#[derive(Debug, Default)]
struct Kept {
    /// Every Service read (of any type and class).
    services: BTreeMap<ServiceKey, lb_core::objects::Service>,
    /// The error findings about each Service, as text.
    service_errors: BTreeMap<ServiceKey, Vec<String>>,
    /// The error findings about every other object, as text, in load order.
    other_errors: Vec<String>,
    /// The Namespaces, whose labels pools select by (the rest of this Config is empty).
    namespaces: lb_core::config::Config,
    /// Pools that failed to load and are not in force.
    broken: BTreeSet<String>,
    /// Services whose address a broken pool holds, with that pool.
    held: BTreeMap<ServiceKey, String>,
    /// Services left without addresses (an address freed may serve them).
    pending: BTreeSet<ServiceKey>,
    /// The pools in force are the previous ones.
    stale: bool,
}

impl Kept {
    /// Every error finding, other objects' first, then the Services' in key order (the order
    /// a whole read gives them).
    fn errors(&self) -> Vec<String> {
        let mut out = self.other_errors.clone();
        out.extend(self.service_errors.values().flatten().cloned());
        out
    }

    /// Keeps a Service read alone, or forgets a deleted one.
    fn set_service(&mut self, key: &ServiceKey, loaded: Option<lb_core::config::Loaded>) {
        self.services.remove(key);
        self.service_errors.remove(key);
        let Some(loaded) = loaded else { return };
        let errors = loaded.error_texts();
        if !errors.is_empty() {
            self.service_errors.insert(key.clone(), errors);
        }
        for (k, svc) in loaded.config.services {
            self.services.insert(k, svc);
        }
    }
}

/// The Service an error finding is about, when it is about one.
fn service_of(object: &str) -> Option<ServiceKey> {
    let (ns, name) = object.strip_prefix("Service ")?.split_once('/')?;
    Some(ServiceKey::new(ns, name))
}

fn i64_of(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ip_set(ips: &[IpAddr]) -> BTreeSet<IpAddr> {
    ips.iter().copied().collect()
}

/// An event to say about a service: (service, warning, reason, message).
type Said = (ServiceKey, bool, &'static str, String);

/// Of type LoadBalancer and of the class served.
fn is_ours(svc: &lb_core::objects::Service, lb_class: Option<&str>) -> bool {
    svc.load_balancer && svc.load_balancer_class.as_deref() == lb_class
}

impl Core {
    /// One level-triggered pass over every object the controller watches (owned or shared,
    /// as the store holds them).
    pub fn pass<V: std::borrow::Borrow<Value>>(
        &mut self,
        objects: impl IntoIterator<Item = V>,
        lb_class: Option<&str>,
    ) -> Pass {
        let mut loaded = load_values(objects);
        let mut kept = Kept {
            services: std::mem::take(&mut loaded.config.services),
            ..Kept::default()
        };
        kept.namespaces.namespaces = std::mem::take(&mut loaded.config.namespaces);
        for e in loaded
            .errors
            .iter()
            .filter(|e| e.severity == Severity::Error)
        {
            match service_of(&e.object) {
                Some(key) => kept
                    .service_errors
                    .entry(key)
                    .or_default()
                    .push(e.to_string()),
                None => kept.other_errors.push(e.to_string()),
            }
        }
        kept.stale = self.adopt_pools(&loaded);
        let mut pass = Pass {
            config_errors: kept.errors(),
            stale: kept.stale,
            ..Pass::default()
        };
        if self.alloc.is_none() {
            self.kept = None;
            return pass;
        }
        kept.broken = loaded
            .errors
            .iter()
            .filter(|e| e.severity == Severity::Error)
            .filter_map(|e| e.object.strip_prefix("IPAddressPool "))
            .map(|o| o.rsplit('/').next().unwrap_or(o).to_string())
            .filter(|name| !self.pools.iter().any(|p| p.name == *name))
            .collect();
        kept.held = kept
            .services
            .values()
            .filter_map(|svc| {
                let pool = held_pool(&self.pools, &kept.broken, svc, lb_class)?;
                Some((svc.key.clone(), pool))
            })
            .collect();
        let inputs: Vec<_> = kept
            .services
            .values()
            .filter(|s| is_ours(s, lb_class) && !kept.held.contains_key(&s.key))
            .map(|s| input_of(s, &kept.namespaces))
            .collect();
        self.last_event.retain(|k, _| kept.services.contains_key(k));
        let deprecated = deprecations(&mut self.told_deprecated, &inputs);
        self.told_deprecated.retain(|k, _| {
            kept.services.get(k).is_some_and(|s| is_ours(s, lb_class)) && !kept.held.contains_key(k)
        });
        let Some(alloc) = self.alloc.as_mut() else {
            return pass;
        };
        let outcome = converge(alloc, inputs);
        let mut events = Vec::new();
        for svc in kept.services.values() {
            let (held, writes) = (&kept.held, &mut pass.writes);
            decide_service(svc, lb_class, held, &outcome, writes, &mut events);
        }
        events.extend(deprecated);
        kept.pending = outcome.pending.into_keys().collect();
        pass.held = kept.held.keys().cloned().collect();
        pass.events = self.news(events);
        self.pool_statuses(&mut pass);
        self.kept = Some(kept);
        pass
    }

    /// A pass over a change of Services alone, from what the last whole pass kept: each
    /// changed Service (with its object now; `None`: deleted) is read and served, and when one
    /// of them held addresses, the Services left pending are served again (in key order, as a
    /// whole pass would). The other Services are not read, and keep what they hold. The cost
    /// is that of the change, not of the cluster.
    ///
    /// `None` when nothing is kept (no whole pass yet, or no pool has ever loaded): the
    /// caller runs a whole pass. A change of any other kind needs a whole pass too.
    pub fn change(
        &mut self,
        services: Vec<(ServiceKey, Option<Value>)>,
        lb_class: Option<&str>,
    ) -> Option<Pass> {
        let (Some(alloc), Some(kept)) = (self.alloc.as_mut(), self.kept.as_mut()) else {
            return None;
        };
        let mut scope = BTreeSet::new();
        let mut freed = false;
        for (key, value) in services {
            freed |= alloc.allocation(&key).is_some();
            kept.set_service(&key, value.map(|v| load_values([v])));
            kept.held.remove(&key);
            if let Some(svc) = kept.services.get(&key)
                && let Some(pool) = held_pool(&self.pools, &kept.broken, svc, lb_class)
            {
                kept.held.insert(key.clone(), pool);
            }
            scope.insert(key);
        }
        if freed {
            scope.extend(kept.pending.iter().cloned());
        }
        let served = |k: &ServiceKey| {
            kept.services
                .get(k)
                .filter(|s| is_ours(s, lb_class) && !kept.held.contains_key(k))
        };
        let gone: Vec<ServiceKey> = scope
            .iter()
            .filter(|k| served(k).is_none())
            .cloned()
            .collect();
        let inputs: Vec<_> = scope
            .iter()
            .filter_map(served)
            .map(|s| input_of(s, &kept.namespaces))
            .collect();
        for key in &gone {
            self.told_deprecated.remove(key);
            if !kept.services.contains_key(key) {
                self.last_event.remove(key);
            }
        }
        let deprecated = deprecations(&mut self.told_deprecated, &inputs);
        let outcome = converge_some(alloc, &gone, inputs);
        let mut pass = Pass {
            scope: Some(scope.clone()),
            ..Pass::default()
        };
        let mut events = Vec::new();
        for key in &scope {
            kept.pending.remove(key);
            if let Some(svc) = kept.services.get(key) {
                let (held, writes) = (&kept.held, &mut pass.writes);
                decide_service(svc, lb_class, held, &outcome, writes, &mut events);
            }
        }
        events.extend(deprecated);
        kept.pending.extend(outcome.pending.into_keys());
        pass.config_errors = kept.errors();
        pass.stale = kept.stale;
        pass.held = kept.held.keys().cloned().collect();
        pass.events = self.news(events);
        self.pool_statuses(&mut pass);
        Some(pass)
    }

    /// Takes the loaded pools into force, unless one has errors and others are in force: a
    /// broken pool keeps the previous pools (MetalLB's stale config), so a typo never takes
    /// addresses away from running services. Returns whether the pools in force are stale.
    fn adopt_pools(&mut self, loaded: &lb_core::config::Loaded) -> bool {
        let pool_errors = loaded
            .errors
            .iter()
            .any(|e| e.severity == Severity::Error && e.object.starts_with("IPAddressPool "));
        let new_pools: Vec<_> = loaded.config.pools.values().cloned().collect();
        if pool_errors && self.alloc.is_some() {
            return true;
        }
        if self.alloc.is_none() {
            self.alloc = Some(PoolAllocator::new(&new_pools));
            self.pools = new_pools;
        } else if new_pools != self.pools {
            if let Some(a) = &mut self.alloc {
                a.set_pools(&new_pools);
            }
            self.pools = new_pools;
        }
        false
    }

    /// The events worth sending: only a change of what is said about a service is news.
    fn news(&mut self, events: Vec<Said>) -> Vec<ServiceEvent> {
        let mut out = Vec::new();
        for (key, warning, reason, message) in events {
            let said = (reason, message.clone());
            if self.last_event.get(&key) == Some(&said) {
                continue;
            }
            // ClearAssignment is followed, in the same pass, by what happened next; the
            // deprecation notice has its own memory.
            if reason != "ClearAssignment" && reason != "deprecatedAnnotation" {
                self.last_event.insert(key.clone(), said);
            }
            out.push(ServiceEvent {
                key,
                warning,
                reason,
                message,
            });
        }
        out
    }

    /// Each pool's counts and status.
    fn pool_statuses(&self, pass: &mut Pass) {
        let Some(alloc) = &self.alloc else { return };
        for pool in &self.pools {
            let u = alloc.usage(&pool.name).unwrap_or_default();
            pass.counts.insert(pool.name.clone(), u);
            pass.pools.insert(
                pool.name.clone(),
                IPAddressPoolStatus {
                    assigned_ipv4: i64_of(u.ipv4_in_use),
                    assigned_ipv6: i64_of(u.ipv6_in_use),
                    available_ipv4: i64_of(u.ipv4_total.saturating_sub(u.ipv4_in_use)),
                    available_ipv6: i64_of(u.ipv6_total.saturating_sub(u.ipv6_in_use)),
                },
            );
        }
    }
}

/// The deprecation notices `inputs` call for (each said once while it holds), remembered in
/// `told`.
fn deprecations(told: &mut BTreeMap<ServiceKey, Vec<String>>, inputs: &[Input]) -> Vec<Said> {
    let mut events = Vec::new();
    for i in inputs {
        let names = match &i.request {
            Ok(r) if !r.deprecated_annotations.is_empty() => &r.deprecated_annotations,
            _ => {
                told.remove(&i.key);
                continue;
            }
        };
        if told.get(&i.key) != Some(names) {
            events.push((
                i.key.clone(),
                true,
                "deprecatedAnnotation",
                format!(
                    "{} is deprecated, use the metallb.io/ prefix",
                    names.join(", ")
                ),
            ));
        }
        told.insert(i.key.clone(), names.clone());
    }
    events
}

/// The broken pool (not in force) holding `svc`'s address, if one does: the service is then
/// claimed by nobody else, never cleared and nothing is written for it until the pool is fixed
/// or deleted. This Core started, or took over, while that pool was broken.
fn held_pool(
    pools: &[lb_core::config::Pool],
    broken: &BTreeSet<String>,
    svc: &lb_core::objects::Service,
    lb_class: Option<&str>,
) -> Option<String> {
    if broken.is_empty() || svc.status_ips.is_empty() || !is_ours(svc, lb_class) {
        return None;
    }
    let named = svc
        .annotations
        .get(&pool_annotation())
        .filter(|p| broken.contains(*p));
    // No pool in force holds the address: it may be the broken pool's.
    let orphan = !svc
        .status_ips
        .iter()
        .any(|ip| pools.iter().any(|p| p.contains(*ip)));
    named
        .cloned()
        .or_else(|| orphan.then(|| broken.iter().cloned().collect::<Vec<_>>().join(", ")))
}

/// What one service's status should become after `outcome`, and what to say about it, for the
/// controller of `lb_class`.
fn decide_service(
    svc: &lb_core::objects::Service,
    lb_class: Option<&str>,
    held: &BTreeMap<ServiceKey, String>,
    outcome: &lb_core::alloc::Outcome,
    writes: &mut Vec<ServiceWrite>,
    events: &mut Vec<Said>,
) {
    let key = &svc.key;
    let observed_pool = svc.annotations.get(&pool_annotation()).cloned();
    let observed = ip_set(&svc.status_ips);
    let clear = || ServiceWrite {
        key: key.clone(),
        ips: Vec::new(),
        pool: None,
    };
    if let Some(pool) = held.get(key) {
        let ips: Vec<String> = svc.status_ips.iter().map(IpAddr::to_string).collect();
        events.push((
            key.clone(),
            true,
            "AddressHeld",
            format!(
                "pool {pool} has errors and is not loaded; keeping {ips:?} unchanged until it is fixed or deleted"
            ),
        ));
        return;
    }
    if !is_ours(svc, lb_class) {
        if observed_pool.is_some() {
            writes.push(clear());
            let why = if svc.load_balancer {
                "the service's loadBalancerClass is not ours anymore"
            } else {
                "the service is not of type LoadBalancer anymore"
            };
            events.push((key.clone(), false, "ClearAssignment", why.to_string()));
        }
        return;
    }
    if let Some(why) = outcome.cleared.get(key) {
        events.push((
            key.clone(),
            true,
            "ClearAssignment",
            format!("current IP not allowed by config, clearing: {why}"),
        ));
    }
    if let Some(a) = outcome.allocated.get(key) {
        if observed != ip_set(&a.ips) || observed_pool.as_deref() != Some(&a.pool) {
            writes.push(ServiceWrite {
                key: key.clone(),
                ips: a.ips.clone(),
                pool: Some(a.pool.clone()),
            });
        }
        // Re-claiming what the status already shows (a restart, a new leader) is no news;
        // only new addresses are.
        if observed != ip_set(&a.ips) {
            let ips: Vec<String> = a.ips.iter().map(IpAddr::to_string).collect();
            events.push((
                key.clone(),
                false,
                "IPAllocated",
                format!("Assigned IP {ips:?}"),
            ));
        }
    } else if let Some(why) = outcome.pending.get(key) {
        if !observed.is_empty() || observed_pool.is_some() {
            writes.push(clear());
        }
        events.push((
            key.clone(),
            true,
            "AllocationFailed",
            format!("Failed to allocate IP for \"{key}\": {why}"),
        ));
    }
}

/// `lb-bin controller`'s settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// `--lb-class`: serve only services of this class (None: only services with no class).
    pub lb_class: Option<String>,
    /// Where the metallb.io objects live.
    pub namespace: String,
    /// The reporting controller's name in events (`metallb-controller`).
    pub reporter: String,
    /// This replica's identity (the Lease holder name).
    pub instance: String,
    /// A full pass at least this often, or [`RESYNC_SHARE`] times as long as the last full
    /// pass took, whichever is longer (failed writes are retried sooner).
    pub resync: Duration,
}

impl Options {
    /// A controller for the objects in `namespace`, run by the replica `instance`: services of
    /// no class, events as `metallb-controller`, a full pass every 30 s.
    pub fn new(namespace: impl Into<String>, instance: impl Into<String>) -> Self {
        Options {
            lb_class: None,
            namespace: namespace.into(),
            reporter: "metallb-controller".into(),
            instance: instance.into(),
            resync: Duration::from_secs(30),
        }
    }
}

/// The resync waits at least this many times as long as the last whole pass took: at 100,000
/// services a whole pass takes about 4 s, and a change that arrives meanwhile waits for it;
/// with this the resync costs at most 1 % of the controller's time, and as rarely delays one.
pub const RESYNC_SHARE: u32 = 100;

/// How long after a whole pass that took `took` the next resync comes.
pub fn resync_after(resync: Duration, took: Duration) -> Duration {
    resync.max(took.saturating_mul(RESYNC_SHARE))
}

/// The kinds the controller watches.
pub fn kinds(namespace: &str) -> Vec<Kind> {
    vec![
        Kind::of::<Service>(),
        Kind::of::<Namespace>(),
        Kind::of::<IPAddressPool>().in_namespace(namespace),
    ]
}

/// Runs the controller until the future is dropped: watches with `clients.watch`, writes with
/// `clients.write`.
pub async fn run(
    clients: crate::Clients,
    opts: Options,
    elector: std::sync::Arc<dyn lb_core::LeaderElector>,
    metrics: Metrics,
) {
    let store = Store::default();
    let mut watches: Vec<_> = kinds(&opts.namespace)
        .into_iter()
        .map(|k| store.spawn_watch(clients.watch.clone(), k))
        .collect();
    let mut writes = Writes::new(clients.write, &opts, &store, elector.as_ref(), &metrics);
    let mut changes = store.changes();
    let mut views = elector.watch();
    let mut core: Option<Core> = None;
    // The next resync: `opts.resync` after the last whole pass, or longer when it was slow.
    let mut resync_at = tokio::time::Instant::now() + opts.resync;
    let mut told = Told::default();
    // After a failed write, the next pass comes sooner than the resync.
    let mut retry_in: Option<Duration> = None;
    // Whether the next turn runs a pass: not when all that changed is our own writes' echoes.
    let mut needed = true;
    // What changed since the last pass, and whether the next pass reads everything.
    let mut todo = Changed::default();
    let mut whole = true;
    loop {
        let leader = elector.is_member();
        metrics.leader(leader);
        if store.synced() {
            metrics.set_ready(true);
        }
        if !leader {
            // A replica that gains leadership must start from the status it then observes.
            core = None;
            writes.forget();
            whole = true;
        } else if store.synced() && needed {
            let started = Instant::now();
            let c = core.get_or_insert_with(Core::default);
            // What changes from here on is news to the next turn.
            todo.merge(store.take_changed());
            let lb_class = opts.lb_class.as_deref();
            // A change of Services alone is served from what the last pass kept; anything
            // else (and the resync) reads every object again.
            let changed = (!whole).then(|| services_changed(&todo, &store)).flatten();
            let pass = match changed.and_then(|c2| c.change(c2, lb_class)) {
                Some(pass) => pass,
                None => {
                    let pass = c.pass(store.values(), lb_class);
                    let took = started.elapsed();
                    resync_at = tokio::time::Instant::now() + resync_after(opts.resync, took);
                    pass
                }
            };
            todo = Changed::default();
            whole = false;
            metrics.config(true, pass.stale);
            metrics.set_pools(pass.counts.clone());
            metrics.set_held(pass.held.len());
            told.log(&pass);
            writes.config_state(&pass).await;
            let ok = writes.services(&pass).await;
            writes.events(&pass).await;
            writes.pools(&pass).await;
            metrics.reconciled(started.elapsed(), ok);
            retry_in = (!ok).then_some(Duration::from_secs(1));
        }
        needed = true;
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { break; }
                let mut changed = store.take_changed();
                // A change of Services is served at once (a pass over it costs what it
                // changes); a burst of other changes, each a whole pass, settles into one.
                if !only_services(&changed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    changed.merge(store.take_changed());
                }
                needed = !writes.only_echoes(&changed);
                // An echo decides nothing, but what is kept must show it by the next pass.
                todo.merge(changed);
            }
            v = views.next() => {
                if v.is_none() {
                    warn!("the leader election has stopped");
                    break;
                }
                whole = true;
            }
            _ = tokio::time::sleep_until(resync_at) => {
                whole = true;
                resync_at = tokio::time::Instant::now() + opts.resync;
            }
            _ = tokio::time::sleep(retry_in.unwrap_or(opts.resync)), if retry_in.is_some() => whole = true,
        }
    }
    for w in watches.drain(..) {
        w.abort();
    }
}

/// The Services in `changed`, each with its object now (`None`: deleted), when nothing else
/// changed; `None` when a whole pass is needed (another kind changed, or a kind was listed
/// again).
fn services_changed(changed: &Changed, store: &Store) -> Option<Vec<(ServiceKey, Option<Value>)>> {
    only_services(changed).then(|| {
        changed
            .objects
            .keys()
            .map(|(plural, ns, name)| {
                let obj = store.get(plural, ns, name);
                (ServiceKey::new(ns.clone(), name.clone()), obj)
            })
            .collect()
    })
}

/// Nothing but Services changed.
fn only_services(changed: &Changed) -> bool {
    !changed.relisted
        && changed
            .objects
            .keys()
            .all(|(plural, _, _)| plural == "services")
}

/// What the log was last told, so that it hears each change once.
#[derive(Debug, Default)]
struct Told {
    errors: Vec<String>,
    held: Vec<ServiceKey>,
}

impl Told {
    fn log(&mut self, pass: &Pass) {
        if pass.held != self.held {
            if !pass.held.is_empty() {
                warn!(
                    services = ?pass.held.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "their pool failed to load: their addresses are kept and nothing is written for them until it is fixed or deleted"
                );
            }
            self.held = pass.held.clone();
        }
        if pass.config_errors != self.errors {
            for e in &pass.config_errors {
                warn!("configuration: {e}");
            }
            if pass.stale {
                warn!("the pools have errors: the previous pools stay in force");
            }
            self.errors = pass.config_errors.clone();
        }
    }
}

/// The leader's writes, and what was already sent.
struct Writes<'a> {
    client: kube::Client,
    namespace: String,
    store: &'a Store,
    elector: &'a dyn lb_core::LeaderElector,
    metrics: &'a Metrics,
    recorder: Recorder,
    pools: Api<IPAddressPool>,
    /// Writes sent, by the resourceVersion of the object they were computed from: while the
    /// store still shows that version, the write is in flight and is not repeated.
    sent: BTreeMap<ServiceKey, String>,
    sent_pools: BTreeMap<String, IPAddressPoolStatus>,
    /// Our writes' results not yet seen on the watch: (plural, namespace, name) -> the
    /// resourceVersion the API server gave the written object.
    echoes: BTreeMap<(String, String, String), String>,
    /// What the ConfigurationState says now.
    reported: Option<Vec<String>>,
}

impl<'a> Writes<'a> {
    fn new(
        client: kube::Client,
        opts: &Options,
        store: &'a Store,
        elector: &'a dyn lb_core::LeaderElector,
        metrics: &'a Metrics,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: opts.reporter.clone(),
                instance: Some(opts.instance.clone()),
            },
        );
        Writes {
            pools: Api::namespaced(client.clone(), &opts.namespace),
            client,
            namespace: opts.namespace.clone(),
            store,
            elector,
            metrics,
            recorder,
            sent: BTreeMap::new(),
            sent_pools: BTreeMap::new(),
            echoes: BTreeMap::new(),
            reported: None,
        }
    }

    /// Whether everything in `changed` is the echo of our own writes (each seen echo is
    /// forgotten). The controller does not reconcile its own writes: a pass over them would
    /// decide nothing new. Anything else, a relist included, is news.
    fn only_echoes(&mut self, changed: &Changed) -> bool {
        let ours = !changed.relisted
            && changed
                .objects
                .iter()
                .all(|(k, rv)| rv.is_some() && self.echoes.get(k) == rv.as_ref());
        for k in changed.objects.keys() {
            self.echoes.remove(k);
        }
        ours
    }

    fn expect_echo(&mut self, plural: &str, namespace: &str, name: &str, rv: Option<&String>) {
        if let Some(rv) = rv {
            self.echoes.insert(
                (plural.to_string(), namespace.to_string(), name.to_string()),
                rv.clone(),
            );
        }
    }

    /// Leadership was lost: a new term starts from what it then observes.
    fn forget(&mut self) {
        self.echoes.clear();
        self.sent.clear();
        self.sent_pools.clear();
        self.reported = None;
    }

    /// ConfigurationState "controller": written when what it says changes.
    async fn config_state(&mut self, pass: &Pass) {
        if self.reported.as_ref() != Some(&pass.config_errors) && self.elector.is_member() {
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                crate::configstate::report(
                    self.client.clone(),
                    &self.namespace,
                    &crate::configstate::Reporter::controller(),
                    &pass.config_errors,
                ),
            )
            .await;
            match r {
                Ok(Ok(())) => self.reported = Some(pass.config_errors.clone()),
                Ok(Err(e)) => warn!("writing ConfigurationState controller: {e}"),
                Err(_) => warn!("writing ConfigurationState controller: timed out"),
            }
        }
    }

    /// The Services' status, each fenced by the version the pass read; false if one failed.
    async fn services(&mut self, pass: &Pass) -> bool {
        let mut ok = true;
        for w in &pass.writes {
            let rv = self
                .store
                .get("services", &w.key.namespace, &w.key.name)
                .and_then(|o| o.pointer("/metadata/resourceVersion").cloned())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            if self.sent.get(&w.key) == Some(&rv) {
                continue;
            }
            // Leadership is checked just before each write: a term can end mid-pass.
            if !self.elector.is_member() {
                ok = false;
                break;
            }
            let api: Api<Service> = Api::namespaced(self.client.clone(), &w.key.namespace);
            // Fenced: the write applies only to the version this pass read. A write
            // delayed past the end of our term, or raced by anyone, is refused (409) by
            // the API server; the next pass starts from what the watch shows then.
            let r = api
                .patch_status(
                    &w.key.name,
                    &PatchParams::default(),
                    &Patch::Merge(fenced(w.patch(), &rv)),
                )
                .await;
            self.metrics.update(r.is_ok());
            match r {
                Ok(written) => {
                    info!(service = %w.key, ips = ?w.ips, pool = ?w.pool, "status written");
                    let new_rv = written.metadata.resource_version.as_ref();
                    self.expect_echo("services", &w.key.namespace, &w.key.name, new_rv);
                    self.sent.insert(w.key.clone(), rv);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    ok = false;
                    info!(service = %w.key, "the service changed since it was read; reading it again");
                }
                Err(e) => {
                    ok = false;
                    warn!(service = %w.key, "writing status: {e}");
                }
            }
        }
        let written: BTreeSet<&ServiceKey> = pass.writes.iter().map(|w| &w.key).collect();
        self.sent.retain(|k, _| {
            written.contains(k) || pass.scope.as_ref().is_some_and(|s| !s.contains(k))
        });
        ok
    }

    /// The pass's events.
    async fn events(&self, pass: &Pass) {
        for e in &pass.events {
            if !self.elector.is_member() {
                break;
            }
            let Some(svc) = self.store.get("services", &e.key.namespace, &e.key.name) else {
                continue;
            };
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(e.key.name.clone()),
                namespace: Some(e.key.namespace.clone()),
                uid: svc
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                ..ObjectReference::default()
            };
            let ev = Event {
                type_: if e.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: e.reason.to_string(),
                note: Some(e.message.clone()),
                action: e.reason.to_string(),
                secondary: None,
            };
            let r = self.recorder.publish(&ev, &reference).await;
            self.metrics.update(r.is_ok());
            if let Err(err) = r {
                warn!(service = %e.key, reason = e.reason, "publishing event: {err}");
            }
        }
    }

    /// Each IPAddressPool's status, when it differs from what it shows.
    async fn pools(&mut self, pass: &Pass) {
        for (name, status) in &pass.pools {
            let observed = self
                .store
                .get("ipaddresspools", &self.namespace, name)
                .and_then(|o| o.get("status").cloned())
                .and_then(|s| serde_json::from_value::<IPAddressPoolStatus>(s).ok());
            if observed.as_ref() == Some(status) || self.sent_pools.get(name) == Some(status) {
                continue;
            }
            if !self.elector.is_member() {
                break;
            }
            let rv = self
                .store
                .get("ipaddresspools", &self.namespace, name)
                .and_then(|o| o.pointer("/metadata/resourceVersion").cloned())
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let r = self
                .pools
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(fenced(json!({"status": status}), &rv)),
                )
                .await;
            self.metrics.update(r.is_ok());
            match r {
                Ok(written) => {
                    let ns = self.namespace.clone();
                    let new_rv = written.metadata.resource_version.as_ref();
                    self.expect_echo("ipaddresspools", &ns, name, new_rv);
                    self.sent_pools.insert(name.clone(), status.clone());
                }
                Err(e) => warn!(pool = %name, "writing pool status: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow whole pass (4 s at 100,000 services) spaces the resyncs out so that they take at
    /// most 1 % of the time; a quick one keeps the configured period.
    #[test]
    fn a_slow_whole_pass_spaces_the_resyncs_out() {
        let every = Duration::from_secs(30);
        assert_eq!(resync_after(every, Duration::from_millis(20)), every);
        assert_eq!(
            resync_after(every, Duration::from_secs(4)),
            Duration::from_secs(400)
        );
        assert_eq!(resync_after(every, Duration::MAX), Duration::MAX);
    }
}
