//! A file read again whose edits are Services and EndpointSlices alone: the configuration in
//! force is changed by those objects, in place, instead of being loaded again from every
//! document. A standalone node's reload of 100,000 services then costs the read of the text and
//! the edited documents, not a copy and a validation of every object.
//!
//! The result is the configuration a whole read of the file gives (`tests` below hold it to
//! that): Services are kept by key, EndpointSlices in (namespace, name) order. Anything a whole
//! read would resolve in a way a change cannot see (a name taken twice, a finding that refuses
//! the file) is left to the whole read.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::{Early, Parsed};
use crate::config::{Config, ConfigError, Severity};
use crate::objects::{EndpointSlice, Service, ServiceKey};

/// Whether a document holds Services and EndpointSlices alone, each read with the document,
/// and no finding of its own (a finding that names its place in the file).
pub(super) fn services_only((objects, found): &Parsed) -> bool {
    found.is_empty()
        && objects.iter().all(|o| {
            matches!(
                o.early,
                Some(Early::Service(..)) | Some(Early::EndpointSlice(..))
            )
        })
}

/// The slices named `(namespace, name)` in `slices`, which are in that order.
fn named(slices: &[EndpointSlice], namespace: &str, name: &str) -> Range<usize> {
    let key = (namespace, name);
    let from = slices.partition_point(|s| (s.namespace.as_str(), s.name.as_str()) < key);
    let to = slices.partition_point(|s| (s.namespace.as_str(), s.name.as_str()) <= key);
    from..to
}

/// Above this many slices in and out, the slices are rebuilt in one sort rather than moved
/// one by one.
const SLICES_ONE_BY_ONE: usize = 64;

/// The objects of the documents that left the file and of those that came into it.
#[derive(Default)]
pub(super) struct Patch {
    services_out: Vec<ServiceKey>,
    services_in: Vec<Service>,
    slices_out: Vec<(String, String)>,
    slices_in: Vec<EndpointSlice>,
    /// The findings of the objects that came in (warnings: an error refuses the change).
    findings: Vec<ConfigError>,
}

impl Patch {
    /// The change from `removed` documents to `added` ones (each [`services_only`]) of `base`,
    /// the configuration read from the documents before; None when a whole read must decide:
    /// an object that came in has an error, or takes a name another holds, or one that left is
    /// not in `base` as read.
    pub(super) fn of(base: &Config, removed: &[Parsed], added: &[Parsed]) -> Option<Patch> {
        let mut p = Patch::default();
        for o in removed.iter().flat_map(|(objects, _)| objects) {
            match &o.early {
                Some(Early::Service(Some(s), _)) => {
                    if base.services.get(&s.key) != Some(s) {
                        return None;
                    }
                    p.services_out.push(s.key.clone());
                }
                Some(Early::EndpointSlice(Some(s), _)) => {
                    let at = named(&base.endpoint_slices, &s.namespace, &s.name);
                    if at.len() != 1 || base.endpoint_slices[at.start] != *s {
                        return None;
                    }
                    p.slices_out.push((s.namespace.clone(), s.name.clone()));
                }
                _ => return None,
            }
        }
        let services_out: BTreeSet<&ServiceKey> = p.services_out.iter().collect();
        let slices_out: BTreeSet<(&str, &str)> = p
            .slices_out
            .iter()
            .map(|(ns, n)| (ns.as_str(), n.as_str()))
            .collect();
        if services_out.len() != p.services_out.len() || slices_out.len() != p.slices_out.len() {
            return None;
        }
        let (mut services_in, mut slices_in) = (BTreeSet::new(), BTreeSet::new());
        for o in added.iter().flat_map(|(objects, _)| objects) {
            let found = match &o.early {
                Some(Early::Service(s, found)) => {
                    let s = s.as_ref()?;
                    let taken =
                        base.services.contains_key(&s.key) && !services_out.contains(&s.key);
                    if taken || !services_in.insert(&s.key) {
                        return None;
                    }
                    found
                }
                Some(Early::EndpointSlice(s, found)) => {
                    let s = s.as_ref()?;
                    let key = (s.namespace.as_str(), s.name.as_str());
                    let taken = !named(&base.endpoint_slices, key.0, key.1).is_empty()
                        && !slices_out.contains(&key);
                    if taken || !slices_in.insert(key) {
                        return None;
                    }
                    found
                }
                None => return None,
            };
            if found.iter().any(|e| e.severity == Severity::Error) {
                return None;
            }
            p.findings.extend(found.iter().cloned());
        }
        for o in added.iter().flat_map(|(objects, _)| objects) {
            match &o.early {
                Some(Early::Service(Some(s), _)) => p.services_in.push(s.clone()),
                Some(Early::EndpointSlice(Some(s), _)) => p.slices_in.push(s.clone()),
                _ => {}
            }
        }
        Some(p)
    }

    /// Changes `base`; adds the findings to `errors` and returns the services a plan may read
    /// differently: those whose object or slices differ.
    pub(super) fn apply(
        self,
        base: &mut Config,
        errors: &mut Vec<ConfigError>,
    ) -> BTreeSet<ServiceKey> {
        let mut touched = BTreeSet::new();
        let mut old: BTreeMap<ServiceKey, Service> = self
            .services_out
            .into_iter()
            .filter_map(|k| base.services.remove_entry(&k))
            .collect();
        for s in self.services_in {
            if old.remove(&s.key).as_ref() != Some(&s) {
                touched.insert(s.key.clone());
            }
            base.services.insert(s.key.clone(), s);
        }
        touched.extend(old.into_keys());

        let service_of = |s: &EndpointSlice| {
            s.service
                .as_ref()
                .map(|name| ServiceKey::new(&s.namespace, name))
        };
        let mut old: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
        let slices = &mut base.endpoint_slices;
        if self.slices_out.len() + self.slices_in.len() > SLICES_ONE_BY_ONE {
            let out: BTreeSet<(&str, &str)> = self
                .slices_out
                .iter()
                .map(|(ns, n)| (ns.as_str(), n.as_str()))
                .collect();
            let mut kept = Vec::with_capacity(slices.len() + self.slices_in.len());
            for s in std::mem::take(slices) {
                if out.contains(&(s.namespace.as_str(), s.name.as_str())) {
                    old.insert((s.namespace.clone(), s.name.clone()), s);
                } else {
                    kept.push(s);
                }
            }
            *slices = kept;
        } else {
            for (ns, name) in self.slices_out {
                let at = named(slices, &ns, &name);
                old.insert((ns, name), slices.remove(at.start));
            }
        }
        let many = self.slices_in.len() > SLICES_ONE_BY_ONE;
        for s in self.slices_in {
            let was = old.remove(&(s.namespace.clone(), s.name.clone()));
            if was.as_ref() != Some(&s) {
                touched.extend(was.as_ref().and_then(service_of));
                touched.extend(service_of(&s));
            }
            if many {
                slices.push(s);
            } else {
                let at = named(slices, &s.namespace, &s.name);
                slices.insert(at.start, s);
            }
        }
        if many {
            // Names are distinct: an unstable sort gives the one order.
            slices.sort_unstable_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        }
        touched.extend(old.values().filter_map(service_of));
        errors.extend(self.findings);
        touched
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{DocumentCache, Reloaded, load_str, load_str_cached, reload_str};
    use crate::config::Config;

    /// One document of a small world, where names collide often: two namespaces besides
    /// `default`, which a document may also mean by naming none.
    #[derive(Clone, Debug)]
    enum Doc {
        Pool(u8),
        Service {
            ns: u8,
            name: u8,
            port: u16,
            note: bool,
        },
        /// Refused: its port is not a number.
        BadService {
            name: u8,
        },
        Slice {
            ns: u8,
            name: u8,
            service: Option<u8>,
            node: u8,
        },
        /// Two services in one `List`.
        List {
            a: u8,
            b: u8,
        },
        Unknown,
    }

    fn namespace(ns: u8) -> &'static str {
        [
            "",
            ", namespace: default",
            ", namespace: a",
            ", namespace: b",
        ][ns as usize % 4]
    }

    fn text(docs: &[Doc]) -> String {
        let mut t = String::new();
        for d in docs {
            t.push_str(&match d {
                Doc::Pool(r) => format!(
                    "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p}}\nspec: {{addresses: [192.0.2.{r}/32, 198.51.100.0/24]}}\n"
                ),
                Doc::Service { ns, name, port, note } => format!(
                    "---\n{}apiVersion: v1\nkind: Service\nmetadata: {{name: s{name}{}}}\nspec: {{type: LoadBalancer, ports: [{{port: {port}}}]}}\n",
                    if *note { "# a note\n" } else { "" },
                    namespace(*ns)
                ),
                Doc::BadService { name } => format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{name}}}\nspec: {{type: LoadBalancer, ports: [{{port: x}}]}}\n"
                ),
                Doc::Slice { ns, name, service, node } => format!(
                    "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: e{name}{}{}}}\naddressType: IPv4\nendpoints: [{{addresses: [192.0.2.1], nodeName: node{node}, conditions: {{ready: true}}}}]\n",
                    namespace(*ns),
                    service
                        .map(|s| format!(", labels: {{kubernetes.io/service-name: s{s}}}"))
                        .unwrap_or_default()
                ),
                Doc::List { a, b } => format!(
                    "---\napiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Service, metadata: {{name: s{a}, namespace: b}}, spec: {{type: LoadBalancer, ports: [{{port: 80}}]}}}}\n- {{apiVersion: v1, kind: Service, metadata: {{name: s{b}, namespace: b}}, spec: {{type: LoadBalancer, ports: [{{port: 81}}]}}}}\n"
                ),
                Doc::Unknown => "---\napiVersion: v9\nkind: Gadget\nmetadata: {name: g}\n".to_string(),
            });
        }
        t
    }

    fn doc() -> impl Strategy<Value = Doc> {
        prop_oneof![
            1 => (0u8..3).prop_map(Doc::Pool),
            8 => (0u8..4, 0u8..6, 80u16..83, any::<bool>())
                .prop_map(|(ns, name, port, note)| Doc::Service { ns, name, port, note }),
            1 => (0u8..6).prop_map(|name| Doc::BadService { name }),
            6 => (0u8..4, 0u8..4, proptest::option::of(0u8..6), 1u8..3)
                .prop_map(|(ns, name, service, node)| Doc::Slice { ns, name, service, node }),
            1 => (0u8..6, 0u8..6).prop_map(|(a, b)| Doc::List { a, b }),
            1 => Just(Doc::Unknown),
        ]
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Replace(usize, Doc),
        Insert(usize, Doc),
        Remove(usize),
        Double(usize),
        Same,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            4 => (any::<usize>(), doc()).prop_map(|(i, d)| Edit::Replace(i, d)),
            2 => (any::<usize>(), doc()).prop_map(|(i, d)| Edit::Insert(i, d)),
            2 => any::<usize>().prop_map(Edit::Remove),
            1 => any::<usize>().prop_map(Edit::Double),
            1 => Just(Edit::Same),
        ]
    }

    fn edited(docs: &mut Vec<Doc>, e: &Edit) {
        let at = |i: usize, n: usize| if n == 0 { 0 } else { i % n };
        match e.clone() {
            Edit::Replace(i, d) if !docs.is_empty() => {
                let i = at(i, docs.len());
                docs[i] = d;
            }
            Edit::Replace(_, d) => docs.push(d),
            Edit::Insert(i, d) => {
                let i = at(i, docs.len() + 1);
                docs.insert(i, d);
            }
            Edit::Remove(i) if !docs.is_empty() => {
                let i = at(i, docs.len());
                docs.remove(i);
            }
            Edit::Double(i) if !docs.is_empty() => {
                let i = at(i, docs.len());
                docs.push(docs[i].clone());
            }
            _ => {}
        }
    }

    /// A reader as a standalone node is: it takes a whole read that is valid and refuses one
    /// that is not (keeping the configuration in force).
    fn take(cache: &mut DocumentCache, config: &mut Config, text: &str) -> Reloaded {
        let r = reload_str(text, cache, config);
        if let Reloaded::Whole(l) = &r
            && l.is_valid()
        {
            *config = l.config.clone();
            cache.taken();
        }
        r
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Whatever the edits (services, slices, a pool, refused objects, names taken twice, a
        /// document doubled), a reload's configuration is a whole read's, the touched services
        /// are those `services_changed_since` finds, and a change is never taken for a file
        /// that a whole read refuses.
        #[test]
        fn a_reload_changed_in_place_is_a_whole_read(
            start in proptest::collection::vec(doc(), 0..12),
            edits in proptest::collection::vec(edit(), 1..8),
        ) {
            let mut docs = start;
            let first = text(&docs);
            let mut cache = DocumentCache::default();
            let l = load_str_cached(&first, &mut cache);
            let mut config = Config::default();
            if l.is_valid() {
                config = l.config;
                cache.taken();
            }
            for e in &edits {
                edited(&mut docs, e);
                let t = text(&docs);
                let fresh = load_str(&t);
                let before = config.clone();
                match take(&mut cache, &mut config, &t) {
                    Reloaded::Unchanged => {
                        prop_assert!(fresh.is_valid());
                        prop_assert_eq!(&config, &before);
                        prop_assert_eq!(&config, &fresh.config);
                    }
                    Reloaded::Services { touched, findings } => {
                        prop_assert!(fresh.is_valid(), "{:?}", fresh.errors);
                        prop_assert_eq!(&config, &fresh.config);
                        let want = config.services_changed_since(&before);
                        prop_assert_eq!(Some(touched), want);
                        for f in &findings {
                            prop_assert!(fresh.errors.contains(f));
                        }
                    }
                    Reloaded::Whole(l) => {
                        prop_assert_eq!(&l.config, &fresh.config);
                        prop_assert_eq!(&l.errors, &fresh.errors);
                        if !l.is_valid() {
                            prop_assert_eq!(&config, &before, "a refused read changes nothing");
                        }
                    }
                }
            }
        }
    }

    fn service(name: &str, port: u16) -> String {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer, ports: [{{port: {port}}}]}}\n"
        )
    }

    fn kind(r: &Reloaded) -> &'static str {
        match r {
            Reloaded::Unchanged => "unchanged",
            Reloaded::Services { .. } => "services",
            Reloaded::Whole(_) => "whole",
        }
    }

    /// Which reads are changes and which are whole: a change needs the configuration in force
    /// taken from the cache's documents, and only Services and EndpointSlices moved.
    #[test]
    fn only_services_edited_after_a_taken_read_change_the_configuration_in_place() {
        let pool = "---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p}\nspec: {addresses: [192.0.2.0/24]}\n";
        let file = |ports: [u16; 3]| {
            let mut t = pool.to_string();
            for (i, p) in ports.iter().enumerate() {
                t.push_str(&service(&format!("s{i}"), *p));
            }
            t
        };
        let mut cache = DocumentCache::default();
        let mut config = Config::default();
        // Not taken yet: whole.
        let r = take(&mut cache, &mut config, &file([80, 80, 80]));
        assert_eq!(kind(&r), "whole");
        assert_eq!(
            kind(&take(&mut cache, &mut config, &file([80, 80, 80]))),
            "unchanged"
        );
        match take(&mut cache, &mut config, &file([80, 81, 80])) {
            Reloaded::Services { touched, .. } => {
                assert_eq!(
                    touched.into_iter().map(|k| k.name).collect::<Vec<_>>(),
                    ["s1"]
                );
            }
            r => panic!("{}", kind(&r)),
        }
        assert_eq!(cache.parsed_last(), 1);
        // A pool edited: whole.
        let other = file([80, 81, 80]).replace("192.0.2.0/24", "198.51.100.0/24");
        assert_eq!(kind(&take(&mut cache, &mut config, &other)), "whole");
        // A service refused: whole, refused; the next edit after it is whole too (the cache
        // holds the refused read's documents), then changes again.
        let bad = format!(
            "{other}{}",
            service("s9", 80).replace("port: 80", "port: x")
        );
        let before = config.clone();
        match take(&mut cache, &mut config, &bad) {
            Reloaded::Whole(l) => assert!(!l.is_valid()),
            r => panic!("{}", kind(&r)),
        }
        assert_eq!(config, before);
        let fixed = format!("{other}{}", service("s9", 80));
        assert_eq!(kind(&take(&mut cache, &mut config, &fixed)), "whole");
        assert_eq!(config, load_str(&fixed).config);
        let added = format!("{fixed}{}", service("s10", 80));
        assert_eq!(kind(&take(&mut cache, &mut config, &added)), "services");
        // A service whose name another holds: whole (the whole read refuses it).
        let twice = format!("{added}{}", service("s10", 81));
        assert_eq!(kind(&take(&mut cache, &mut config, &twice)), "whole");
    }
}
