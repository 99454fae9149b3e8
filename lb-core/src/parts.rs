//! One node's plan kept by service, each part with the node that won the service's layer 2
//! election, so that a change re-plans only the services it can move.
//!
//! A change of the members alone moves little: BGP parts read only the planning node, and a
//! node that leaves changes an election only where it was the winner. So [`Parts`] re-plans
//! the services a departed node won and leaves every other part as it is. A node that joins
//! changes an election only where it outranks the kept winner, or where none was eligible:
//! every service is checked against its kept standing, and only those are planned again.
//! An edit of some services (their objects, slices or allocations) moves only those:
//! [`Parts::services_changed`] plans them alone. Both the standalone node and the Kubernetes
//! speaker keep their plan this way.
//!
//! ```
//! use std::collections::BTreeSet;
//! use lb_core::alloc::converge::{converge, inputs_from};
//! use lb_core::parts::Parts;
//! use lb_core::{PlanInput, PoolAllocator, Rules};
//!
//! let loaded = lb_core::load_str(
//!     "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\n\
//!      spec: {addresses: [192.0.2.0/28]}\n---\n\
//!      apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\n---\n\
//!      apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
//!      spec: {type: LoadBalancer}\n",
//! );
//! let config = loaded.config;
//! let pools: Vec<_> = config.pools.values().cloned().collect();
//! let allocations = converge(&mut PoolAllocator::new(&pools), inputs_from(&config, None)).allocated;
//! let both: BTreeSet<String> = ["node1".to_string(), "node2".to_string()].into();
//! let input = PlanInput::new(&config, &allocations, &both, "node1", Rules::standalone());
//! let mut parts = Parts::plan_all(&input);
//! assert_eq!(parts.plan(), lb_core::plan(&input));
//!
//! // node2 leaves: only what it won is planned again.
//! let alone: BTreeSet<String> = ["node1".to_string()].into();
//! let after = PlanInput::new(&config, &allocations, &alone, "node1", Rules::standalone());
//! let moved = parts.members_changed(&after, &both);
//! assert_eq!(parts.plan(), lb_core::plan(&after));
//! assert!(moved.len() <= 1);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::alloc::Allocation;
use crate::objects::{Service, ServiceKey};
use crate::plan::{
    Announcement, Plan, PlanInput, Planner, SlicesByService, Standing, allocated_services,
    slices_by_service,
};

/// One service's part of the plan, the node that won its layer 2 election (none when no
/// L2Advertisement applies or no node is eligible) and where that election stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The winner of its layer 2 election (first: parts compare by it first, and a departed
    /// node's services all change it).
    pub owner: Option<Arc<str>>,
    /// Where its layer 2 election stands: which newcomer could take it.
    pub standing: Standing,
    /// The service's announcements (sorted) and why it is skipped.
    pub plan: Plan,
}

/// The names a part's owner can be (every member and the planning node), each held once and
/// shared by the parts that name it.
#[derive(Clone, Debug, Default)]
pub struct Names(BTreeMap<String, Arc<str>>);

impl Names {
    /// The names of `members` and `node`.
    pub fn of(members: &BTreeSet<String>, node: &str) -> Names {
        Names(
            members
                .iter()
                .map(String::as_str)
                .chain([node])
                .map(|n| (n.to_string(), Arc::from(n)))
                .collect(),
        )
    }

    /// A service's part as kept (what [`Planner::service_standing`] gives): none when it has
    /// nothing to announce or say.
    pub fn part(&self, plan: Plan, owner: Option<&str>, standing: Standing) -> Option<Part> {
        let owner = owner.map(|o| self.0.get(o).cloned().unwrap_or_else(|| Arc::from(o)));
        (plan != Plan::default() || owner.is_some()).then_some(Part {
            owner,
            standing,
            plan,
        })
    }
}

/// One node's plan by service, with each service's layer 2 winner. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    parts: BTreeMap<ServiceKey, Part>,
}

impl Parts {
    /// Every service of `input` planned (on every core), each part kept.
    pub fn plan_all(input: &PlanInput<'_>) -> Parts {
        Parts {
            parts: plan_every(input).into_iter().collect(),
        }
    }

    /// The whole plan: the parts in service order (the order [`crate::plan()`] gives).
    pub fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        for part in self.parts.values() {
            plan.announcements
                .extend(part.plan.announcements.iter().cloned());
            plan.skipped.extend(part.plan.skipped.iter().cloned());
        }
        plan
    }

    /// What this node announces for `key`.
    pub fn announcements(&self, key: &ServiceKey) -> Vec<Announcement> {
        self.parts
            .get(key)
            .map(|p| p.plan.announcements.clone())
            .unwrap_or_default()
    }

    /// Service `key`'s part.
    pub fn get(&self, key: &ServiceKey) -> Option<&Part> {
        self.parts.get(key)
    }

    /// Each service's part, in service order.
    pub fn iter(&self) -> impl Iterator<Item = (&ServiceKey, &Part)> {
        self.parts.iter()
    }

    /// How many services have a part.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether no service has a part.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The services whose layer 2 election one of `nodes` won.
    pub fn won_by(&self, nodes: &BTreeSet<String>) -> BTreeSet<ServiceKey> {
        self.parts
            .iter()
            .filter(|(_, p)| p.owner.as_deref().is_some_and(|o| nodes.contains(o)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Puts planned parts in place (none: the service has no part); returns their services.
    pub fn set(&mut self, planned: Vec<(ServiceKey, Option<Part>)>) -> BTreeSet<ServiceKey> {
        // Built from the keys at once (in key order, as planned, it is built without a search).
        let changed = planned.iter().map(|(k, _)| k.clone()).collect();
        self.put(planned);
        changed
    }

    /// Puts planned parts in place (none: the service has no part), one search each.
    pub fn put(&mut self, planned: Vec<(ServiceKey, Option<Part>)>) {
        for (key, part) in planned {
            match part {
                None => {
                    self.parts.remove(&key);
                }
                Some(part) => {
                    self.parts.insert(key, part);
                }
            }
        }
    }

    /// `input` differs from what the parts were planned from only in its members, which were
    /// `before`: re-plans what that can move. Returns each service whose part changed, with
    /// what this node announces for it now (what [`crate::Runtime::apply_change`] takes).
    /// Nodes that left move only the services they won; nodes that join move only the
    /// services one of them may take ([`Planner::may_take`]: open elections, and those where
    /// a newcomer outranks the winner), found in a walk of every service; both at once plan
    /// every service again. (The planning node is a candidate whether or not it is among the
    /// members: its own coming or going moves nothing.)
    pub fn members_changed(
        &mut self,
        input: &PlanInput<'_>,
        before: &BTreeSet<String>,
    ) -> Vec<(ServiceKey, Vec<Announcement>)> {
        let after = input.members;
        let others = |a: &'_ BTreeSet<String>, b: &'_ BTreeSet<String>| -> Vec<String> {
            a.difference(b)
                .filter(|n| *n != input.node)
                .cloned()
                .collect()
        };
        let (joined, lost) = (others(after, before), others(before, after));
        match (joined.is_empty(), lost.is_empty()) {
            (true, true) => Vec::new(),
            (true, false) => self.replan_won_by(input, &lost.iter().map(String::as_str).collect()),
            (false, true) => self.replan_taken(input, &joined),
            (false, false) => self.replace(plan_every(input)),
        }
    }

    /// `input` differs from what the parts were planned from only in the services `keys`:
    /// their objects, their EndpointSlices or their allocations (a service added or gone is
    /// one of them). Plans those again and no other. Returns each service whose part changed,
    /// with what this node announces for it now (what [`crate::Runtime::apply_change`] takes).
    pub fn services_changed(
        &mut self,
        input: &PlanInput<'_>,
        keys: &BTreeSet<ServiceKey>,
    ) -> Vec<(ServiceKey, Vec<Announcement>)> {
        if keys.is_empty() {
            return Vec::new();
        }
        let planner = Planner::new(*input);
        let names = Names::of(input.members, input.node);
        // Only these services' slices: a scan of the slices, without grouping them all.
        let wanted: std::collections::HashSet<(&str, &str)> = keys
            .iter()
            .map(|k| (k.namespace.as_str(), k.name.as_str()))
            .collect();
        let mut slices: SlicesByService<'_> = Default::default();
        for s in &input.config.endpoint_slices {
            if let Some(svc) = &s.service
                && wanted.contains(&(s.namespace.as_str(), svc.as_str()))
            {
                slices
                    .entry((s.namespace.as_str(), svc.as_str()))
                    .or_default()
                    .push(s);
            }
        }
        let mut changed = Vec::new();
        for key in keys {
            let new = input
                .allocations
                .get(key)
                .zip(input.config.services.get(key))
                .and_then(|(alloc, svc)| {
                    let (plan, owner, standing) =
                        planner.service_standing(alloc, svc, slices_of(&slices, key));
                    names.part(plan, owner, standing)
                });
            match (self.parts.get_mut(key), new) {
                (Some(part), Some(new)) if *part == new => {}
                (Some(part), Some(new)) => {
                    changed.push((key.clone(), new.plan.announcements.clone()));
                    *part = new;
                }
                (Some(_), None) => {
                    self.parts.remove(key);
                    changed.push((key.clone(), Vec::new()));
                }
                (None, Some(new)) => {
                    changed.push((key.clone(), new.plan.announcements.clone()));
                    self.parts.insert(key.clone(), new);
                }
                (None, None) => {}
            }
        }
        changed
    }

    /// Plans again, from `input`, the services one of `joined` (new members) may take: every
    /// service is walked in order with its allocation, object and kept standing, and only
    /// those are planned.
    fn replan_taken(
        &mut self,
        input: &PlanInput<'_>,
        joined: &[String],
    ) -> Vec<(ServiceKey, Vec<Announcement>)> {
        let planner = Planner::new(*input);
        let names = Names::of(input.members, input.node);
        let slices = slices_by_service(input.config);
        let planned: Vec<(&ServiceKey, Option<Part>)> = {
            let mut kept = self.parts.iter().peekable();
            let items: Vec<(&ServiceKey, &Allocation, &Service, Standing)> =
                allocated_services(input)
                    .into_iter()
                    .filter_map(|(key, alloc, svc)| {
                        while kept.next_if(|(k, _)| *k < key).is_some() {}
                        let (_, part) = kept.next_if(|(k, _)| *k == key)?;
                        Some((key, alloc, svc, part.standing))
                    })
                    .collect();
            crate::par::runs(&items, |run| {
                run.iter()
                    .filter_map(|(key, alloc, svc, standing)| {
                        let mine = slices_of(&slices, key);
                        joined
                            .iter()
                            .any(|j| planner.may_take(j, alloc, svc, mine, *standing))
                            .then(|| {
                                let (plan, owner, standing) =
                                    planner.service_standing(alloc, svc, mine);
                                (*key, names.part(plan, owner, standing))
                            })
                    })
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect()
        };
        let mut next = planned.into_iter().peekable();
        let slots = self.parts.iter_mut().filter_map(|(key, part)| {
            let (_, new) = next.next_if(|(k, _)| *k == key)?;
            Some(((key, part), new))
        });
        let (changed, gone) = settle(slots);
        self.forget(gone);
        changed
    }

    /// Plans again, from `input`, the services one of `nodes` won. The kept parts are walked
    /// in order twice (to find them, then to put the new parts in place): no service is
    /// looked up in them, and no key is copied but those whose part changed.
    fn replan_won_by(
        &mut self,
        input: &PlanInput<'_>,
        nodes: &BTreeSet<&str>,
    ) -> Vec<(ServiceKey, Vec<Announcement>)> {
        let won = |p: &Part| p.owner.as_deref().is_some_and(|o| nodes.contains(o));
        let planned: Vec<Option<Part>> = {
            let keys: Vec<&ServiceKey> = self
                .parts
                .iter()
                .filter(|(_, p)| won(p))
                .map(|(k, _)| k)
                .collect();
            let planner = Planner::new(*input);
            let names = Names::of(input.members, input.node);
            let slices = slices_by_service(input.config);
            crate::par::runs(&keys, |run| {
                run.iter()
                    .map(|key| {
                        let alloc = input.allocations.get(*key)?;
                        let svc = input.config.services.get(*key)?;
                        let (plan, owner, standing) =
                            planner.service_standing(alloc, svc, slices_of(&slices, key));
                        names.part(plan, owner, standing)
                    })
                    .collect::<Vec<_>>()
            })
            .into_iter()
            .flatten()
            .collect()
        };
        let (changed, gone) = settle(self.parts.iter_mut().filter(|(_, p)| won(p)).zip(planned));
        self.forget(gone);
        changed
    }

    fn forget(&mut self, gone: Vec<ServiceKey>) {
        for key in gone {
            self.parts.remove(&key);
        }
    }

    /// Takes `planned` (every service's part, in service order) as the parts; returns each
    /// service whose part differs from before, with its announcements now.
    fn replace(
        &mut self,
        planned: Vec<(ServiceKey, Part)>,
    ) -> Vec<(ServiceKey, Vec<Announcement>)> {
        let mut changed = Vec::new();
        let mut old = self.parts.iter().peekable();
        for (key, part) in &planned {
            while let Some((k, _)) = old.next_if(|(k, _)| *k < key) {
                changed.push((k.clone(), Vec::new()));
            }
            match old.next_if(|(k, _)| *k == key) {
                Some((_, p)) if p == part => {}
                _ => changed.push((key.clone(), part.plan.announcements.clone())),
            }
        }
        changed.extend(old.map(|(k, _)| (k.clone(), Vec::new())));
        self.parts = planned.into_iter().collect();
        changed
    }
}

/// Puts each new part in its slot (none: the service has no part any more). Returns each
/// service whose part changed, with its announcements now, and those left without a part, for
/// the caller to remove.
fn settle<'p>(
    slots: impl Iterator<Item = ((&'p ServiceKey, &'p mut Part), Option<Part>)>,
) -> (Vec<(ServiceKey, Vec<Announcement>)>, Vec<ServiceKey>) {
    let (mut changed, mut gone) = (Vec::new(), Vec::new());
    for ((key, part), new) in slots {
        match new {
            Some(new) if new == *part => {}
            Some(new) => {
                changed.push((key.clone(), new.plan.announcements.clone()));
                *part = new;
            }
            None => {
                changed.push((key.clone(), Vec::new()));
                gone.push(key.clone());
            }
        }
    }
    (changed, gone)
}

/// The keys whose entries differ between `before` and `after` (present in one alone, or with
/// different values), in key order: one walk of both maps.
pub fn differing<K: Ord + Clone, V: PartialEq>(
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) -> Vec<K> {
    let mut out = Vec::new();
    let mut b = before.iter().peekable();
    for (key, value) in after {
        while let Some((k, _)) = b.next_if(|(k, _)| *k < key) {
            out.push(k.clone());
        }
        match b.next_if(|(k, _)| *k == key) {
            Some((_, v)) if v == value => {}
            _ => out.push(key.clone()),
        }
    }
    out.extend(b.map(|(k, _)| k.clone()));
    out
}

/// The EndpointSlices of service `key`.
fn slices_of<'s, 'a: 's>(
    slices: &'s SlicesByService<'a>,
    key: &'s ServiceKey,
) -> &'s [&'a crate::objects::EndpointSlice] {
    slices
        .get(&(key.namespace.as_str(), key.name.as_str()))
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Every service of `input` planned, in service order, each with its part.
fn plan_every(input: &PlanInput<'_>) -> Vec<(ServiceKey, Part)> {
    let planner = Planner::new(*input);
    let names = Names::of(input.members, input.node);
    let slices = slices_by_service(input.config);
    let services = allocated_services(input);
    crate::par::runs(&services, |run| {
        run.iter()
            .filter_map(|(key, alloc, svc)| {
                let (plan, owner, standing) =
                    planner.service_standing(alloc, svc, slices_of(&slices, key));
                names
                    .part(plan, owner, standing)
                    .map(|p| ((*key).clone(), p))
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect()
}
