//! The `LeaderElector` trait: who is live, and so who owns each key, as a watched value.
//!
//! L2 ownership of an address is not negotiated: every node derives it from the same live member
//! set with the same hash ([`crate::plan::election_hash`]). An elector therefore only has to
//! publish membership; `owner` is derived. Implementations live where their IO lives (SWIM
//! membership in lb-bin, a Lease in lb-k8s).

use std::collections::BTreeSet;
use std::fmt::Debug;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use crate::plan::owner_of;

/// A view of the live members. `epoch` grows with every change seen by this elector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeSet<String>,
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElectError {
    #[error("election: {0}")]
    Failed(String),
}

#[async_trait]
pub trait LeaderElector: Send + Sync + Debug {
    /// This member's own name.
    fn identity(&self) -> &str;

    /// The current view.
    fn current(&self) -> Membership;

    /// Views as they change; the first item is the current view.
    fn watch(&self) -> BoxStream<'static, Membership>;

    /// The owner of `key` among live members, in MetalLB's hash order.
    fn owner(&self, key: &str) -> Option<String> {
        owner_of(&self.current().members, key)
    }

    /// The owner of `key` as a watched value: the current owner at once, then each change.
    fn watch_owner(&self, key: &str) -> BoxStream<'static, Option<String>> {
        let key = key.to_string();
        let mut last: Option<Option<String>> = None;
        self.watch()
            .filter_map(move |m| {
                let owner = owner_of(&m.members, &key);
                let changed = last.as_ref() != Some(&owner);
                last = Some(owner.clone());
                futures::future::ready(changed.then_some(owner))
            })
            .boxed()
    }

    /// Whether this member owns `key`; check it just before acting on ownership.
    fn is_owner(&self, key: &str) -> bool {
        self.owner(key).as_deref() == Some(self.identity())
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
    async fn ownership_moves_when_the_owner_resigns() {
        let a = StaticElector::new("a", ["b".to_string(), "c".to_string()]);
        let key = "192.0.2.10";
        let owner = a.owner(key).unwrap();
        let rest: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|s| s.to_string())
            .filter(|m| *m != owner)
            .collect();
        a.set_members(rest);
        assert_ne!(a.owner(key).unwrap(), owner);
    }

    #[tokio::test]
    async fn watch_owner_reports_only_changes_of_owner() {
        let e = StaticElector::new("a", ["b".to_string(), "c".to_string()]);
        let key = "192.0.2.10";
        let mut w = e.watch_owner(key);
        let first = w.next().await.unwrap().unwrap();
        // Removing a non-owner changes membership but not the owner: nothing is reported.
        let bystander = ["a", "b", "c"].into_iter().find(|m| *m != first).unwrap();
        let without_bystander: Vec<String> = ["a", "b", "c"]
            .into_iter()
            .filter(|m| *m != bystander)
            .map(String::from)
            .collect();
        e.set_members(without_bystander.clone());
        let without_owner: Vec<String> = without_bystander
            .into_iter()
            .filter(|m| *m != first)
            .collect();
        e.set_members(without_owner.clone());
        assert_eq!(w.next().await.unwrap(), Some(without_owner[0].clone()));
    }

    #[tokio::test]
    async fn resign_removes_self_from_the_view() {
        let a = StaticElector::new("a", ["b".to_string()]);
        a.resign().await.unwrap();
        assert!(!a.current().members.contains("a"));
        assert!(!a.is_owner("x"));
    }
}
