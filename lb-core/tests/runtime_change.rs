//! `Runtime::apply_change` against a model: after any sequence of whole plans and changes of
//! some services, every announcer announces its protocol's part of what the model holds, the
//! host holds exactly the announced addresses, and each announcement's start is when its
//! service began to announce that address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lb_core::announce::AnnounceError;
use lb_core::objects::ServiceKey;
use lb_core::plan::{BgpRoute, How, Interfaces};
use lb_core::runtime::{LocalAddresses, LocalError};
use lb_core::{Announcement, Announcer, Change, Plan, Protocol, RecordingAnnouncer, Runtime};
use proptest::prelude::*;

/// An announcer that applies changes by address, as the real ones do, and checks that every
/// change fits what it was handed before.
#[derive(Debug, Default)]
struct Delta {
    held: Mutex<BTreeMap<Announcement, usize>>,
    /// How each call came: "whole" or "change".
    calls: Mutex<Vec<&'static str>>,
    /// Changes that withdrew what it did not hold or added what it held.
    misfits: Mutex<Vec<String>>,
    /// Refuse the next call (once).
    refuse: Mutex<bool>,
}

impl Delta {
    fn current(&self) -> Vec<Announcement> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.iter()
            .flat_map(|(a, n)| std::iter::repeat_n(a.clone(), *n))
            .collect()
    }

    fn refused(&self) -> bool {
        std::mem::take(&mut *self.refuse.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[async_trait]
impl Announcer for Delta {
    fn protocol(&self) -> Protocol {
        Protocol::Layer2
    }

    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push("whole");
        if self.refused() {
            return Err(AnnounceError::Stopped {
                protocol: Protocol::Layer2,
            });
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.clear();
        for a in desired {
            *held.entry(a.clone()).or_default() += 1;
        }
        Ok(())
    }

    async fn change(&self, change: Change<'_>) -> Result<(), AnnounceError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push("change");
        if self.refused() {
            return Err(AnnounceError::Stopped {
                protocol: Protocol::Layer2,
            });
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut misfits = self.misfits.lock().unwrap_or_else(|e| e.into_inner());
        for a in change.withdrawn {
            match held.get_mut(a) {
                Some(n) if *n > 1 => *n -= 1,
                Some(_) => {
                    held.remove(a);
                }
                None => misfits.push(format!("withdrawn, not held: {a:?}")),
            }
        }
        for a in change.added {
            if held.contains_key(a) {
                misfits.push(format!("added, already held: {a:?}"));
            }
            *held.entry(a.clone()).or_default() += 1;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct Host(Arc<Mutex<BTreeSet<IpAddr>>>);

impl LocalAddresses for Host {
    fn add(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(want);
        Vec::new()
    }
    fn sync(&mut self, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = want.clone();
        Vec::new()
    }
    fn remove(&mut self, gone: &BTreeSet<IpAddr>, want: &BTreeSet<IpAddr>) -> Vec<LocalError> {
        let mut have = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for ip in gone {
            assert!(!want.contains(ip), "{ip} taken off while still wanted");
            have.remove(ip);
        }
        Vec::new()
    }
}

const IPS: [&str; 5] = [
    "192.0.2.1",
    "192.0.2.2",
    "192.0.2.3",
    "2001:db8::1",
    "2001:db8::2",
];

fn service(i: u8) -> ServiceKey {
    ServiceKey::new("default", format!("svc-{i}"))
}

fn how(kind: u8) -> How {
    match kind {
        0 => How::Layer2 {
            interfaces: Interfaces::All,
        },
        1 => How::Layer2 {
            interfaces: Interfaces::Only(BTreeSet::from(["eth1".to_string()])),
        },
        k => How::Bgp {
            routes: vec![BgpRoute {
                prefix: "198.51.100.0/24".parse().expect("prefix"),
                peers: vec![format!("peer{}", k % 2)],
                local_pref: None,
                communities: Vec::new(),
            }],
        },
    }
}

/// One service's announcements: (address index, how) pairs.
fn part() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((0..IPS.len(), 0u8..4), 0..3)
}

/// As plans give them: at most one announcement a service, address and protocol.
fn announcements(svc: u8, part: &[(usize, u8)]) -> Vec<Announcement> {
    let mut seen = BTreeSet::new();
    part.iter()
        .map(|(ip, kind)| Announcement {
            service: service(svc),
            ip: IPS[*ip].parse().expect("address"),
            how: how(*kind),
        })
        .filter(|a| seen.insert((a.ip, Protocol::of(a))))
        .collect()
}

#[derive(Clone, Debug)]
enum Step {
    /// A whole plan: each service's part.
    Whole(Vec<(u8, Vec<(usize, u8)>)>),
    /// A change of these services.
    Change(Vec<(u8, Vec<(usize, u8)>)>),
    /// The layer 2 announcer refuses its next call.
    Refuse,
}

fn step() -> impl Strategy<Value = Step> {
    let parts = || proptest::collection::vec((0u8..6, part()), 0..4);
    prop_oneof![
        1 => parts().prop_map(Step::Whole),
        6 => parts().prop_map(Step::Change),
        1 => Just(Step::Refuse),
    ]
}

fn of(model: &BTreeMap<ServiceKey, Vec<Announcement>>, p: Protocol) -> Vec<Announcement> {
    let mut out: Vec<Announcement> = model
        .values()
        .flatten()
        .filter(|a| Protocol::of(a) == p)
        .cloned()
        .collect();
    out.sort();
    out
}

fn dedup(mut v: Vec<Announcement>) -> Vec<Announcement> {
    v.sort();
    v.dedup();
    v
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let l2 = Arc::new(Delta::default());
    let bgp = Arc::new(RecordingAnnouncer::new(Protocol::Bgp));
    let host = Host::default();
    let mut rt = Runtime::new(
        "n1",
        vec![
            l2.clone() as Arc<dyn Announcer>,
            bgp.clone() as Arc<dyn Announcer>,
        ],
    )
    .with_local(Box::new(host.clone()));
    let mut model: BTreeMap<ServiceKey, Vec<Announcement>> = BTreeMap::new();
    // When each (service, address) began, by the model.
    let mut began: BTreeMap<(ServiceKey, IpAddr), u64> = BTreeMap::new();
    // What a caller shows, kept from what each call said: by (service, address, protocol).
    let mut shown: BTreeMap<(ServiceKey, IpAddr, Protocol), u64> = BTreeMap::new();
    let mut refused_before = false;
    for (t, step) in steps.into_iter().enumerate() {
        let t = t as u64;
        let refused_now;
        match step {
            Step::Refuse => {
                *l2.refuse.lock().unwrap_or_else(|e| e.into_inner()) = true;
                continue;
            }
            Step::Whole(parts) => {
                model.clear();
                for (svc, p) in parts {
                    let a = dedup(announcements(svc, &p));
                    if !a.is_empty() {
                        model.insert(service(svc), a);
                    }
                }
                let plan = Plan {
                    announcements: model.values().flatten().cloned().collect(),
                    skipped: Vec::new(),
                };
                let applied = rt.apply(&plan, &BTreeSet::new(), t).await;
                refused_now = !applied.errors.is_empty();
                shown = applied
                    .announced
                    .into_iter()
                    .map(|(a, s)| ((a.service.clone(), a.ip, Protocol::of(&a)), s))
                    .collect();
            }
            Step::Change(parts) => {
                let mut change = BTreeMap::new();
                for (svc, p) in parts {
                    let a = dedup(announcements(svc, &p));
                    change.insert(service(svc), a.clone());
                    if a.is_empty() {
                        model.remove(&service(svc));
                    } else {
                        model.insert(service(svc), a);
                    }
                }
                let calls_before = l2.calls.lock().unwrap_or_else(|e| e.into_inner()).len();
                let applied = rt.apply_change(change, &BTreeSet::new(), t).await;
                refused_now = !applied.errors.is_empty();
                let calls = l2.calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
                // After a refusal the next call hands the whole part.
                if refused_before && calls.len() > calls_before {
                    prop_assert_eq!(calls[calls_before], "whole");
                }
                for a in &applied.withdrawn {
                    shown.remove(&(a.service.clone(), a.ip, Protocol::of(a)));
                }
                for (a, s) in &applied.added {
                    shown.insert((a.service.clone(), a.ip, Protocol::of(a)), *s);
                }
            }
        }
        // The model's starts: kept while the service keeps the address.
        let now: BTreeSet<(ServiceKey, IpAddr)> = model
            .values()
            .flatten()
            .map(|a| (a.service.clone(), a.ip))
            .collect();
        began.retain(|k, _| now.contains(k));
        for k in &now {
            began.entry(k.clone()).or_insert(t);
        }
        if refused_now {
            refused_before = true;
            continue;
        }
        refused_before = false;
        let misfits = l2.misfits.lock().unwrap_or_else(|e| e.into_inner()).clone();
        prop_assert!(misfits.is_empty(), "{:?}", misfits);
        prop_assert_eq!(l2.current(), of(&model, Protocol::Layer2));
        prop_assert_eq!(bgp.current(), dedup(of(&model, Protocol::Bgp)));
        let ips: BTreeSet<IpAddr> = model.values().flatten().map(|a| a.ip).collect();
        prop_assert_eq!(
            host.0.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ips
        );
        let want: BTreeMap<(ServiceKey, IpAddr, Protocol), u64> = model
            .values()
            .flatten()
            .map(|a| {
                let k = (a.service.clone(), a.ip);
                ((a.service.clone(), a.ip, Protocol::of(a)), began[&k])
            })
            .collect();
        prop_assert_eq!(&shown, &want);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn changes_leave_every_announcer_with_its_part_of_the_whole(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(run(steps))?;
    }
}

/// Announcements of a protocol nobody speaks are an error for as long as they last, not only
/// in the change that brought them.
#[tokio::test]
async fn a_protocol_without_an_announcer_stays_an_error_while_it_has_announcements() {
    let l2 = Arc::new(Delta::default());
    let mut rt = Runtime::new("n1", vec![l2.clone() as Arc<dyn Announcer>]);
    let bgp = announcements(1, &[(0, 2)]);
    let applied = rt
        .apply_change([(service(1), bgp)], &BTreeSet::new(), 1)
        .await;
    assert!(matches!(
        applied.errors.as_slice(),
        [AnnounceError::NoAnnouncer { count: 1, .. }]
    ));
    let other = announcements(2, &[(1, 0)]);
    let applied = rt
        .apply_change([(service(2), other)], &BTreeSet::new(), 2)
        .await;
    assert_eq!(applied.errors.len(), 1, "{:?}", applied.errors);
    let applied = rt
        .apply_change([(service(1), Vec::new())], &BTreeSet::new(), 3)
        .await;
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    assert_eq!(l2.current(), announcements(2, &[(1, 0)]));
}
