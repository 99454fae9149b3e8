//! The watch cache: every watched object as the API serves it (JSON), per kind, fed by kube
//! watchers and read as one snapshot by [`lb_core::config::load_values`]. Level-triggered: a
//! change bumps a generation number; readers recompute from the whole snapshot.
//!
//! A watcher that loses the API server retries with backoff and keeps the objects it had, so a
//! reader sees the last known state until the server is back (then a relist replaces it).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, warn};

/// One kind to watch: its API resource, and an optional namespace and label selector.
#[derive(Clone, Debug)]
pub struct Kind {
    /// The API resource.
    pub resource: ApiResource,
    /// Only this namespace; none means every namespace.
    pub namespace: Option<String>,
    /// Only objects matching this label selector.
    pub labels: Option<String>,
    /// Keep only these fields of each object (see [`Kind::keeping`]); none keeps every field.
    pub keep: Option<&'static [&'static str]>,
}

impl Kind {
    /// A kind with a static type (k8s-openapi's or one of our CRDs), in every namespace.
    pub fn of<K: kube::Resource<DynamicType = ()>>() -> Kind {
        Kind {
            resource: ApiResource::erase::<K>(&()),
            namespace: None,
            labels: None,
            keep: None,
        }
    }

    /// Only in namespace `ns`.
    pub fn in_namespace(mut self, ns: &str) -> Kind {
        self.namespace = Some(ns.to_string());
        self
    }

    /// Only objects matching `selector`.
    pub fn with_labels(mut self, selector: &str) -> Kind {
        self.labels = Some(selector.to_string());
        self
    }

    /// Keep only `fields` of each object (and its name, namespace, uid and resourceVersion),
    /// for a reader that decides from those alone: a Node's images and heartbeat times, a
    /// Service's cluster IPs, are not held. A field is a dotted path; `name[]` goes into each
    /// element of a list. A change to the other fields alone is no change.
    pub fn keeping(mut self, fields: &'static [&'static str]) -> Kind {
        self.keep = Some(fields);
        self
    }

    fn api(&self, client: Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &self.resource),
            None => Api::all_with(client, &self.resource),
        }
    }
}

/// Objects by (namespace, name), shared: a pass reads them without copying them.
type Objects = BTreeMap<(String, String), Arc<Value>>;

#[derive(Debug, Default)]
struct Inner {
    /// plural -> (namespace, name) -> object.
    kinds: BTreeMap<String, Objects>,
    /// Kinds whose first list has completed.
    synced: BTreeSet<String>,
    /// Objects of a relist in progress.
    relisting: BTreeMap<String, Objects>,
    /// What changed since [`Store::take_changed`] was last called.
    changed: Changed,
}

/// What changed in a [`Store`]: each object (plural, namespace, name) with the resourceVersion
/// it now has (`None`: deleted), and whether a kind was listed anew (anything may have changed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Objects applied or deleted.
    pub objects: BTreeMap<(String, String, String), Option<String>>,
    /// A kind was (re)listed.
    pub relisted: bool,
}

/// `src` with only `fields` (and the identity fields every reader needs).
fn project(src: &Value, fields: &[&str]) -> Value {
    const IDENTITY: [&str; 6] = [
        "apiVersion",
        "kind",
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "metadata.resourceVersion",
    ];
    let mut out = Value::Object(serde_json::Map::new());
    for f in IDENTITY.iter().chain(fields) {
        let path: Vec<&str> = f.split('.').collect();
        keep_path(src, &mut out, &path);
    }
    out
}

/// Copies the field at `path` of `src` into `dst`. Where the object is not shaped as the
/// path expects (a scalar where a map should be), the value is kept whole, so that whoever
/// reads it finds the same fault.
fn keep_path(src: &Value, dst: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        *dst = src.clone();
        return;
    };
    let Value::Object(from) = src else {
        *dst = src.clone();
        return;
    };
    let (name, each) = match first.strip_suffix("[]") {
        Some(n) => (n, true),
        None => (*first, false),
    };
    let Some(child) = from.get(name) else {
        return;
    };
    if !dst.is_object() {
        *dst = Value::Object(serde_json::Map::new());
    }
    let Value::Object(to) = dst else {
        return;
    };
    let slot = to.entry(name.to_string()).or_insert(Value::Null);
    match (each, child) {
        (true, Value::Array(items)) if !rest.is_empty() => {
            if !slot.is_array() {
                *slot = Value::Array(
                    items
                        .iter()
                        .map(|i| match i {
                            Value::Object(_) => Value::Object(serde_json::Map::new()),
                            other => other.clone(),
                        })
                        .collect(),
                );
            }
            if let Value::Array(out) = slot {
                for (item, o) in items.iter().zip(out.iter_mut()) {
                    if item.is_object() {
                        keep_path(item, o, rest);
                    }
                }
            }
        }
        _ => keep_path(child, slot, rest),
    }
}

/// Equal but for `metadata.resourceVersion`.
fn same_but_version(a: &Value, b: &Value) -> bool {
    let (Value::Object(x), Value::Object(y)) = (a, b) else {
        return a == b;
    };
    x.len() == y.len()
        && x.iter().all(|(k, v)| match (k.as_str(), y.get(k)) {
            ("metadata", Some(w)) => match (v, w) {
                (Value::Object(m), Value::Object(n)) => {
                    m.len() == n.len()
                        && m.iter()
                            .all(|(k2, v2)| k2 == "resourceVersion" || n.get(k2) == Some(v2))
                }
                _ => v == w,
            },
            (_, Some(w)) => v == w,
            (_, None) => false,
        })
}

impl Changed {
    /// Adds what changed later: each object's newest version, and any relist.
    pub fn merge(&mut self, later: Changed) {
        self.objects.extend(later.objects);
        self.relisted |= later.relisted;
    }
}

/// The shared cache. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    generation: watch::Sender<u64>,
    kinds: Arc<Mutex<Vec<String>>>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: Arc::default(),
            generation: watch::channel(0).0,
            kinds: Arc::default(),
        }
    }
}

fn key_of(obj: &Value) -> (String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Watches `kind` into this store until the task is dropped.
    pub fn spawn_watch(&self, client: Client, kind: Kind) -> tokio::task::JoinHandle<()> {
        let plural = kind.resource.plural.clone();
        self.kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(plural.clone());
        let store = self.clone();
        let mut config = watcher::Config::default();
        if let Some(l) = &kind.labels {
            config = config.labels(l);
        }
        let api = kind.api(client);
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, config).default_backoff().boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => store.apply(&kind, ev),
                    Err(e) => warn!(kind = %kind.resource.kind, "watch: {e}"),
                }
            }
        })
    }

    fn value_of(kind: &Kind, obj: DynamicObject) -> Option<Value> {
        let resource = &kind.resource;
        let mut v = serde_json::to_value(obj).ok()?;
        if let Some(fields) = kind.keep {
            v = project(&v, fields);
        }
        if let Value::Object(m) = &mut v {
            m.insert(
                "apiVersion".into(),
                Value::String(resource.api_version.clone()),
            );
            m.insert("kind".into(), Value::String(resource.kind.clone()));
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.remove("managedFields");
            }
        }
        Some(v)
    }

    fn apply(&self, kind: &Kind, ev: Event<DynamicObject>) {
        let resource = &kind.resource;
        let plural = resource.plural.clone();
        let mut inner = self.lock();
        match ev {
            Event::Init => {
                inner.relisting.insert(plural, Objects::new());
                return;
            }
            Event::InitApply(obj) => {
                if let Some(v) = Self::value_of(kind, obj) {
                    inner
                        .relisting
                        .entry(plural)
                        .or_default()
                        .insert(key_of(&v), Arc::new(v));
                }
                return;
            }
            Event::InitDone => {
                inner.changed.relisted = true;
                let fresh = inner.relisting.remove(&plural).unwrap_or_default();
                debug!(kind = %resource.kind, objects = fresh.len(), "listed");
                inner.kinds.insert(plural.clone(), fresh);
                inner.synced.insert(plural);
            }
            Event::Apply(obj) => {
                if let Some(v) = Self::value_of(kind, obj) {
                    let (ns, name) = key_of(&v);
                    let objects = inner.kinds.entry(plural.clone()).or_default();
                    let key = (ns.clone(), name.clone());
                    if kind.keep.is_some()
                        && objects
                            .get(&key)
                            .is_some_and(|old| same_but_version(old, &v))
                    {
                        // Nothing kept changed (a heartbeat, a field not read).
                        objects.insert(key, Arc::new(v));
                        return;
                    }
                    let rv = v
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    inner
                        .changed
                        .objects
                        .insert((plural.clone(), ns.clone(), name.clone()), rv);
                    inner
                        .kinds
                        .entry(plural)
                        .or_default()
                        .insert((ns, name), Arc::new(v));
                }
            }
            Event::Delete(obj) => {
                if let Some(v) = Self::value_of(kind, obj) {
                    let (ns, name) = key_of(&v);
                    inner
                        .changed
                        .objects
                        .insert((plural.clone(), ns.clone(), name.clone()), None);
                    inner.kinds.entry(plural).or_default().remove(&(ns, name));
                }
            }
        }
        drop(inner);
        self.bump();
    }

    /// True once every watched kind has been listed at least once.
    pub fn synced(&self) -> bool {
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let inner = self.lock();
        kinds.iter().all(|k| inner.synced.contains(k))
    }

    /// Every object of every kind (shared with the store, not copied).
    pub fn values(&self) -> Vec<Arc<Value>> {
        self.lock()
            .kinds
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// The objects of one kind (by plural).
    pub fn of_kind(&self, plural: &str) -> Vec<Arc<Value>> {
        self.lock()
            .kinds
            .get(plural)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One object, by kind, namespace and name.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .kinds
            .get(plural)?
            .get(&(namespace.to_string(), name.to_string()))
            .map(|v| Value::clone(v))
    }

    /// What changed since the last call (the first call: since the store was made).
    pub fn take_changed(&self) -> Changed {
        std::mem::take(&mut self.lock().changed)
    }

    /// A receiver that changes whenever the store does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn service(name: &str, rv: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv}
        }))
        .expect("a DynamicObject")
    }

    /// The store says what changed since it was last asked: each object with its version (none
    /// once deleted), and whether a kind was listed anew; asking clears it.
    #[test]
    fn what_changed_since_the_last_pass_is_each_object_with_its_version() {
        let store = Store::default();
        let resource = Kind::of::<Service>();
        store.apply(&resource, Event::Init);
        store.apply(&resource, Event::InitApply(service("a", "1")));
        store.apply(&resource, Event::InitDone);
        let c = store.take_changed();
        assert!(c.relisted && c.objects.is_empty(), "{c:?}");
        store.apply(&resource, Event::Apply(service("a", "2")));
        store.apply(&resource, Event::Apply(service("b", "3")));
        store.apply(&resource, Event::Apply(service("a", "4")));
        store.apply(&resource, Event::Delete(service("b", "3")));
        let key = |n: &str| ("services".to_string(), "default".to_string(), n.to_string());
        assert_eq!(
            store.take_changed(),
            Changed {
                objects: [(key("a"), Some("4".to_string())), (key("b"), None)].into(),
                relisted: false,
            }
        );
        assert_eq!(store.take_changed(), Changed::default(), "asking clears it");
    }

    fn node(rv: &str, heartbeat: &str, zone: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "resourceVersion": rv, "uid": "u-1",
                         "labels": {"zone": zone},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat,
                     "reason": "KubeletReady"},
                    {"type": "NetworkUnavailable", "status": "False"}
                ],
                "addresses": [{"type": "InternalIP", "address": "192.0.2.11"}],
                "images": [{"names": ["registry.example/app:1"], "sizeBytes": 1234}],
                "nodeInfo": {"kubeletVersion": "v1.31.0"}
            }
        }))
        .expect("a DynamicObject")
    }

    /// A kind watched `keeping` some fields holds those alone, and a change of the others (a
    /// heartbeat) is no change: it wakes nobody and is not reported.
    #[test]
    fn a_kind_kept_to_some_fields_holds_those_and_ignores_the_rest() {
        let store = Store::default();
        let kind = Kind::of::<k8s_openapi::api::core::v1::Node>().keeping(&[
            "metadata.labels",
            "status.conditions[].type",
            "status.conditions[].status",
            "status.addresses",
        ]);
        store.apply(&kind, Event::Init);
        store.apply(&kind, Event::InitDone);
        store.take_changed();
        store.apply(&kind, Event::Apply(node("1", "t0", "a")));
        assert_eq!(
            store.get("nodes", "", "n1"),
            Some(serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "resourceVersion": "1", "uid": "u-1",
                             "labels": {"zone": "a"}},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"},
                                   {"type": "NetworkUnavailable", "status": "False"}],
                    "addresses": [{"type": "InternalIP", "address": "192.0.2.11"}]
                }
            }))
        );
        assert_eq!(store.take_changed().objects.len(), 1);
        let woken = store.changes();
        store.apply(&kind, Event::Apply(node("2", "t1", "a")));
        assert_eq!(
            store.take_changed(),
            Changed::default(),
            "a heartbeat is no change"
        );
        assert!(!woken.has_changed().unwrap_or(true), "and wakes nobody");
        let held = store.get("nodes", "", "n1").unwrap_or_default();
        assert_eq!(
            held.pointer("/metadata/resourceVersion"),
            Some(&serde_json::json!("2"))
        );
        store.apply(&kind, Event::Apply(node("3", "t2", "b")));
        assert_eq!(store.take_changed().objects.len(), 1, "a label is a change");
    }

    /// The speaker's pools: the controller's write of a pool's use (its status, on every
    /// allocation) is no change to the speaker, which would otherwise decide everything
    /// again for each new service; a change of its spec is one.
    #[test]
    fn a_pool_status_written_by_the_controller_is_no_change_to_the_speaker() {
        let opts = crate::speaker::Options::new("node1", "metallb-system");
        let kind = crate::speaker::kinds(&opts)
            .into_iter()
            .find(|k| k.resource.plural == "ipaddresspools")
            .expect("the speaker watches pools");
        let pool = |rv: &str, used: u64, addresses: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": "lan", "namespace": "metallb-system",
                             "resourceVersion": rv, "labels": {"zone": "a"}},
                "spec": {"addresses": [addresses]},
                "status": {"assignedIPv4": used, "availableIPv4": 16 - used}
            }))
            .expect("a DynamicObject")
        };
        let store = Store::default();
        store.apply(&kind, Event::Init);
        store.apply(&kind, Event::InitDone);
        store.apply(&kind, Event::Apply(pool("1", 0, "192.0.2.0/28")));
        store.take_changed();
        store.apply(&kind, Event::Apply(pool("2", 1, "192.0.2.0/28")));
        assert_eq!(store.take_changed(), Changed::default());
        store.apply(&kind, Event::Apply(pool("3", 1, "192.0.2.16/28")));
        assert_eq!(store.take_changed().objects.len(), 1, "a spec is a change");
        let held = store
            .get("ipaddresspools", "metallb-system", "lan")
            .unwrap_or_default();
        assert_eq!(
            held.pointer("/metadata/labels/zone"),
            Some(&serde_json::json!("a"))
        );
        assert_eq!(held.get("status"), None);
    }

    /// Where an object is not shaped as a field's path expects, the value is kept whole, so
    /// that the reader reports the same fault as with the whole object.
    #[test]
    fn a_field_of_the_wrong_shape_is_kept_whole() {
        let v = serde_json::json!({"spec": {"ports": "eighty", "type": 7},
                                   "status": ["not", "a", "map"]});
        let kept = project(
            &v,
            &["spec.ports[].port", "spec.type", "status.loadBalancer"],
        );
        assert_eq!(
            kept,
            serde_json::json!({"spec": {"ports": "eighty", "type": 7},
                               "status": ["not", "a", "map"]})
        );
    }
}
