//! Multi-document YAML to a validated [`Config`].
//!
//! Documents are split first and parsed one by one, so a syntax error costs only its own
//! document. Objects are validated alone, then across objects in a fixed order (communities,
//! BFD profiles, pools, peers, advertisements), each step seeing only what passed the steps
//! before it. Among objects of one kind, name order decides which of two conflicting objects is
//! reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::raw::{self, BgpPeerSpec};
use super::{
    BfdProfile, BgpAdvertisement, BgpPeer, Community, Config, ConfigError, L2Advertisement,
    Password, PeerAsn, PeerTarget, Pool, PoolAllocation, PoolSelection, Severity,
};
use crate::alloc::annotation;
use crate::ip::{Family, IpRange};
use crate::objects::{
    self, Endpoint, EndpointSlice, FamilyPolicy, Namespace, Node, Port, SERVICE_NAME_LABEL,
    Service, ServiceKey, TrafficPolicy,
};
use crate::selector::{RawSelector, Selector};

/// Where MetalLB's own objects live when a file gives them no namespace.
pub const DEFAULT_METALLB_NAMESPACE: &str = "metallb-system";
const DEFAULT_NAMESPACE: &str = "default";

/// The result of loading: the configuration of every object that passed, and every finding.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// The valid objects (bad ones are left out).
    pub config: Config,
    /// Every finding: errors (an object left out) and warnings.
    pub errors: Vec<ConfigError>,
}

impl Loaded {
    /// True when no finding is an error.
    pub fn is_valid(&self) -> bool {
        self.errors.iter().all(|e| e.severity != Severity::Error)
    }

    /// The error findings (not the warnings), as text.
    pub fn error_texts(&self) -> Vec<String> {
        self.errors
            .iter()
            .filter(|e| e.severity == Severity::Error)
            .map(ToString::to_string)
            .collect()
    }
}

/// One object of the input, before validation.
#[derive(Clone, Debug)]
struct Object {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    meta: objects::RawMeta,
    body: Value,
    /// A Service or EndpointSlice read as soon as its document was parsed (they need no other
    /// object), with its findings: its JSON body is dropped then, so a file of 100,000
    /// services never holds 100,000 JSON trees at once.
    early: Option<Early>,
}

#[derive(Clone, Debug)]
enum Early {
    Service(Option<Service>, Vec<ConfigError>),
    EndpointSlice(Option<EndpointSlice>, Vec<ConfigError>),
}

impl Object {
    fn display(&self, default_ns: &str) -> String {
        format!(
            "{} {}/{}",
            self.kind,
            self.namespace.as_deref().unwrap_or(default_ns),
            self.name
        )
    }
}

/// Collects findings about one object.
struct Report<'a> {
    object: String,
    out: &'a mut Vec<ConfigError>,
    failed: bool,
}

impl Report<'_> {
    fn error(&mut self, field: &str, value: Option<&str>, message: impl Into<String>) {
        self.failed = true;
        self.push(Severity::Error, field, value, message.into());
    }

    fn warn(&mut self, field: &str, value: Option<&str>, message: impl Into<String>) {
        self.push(Severity::Warning, field, value, message.into());
    }

    fn push(&mut self, severity: Severity, field: &str, value: Option<&str>, message: String) {
        self.out.push(ConfigError {
            severity,
            object: self.object.clone(),
            field: field.to_string(),
            value: value.map(str::to_string),
            message,
        });
    }

    /// An error for the second of two equal entries of a list, as MetalLB's validateDuplicate.
    fn unique(&mut self, field: &str, values: &[String]) {
        let mut seen = BTreeSet::new();
        for (i, v) in values.iter().enumerate() {
            if !seen.insert(v) {
                self.error(&format!("{field}[{i}]"), Some(v), "duplicate definition");
            }
        }
    }

    fn selectors(&mut self, field: &str, raws: &[RawSelector]) -> Vec<Selector> {
        // MetalLB's validateLabelSelectorDuplicate: no selector twice, no match expression
        // twice in a selector, no value twice in an expression (values compared sorted).
        let canonical = |raw: &RawSelector| {
            let mut exprs: Vec<(String, String, Vec<String>)> = raw
                .match_expressions
                .iter()
                .map(|e| {
                    let mut v = e.values.clone();
                    v.sort();
                    (e.key.clone(), e.operator.clone(), v)
                })
                .collect();
            exprs.sort();
            format!("{:?} {exprs:?}", raw.match_labels)
        };
        let mut seen = BTreeSet::new();
        for (i, raw) in raws.iter().enumerate() {
            if !seen.insert(canonical(raw)) {
                self.error(
                    &format!("{field}[{i}]"),
                    None,
                    "duplicate definition of this selector",
                );
            }
            let mut exprs = BTreeSet::new();
            for (j, e) in raw.match_expressions.iter().enumerate() {
                let mut values = e.values.clone();
                values.sort();
                if !exprs.insert((e.key.clone(), e.operator.clone(), values)) {
                    self.error(
                        &format!("{field}[{i}].matchExpressions[{j}]"),
                        Some(&e.key),
                        "duplicate definition of this match expression",
                    );
                }
                self.unique(
                    &format!("{field}[{i}].matchExpressions[{j}].values"),
                    &e.values,
                );
            }
        }
        let mut out = Vec::with_capacity(raws.len());
        for (i, raw) in raws.iter().enumerate() {
            match Selector::from_raw(raw) {
                Ok(s) => out.push(s),
                Err(e) => {
                    let value = (!e.value.is_empty()).then_some(e.value.as_str());
                    self.error(&format!("{field}[{i}].{}", e.field), value, e.message);
                }
            }
        }
        out
    }
}

#[cfg(feature = "yaml")]
mod patch;

/// Loads a standalone file: multi-document YAML of `metallb.io` kinds and `v1` objects.
#[cfg(feature = "yaml")]
pub fn load_str(text: &str) -> Loaded {
    // A read with no next keeps nothing: the objects are not copied into a cache.
    let mut none = DocumentCache {
        off: true,
        ..DocumentCache::default()
    };
    load_str_cached(text, &mut none)
}

/// [`load_str`] for a file read again: the documents whose text `cache` holds from the last
/// read are not parsed again (a standalone node's reload parses what was edited, not the
/// whole file). The result is the same as [`load_str`]'s.
#[cfg(feature = "yaml")]
pub fn load_str_cached(text: &str, cache: &mut DocumentCache) -> Loaded {
    let mut errors = Vec::new();
    let runs = documents(text, cache, &mut errors);
    load_objects(runs, errors)
}

/// What [`reload_str`] made of a file read again.
#[cfg(feature = "yaml")]
#[derive(Debug)]
pub enum Reloaded {
    /// The file holds the documents the configuration in force was read from.
    Unchanged,
    /// Only documents of Services and EndpointSlices were edited, added or removed, and
    /// validly: the configuration in force was changed in place, to what a whole read of the
    /// file gives. `touched`: the services a plan may read differently (their object or their
    /// slices differ), which may be none (a comment edited); `findings`: the warnings of the
    /// objects that came in.
    Services {
        /// The services whose object or slices differ.
        touched: BTreeSet<ServiceKey>,
        /// The warnings of the objects that came in.
        findings: Vec<ConfigError>,
    },
    /// More changed, or the cache's documents are not those the configuration in force was
    /// read from: the file loaded whole, as [`load_str_cached`] does. The caller takes it
    /// (and says so with [`DocumentCache::taken`]) or refuses it.
    Whole(Box<Loaded>),
}

/// [`load_str_cached`] for a file whose configuration `config` is in force: when only Services
/// and EndpointSlices changed since the read `config` was taken from, `config` is changed by
/// those alone, without a copy or a validation of the other objects (see [`Reloaded`]).
#[cfg(feature = "yaml")]
pub fn reload_str(text: &str, cache: &mut DocumentCache, config: &mut Config) -> Reloaded {
    let mut errors = Vec::new();
    match read(text, cache, &mut errors, Some(config)) {
        Read::Objects(runs) => Reloaded::Whole(Box::new(load_objects(runs, errors))),
        Read::Unchanged => Reloaded::Unchanged,
        Read::Patched(touched) => Reloaded::Services {
            touched,
            findings: errors,
        },
    }
}

/// The documents of the last read of a file, parsed, by their text (see [`load_str_cached`]).
/// Documents whose findings name their place in the file (a syntax error, an object without a
/// name) are not kept: they are parsed again each time.
#[cfg(feature = "yaml")]
#[derive(Debug, Default)]
pub struct DocumentCache {
    /// Each document's text → its slot in `slots`. A read looks each document up once, and
    /// leaves the documents it found where they are.
    docs: std::collections::HashMap<String, usize, foldhash::fast::RandomState>,
    slots: Vec<Slot>,
    /// Slots no document holds.
    free: Vec<usize>,
    /// Counts the reads: a slot not seen by the last read is a document that left.
    reads: u64,
    parsed: usize,
    /// Keeps nothing ([`load_str`]'s).
    off: bool,
    /// The configuration in force was read from these documents ([`DocumentCache::taken`]):
    /// [`reload_str`] may change it by what changed since.
    taken: bool,
    /// The last read held a document twice (the cache holds it once).
    doubled: bool,
}

#[cfg(feature = "yaml")]
impl DocumentCache {
    /// How many documents the last read parsed (the others came from the cache).
    pub fn parsed_last(&self) -> usize {
        self.parsed
    }

    /// How many documents it holds.
    pub fn len(&self) -> usize {
        debug_assert_eq!(self.docs.len() + self.free.len(), self.slots.len());
        self.docs.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Holds document `text`, parsed, as seen by read `read`; false when it holds it already
    /// (the document appears twice in the read).
    fn hold(&mut self, text: &str, parsed: Parsed, read: u64) -> bool {
        if self.docs.contains_key(text) {
            return false;
        }
        let slot = Slot { parsed, seen: read };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at] = slot;
                at
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.docs.insert(text.to_string(), at);
        true
    }

    /// Says that the configuration the last read gave is the one in force: the next
    /// [`reload_str`] may change it in place. A read that was refused is not taken.
    pub fn taken(&mut self) {
        self.taken = true;
    }
}

/// One document's objects and findings.
#[cfg(feature = "yaml")]
type Parsed = (Vec<Object>, Vec<ConfigError>);

/// A document the cache holds, and the read that last found it.
#[cfg(feature = "yaml")]
#[derive(Debug, Default)]
struct Slot {
    parsed: Parsed,
    seen: u64,
}

/// Loads objects as the Kubernetes API serves them (JSON, with `apiVersion` and `kind`), with
/// the same validation as [`load_str`]. `lb-k8s` feeds its watch caches through this, so a
/// cluster and a standalone file mean exactly the same.
///
/// The values may be owned or borrowed (a watch cache's, shared): none is copied but the few
/// objects that are validated after the others are read.
pub fn load_values<V: std::borrow::Borrow<Value>>(values: impl IntoIterator<Item = V>) -> Loaded {
    let mut errors = Vec::new();
    let mut objects = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        objects_of(
            v.borrow(),
            &|| format!("object {}", i + 1),
            &mut objects,
            &mut errors,
        );
    }
    load_objects(vec![objects], errors)
}

/// The kinds read, in the order they are read (each may refer to those before it).
const KINDS: [&str; 11] = [
    "Namespace",
    "Secret",
    "Community",
    "BFDProfile",
    "IPAddressPool",
    "Node",
    "BGPPeer",
    "L2Advertisement",
    "BGPAdvertisement",
    "Service",
    "EndpointSlice",
];

fn rank(obj: &Object) -> Option<u8> {
    let kind = match (obj.api_version.as_str(), obj.kind.as_str()) {
        ("metallb.io/v1beta1", "IPAddressPool") => "IPAddressPool",
        ("metallb.io/v1beta1", "L2Advertisement") => "L2Advertisement",
        ("metallb.io/v1beta1", "BGPAdvertisement") => "BGPAdvertisement",
        ("metallb.io/v1beta1" | "metallb.io/v1beta2", "BGPPeer") => "BGPPeer",
        ("metallb.io/v1beta1", "BFDProfile") => "BFDProfile",
        ("metallb.io/v1beta1", "Community") => "Community",
        ("v1", "Service") => "Service",
        ("v1", "Node") => "Node",
        ("v1", "Namespace") => "Namespace",
        ("v1", "Secret") => "Secret",
        ("discovery.k8s.io/v1", "EndpointSlice") => "EndpointSlice",
        _ => return None,
    };
    KINDS.iter().position(|k| *k == kind).map(|r| r as u8)
}

/// The objects read, in runs (a parse thread's each), taken out kind by kind in (namespace,
/// name) order, then file order. They are ordered by index, in place: a second list of
/// 100,000 objects, and its growth, was half of a large file's peak memory.
struct Ordered {
    runs: Vec<Vec<Option<Object>>>,
    /// (kind's rank, run, index in run), sorted.
    order: Vec<(u8, u32, u32)>,
}

impl Ordered {
    fn new(runs: Vec<Vec<Object>>, errors: &mut Vec<ConfigError>) -> Self {
        let mut runs: Vec<Vec<Option<Object>>> = runs
            .into_iter()
            .map(|run| run.into_iter().map(Some).collect())
            .collect();
        let mut order = Vec::with_capacity(runs.iter().map(Vec::len).sum());
        for (r, run) in runs.iter_mut().enumerate() {
            for (i, slot) in run.iter_mut().enumerate() {
                let Some(obj) = slot else { continue };
                match rank(obj) {
                    Some(k) => order.push((k, r as u32, i as u32)),
                    None => {
                        errors.push(ConfigError {
                            severity: Severity::Warning,
                            object: obj.display(DEFAULT_NAMESPACE),
                            field: "apiVersion".into(),
                            value: Some(obj.api_version.clone()),
                            message: format!(
                                "kind {} of this API version is not read; ignored",
                                obj.kind
                            ),
                        });
                        *slot = None;
                    }
                }
            }
        }
        // Sorted with their names at hand (a comparison reads two strings, not two objects);
        // the index breaks ties: the same order as a stable sort, without its buffer.
        // Services and EndpointSlices by the namespace they are read in (a file's object may
        // name none: `default`), the order a configuration keeps its slices in.
        let read_in = KINDS.iter().position(|k| *k == "Service").unwrap_or(0) as u8;
        let keyed: Vec<(u8, Option<&str>, &str, u32, u32)> = order
            .iter()
            .filter_map(|&(k, r, i)| {
                let o = runs[r as usize][i as usize].as_ref()?;
                let ns = match o.namespace.as_deref() {
                    None if k >= read_in => Some(DEFAULT_NAMESPACE),
                    ns => ns,
                };
                Some((k, ns, o.name.as_str(), r, i))
            })
            .collect();
        // The index makes every entry distinct, so the order is the stable sort's.
        let keyed = crate::par::sort_unstable(keyed);
        order.clear();
        order.extend(keyed.into_iter().map(|(k, _, _, r, i)| (k, r, i)));
        Ordered { runs, order }
    }

    /// The objects of `kind`, taken out.
    fn take(&mut self, kind: &str) -> impl Iterator<Item = Object> + '_ {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(KINDS.len()) as u8;
        let from = self.order.partition_point(|o| o.0 < k);
        let to = self.order.partition_point(|o| o.0 <= k);
        let runs = &mut self.runs;
        self.order[from..to]
            .iter()
            .filter_map(move |&(_, r, i)| runs[r as usize][i as usize].take())
    }
}

fn load_objects(runs: Vec<Vec<Object>>, mut errors: Vec<ConfigError>) -> Loaded {
    let mut objects = Ordered::new(runs, &mut errors);
    let mut take = |k: &str| objects.take(k).collect::<Vec<_>>();

    let mut c = Config::default();
    for obj in take("Namespace") {
        c.namespaces.insert(
            obj.name.clone(),
            Namespace {
                name: obj.name,
                labels: obj.meta.labels,
            },
        );
    }
    for obj in take("Secret") {
        load_secret(obj, &mut c, &mut errors);
    }
    for obj in take("Community") {
        load_community(obj, &mut c, &mut errors);
    }
    for obj in take("BFDProfile") {
        if let Some(p) = load_bfd_profile(&obj, &mut errors) {
            insert_unique(
                &obj,
                p,
                |p| p.name.clone(),
                &mut c.bfd_profiles,
                &mut errors,
            );
        }
    }
    for obj in take("IPAddressPool") {
        if let Some(p) = load_pool(&obj, &c, &mut errors) {
            insert_unique(&obj, p, |p| p.name.clone(), &mut c.pools, &mut errors);
        }
    }
    for obj in take("Node") {
        if let Some(n) = load_node(&obj, &mut errors) {
            insert_unique(&obj, n, |n| n.name.clone(), &mut c.nodes, &mut errors);
        }
    }
    for obj in take("BGPPeer") {
        if let Some(p) = load_peer(&obj, &c, &mut errors) {
            insert_unique(&obj, p, |p| p.name.clone(), &mut c.peers, &mut errors);
        }
    }
    let mut seen = BTreeSet::new();
    for obj in take("L2Advertisement") {
        if !unique_name(&obj, &mut seen, &mut errors) {
            continue;
        }
        if let Some(ad) = load_l2_ad(&obj, &c, &mut errors) {
            c.l2_advertisements.push(ad);
        }
    }
    let mut seen = BTreeSet::new();
    for obj in take("BGPAdvertisement") {
        if !unique_name(&obj, &mut seen, &mut errors) {
            continue;
        }
        if let Some(ad) = load_bgp_ad(&obj, &c, &mut errors) {
            c.bgp_advertisements.push(ad);
        }
    }
    check_bfd_echo_with_ipv6(&mut c, &mut errors);
    for mut obj in objects.take("Service") {
        let service = match obj.early.take() {
            Some(Early::Service(s, found)) => {
                errors.extend(found);
                s
            }
            _ => load_service(&obj, &mut errors),
        };
        if let Some(s) = service {
            insert_unique(&obj, s, |s| s.key.clone(), &mut c.services, &mut errors);
        }
    }
    for mut obj in objects.take("EndpointSlice") {
        let slice = match obj.early.take() {
            Some(Early::EndpointSlice(s, found)) => {
                errors.extend(found);
                s
            }
            _ => load_endpoint_slice(&obj, &mut errors),
        };
        if let Some(s) = slice {
            c.endpoint_slices.push(s);
        }
    }
    Loaded { config: c, errors }
}

// ---- documents -------------------------------------------------------------------------------

/// Splits the text at `---` lines and parses each document on its own (or takes it from
/// `cache`). `kind: List` documents (as `kubectl get -o yaml` writes) are expanded into their
/// items.
#[cfg(feature = "yaml")]
fn documents(
    text: &str,
    cache: &mut DocumentCache,
    errors: &mut Vec<ConfigError>,
) -> Vec<Vec<Object>> {
    match read(text, cache, errors, None) {
        Read::Objects(objects) => objects,
        // Without a configuration to change, every read is whole.
        Read::Unchanged | Read::Patched(_) => Vec::new(),
    }
}

/// What [`read`] made of a file.
#[cfg(feature = "yaml")]
enum Read {
    /// The objects, in runs, for the loader.
    Objects(Vec<Vec<Object>>),
    /// The documents the configuration in force was read from, no more and no fewer.
    Unchanged,
    /// The configuration in force was changed in place (see [`reload_str`]): these services
    /// may read differently.
    Patched(BTreeSet<ServiceKey>),
}

/// [`documents`], or with `base` (the configuration in force, read from the documents `cache`
/// holds, see [`DocumentCache::taken`]) and only Services and EndpointSlices edited, added or
/// removed: `base` changed by those alone, without the objects of the rest copied or read.
#[cfg(feature = "yaml")]
fn read(
    text: &str,
    cache: &mut DocumentCache,
    errors: &mut Vec<ConfigError>,
    base: Option<&mut Config>,
) -> Read {
    let chunks = split_documents(text);
    // Each document is looked up once: one found is marked seen by this read and stays in its
    // slot (only its objects are cloned, once, for the loader); a document that appears twice
    // is found once and parsed the second time. Those not seen left the file.
    cache.reads += 1;
    let read = cache.reads;
    let cached: Vec<Option<usize>> = chunks
        .iter()
        .map(|(_, chunk)| {
            let slot = *cache.docs.get(chunk.as_ref())?;
            let s = &mut cache.slots[slot];
            (s.seen != read).then(|| {
                s.seen = read;
                slot
            })
        })
        .collect();
    let doubled_before = std::mem::take(&mut cache.doubled);
    let mut left: Vec<usize> = Vec::new();
    if cache.docs.len() > chunks.len() - cached.iter().filter(|c| c.is_none()).count() {
        let slots = &cache.slots;
        cache.docs.retain(|_, slot| {
            let kept = slots[*slot].seen == read;
            if !kept {
                left.push(*slot);
            }
            kept
        });
    }
    // A change of the configuration in force is possible when it was read from the cache's
    // documents, each once, and only documents of Services and EndpointSlices left.
    let mut patching = base.is_some()
        && cache.taken
        && !doubled_before
        && left
            .iter()
            .all(|s| patch::services_only(&cache.slots[*s].parsed));
    cache.taken = false;
    // The documents no longer in the file are dropped before this read's allocations; a
    // change keeps them, to take their objects out.
    let mut removed: Vec<Parsed> = Vec::new();
    for slot in left {
        let parsed = std::mem::take(&mut cache.slots[slot].parsed);
        if patching {
            removed.push(parsed);
        }
        cache.free.push(slot);
    }
    let todo: Vec<(usize, usize, &str)> = chunks
        .iter()
        .enumerate()
        .filter(|(i, _)| cached[*i].is_none())
        .map(|(i, (line, chunk))| (i, *line, chunk.as_ref()))
        .collect();
    // Documents are independent: many are parsed on every core, in contiguous runs whose
    // results are put back in file order (the findings read the same either way). Each run
    // returns its objects in one list (not one list a document: those, made on another
    // thread and freed on this one, would stay in that thread's arena).
    let runs: Vec<Run> = if todo.len() < PARALLEL_FROM || crate::par::cores() < 2 {
        vec![parse_run(&todo)]
    } else {
        let per = todo.len().div_ceil(crate::par::cores());
        std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .chunks(per)
                .map(|run| scope.spawn(move || parse_run(run)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    cache.parsed = todo.len();
    if cache.off {
        // Nothing cached, nothing to keep: the runs, in file order, are the objects.
        let mut objects = Vec::with_capacity(runs.len());
        for (_, o, e) in runs {
            objects.push(o);
            errors.extend(e);
        }
        return Read::Objects(objects);
    }
    // The parsed documents, each with its objects and findings, in file order.
    let mut parsed: Vec<Parsed> = Vec::with_capacity(todo.len());
    for (counts, objects, found) in runs {
        let (mut objects, mut found) = (objects.into_iter(), found.into_iter());
        for (n, m) in counts {
            parsed.push((
                objects.by_ref().take(n).collect(),
                found.by_ref().take(m).collect(),
            ));
        }
    }
    patching &= parsed.iter().all(patch::services_only);
    let mut out = Vec::with_capacity(if patching { 0 } else { chunks.len() });
    let mut added = Vec::new();
    let mut doubled = false;
    let mut parsed = parsed.into_iter();
    for ((_, chunk), hit) in chunks.iter().zip(cached) {
        match hit {
            Some(slot) => {
                if !patching {
                    let (objects, errs) = &cache.slots[slot].parsed;
                    out.extend(objects.iter().cloned());
                    errors.extend(errs.iter().cloned());
                }
            }
            None => {
                let (objects, errs) = parsed.next().unwrap_or_default();
                // The cache holds this read's documents alone, but those whose findings name
                // their place in the file.
                if errs.iter().all(|e| !e.object.starts_with("document ")) {
                    doubled |= !cache.hold(chunk, (objects.clone(), errs.clone()), read);
                }
                if patching {
                    added.push((objects, errs));
                } else {
                    out.extend(objects);
                    errors.extend(errs);
                }
            }
        }
    }
    cache.doubled = doubled;
    let Some(base) = base.filter(|_| patching) else {
        return Read::Objects(vec![out]);
    };
    if removed.is_empty() && added.is_empty() {
        cache.taken = true;
        return Read::Unchanged;
    }
    // A document doubled in this read is no change: its copy takes a name the first holds.
    match patch::Patch::of(base, &removed, &added) {
        Some(p) => {
            cache.taken = true;
            Read::Patched(p.apply(base, errors))
        }
        // Not a change of the configuration in force after all (a name taken twice, a
        // finding that refuses the file): the file is read whole, from the cache (which holds
        // every document here: none has a finding that names its place).
        None => {
            let mut out = Vec::new();
            for (_, chunk) in &chunks {
                if let Some(slot) = cache.docs.get(chunk.as_ref()) {
                    let (objects, errs) = &cache.slots[*slot].parsed;
                    out.extend(objects.iter().cloned());
                    errors.extend(errs.iter().cloned());
                }
            }
            Read::Objects(vec![out])
        }
    }
}

/// The text's documents, each with the line it starts on: split at `---` lines, each line
/// ending in a line feed. Without a carriage return in the text, the documents are the text's
/// own slices (a file of 100,000 documents is not copied into as many strings); with one, each
/// line is copied without it.
#[cfg(feature = "yaml")]
fn split_documents(text: &str) -> Vec<(usize, std::borrow::Cow<'_, str>)> {
    use std::borrow::Cow;
    if text.contains('\r') {
        let mut owned = vec![(1, String::new())];
        for (i, line) in text.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("--- ").and_then(content_after_marker) {
                owned.push((i + 1, format!("{rest}\n")));
            } else if line == "---"
                || line.starts_with("--- ")
                || line == "...\r"
                || line == "---\r"
            {
                owned.push((i + 2, String::new()));
            } else if let Some((_, buf)) = owned.last_mut() {
                buf.push_str(line);
                buf.push('\n');
            }
        }
        return owned.into_iter().map(|(l, c)| (l, Cow::Owned(c))).collect();
    }
    // Only a line that begins with `---` may be a marker: those are found by a search of the
    // text, not a walk of every line; the lines before each are counted for its number.
    let mut chunks = Vec::new();
    let (mut start, mut first) = (0, 1);
    let (mut counted, mut line) = (0, 1);
    let marks = text
        .starts_with("---")
        .then_some(0)
        .into_iter()
        .chain(text.match_indices("\n---").map(|(i, _)| i + 1));
    for at in marks {
        let end = text[at..].find('\n').map_or(text.len(), |e| at + e + 1);
        let whole = &text[at..end];
        let bare = whole.strip_suffix('\n').unwrap_or(whole);
        if bare != "---" && !bare.starts_with("--- ") {
            continue;
        }
        line += text.as_bytes()[counted..at]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        counted = at;
        chunks.push((first, Cow::Borrowed(&text[start..at])));
        (start, first) = (end, line + 1);
        // `--- {a: 1}`: what follows the marker begins the document, on the marker's line.
        if bare
            .strip_prefix("--- ")
            .and_then(content_after_marker)
            .is_some()
        {
            (start, first) = (at + "--- ".len(), line);
        }
    }
    let last = &text[start..];
    chunks.push((
        first,
        if last.is_empty() || last.ends_with('\n') {
            Cow::Borrowed(last)
        } else {
            Cow::Owned(format!("{last}\n"))
        },
    ));
    chunks
}

/// What follows a `--- ` document marker on its line, when it is content (not blanks or a
/// comment): it begins the document (`--- {a: 1}`, `--- !tag`).
#[cfg(feature = "yaml")]
fn content_after_marker(rest: &str) -> Option<&str> {
    let content = rest.trim_start();
    (!content.is_empty() && !content.starts_with('#')).then_some(rest)
}

/// One run's documents parsed: how many objects and findings each document gave, then all
/// the objects and all the findings.
#[cfg(feature = "yaml")]
type Run = (Vec<(usize, usize)>, Vec<Object>, Vec<ConfigError>);

#[cfg(feature = "yaml")]
fn parse_run(run: &[(usize, usize, &str)]) -> Run {
    // A document is one object, most often: no growth, and no copy, of a long list.
    let (mut counts, mut objects, mut errors) = (
        Vec::with_capacity(run.len()),
        Vec::with_capacity(run.len()),
        Vec::new(),
    );
    for &(i, line, chunk) in run {
        let (o, e) = (objects.len(), errors.len());
        parse_document(i, line, chunk, &mut objects, &mut errors);
        counts.push((objects.len() - o, errors.len() - e));
    }
    (counts, objects, errors)
}

/// Below this many documents to parse, a file is parsed on one thread.
#[cfg(feature = "yaml")]
const PARALLEL_FROM: usize = 512;

/// Parses document `index` (0-based), which starts at `line`, into `out` and `errors`.
#[cfg(feature = "yaml")]
fn parse_document(
    index: usize,
    line: usize,
    chunk: &str,
    out: &mut Vec<Object>,
    errors: &mut Vec<ConfigError>,
) {
    if chunk.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "..."
    }) {
        return;
    }
    let at = || format!("document {} (line {line})", index + 1);
    let read = match super::yaml::value(chunk) {
        Some(value) => Ok(value),
        None => serde_saphyr::from_str_with_options::<Value>(chunk, yaml_options()),
    };
    match read {
        Ok(Value::Null) => {}
        Ok(value) => objects_of(&value, &at, out, errors),
        Err(e) => errors.push(ConfigError {
            severity: Severity::Error,
            object: at(),
            field: String::new(),
            value: None,
            message: format!("not valid YAML: {}", first_line(&e.to_string())),
        }),
    }
}

/// YAML 1.2 core schema: only `true`/`false` are booleans, so a label value such as `y` or `on`
/// stays a string. Duplicate keys are errors, as in Kubernetes' strict decoding.
#[cfg(feature = "yaml")]
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
    }
}

/// The objects of one document (a List's items each), read from `value` without copying it:
/// only the objects read later (the `metallb.io` kinds, Nodes, Namespaces, Secrets: few) keep
/// a copy of their body. `at` names the document in a finding (made only for one).
fn objects_of(
    value: &Value,
    at: &dyn Fn() -> String,
    out: &mut Vec<Object>,
    errors: &mut Vec<ConfigError>,
) {
    let mut fail = |field: &str, message: &str| {
        errors.push(ConfigError {
            severity: Severity::Error,
            object: at(),
            field: field.to_string(),
            value: None,
            message: message.to_string(),
        })
    };
    let Value::Object(map) = value else {
        return fail("", "a document must be a Kubernetes object (a mapping)");
    };
    let (Some(api_version), Some(kind)) = (
        map.get("apiVersion").and_then(Value::as_str),
        map.get("kind").and_then(Value::as_str),
    ) else {
        return fail("", "apiVersion and kind are required strings");
    };
    if kind == "List" {
        match map.get("items") {
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    objects_of(item, &|| format!("{} items[{i}]", at()), out, errors);
                }
            }
            _ => fail("items", "a List needs an items list"),
        }
        return;
    }
    let mut meta: objects::RawMeta = match map.get("metadata") {
        Some(m) => match tracked(m) {
            Ok(meta) => meta,
            Err(e) => return fail(&format!("metadata.{}", e.path()), &e.inner().to_string()),
        },
        None => objects::RawMeta::default(),
    };
    // The identity moves to the object (its metadata's copy is never read).
    let Some(name) = meta.name.take().filter(|n| !n.is_empty()) else {
        return fail(
            "metadata.name",
            &format!("{kind}: metadata.name is required"),
        );
    };
    let mut obj = Object {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name,
        namespace: meta.namespace.take(),
        meta,
        body: Value::Null,
        early: None,
    };
    let mut errs = Vec::new();
    obj.early = match (obj.api_version.as_str(), obj.kind.as_str()) {
        ("v1", "Service") => Some(Early::Service(
            load_service_in(&obj, value, &mut errs),
            errs,
        )),
        ("discovery.k8s.io/v1", "EndpointSlice") => Some(Early::EndpointSlice(
            load_endpoint_slice_in(&obj, value, &mut errs),
            errs,
        )),
        _ => None,
    };
    if obj.early.is_some() {
        // Read: what is left of the document is its identity (the typed object holds its
        // labels and annotations).
        obj.meta.labels = Default::default();
        obj.meta.annotations = Default::default();
    } else {
        obj.body = value.clone();
    }
    out.push(obj);
}

#[cfg(feature = "yaml")]
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// `v` as `T`, or the error with the path where it lies. The path is tracked only when there
/// is an error (the second read, with tracking, meets the same error): tracking it on every
/// read was most of the time a 100,000-service file took to become typed objects.
fn tracked<T: DeserializeOwned>(
    v: &Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    match T::deserialize(v) {
        Ok(t) => Ok(t),
        Err(_) => serde_path_to_error::deserialize::<_, T>(v),
    }
}

/// Deserializes `body[key]` (absent: `null`) as `T`, reporting the path of a type error.
fn section<T: DeserializeOwned>(obj: &Object, key: &str, r: &mut Report<'_>) -> Option<T> {
    let empty = Value::Object(Default::default());
    let v = match obj.body.get(key) {
        None | Some(Value::Null) => &empty,
        Some(v) => v,
    };
    match tracked::<T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                key.to_string()
            } else {
                format!("{key}.{path}")
            };
            r.error(&field, None, e.into_inner().to_string());
            None
        }
    }
}

fn report<'a>(obj: &Object, default_ns: &str, errors: &'a mut Vec<ConfigError>) -> Report<'a> {
    Report {
        object: obj.display(default_ns),
        out: errors,
        failed: false,
    }
}

fn insert_unique<K: Ord, T>(
    obj: &Object,
    item: T,
    key: impl Fn(&T) -> K,
    map: &mut BTreeMap<K, T>,
    errors: &mut Vec<ConfigError>,
) {
    match map.entry(key(&item)) {
        std::collections::btree_map::Entry::Occupied(_) => {
            report(obj, DEFAULT_METALLB_NAMESPACE, errors).error(
                "metadata.name",
                Some(&obj.name),
                format!("another {} has this name", obj.kind),
            );
        }
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(item);
        }
    }
}

fn unique_name(obj: &Object, seen: &mut BTreeSet<String>, errors: &mut Vec<ConfigError>) -> bool {
    if seen.insert(obj.name.clone()) {
        return true;
    }
    report(obj, DEFAULT_METALLB_NAMESPACE, errors).error(
        "metadata.name",
        Some(&obj.name),
        format!("another {} has this name", obj.kind),
    );
    false
}

// ---- metallb.io kinds ------------------------------------------------------------------------

fn load_community(obj: Object, c: &mut Config, errors: &mut Vec<ConfigError>) {
    let mut r = report(&obj, DEFAULT_METALLB_NAMESPACE, errors);
    let Some(spec) = section::<raw::CommunitySpec>(&obj, "spec", &mut r) else {
        return;
    };
    let mut accepted = BTreeMap::new();
    for (i, alias) in spec.communities.iter().enumerate() {
        let field = format!("spec.communities[{i}]");
        if alias.name.is_empty() {
            r.error(&format!("{field}.name"), None, "an alias needs a name");
        } else if c.communities.contains_key(&alias.name) || accepted.contains_key(&alias.name) {
            r.error(
                &format!("{field}.name"),
                Some(&alias.name),
                "duplicate community alias (aliases must be unique across all Community objects)",
            );
        }
        match Community::parse(&alias.value) {
            Some(v) => {
                accepted.insert(alias.name.clone(), v);
            }
            None => r.error(
                &format!("{field}.value"),
                Some(&alias.value),
                "not a community: write AS:value (16-bit each) or large:global:local1:local2",
            ),
        }
    }
    if !r.failed {
        c.communities.extend(accepted);
    }
}

fn load_bfd_profile(obj: &Object, errors: &mut Vec<ConfigError>) -> Option<BfdProfile> {
    let mut r = report(obj, DEFAULT_METALLB_NAMESPACE, errors);
    let spec = section::<raw::BfdProfileSpec>(obj, "spec", &mut r)?;
    let mut num = |field: &str, v: Option<i64>, lo: i64, hi: i64, default: u32| -> u32 {
        match v {
            None => default,
            Some(x) if (lo..=hi).contains(&x) => x as u32,
            Some(x) => {
                r.error(
                    &format!("spec.{field}"),
                    Some(&x.to_string()),
                    format!("must be between {lo} and {hi}"),
                );
                default
            }
        }
    };
    let p = BfdProfile {
        name: obj.name.clone(),
        receive_interval: num("receiveInterval", spec.receive_interval, 10, 60000, 300),
        transmit_interval: num("transmitInterval", spec.transmit_interval, 10, 60000, 300),
        detect_multiplier: num("detectMultiplier", spec.detect_multiplier, 2, 255, 3),
        echo_interval: num("echoInterval", spec.echo_interval, 10, 60000, 50),
        minimum_ttl: num("minimumTtl", spec.minimum_ttl, 1, 254, 254),
        echo_mode: spec.echo_mode,
        passive_mode: spec.passive_mode,
    };
    if p.echo_mode {
        r.warn(
            "spec.echoMode",
            None,
            "echo mode is not implemented: the sessions run in asynchronous mode at transmitInterval/receiveInterval, which detects a failure as fast without asking the peer to forward our own packets back",
        );
    }
    (!r.failed).then_some(p)
}

fn load_pool(obj: &Object, c: &Config, errors: &mut Vec<ConfigError>) -> Option<Pool> {
    let mut r = report(obj, DEFAULT_METALLB_NAMESPACE, errors);
    let spec = section::<raw::IpAddressPoolSpec>(obj, "spec", &mut r)?;
    if spec.addresses.is_empty() {
        r.error(
            "spec.addresses",
            None,
            "at least one address range is required",
        );
    }
    let mut ranges: Vec<(usize, IpRange)> = Vec::new();
    for (i, text) in spec.addresses.iter().enumerate() {
        match IpRange::parse(text) {
            Err(e) => r.error(&format!("spec.addresses[{i}]"), Some(text), e.to_string()),
            Ok(range) => {
                if let Some((j, _)) = ranges.iter().find(|(_, o)| o.overlaps(&range)) {
                    r.error(
                        &format!("spec.addresses[{i}]"),
                        Some(text),
                        format!("overlaps spec.addresses[{j}] of the same pool"),
                    );
                }
                ranges.push((i, range));
            }
        }
    }
    // Overlap with pools accepted before this one (name order).
    for (i, range) in &ranges {
        for other in c.pools.values() {
            if other.ranges.iter().any(|o| o.overlaps(range)) {
                r.error(
                    &format!("spec.addresses[{i}]"),
                    Some(&spec.addresses[*i]),
                    format!("overlaps IPAddressPool {}", other.name),
                );
            }
        }
    }
    let allocation = spec.service_allocation.as_ref().map(|a| {
        let mut namespaces = BTreeSet::new();
        for (i, ns) in a.namespaces.iter().enumerate() {
            if !namespaces.insert(ns.clone()) {
                r.error(
                    &format!("spec.serviceAllocation.namespaces[{i}]"),
                    Some(ns),
                    "duplicate namespace",
                );
            }
        }
        PoolAllocation {
            priority: a.priority,
            namespaces,
            namespace_selectors: r.selectors(
                "spec.serviceAllocation.namespaceSelectors",
                &a.namespace_selectors,
            ),
            service_selectors: r.selectors(
                "spec.serviceAllocation.serviceSelectors",
                &a.service_selectors,
            ),
        }
    });
    if r.failed {
        return None;
    }
    // Kept in the order written: MetalLB walks a pool's addresses that way (config.go, the
    // pool's CIDRs in spec order; allocator.go), so the first address given is the first one
    // a service gets.
    let ranges: Vec<IpRange> = ranges.into_iter().map(|(_, r)| r).collect();
    Some(Pool {
        name: obj.name.clone(),
        labels: obj.meta.labels.clone(),
        ranges,
        auto_assign: spec.auto_assign.unwrap_or(true),
        avoid_buggy_ips: spec.avoid_buggy_ips,
        allocation,
    })
}

fn pool_selection(
    r: &mut Report<'_>,
    c: &Config,
    names: &[String],
    selectors: &[RawSelector],
) -> PoolSelection {
    r.unique("spec.ipAddressPools", names);
    for (i, name) in names.iter().enumerate() {
        // MetalLB skips a name with no pool and keeps the advertisement for the others
        // (internal/config/config.go, setL2/BGPAdvertisementsToPools).
        if !c.pools.contains_key(name) {
            r.warn(
                &format!("spec.ipAddressPools[{i}]"),
                Some(name),
                "no valid IPAddressPool has this name: skipped, the advertisement serves the others",
            );
        }
    }
    PoolSelection {
        names: names.iter().cloned().collect(),
        selectors: r.selectors("spec.ipAddressPoolSelectors", selectors),
    }
}

fn load_l2_ad(obj: &Object, c: &Config, errors: &mut Vec<ConfigError>) -> Option<L2Advertisement> {
    let mut r = report(obj, DEFAULT_METALLB_NAMESPACE, errors);
    let spec = section::<raw::L2AdvertisementSpec>(obj, "spec", &mut r)?;
    let pools = pool_selection(
        &mut r,
        c,
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
    );
    let node_selectors = r.selectors("spec.nodeSelectors", &spec.node_selectors);
    let service_selectors = r.selectors("spec.serviceSelectors", &spec.service_selectors);
    for (i, ifname) in spec.interfaces.iter().enumerate() {
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
            r.error(
                &format!("spec.interfaces[{i}]"),
                Some(ifname),
                "not a valid interface name (1-15 characters, no '/' or spaces)",
            );
        }
    }
    let mut preferred = Vec::new();
    for (i, p) in spec.preferred_node_selectors.iter().enumerate() {
        let field = format!("spec.preferredNodeSelectors[{i}]");
        if !(1..=100).contains(&p.weight) {
            r.error(
                &format!("{field}.weight"),
                Some(&p.weight.to_string()),
                "weight must be between 1 and 100",
            );
            continue;
        }
        let sel = r.selectors(
            &format!("{field}.preference"),
            std::slice::from_ref(&p.preference),
        );
        if let Some(sel) = sel.into_iter().next() {
            preferred.push((p.weight as u32, sel));
        }
    }
    (!r.failed).then(|| L2Advertisement {
        name: obj.name.clone(),
        pools,
        node_selectors,
        interfaces: spec.interfaces,
        service_selectors,
        preferred,
    })
}

fn load_bgp_ad(
    obj: &Object,
    c: &Config,
    errors: &mut Vec<ConfigError>,
) -> Option<BgpAdvertisement> {
    let mut r = report(obj, DEFAULT_METALLB_NAMESPACE, errors);
    let spec = section::<raw::BgpAdvertisementSpec>(obj, "spec", &mut r)?;
    let pools = pool_selection(
        &mut r,
        c,
        &spec.ip_address_pools,
        &spec.ip_address_pool_selectors,
    );
    let mut length = |field: &str, v: Option<i64>, lo: i64, hi: i64| -> u8 {
        match v {
            None => hi as u8,
            Some(x) if (lo..=hi).contains(&x) => x as u8,
            Some(x) => {
                r.error(
                    field,
                    Some(&x.to_string()),
                    format!("must be between {lo} and {hi}"),
                );
                hi as u8
            }
        }
    };
    let agg4 = length("spec.aggregationLength", spec.aggregation_length, 1, 32);
    let agg6 = length(
        "spec.aggregationLengthV6",
        spec.aggregation_length_v6,
        0,
        128,
    );
    // The aggregate must not cover addresses outside the pool: it may not be shorter than the
    // pool's own prefix.
    for pool in c.pools.values().filter(|p| pools.selects(p)) {
        for range in &pool.ranges {
            let (field, agg) = match range.family() {
                Family::V4 => ("spec.aggregationLength", agg4),
                Family::V6 => ("spec.aggregationLengthV6", agg6),
            };
            let shortest = range.shortest_prefix();
            if agg < shortest {
                r.error(
                    field,
                    Some(&agg.to_string()),
                    format!(
                        "aggregation length is shorter than the prefix length {shortest} of \
                         {range} in IPAddressPool {}",
                        pool.name
                    ),
                );
            }
        }
    }
    if spec.communities.len() > 63 {
        r.error(
            "spec.communities",
            None,
            format!(
                "{} communities; at most 63 are allowed",
                spec.communities.len()
            ),
        );
    }
    let mut communities = BTreeSet::new();
    for (i, text) in spec.communities.iter().enumerate() {
        let field = format!("spec.communities[{i}]");
        match Community::parse(text).or_else(|| c.communities.get(text).copied()) {
            Some(v) => {
                communities.insert(v);
            }
            None if Community::looks_like_value(text) => r.error(
                &field,
                Some(text),
                "not a community: write AS:value (16-bit each) or large:global:local1:local2",
            ),
            None => r.error(&field, Some(text), "no Community object defines this alias"),
        }
    }
    r.unique("spec.peers", &spec.peers);
    r.unique("spec.communities", &spec.communities);
    for (i, peer) in spec.peers.iter().enumerate() {
        if !c.peers.contains_key(peer) {
            r.warn(
                &format!("spec.peers[{i}]"),
                Some(peer),
                "no valid BGPPeer has this name; nothing is advertised to it",
            );
        }
    }
    let service_selectors = r.selectors("spec.serviceSelectors", &spec.service_selectors);
    if !service_selectors.is_empty() && (agg4 != 32 || agg6 != 128) {
        r.error(
            "spec.serviceSelectors",
            None,
            "serviceSelectors may only be used with the default aggregation lengths (32 and 128)",
        );
    }
    let ad = BgpAdvertisement {
        name: obj.name.clone(),
        pools,
        aggregation_length: agg4,
        aggregation_length_v6: agg6,
        local_pref: spec.local_pref.filter(|&p| p != 0),
        communities,
        node_selectors: r.selectors("spec.nodeSelectors", &spec.node_selectors),
        peers: spec.peers.iter().cloned().collect(),
        service_selectors,
    };
    check_local_pref_conflict(&ad, c, &mut r);
    check_attribute_size(&ad, c, &mut r);
    (!r.failed).then_some(ad)
}

/// Path-attribute bytes one UPDATE has for communities, after the header, the other
/// attributes (ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF, an IPv6 MP_REACH with two next hops)
/// and one /128: what is left of 4096 octets (RFC 4271 §4.1), with a margin.
pub const COMMUNITY_ROOM: usize = 3800;

/// The communities a prefix can carry are the union over the advertisements that cover its
/// pool (the announcer merges them); that union must fit one UPDATE, or the route could never
/// be sent.
fn check_attribute_size(ad: &BgpAdvertisement, c: &Config, r: &mut Report<'_>) {
    for pool in c.pools.values().filter(|p| ad.pools.selects(p)) {
        let mut union: BTreeSet<Community> = ad.communities.clone();
        let mut names = vec![ad.name.clone()];
        for other in c
            .bgp_advertisements
            .iter()
            .filter(|o| o.pools.selects(pool))
        {
            union.extend(other.communities.iter().copied());
            names.push(other.name.clone());
        }
        let (legacy, large) = union.iter().fold((0usize, 0usize), |(l, g), c| match c {
            Community::Legacy(_) => (l + 1, g),
            Community::Large(..) => (l, g + 1),
        });
        let bytes = 4 + 4 * legacy + 4 + 12 * large;
        if bytes > COMMUNITY_ROOM {
            r.error(
                "spec.communities",
                None,
                format!(
                    "with BGPAdvertisement(s) {} a route of IPAddressPool {} would carry {legacy} \
                     communities and {large} large communities ({bytes} octets): more than a \
                     4096-octet UPDATE holds ({COMMUNITY_ROOM} for communities)",
                    names.join(", "),
                    pool.name
                ),
            );
            return;
        }
    }
}

/// Two advertisements that would put different LOCAL_PREFs on the same prefix, to the same peer,
/// from the same node, conflict (MetalLB rejects the config).
///
/// Advertisements with `serviceSelectors` are not compared here: which services they carry is
/// known only at announce time, where the plan decides per service (MetalLB config.go around
/// 995, speaker/bgp_controller.go "conflictingAdvertisements").
fn check_local_pref_conflict(ad: &BgpAdvertisement, c: &Config, r: &mut Report<'_>) {
    let Some(mine) = ad.local_pref else {
        return;
    };
    if !ad.service_selectors.is_empty() {
        return;
    }
    for other in &c.bgp_advertisements {
        if !other.service_selectors.is_empty() {
            continue;
        }
        let Some(theirs) = other.local_pref else {
            continue;
        };
        if theirs == mine {
            continue;
        }
        let shared_pool = c
            .pools
            .values()
            .find(|p| ad.pools.selects(p) && other.pools.selects(p) && same_prefixes(ad, other, p));
        let peers_overlap = ad.peers.is_empty()
            || other.peers.is_empty()
            || ad.peers.intersection(&other.peers).next().is_some();
        let nodes_overlap = ad.node_selectors.is_empty()
            || other.node_selectors.is_empty()
            || c.nodes.is_empty()
            || c.nodes.values().any(|n| {
                crate::selector::any_matches(&ad.node_selectors, &n.labels)
                    && crate::selector::any_matches(&other.node_selectors, &n.labels)
            });
        if let Some(pool) = shared_pool
            && peers_overlap
            && nodes_overlap
        {
            r.error(
                "spec.localPref",
                Some(&mine.to_string()),
                format!(
                    "conflicts with localPref {theirs} of BGPAdvertisement {} for the same \
                     prefixes of IPAddressPool {}",
                    other.name, pool.name
                ),
            );
        }
    }
}

fn same_prefixes(a: &BgpAdvertisement, b: &BgpAdvertisement, pool: &Pool) -> bool {
    Family::BOTH
        .iter()
        .any(|&f| pool.has_family(f) && a.aggregation_for(f) == b.aggregation_for(f))
}

/// `echoMode` BFD is not allowed on a peer that gets IPv6 prefixes.
fn check_bfd_echo_with_ipv6(c: &mut Config, errors: &mut Vec<ConfigError>) {
    let mut bad = Vec::new();
    for peer in c.peers.values() {
        let Some(profile) = peer
            .bfd_profile
            .as_ref()
            .and_then(|p| c.bfd_profiles.get(p))
        else {
            continue;
        };
        if !profile.echo_mode {
            continue;
        }
        let gets_v6 = c.bgp_advertisements.iter().any(|ad| {
            ad.targets_peer(&peer.name)
                && c.pools
                    .values()
                    .any(|p| ad.pools.selects(p) && p.has_family(Family::V6))
        });
        if gets_v6 {
            bad.push(peer.name.clone());
        }
    }
    for name in bad {
        let Some(peer) = c.peers.remove(&name) else {
            continue;
        };
        errors.push(ConfigError {
            severity: Severity::Error,
            object: format!("BGPPeer {DEFAULT_METALLB_NAMESPACE}/{name}"),
            field: "spec.bfdProfile".into(),
            value: peer.bfd_profile.clone(),
            message: "a BFD profile with echoMode cannot be used on a peer that IPv6 prefixes \
                      are advertised to"
                .into(),
        });
    }
}

fn asn(r: &mut Report<'_>, field: &str, v: Option<u64>) -> Option<u32> {
    match v {
        Some(0) => {
            r.error(field, Some("0"), "an AS number cannot be 0");
            None
        }
        Some(x) => u32::try_from(x).map(Some).unwrap_or_else(|_| {
            r.error(
                field,
                Some(&x.to_string()),
                "an AS number must fit in 32 bits",
            );
            None
        }),
        None => None,
    }
}

fn load_peer(obj: &Object, c: &Config, errors: &mut Vec<ConfigError>) -> Option<BgpPeer> {
    let mut r = report(obj, DEFAULT_METALLB_NAMESPACE, errors);
    let spec = section::<BgpPeerSpec>(obj, "spec", &mut r)?;
    if obj.api_version == "metallb.io/v1beta1" {
        for field in spec.v1beta2_only_fields() {
            r.error(
                &format!("spec.{field}"),
                None,
                "this field exists only in metallb.io/v1beta2; change apiVersion",
            );
        }
    }
    let my_asn = asn(&mut r, "spec.myASN", spec.my_asn);
    if spec.my_asn.is_none() {
        r.error("spec.myASN", None, "myASN is required");
    }
    let peer_asn = peer_asn(&mut r, &spec);
    let local_asn = asn(&mut r, "spec.localASN", spec.local_asn);
    let target = peer_target(&mut r, &spec);
    let source_address = peer_source(&mut r, &spec, target.as_ref());
    let port = peer_port(&mut r, &spec);
    let (hold_time, keepalive_time, connect) = peer_timers(&mut r, &spec);
    let router_id = spec.router_id.as_ref().and_then(|a| {
        a.parse::<Ipv4Addr>()
            .map_err(|_| {
                r.error(
                    "spec.routerID",
                    Some(a),
                    "a router ID must be an IPv4 address",
                )
            })
            .ok()
    });
    let password = peer_password(&mut r, obj, c, &spec);
    if let Some(profile) = &spec.bfd_profile
        && !c.bfd_profiles.contains_key(profile)
    {
        r.error(
            "spec.bfdProfile",
            Some(profile),
            "no valid BFDProfile has this name",
        );
    }
    let node_selectors = r.selectors("spec.nodeSelectors", &spec.node_selectors);
    let (Some(my_asn), Some(peer_asn), Some(target)) = (my_asn, peer_asn, target) else {
        return None;
    };
    let peer = BgpPeer {
        name: obj.name.clone(),
        my_asn,
        peer_asn,
        local_asn,
        target,
        source_address,
        port,
        hold_time,
        keepalive_time,
        connect_time: connect,
        router_id,
        node_selectors,
        password,
        bfd_profile: spec.bfd_profile.clone(),
        graceful_restart: spec.enable_graceful_restart,
        ebgp_multihop: spec.ebgp_multi_hop,
        vrf: spec.vrf.clone().filter(|v| !v.is_empty()),
        disable_mp: spec.disable_mp,
        dual_stack_address_family: spec.dual_stack_address_family,
    };
    peer_warnings(&mut r, &peer);
    (!r.failed).then_some(peer)
}

/// `peerASN` or `dynamicASN`, exactly one.
fn peer_asn(r: &mut Report<'_>, spec: &BgpPeerSpec) -> Option<PeerAsn> {
    match (spec.peer_asn, spec.dynamic_asn.as_deref()) {
        (Some(_), Some(_)) => {
            r.error(
                "spec.dynamicASN",
                None,
                "set peerASN or dynamicASN, not both",
            );
            None
        }
        (None, None) => {
            r.error(
                "spec.peerASN",
                None,
                "one of peerASN and dynamicASN is required",
            );
            None
        }
        (Some(_), None) => asn(r, "spec.peerASN", spec.peer_asn).map(PeerAsn::Fixed),
        (None, Some("internal")) => Some(PeerAsn::Internal),
        (None, Some("external")) => Some(PeerAsn::External),
        (None, Some(other)) => {
            r.error(
                "spec.dynamicASN",
                Some(other),
                "must be internal or external",
            );
            None
        }
    }
}

/// `peerAddress` or `interface` (unnumbered), exactly one.
fn peer_target(r: &mut Report<'_>, spec: &BgpPeerSpec) -> Option<PeerTarget> {
    match (&spec.peer_address, &spec.interface) {
        (Some(_), Some(_)) => {
            r.error(
                "spec.interface",
                None,
                "set peerAddress or interface, not both",
            );
            None
        }
        (None, None) => {
            r.error(
                "spec.peerAddress",
                None,
                "one of peerAddress and interface is required",
            );
            None
        }
        (Some(a), None) => match a.parse::<IpAddr>() {
            Ok(ip) => Some(PeerTarget::Address(ip)),
            Err(_) => {
                r.error("spec.peerAddress", Some(a), "not an IP address");
                None
            }
        },
        (None, Some(i)) => Some(PeerTarget::Interface(i.clone())),
    }
}

/// `sourceAddress`, of the peer address's family.
fn peer_source(
    r: &mut Report<'_>,
    spec: &BgpPeerSpec,
    target: Option<&PeerTarget>,
) -> Option<IpAddr> {
    let source_address: Option<IpAddr> = spec.source_address.as_ref().and_then(|a| {
        a.parse::<IpAddr>()
            .map_err(|_| r.error("spec.sourceAddress", Some(a), "not an IP address"))
            .ok()
    });
    if let (Some(src), Some(PeerTarget::Address(dst))) = (source_address, target)
        && Family::of(src) != Family::of(*dst)
    {
        r.error(
            "spec.sourceAddress",
            Some(&src.to_string()),
            "source and peer addresses are of different families",
        );
    }
    source_address
}

/// `peerPort`, 179 when unset or out of range (reported).
fn peer_port(r: &mut Report<'_>, spec: &BgpPeerSpec) -> u16 {
    match spec.peer_port {
        None => 179,
        Some(p) if (1..=16384).contains(&p) => p as u16,
        Some(p) => {
            r.error(
                "spec.peerPort",
                Some(&p.to_string()),
                "must be between 1 and 16384",
            );
            179
        }
    }
}

/// `holdTime`, `keepaliveTime` (each derived from the other when only one is set, as MetalLB
/// does) and `connectTime`, checked against RFC 4271.
fn peer_timers(
    r: &mut Report<'_>,
    spec: &BgpPeerSpec,
) -> (Option<Duration>, Option<Duration>, Option<Duration>) {
    let mut duration = |field: &str, v: &Option<String>| -> Option<Duration> {
        let text = v.as_ref()?;
        parse_go_duration(text)
            .map_err(|e| r.error(field, Some(text), e.to_string()))
            .ok()
    };
    let hold = duration("spec.holdTime", &spec.hold_time);
    let keepalive = duration("spec.keepaliveTime", &spec.keepalive_time);
    let connect = duration("spec.connectTime", &spec.connect_time);
    // RFC 4271 §4.2: the hold time is whole seconds, 0 or at least 3; keepalives go out at
    // whole-second intervals shorter than it. A hold time derived from keepaliveTime (3x, as
    // MetalLB) is judged the same, against the field the user wrote.
    let (hold_time, keepalive_time) = match (hold, keepalive) {
        (Some(h), Some(k)) => (Some(h), Some(k)),
        (Some(h), None) => (Some(h), Some(h / 3)),
        (None, Some(k)) => (Some(k * 3), Some(k)),
        (None, None) => (None, None),
    };
    if let Some(h) = hold_time {
        let secs = h.as_secs();
        if secs != 0 && secs < 3 {
            match hold {
                Some(_) => r.error(
                    "spec.holdTime",
                    spec.hold_time.as_deref(),
                    "must be 0 or at least 3s",
                ),
                None => r.error(
                    "spec.keepaliveTime",
                    spec.keepalive_time.as_deref(),
                    "gives a hold time (3x) under 3s: must be at least 1s, or set holdTime",
                ),
            }
        } else if let (Some(k), Some(_)) = (keepalive, hold) {
            if secs == 0 && !k.is_zero() {
                r.error(
                    "spec.keepaliveTime",
                    spec.keepalive_time.as_deref(),
                    "must be 0 when holdTime is 0 (keepalives off)",
                );
            } else if secs != 0 && k >= h {
                r.error(
                    "spec.keepaliveTime",
                    spec.keepalive_time.as_deref(),
                    "must be shorter than holdTime",
                );
            } else if secs != 0 && k < Duration::from_secs(1) {
                r.warn(
                    "spec.keepaliveTime",
                    spec.keepalive_time.as_deref(),
                    "under 1s: BGP counts keepalives in whole seconds, 1s is used",
                );
            }
        }
    }
    if let Some(ct) = connect
        && (ct.subsec_nanos() != 0 || !(1..=65535).contains(&ct.as_secs()))
    {
        r.error(
            "spec.connectTime",
            spec.connect_time.as_deref(),
            "must be whole seconds between 1s and 65535s",
        );
    }
    (hold_time, keepalive_time, connect)
}

/// `password` or `passwordSecret` (which must name a basic-auth Secret with a password).
fn peer_password(
    r: &mut Report<'_>,
    obj: &Object,
    c: &Config,
    spec: &BgpPeerSpec,
) -> Option<Password> {
    match (&spec.password, &spec.password_secret) {
        (Some(_), Some(_)) => {
            r.error(
                "spec.passwordSecret",
                None,
                "set password or passwordSecret, not both",
            );
            None
        }
        (Some(p), None) => Some(Password::Plain(p.clone())),
        (None, Some(s)) => {
            let namespace = s
                .namespace
                .clone()
                .or_else(|| obj.namespace.clone())
                .unwrap_or_else(|| DEFAULT_METALLB_NAMESPACE.to_string());
            // MetalLB's passwordFromSecretForPeer (internal/config/config.go): the Secret must
            // exist, be of type kubernetes.io/basic-auth and hold a `password`.
            let key = (namespace.clone(), s.name.clone());
            let shown = format!("{namespace}/{}", s.name);
            match (c.secrets.get(&key), c.secret_types.get(&key)) {
                (None, _) => r.error(
                    "spec.passwordSecret",
                    Some(&shown),
                    "the Secret is not present; this peer cannot start without it",
                ),
                (Some(_), Some(t)) if t != "kubernetes.io/basic-auth" => r.error(
                    "spec.passwordSecret",
                    Some(&shown),
                    format!("the Secret is of type {t}; kubernetes.io/basic-auth is expected"),
                ),
                (Some(data), _) if !data.contains_key("password") => r.error(
                    "spec.passwordSecret",
                    Some(&shown),
                    "the Secret has no password key",
                ),
                _ => {}
            }
            Some(Password::Secret {
                namespace,
                name: s.name.clone(),
            })
        }
        (None, None) => None,
    }
}

/// What a valid peer still deserves a word about: what this build skips, deprecations, and
/// multihop on iBGP.
fn peer_warnings(r: &mut Report<'_>, peer: &BgpPeer) {
    if let (PeerTarget::Interface(_), Some(b)) = (&peer.target, &peer.bfd_profile) {
        r.warn(
            "spec.bfdProfile",
            Some(b),
            "BFD is not run for an unnumbered peer yet: the session runs without it (its hold timer detects a failure)",
        );
    }
    if let Some(v) = &peer.vrf {
        r.warn(
            "spec.vrf",
            Some(v),
            "VRFs are not supported yet: this peer will be ignored (every other peer and layer 2 run)",
        );
    }
    if peer.disable_mp {
        r.warn(
            "spec.disableMP",
            None,
            "deprecated; sessions carry the address families they can (see dualStackAddressFamily)",
        );
    }
    if peer.ebgp_multihop && peer.is_ibgp() {
        r.error(
            "spec.ebgpMultiHop",
            None,
            "ebgpMultiHop cannot be set on an iBGP peer",
        );
    }
}

/// A text that is not a Go `time.Duration`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a duration (write e.g. 90s, 1m30s, 500ms): {0:?}")]
pub struct DurationError(pub String);

/// Parses a Go `time.Duration` string (`90s`, `1m30s`, `500ms`, `1h`).
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

// ---- v1 and discovery objects ----------------------------------------------------------------

fn load_secret(obj: Object, c: &mut Config, errors: &mut Vec<ConfigError>) {
    let mut r = report(&obj, DEFAULT_METALLB_NAMESPACE, errors);
    let Some(secret) = whole::<raw::RawSecret>(&obj, &mut r) else {
        return;
    };
    let mut data = BTreeMap::new();
    for (k, v) in &secret.data {
        match base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(s) => {
                data.insert(k.clone(), s);
            }
            None => r.error(&format!("data.{k}"), None, "not base64-encoded UTF-8"),
        }
    }
    data.extend(secret.string_data);
    let ns = obj
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_METALLB_NAMESPACE.to_string());
    if !r.failed {
        c.secret_types.insert(
            (ns.clone(), obj.name.clone()),
            secret.type_.clone().unwrap_or_else(|| "Opaque".to_string()),
        );
        c.secrets.insert((ns, obj.name.clone()), data);
    }
}

fn load_node(obj: &Object, errors: &mut Vec<ConfigError>) -> Option<Node> {
    let mut r = report(obj, "", errors);
    r.object = format!("Node {}", obj.name);
    let raw: objects::RawNode = whole(obj, &mut r)?;
    Some(Node {
        name: obj.name.clone(),
        labels: obj.meta.labels.clone(),
        network_unavailable: raw
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True"),
        addresses: raw.status.internal_ips(),
    })
}

/// Deserializes the whole object body as `T`.
fn whole<T: DeserializeOwned>(obj: &Object, r: &mut Report<'_>) -> Option<T> {
    whole_of(&obj.body, r)
}

/// Deserializes `body` (an object's whole body, held elsewhere) as `T`.
fn whole_of<T: DeserializeOwned>(body: &Value, r: &mut Report<'_>) -> Option<T> {
    match tracked::<T>(body) {
        Ok(t) => Some(t),
        Err(e) => {
            r.error(&e.path().to_string(), None, e.into_inner().to_string());
            None
        }
    }
}

fn load_service(obj: &Object, errors: &mut Vec<ConfigError>) -> Option<Service> {
    load_service_in(obj, &obj.body, errors)
}

/// [`load_service`] of the object whose body is `body`.
fn load_service_in(obj: &Object, body: &Value, errors: &mut Vec<ConfigError>) -> Option<Service> {
    let mut r = report(obj, DEFAULT_NAMESPACE, errors);
    let raw: objects::RawService = whole_of(body, &mut r)?;
    let spec = raw.spec;
    let traffic_policy = match spec.external_traffic_policy.as_deref() {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            r.error(
                "spec.externalTrafficPolicy",
                Some(other),
                "must be Cluster or Local",
            );
            TrafficPolicy::Cluster
        }
    };
    let mut ip_families = Vec::new();
    for (i, f) in spec.ip_families.iter().enumerate() {
        match f.as_str() {
            "IPv4" => ip_families.push(Family::V4),
            "IPv6" => ip_families.push(Family::V6),
            other => r.error(
                &format!("spec.ipFamilies[{i}]"),
                Some(other),
                "must be IPv4 or IPv6",
            ),
        }
    }
    if ip_families.len() == 2 && ip_families[0] == ip_families[1] {
        r.error("spec.ipFamilies", None, "the two families must differ");
    }
    let family_policy = match spec.ip_family_policy.as_deref() {
        None if ip_families.len() == 2 => FamilyPolicy::RequireDualStack,
        None | Some("SingleStack") => FamilyPolicy::SingleStack,
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        Some(other) => {
            r.error(
                "spec.ipFamilyPolicy",
                Some(other),
                "must be SingleStack, PreferDualStack or RequireDualStack",
            );
            FamilyPolicy::SingleStack
        }
    };
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            r.error(
                &format!("spec.ports[{i}].protocol"),
                Some(&protocol),
                "must be TCP, UDP or SCTP",
            );
        }
        ports.push(Port {
            protocol,
            port: p.port,
        });
    }
    let mut status_ips = Vec::new();
    let ingress = raw
        .status
        .and_then(|s| s.load_balancer)
        .map(|lb| lb.ingress)
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        if let Some(ip) = &ing.ip {
            match ip.parse::<IpAddr>() {
                Ok(a) => status_ips.push(a),
                // A broken status is not the user's config: note it and allocate afresh.
                Err(_) => r.warn(
                    &format!("status.loadBalancer.ingress[{i}].ip"),
                    Some(ip),
                    "not an IP address; ignored",
                ),
            }
        }
    }
    for key in obj.meta.annotations.keys() {
        if let Some(name) = key.strip_prefix(annotation::LEGACY_PREFIX)
            && annotation::READ.contains(&name)
        {
            r.warn(
                &format!("metadata.annotations.{key}"),
                None,
                format!("deprecated prefix; write {}{name}", annotation::PREFIX),
            );
        }
    }
    if r.failed {
        return None;
    }
    let namespace = obj
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    Some(Service {
        key: ServiceKey::new(namespace, obj.name.clone()),
        labels: obj.meta.labels.clone(),
        annotations: obj.meta.annotations.clone(),
        load_balancer: spec.type_.as_deref() == Some("LoadBalancer"),
        load_balancer_class: spec.load_balancer_class,
        load_balancer_ip: spec.load_balancer_ip.filter(|s| !s.is_empty()),
        ports,
        backend_key: objects::backend_key(traffic_policy, &spec.selector),
        traffic_policy,
        ip_families,
        family_policy,
        status_ips,
    })
}

fn load_endpoint_slice(obj: &Object, errors: &mut Vec<ConfigError>) -> Option<EndpointSlice> {
    load_endpoint_slice_in(obj, &obj.body, errors)
}

/// [`load_endpoint_slice`] of the object whose body is `body`.
fn load_endpoint_slice_in(
    obj: &Object,
    body: &Value,
    errors: &mut Vec<ConfigError>,
) -> Option<EndpointSlice> {
    let mut r = report(obj, DEFAULT_NAMESPACE, errors);
    let raw: objects::RawEndpointSlice = whole_of(body, &mut r)?;
    let service = obj.meta.labels.get(SERVICE_NAME_LABEL).cloned();
    if service.is_none() {
        r.warn(
            &format!("metadata.labels.{SERVICE_NAME_LABEL}"),
            None,
            "the slice names no service; ignored",
        );
    }
    Some(EndpointSlice {
        namespace: obj
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.into()),
        name: obj.name.clone(),
        service,
        endpoints: raw
            .endpoints
            .into_iter()
            .map(|e| Endpoint {
                node: e.node_name,
                ready: e.conditions.ready,
                serving: e.conditions.serving,
            })
            .collect(),
    })
}

#[cfg(all(test, feature = "yaml"))]
mod tests {
    use super::*;

    /// Documents are slices of the text when it has no carriage return, and read the same as
    /// the copies made when it has: each line ending in a line feed, the last one too.
    #[test]
    fn documents_split_the_same_with_and_without_carriage_returns() {
        for text in [
            "a: 1\n---\nb: 2\n--- \nc: 3",
            "---\na: 1\n\n---\n",
            "a: 1\n---x\n ---\nb: 2\n---\n---\n",
            "--- {a: 1}\n--- # b\nb: 2\n--- !!map\nc: 3\n---  \n--- d",
            "",
            "a",
        ] {
            let lf = split_documents(text);
            assert!(
                lf.iter()
                    .all(|(_, c)| matches!(c, std::borrow::Cow::Borrowed(_))
                        || !text.ends_with('\n')),
                "{text:?}"
            );
            let crlf_text = text.replace('\n', "\r\n");
            let crlf = split_documents(&crlf_text);
            let lf: Vec<(usize, &str)> = lf.iter().map(|(l, c)| (*l, c.as_ref())).collect();
            let crlf: Vec<(usize, &str)> = crlf.iter().map(|(l, c)| (*l, c.as_ref())).collect();
            assert_eq!(lf, crlf, "{text:?}");
            for (_, c) in &lf {
                assert!(c.is_empty() || c.ends_with('\n'), "{text:?}");
            }
        }
        assert_eq!(
            split_documents("a: 1\n---\nb: 2\n")
                .iter()
                .map(|(l, c)| (*l, c.to_string()))
                .collect::<Vec<_>>(),
            vec![(1, "a: 1\n".to_string()), (3, "b: 2\n".to_string())]
        );
        // What follows a marker on its line begins the next document (a comment does not).
        assert_eq!(
            split_documents("a: 1\n--- {b: 2}\n--- # c\nc: 3\n")
                .iter()
                .map(|(l, c)| (*l, c.to_string()))
                .collect::<Vec<_>>(),
            vec![
                (1, "a: 1\n".to_string()),
                (2, "{b: 2}\n".to_string()),
                (4, "c: 3\n".to_string())
            ]
        );
    }

    proptest::proptest! {
        /// The search for markers (text without carriage returns) splits as the walk of every
        /// line does (text with them), whatever lines the text is made of.
        #[test]
        fn the_marker_search_splits_as_the_line_walk(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    "---", "--- ", "--- {a: 1}", "--- # c", "----", " ---", "a: ---", "a: 1", "", "...",
                ]),
                0..16,
            ),
            end in proptest::bool::ANY,
        ) {
            let mut text = lines.join("\n");
            if end {
                text.push('\n');
            }
            let lf = split_documents(&text);
            let crlf_text = text.replace('\n', "\r\n");
            let crlf = split_documents(&crlf_text);
            let lf: Vec<(usize, &str)> = lf.iter().map(|(l, c)| (*l, c.as_ref())).collect();
            let crlf: Vec<(usize, &str)> = crlf.iter().map(|(l, c)| (*l, c.as_ref())).collect();
            proptest::prop_assert_eq!(lf, crlf, "{:?}", text);
        }
    }

    /// A file large enough to be parsed on several threads reads exactly as on one: the same
    /// objects in the same order, the same findings in the same order.
    #[test]
    fn a_large_file_parsed_on_every_core_reads_as_on_one() {
        let mut text = String::new();
        for i in 0..(PARALLEL_FROM * 3) {
            if i % 97 == 0 {
                text.push_str(&format!(
                    "---\nkind: Service\nmetadata: {{name: [broken{i}\n"
                ));
            } else if i % 89 == 0 {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{type: LoadBalancer, ports: [{{port: x}}]}}\n"
                ));
            } else {
                text.push_str(&format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n",
                    i % 7
                ));
            }
        }
        let mut par_errors = Vec::new();
        let mut off = DocumentCache {
            off: true,
            ..DocumentCache::default()
        };
        let runs = documents(&text, &mut off, &mut par_errors);
        assert!(runs.len() > 1, "parsed on more than one thread");
        let par: Vec<Object> = runs.into_iter().flatten().collect();
        let mut cached_errors = Vec::new();
        let cached: Vec<Object> =
            documents(&text, &mut DocumentCache::default(), &mut cached_errors)
                .into_iter()
                .flatten()
                .collect();
        let mut seq_errors = Vec::new();
        let mut seq = Vec::new();
        for (i, c) in text.split("---\n").skip(1).enumerate() {
            parse_document(i + 1, 0, c, &mut seq, &mut seq_errors);
        }
        let names = |o: &[Object]| o.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&par), names(&seq));
        assert_eq!(names(&cached), names(&seq));
        assert!(par.len() > PARALLEL_FROM * 2);
        let messages = |e: &[ConfigError]| e.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(messages(&par_errors), messages(&seq_errors));
        assert_eq!(messages(&cached_errors), messages(&seq_errors));
        assert!(!par_errors.is_empty());
        let a = load_str(&text);
        let b = load_str(&text);
        assert_eq!(a.config, b.config);
        assert_eq!(a.errors, b.errors);
    }

    /// A file read again through the cache parses only what changed (documents edited, added,
    /// or whose findings name their place) and reads exactly as a fresh read: the same
    /// configuration, the same findings in the same order, though every line after an
    /// insertion moved.
    #[test]
    fn a_file_read_again_parses_only_what_changed_and_reads_as_a_fresh_read() {
        let doc = |i: usize, port: u16| {
            if i.is_multiple_of(97) {
                format!("---\nkind: Service\nmetadata: {{name: [broken{i}\n")
            } else {
                format!(
                    "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: n{}}}\nspec: {{type: LoadBalancer, ports: [{{port: {port}}}]}}\n",
                    i % 7
                )
            }
        };
        let n = PARALLEL_FROM * 2;
        let first: String = (0..n).map(|i| doc(i, 80)).collect();
        let mut cache = DocumentCache::default();
        let a = load_str_cached(&first, &mut cache);
        assert_eq!(a.config, load_str(&first).config);
        let broken = (0..n).filter(|i| i.is_multiple_of(97)).count();
        assert_eq!(
            cache.len(),
            n - broken + 1,
            "the empty head, and every named object"
        );
        // One port edited, one document inserted near the top (every later line moves), one
        // appended.
        let second: String = (0..n)
            .flat_map(|i| {
                let mut d = vec![doc(i, if i == 500 { 8080 } else { 80 })];
                if i == 3 {
                    d.push(doc(n + 1, 80));
                }
                d
            })
            .chain([doc(n + 2, 80)])
            .collect();
        let b = load_str_cached(&second, &mut cache);
        let fresh = load_str(&second);
        assert_eq!(b.config, fresh.config);
        assert_eq!(b.errors, fresh.errors);
        assert!(!b.errors.is_empty());
        assert_eq!(cache.parsed_last(), 3 + broken);
        // Documents removed, and one written twice: the cache gave each document of the last
        // read once, so the copy is parsed; the read is still a fresh read's, the duplicate's
        // finding included.
        let third: String = (0..n)
            .filter(|i| !(20..30).contains(i))
            .map(|i| doc(i, if i == 500 { 8080 } else { 80 }))
            .chain([doc(10, 80), doc(n + 2, 80)])
            .collect();
        let c = load_str_cached(&third, &mut cache);
        let fresh = load_str(&third);
        assert_eq!(c.config, fresh.config);
        assert_eq!(c.errors, fresh.errors);
        assert!(
            c.errors.iter().any(|e| e.object.contains("n3/s10")),
            "{:?}",
            c.errors
        );
        assert_eq!(cache.parsed_last(), 1 + broken);
        assert!(!c.config.services.keys().any(|k| k.name == "s25"));
        assert_eq!(
            cache.len(),
            n - 10 - broken + 2,
            "the empty head and this read's named objects, each once: none removed is kept"
        );
    }
}
