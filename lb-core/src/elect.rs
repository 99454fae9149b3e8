//! The `LeaderElector` trait: the live candidates, as a watched value.
//!
//! An elector only publishes who may own things now; it decides nothing about any one key.
//! What each candidate owns is decided in one place, by `plan`'s rules over these members
//! (MetalLB's hash, node selectors, the exclude label, ETP Local, preferred nodes), which
//! [`crate::Runtime`] applies. Implementations live where their IO lives: the SWIM membership
//! (every live node is a candidate) in lb-bin, a Lease (only its holder is) in lb-k8s, and
//! [`StaticElector`] for tests and fixed setups.

use std::collections::BTreeSet;
use std::fmt::Debug;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

/// A view of the live members. `epoch` grows with every change seen by this elector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The live candidates' names.
    pub members: BTreeSet<String>,
    /// Grows by one with each change this elector sees.
    pub epoch: u64,
}

/// Why an elector could not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectError {
    /// The elector's task has ended (it cannot leave or resign any more).
    #[error("election: the elector has stopped")]
    Stopped,
    /// Anything else an elector reports (one of your own, say), with its cause.
    #[error("election: {0}")]
    Other(std::sync::Arc<dyn std::error::Error + Send + Sync>),
}

/// Who the live candidates are, as a watched value; the runtime decides ownership over them.
/// See the module docs.
#[async_trait]
pub trait LeaderElector: Send + Sync + Debug {
    /// This member's own name.
    fn identity(&self) -> &str;

    /// The current view.
    fn current(&self) -> Membership;

    /// Views as they change; the first item is the current view.
    fn watch(&self) -> BoxStream<'static, Membership>;

    /// Whether this member is among the live candidates now (for a Lease: whether it holds
    /// it). Check it just before acting on it.
    fn is_member(&self) -> bool {
        self.current().members.contains(self.identity())
    }

    /// Leaves at once so that other members take over what this one owned.
    async fn resign(&self) -> Result<(), ElectError>;
}

/// The views of a watch channel as a stream: the current one at once, then each change. For
/// electors that keep their view in a `watch` channel.
pub fn watch_stream(mut rx: watch::Receiver<Membership>) -> BoxStream<'static, Membership> {
    let first = rx.borrow_and_update().clone();
    let rest = stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let v = rx.borrow_and_update().clone();
        Some((v, rx))
    });
    // Fused: once the membership task is gone the stream says so (None) every time it is
    // asked, rather than panicking on a second poll (`unfold` does), so a caller that waited on
    // it can still see the end and stop with an error.
    stream::once(async move { first })
        .chain(rest)
        .fuse()
        .boxed()
}

/// A fixed member set that tests (and single-node setups) change by hand.
#[derive(Debug)]
pub struct StaticElector {
    identity: String,
    tx: watch::Sender<Membership>,
}

impl StaticElector {
    /// An elector whose view holds `members` and always this member itself.
    pub fn new(identity: &str, members: impl IntoIterator<Item = String>) -> Self {
        let mut set: BTreeSet<String> = members.into_iter().collect();
        set.insert(identity.to_string());
        StaticElector {
            identity: identity.to_string(),
            tx: watch::channel(Membership {
                members: set,
                epoch: 0,
            })
            .0,
        }
    }

    /// Replaces the member set (a failure or a join, as a real elector would see it).
    pub fn set_members(&self, members: impl IntoIterator<Item = String>) {
        let members: BTreeSet<String> = members.into_iter().collect();
        self.tx.send_if_modified(|m| {
            if m.members == members {
                return false;
            }
            m.members = members;
            m.epoch += 1;
            true
        });
    }
}

#[async_trait]
impl LeaderElector for StaticElector {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn current(&self) -> Membership {
        self.tx.borrow().clone()
    }

    fn watch(&self) -> BoxStream<'static, Membership> {
        watch_stream(self.tx.subscribe())
    }

    async fn resign(&self) -> Result<(), ElectError> {
        let me = self.identity.clone();
        let rest: Vec<String> = self
            .current()
            .members
            .into_iter()
            .filter(|m| *m != me)
            .collect();
        self.set_members(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finished_watch_ends_and_stays_ended_without_panicking() {
        let (tx, rx) = watch::channel(Membership::default());
        let mut w = watch_stream(rx);
        assert!(w.next().await.is_some());
        drop(tx);
        assert!(w.next().await.is_none());
        // Asked again (as a main loop does after a wait that saw the end): still the end.
        assert!(w.next().await.is_none());
    }

    #[tokio::test]
    async fn watch_yields_current_then_each_change() {
        let e = StaticElector::new("a", ["b".to_string()]);
        let mut w = e.watch();
        assert_eq!(w.next().await.unwrap().members.len(), 2);
        e.set_members(["a".to_string()]);
        let v = w.next().await.unwrap();
        assert_eq!(v.members, BTreeSet::from(["a".to_string()]));
        assert_eq!(v.epoch, 1);
    }

    #[tokio::test]
    async fn resign_removes_self_from_the_view() {
        let a = StaticElector::new("a", ["b".to_string()]);
        a.resign().await.unwrap();
        assert!(!a.current().members.contains("a"));
        assert!(!a.is_member());
    }
}
