//! Leader election on a `coordination.k8s.io/v1` Lease, so that several controller replicas run
//! safely. Leadership is a watched value that writers check just before every write.
//!
//! Like client-go, a candidate never trusts another node's clock: it notes when it last saw
//! the Lease record change, and takes over only after a whole lease duration of silence on its
//! own monotonic clock. The holder counts its term from the moment it *sent* a renewal and
//! stops writing after `valid_for` (shorter than the lease duration), so it stops before any
//! other replica can have taken over.
//!
//! Each run of a replica also writes a random token ([`TOKEN_ANNOTATION`]) with its renewals:
//! a Lease that names our identity but not our token is another process's (two replicas
//! given the same identity, or our own previous run), followed like any other holder.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use lb_core::LeaderElector;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// Lease timing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// `leaseDurationSeconds`: how long others wait after the last renewal they saw.
    pub duration: Duration,
    /// How long the holder trusts a renewal (from when it was sent). Less than `duration`.
    pub valid_for: Duration,
    /// How often to try to acquire or renew.
    pub retry: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
            valid_for: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }

    /// With other timings: the lease `duration`, how long a renewal keeps leadership valid
    /// (`valid_for`, below `duration`), and the wait between attempts (`retry`).
    pub fn timing(mut self, duration: Duration, valid_for: Duration, retry: Duration) -> Self {
        self.duration = duration;
        self.valid_for = valid_for;
        self.retry = retry;
        self
    }
}

/// What one look at the Lease decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Another holder has been silent for a whole lease duration (or released it): take it.
    TakeOver,
    /// Another holder is live: wait.
    Follow,
}

/// The annotation on the Lease holding the token of the process that holds it.
pub const TOKEN_ANNOTATION: &str = "lb-bin/holder-token";

/// What identifies one renewal of a Lease: (holder, renewTime, token).
type Record = (Option<String>, Option<String>, Option<String>);

/// The election state of one replica: what it last saw of the Lease and when.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    token: String,
    duration: Duration,
    /// The record last seen, and when it was first seen.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// An elector for `identity` whose renewals carry `token` (unique to this process).
    pub fn new(identity: &str, token: &str, duration: Duration) -> Self {
        Elector {
            identity: identity.to_string(),
            token: token.to_string(),
            duration,
            observed: None,
        }
    }

    /// Decides what to do, given the Lease's spec and holder token as read now (None: there
    /// is no Lease).
    pub fn decide(
        &mut self,
        now: Instant,
        lease: Option<&LeaseSpec>,
        token: Option<&str>,
    ) -> Action {
        let Some(spec) = lease else {
            self.observed = None;
            return Action::Create;
        };
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) && token == Some(self.token.as_str()) {
            return Action::Renew;
        }
        let Some(holder) = holder else {
            return Action::TakeOver;
        };
        let record = (
            Some(holder),
            spec.renew_time.as_ref().map(|t| t.0.to_string()),
            token.map(str::to_string),
        );
        let since = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.observed = Some((record, now));
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.duration, Duration::from_secs);
        if now.duration_since(since) >= duration {
            Action::TakeOver
        } else {
            Action::Follow
        }
    }
}

/// `prefix` with a random suffix: an identity no other replica has, even on the same host.
pub fn unique_identity(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Leadership as a watched value: `Some(until)` while this replica may write.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<Option<Instant>>);

impl Leadership {
    /// Leadership that never ends (one replica, or tests).
    pub fn always() -> Self {
        // The sender is dropped: the value stays, and `changed` never fires.
        let (_tx, rx) = watch::channel(Some(Instant::now() + Duration::from_secs(1 << 40)));
        Leadership(rx)
    }

    /// True if this replica holds the Lease now. Check it just before every write.
    pub fn is_leader(&self) -> bool {
        matches!(*self.0.borrow(), Some(until) if Instant::now() < until)
    }

    /// Waits until leadership is gained or lost (or renewed).
    pub async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
}

/// The Lease as lb-core's [`LeaderElector`]: the only live candidate is the holder, so
/// [`LeaderElector::current`] holds this replica while (and only while) its term is good, and
/// [`LeaderElector::is_member`] is the check to make before every write. `resign` hands the
/// Lease back.
#[derive(Debug)]
pub struct LeaseElector {
    identity: String,
    leadership: Leadership,
    stop: watch::Sender<bool>,
}

impl LeaseElector {
    /// Starts the election (see [`spawn`]); the task ends after [`LeaderElector::resign`].
    pub fn spawn(
        client: Client,
        config: LeaseConfig,
    ) -> (LeaseElector, tokio::task::JoinHandle<()>) {
        let (stop, stop_rx) = watch::channel(false);
        let identity = config.identity.clone();
        let (leadership, task) = spawn(client, config, stop_rx);
        (
            LeaseElector {
                identity,
                leadership,
                stop,
            },
            task,
        )
    }

    /// An elector over a [`Leadership`] made elsewhere (tests, [`Leadership::always`]).
    pub fn over(identity: &str, leadership: Leadership) -> LeaseElector {
        LeaseElector {
            identity: identity.to_string(),
            leadership,
            stop: watch::channel(false).0,
        }
    }

    fn view(identity: &str, leader: bool, epoch: u64) -> lb_core::Membership {
        lb_core::Membership {
            members: if leader {
                std::collections::BTreeSet::from([identity.to_string()])
            } else {
                std::collections::BTreeSet::new()
            },
            epoch,
        }
    }
}

#[async_trait::async_trait]
impl LeaderElector for LeaseElector {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn current(&self) -> lb_core::Membership {
        LeaseElector::view(&self.identity, self.leadership.is_leader(), 0)
    }

    /// The view now, then on every change of term: gained, lost, or run out (a term ends by
    /// itself when renewals fail).
    fn watch(&self) -> BoxStream<'static, lb_core::Membership> {
        let (identity, leadership) = (self.identity.clone(), self.leadership.clone());
        futures::stream::unfold(
            (identity, leadership, None::<bool>, 0u64),
            |(identity, mut l, last, epoch)| async move {
                loop {
                    let now = l.is_leader();
                    if last != Some(now) {
                        let v = LeaseElector::view(&identity, now, epoch);
                        return Some((v, (identity, l, Some(now), epoch + 1)));
                    }
                    let until = *l.0.borrow();
                    match until {
                        Some(t) if now => {
                            tokio::select! {
                                _ = l.changed() => {}
                                _ = tokio::time::sleep_until(t) => {}
                            }
                        }
                        _ => l.changed().await,
                    }
                }
            },
        )
        .boxed()
    }

    async fn resign(&self) -> Result<(), lb_core::elect::ElectError> {
        self.stop.send_replace(true);
        Ok(())
    }
}

/// Updates the term, waking watchers only when leadership is gained or lost (a renewal only
/// moves the end of the term).
fn set(tx: &watch::Sender<Option<Instant>>, term: Option<Instant>) {
    tx.send_if_modified(|v| {
        let flip = v.is_some() != term.is_some();
        *v = term;
        flip
    });
}

/// Whole seconds, rounded up: the Lease must not promise less than the holder relies on.
fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_millis().div_ceil(1000).max(1)).unwrap_or(i32::MAX)
}

/// Runs the election until `stop` fires; then releases the Lease if held.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
    mut stop: watch::Receiver<bool>,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None::<Instant>);
    let token = format!("{:016x}", rand::random::<u64>());
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut elector = Elector::new(&config.identity, &token, config.duration);
        loop {
            let started = Instant::now();
            match step(&api, &config, &token, &mut elector, started).await {
                Ok(true) => {
                    if tx.borrow().is_none() {
                        info!(identity = %config.identity, "became leader");
                    }
                    set(&tx, Some(started + config.valid_for));
                }
                Ok(false) => {
                    if tx.borrow().is_some() {
                        info!(identity = %config.identity, "lost leadership");
                    }
                    set(&tx, None);
                }
                // An error keeps the current term: it ends by itself at `valid_for`.
                Err(e) => warn!("lease {}: {e}", config.name),
            }
            tokio::select! {
                _ = tokio::time::sleep(config.retry) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        let held = tx.borrow().is_some_and(|until| Instant::now() < until);
        tx.send_replace(None);
        if held {
            release(&api, &config, &token).await;
        }
    });
    (Leadership(rx), task)
}

/// One look at the Lease; returns whether we hold it after it.
async fn step(
    api: &Api<Lease>,
    config: &LeaseConfig,
    token: &str,
    elector: &mut Elector,
    now: Instant,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&config.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.as_ref());
    let action = elector.decide(now, spec, current.as_ref().and_then(token_of));
    let annotations =
        std::collections::BTreeMap::from([(TOKEN_ANNOTATION.to_string(), token.to_string())]);
    let stamp = Some(MicroTime(Timestamp::now()));
    let mine = |prev: Option<&LeaseSpec>, taking: bool| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(secs(config.duration)),
        renew_time: stamp.clone(),
        acquire_time: if taking {
            stamp.clone()
        } else {
            prev.and_then(|p| p.acquire_time.clone())
        },
        lease_transitions: Some(
            prev.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(taking),
        ),
        ..LeaseSpec::default()
    };
    let result = match action {
        Action::Follow => return Ok(false),
        Action::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                spec: Some(mine(None, true)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Action::Renew | Action::TakeOver => {
            let Some(mut lease) = current.clone() else {
                return Ok(false);
            };
            lease.spec = Some(mine(spec, action == Action::TakeOver));
            lease
                .metadata
                .annotations
                .get_or_insert_default()
                .extend(annotations);
            // Replace carries the resourceVersion we read: if another replica wrote in
            // between, the API server refuses with 409 and nobody holds two terms.
            api.replace(&config.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// The holder token a Lease carries.
fn token_of(lease: &Lease) -> Option<&str> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(TOKEN_ANNOTATION)
        .map(String::as_str)
}

/// Hands the Lease back so that another replica takes over at once.
async fn release(api: &Api<Lease>, config: &LeaseConfig, token: &str) {
    let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
        return;
    };
    if token_of(&lease) != Some(token) {
        return;
    }
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    if let Err(e) = api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        warn!("releasing lease {}: {e}", config.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renew: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_string()),
            lease_duration_seconds: Some(10),
            renew_time: Some(MicroTime(
                Timestamp::from_second(renew).unwrap_or(Timestamp::UNIX_EPOCH),
            )),
            ..LeaseSpec::default()
        }
    }

    #[tokio::test]
    async fn the_lease_elector_holds_this_replica_only_during_its_term() {
        use futures::StreamExt;
        let (tx, rx) = watch::channel(None::<Instant>);
        let e = LeaseElector::over("a", Leadership(rx));
        let mut views = e.watch();
        assert!(views.next().await.is_some_and(|v| v.members.is_empty()));
        // Gained, for 100 ms.
        set(&tx, Some(Instant::now() + Duration::from_millis(100)));
        let v = views.next().await.unwrap_or_default();
        assert_eq!(
            v.members,
            std::collections::BTreeSet::from(["a".to_string()])
        );
        assert!(e.is_member());
        // The term runs out with no renewal: the view says so by itself.
        let lost = tokio::time::timeout(Duration::from_secs(2), views.next()).await;
        assert!(lost.is_ok_and(|v| v.is_some_and(|v| v.members.is_empty())));
        assert!(!e.is_member());
    }

    #[test]
    fn no_lease_is_created() {
        let mut e = Elector::new("a", "t1", Duration::from_secs(10));
        assert_eq!(e.decide(Instant::now(), None, None), Action::Create);
    }

    #[test]
    fn own_lease_is_renewed() {
        let mut e = Elector::new("a", "t1", Duration::from_secs(10));
        assert_eq!(
            e.decide(Instant::now(), Some(&spec("a", 1)), Some("t1")),
            Action::Renew
        );
    }

    #[test]
    fn our_identity_with_another_token_is_another_holder() {
        // Two replicas given the same identity, or our own previous run: followed until
        // silent for a whole duration.
        let mut e = Elector::new("a", "t1", Duration::from_secs(10));
        let t0 = Instant::now();
        for token in [Some("t2"), None] {
            assert_eq!(e.decide(t0, Some(&spec("a", 1)), token), Action::Follow);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            e.decide(t1, Some(&spec("a", 2)), Some("t2")),
            Action::Follow
        );
        assert_eq!(
            e.decide(t1 + Duration::from_secs(9), Some(&spec("a", 2)), Some("t2")),
            Action::Follow
        );
        assert_eq!(
            e.decide(
                t1 + Duration::from_secs(10),
                Some(&spec("a", 2)),
                Some("t2")
            ),
            Action::TakeOver
        );
    }

    #[test]
    fn a_live_holder_is_followed_until_silent_for_a_whole_duration() {
        let mut e = Elector::new("b", "t1", Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(e.decide(t0, Some(&spec("a", 1)), Some("x")), Action::Follow);
        // A renewal resets the count, whatever the holder's clock says.
        let t1 = t0 + Duration::from_secs(9);
        assert_eq!(e.decide(t1, Some(&spec("a", 2)), Some("x")), Action::Follow);
        assert_eq!(
            e.decide(t1 + Duration::from_secs(9), Some(&spec("a", 2)), Some("x")),
            Action::Follow
        );
        assert_eq!(
            e.decide(t1 + Duration::from_secs(10), Some(&spec("a", 2)), Some("x")),
            Action::TakeOver
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut e = Elector::new("b", "t1", Duration::from_secs(10));
        let mut s = spec("a", 1);
        s.holder_identity = None;
        assert_eq!(e.decide(Instant::now(), Some(&s), None), Action::TakeOver);
    }
}
