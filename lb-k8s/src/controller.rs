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
use lb_core::alloc::converge::inputs_from;
use lb_core::alloc::{Allocator, PoolAllocator, annotation, converge};
use lb_core::config::{Severity, load_values};
use lb_core::objects::ServiceKey;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::crds::{IPAddressPool, IPAddressPoolStatus};
use crate::metrics::Metrics;
use crate::store::{Kind, Store};
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
}

/// The controller's memory between passes. No IO.
#[derive(Debug, Default)]
pub struct Core {
    alloc: Option<PoolAllocator>,
    pools: Vec<lb_core::config::Pool>,
    last_event: BTreeMap<ServiceKey, (&'static str, String)>,
    /// Legacy-prefixed annotations each service has been told about.
    told_deprecated: BTreeMap<ServiceKey, Vec<String>>,
}

fn i64_of(v: u128) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ip_set(ips: &[IpAddr]) -> BTreeSet<IpAddr> {
    ips.iter().copied().collect()
}

/// An event to say about a service: (service, warning, reason, message).
type Said = (ServiceKey, bool, &'static str, String);

impl Core {
    /// One level-triggered pass over every object the controller watches.
    pub fn pass(&mut self, objects: Vec<Value>, lb_class: Option<&str>) -> Pass {
        let loaded = load_values(objects);
        let mut pass = Pass {
            config_errors: loaded
                .errors
                .iter()
                .filter(|e| e.severity == Severity::Error)
                .map(|e| e.to_string())
                .collect(),
            ..Pass::default()
        };
        pass.stale = self.adopt_pools(&loaded);
        if self.alloc.is_none() {
            return pass;
        }
        let held = self.held(&loaded, lb_class);
        pass.held = held.keys().cloned().collect();
        let inputs: Vec<_> = inputs_from(&loaded.config, lb_class)
            .into_iter()
            .filter(|i| !held.contains_key(&i.key))
            .collect();
        let deprecated: BTreeMap<ServiceKey, Vec<String>> = inputs
            .iter()
            .filter_map(|i| {
                let r = i.request.as_ref().ok()?;
                (!r.deprecated_annotations.is_empty())
                    .then(|| (i.key.clone(), r.deprecated_annotations.clone()))
            })
            .collect();
        let Some(alloc) = self.alloc.as_mut() else {
            return pass;
        };
        let outcome = converge(alloc, inputs);
        let mut events = Vec::new();
        for svc in loaded.config.services.values() {
            let ours = svc.load_balancer && svc.load_balancer_class.as_deref() == lb_class;
            decide_service(svc, ours, &held, &outcome, &mut pass.writes, &mut events);
        }
        for (key, names) in &deprecated {
            if self.told_deprecated.get(key) != Some(names) {
                events.push((
                    key.clone(),
                    true,
                    "deprecatedAnnotation",
                    format!(
                        "{} is deprecated, use the metallb.io/ prefix",
                        names.join(", ")
                    ),
                ));
            }
        }
        self.told_deprecated = deprecated;
        let present: BTreeSet<&ServiceKey> = loaded.config.services.keys().collect();
        pass.events = self.news(events, &present);
        self.pool_statuses(&mut pass);
        pass
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

    /// The services whose addresses come from a pool that failed to load and is not in force
    /// (this Core started, or took over, while it was broken), with that pool: claimed by
    /// nobody else, never cleared, nothing written for them, until the pool is fixed or
    /// deleted.
    fn held(
        &self,
        loaded: &lb_core::config::Loaded,
        lb_class: Option<&str>,
    ) -> BTreeMap<ServiceKey, String> {
        let broken: BTreeSet<String> = loaded
            .errors
            .iter()
            .filter(|e| e.severity == Severity::Error)
            .filter_map(|e| e.object.strip_prefix("IPAddressPool "))
            .map(|o| o.rsplit('/').next().unwrap_or(o).to_string())
            .filter(|name| !self.pools.iter().any(|p| p.name == *name))
            .collect();
        if broken.is_empty() {
            return BTreeMap::new();
        }
        let anno = pool_annotation();
        loaded
            .config
            .services
            .values()
            .filter(|svc| svc.load_balancer && svc.load_balancer_class.as_deref() == lb_class)
            .filter_map(|svc| {
                let named = svc.annotations.get(&anno).filter(|p| broken.contains(*p));
                // No pool in force holds the address: it may be the broken pool's.
                let orphan = !svc.status_ips.is_empty()
                    && !svc
                        .status_ips
                        .iter()
                        .any(|ip| self.pools.iter().any(|p| p.contains(*ip)));
                let pool = named.cloned().or_else(|| {
                    orphan.then(|| broken.iter().cloned().collect::<Vec<_>>().join(", "))
                })?;
                (!svc.status_ips.is_empty()).then(|| (svc.key.clone(), pool))
            })
            .collect()
    }

    /// The events worth sending: only a change of what is said about a service is news.
    fn news(&mut self, events: Vec<Said>, present: &BTreeSet<&ServiceKey>) -> Vec<ServiceEvent> {
        self.last_event.retain(|k, _| present.contains(k));
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

/// What one service's status should become after `outcome`, and what to say about it. `ours`:
/// of type LoadBalancer and of our class.
fn decide_service(
    svc: &lb_core::objects::Service,
    ours: bool,
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
    if !ours {
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
    /// A full pass at least this often (retries failed writes).
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
    let mut tick = tokio::time::interval(opts.resync);
    let mut told = Told::default();
    // After a failed write, the next pass comes sooner than the resync.
    let mut retry_in: Option<Duration> = None;
    // Whether the next turn runs a pass: not when all that changed is our own writes' echoes.
    let mut needed = true;
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
        } else if store.synced() && needed {
            let started = Instant::now();
            let c = core.get_or_insert_with(Core::default);
            // What changes from here on is news to the next turn; this pass reads it all.
            store.take_changed();
            let pass = c.pass(store.values(), opts.lb_class.as_deref());
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
                // Let a burst of watch events settle into one pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
                needed = !writes.only_echoes(&store.take_changed());
            }
            v = views.next() => {
                if v.is_none() {
                    warn!("the leader election has stopped");
                    break;
                }
            }
            _ = tick.tick() => {}
            _ = tokio::time::sleep(retry_in.unwrap_or(opts.resync)), if retry_in.is_some() => {}
        }
    }
    for w in watches.drain(..) {
        w.abort();
    }
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
    fn only_echoes(&mut self, changed: &crate::store::Changed) -> bool {
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
        self.sent
            .retain(|k, _| pass.writes.iter().any(|w| &w.key == k));
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
