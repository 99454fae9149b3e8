//! A scripted Kubernetes API server for tests: kube's `Client` over a `tower-test` mock, answered
//! by an in-memory object store. It serves what lb-k8s uses: LIST (with a resourceVersion) and
//! WATCH (newline-terminated JSON events from that version on), GET, POST (with generateName),
//! PUT (optimistic concurrency on resourceVersion), PATCH (merge; server-side apply is read as a
//! merge), DELETE, the `/status` subresource, and label selectors of the `k=v` form. Every
//! write is recorded for the test to inspect. Faults a real server has can be switched on
//! ([`Fault`]): refused connections, a server that accepts and never answers, 503/504, 429 with
//! Retry-After, slow answers; and besides: `metadata.resourceVersion` in a merge patch is a
//! precondition (409 Conflict), watches can be expired (the next watch from an older version
//! gets 410 Gone), and one client's writes can be held back and released later.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use kube::Client;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

pub type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// The error of every request while the server is down.
#[derive(Debug)]
pub struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused (the scripted API server is down)")
    }
}

impl std::error::Error for Down {}

/// What the server does to every request (see [`FakeApi::set_fault`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Fails every request as a refused connection would; open watches end.
    Refuse,
    /// Accepts every request and never answers it, even after the fault is lifted (as a
    /// server that lost it); open watches fall silent until it is lifted.
    Hang,
    /// Answers every request with this code (503, 504, ...); open watches end.
    Status(u16),
    /// 429 Too Many Requests with `Retry-After: N` (seconds); open watches end.
    TooMany(u32),
    /// Answers every request after this long.
    Slow(Duration),
}

impl Fault {
    fn ends_watches(self) -> bool {
        matches!(self, Fault::Refuse | Fault::Status(_) | Fault::TooMany(_))
    }
}

/// One write the server took.
#[derive(Clone, Debug)]
pub struct Write {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub body: Value,
    /// The server's answer code.
    pub code: u16,
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    plural: String,
    namespace: String,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<(String, String, String), Value>,
    rv: u64,
    log: Vec<Event>,
    writes: Vec<Write>,
    generated: u64,
    /// Watches from a version older than this get 410 Gone.
    compacted: u64,
    /// How many watches got 410 Gone.
    gone: u64,
}

/// The server. Cheap to clone; all clones share the store.
#[derive(Clone)]
pub struct FakeApi {
    store: Arc<Mutex<Store>>,
    events: broadcast::Sender<Event>,
    fault: watch::Sender<Fault>,
    /// Bumped to end every open watch.
    epoch: watch::Sender<u64>,
    /// Clients whose writes are held back until released.
    held: watch::Sender<BTreeSet<String>>,
}

struct Target {
    plural: String,
    namespace: String,
    name: Option<String>,
    status: bool,
}

impl Target {
    fn key(&self) -> (String, String, String) {
        (
            self.plural.clone(),
            self.namespace.clone(),
            self.name.clone().unwrap_or_default(),
        )
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match *segs.first()? {
        "api" => segs.get(2..)?,
        "apis" => segs.get(3..)?,
        _ => return None,
    };
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (rest[1].to_string(), &rest[2..])
    } else {
        (String::new(), rest)
    };
    Some(Target {
        plural: rest.first()?.to_string(),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: rest.get(2) == Some(&"status"),
    })
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in uri.query().unwrap_or("").split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            out.insert(k.to_string(), decode(v));
        }
    }
    out
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn selector_matches(selector: Option<&String>, obj: &Value) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v)
    })
}

/// RFC 7396 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn full(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
    let stream = futures::stream::once(async move { Ok(Frame::data(bytes)) }).boxed();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream))
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    full(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": reason, "message": message, "code": code.as_u16()}),
    )
}

impl FakeApi {
    /// A server with an empty store.
    pub fn new() -> FakeApi {
        FakeApi {
            store: Arc::default(),
            events: broadcast::channel(65536).0,
            fault: watch::channel(Fault::None).0,
            epoch: watch::channel(0).0,
            held: watch::channel(BTreeSet::new()).0,
        }
    }

    /// A server and a client talking to it. Keep the server alive as long as the client.
    pub fn start() -> (FakeApi, Client) {
        let api = FakeApi::new();
        let client = api.client("");
        (api, client)
    }

    /// Another client of this server, known as `name` (see [`FakeApi::hold_writes`]).
    pub fn client(&self, name: &str) -> Client {
        let (svc, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let server = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (server, name) = (server.clone(), name.clone());
                tokio::spawn(async move {
                    match server.serve_as(&name, req).await {
                        Ok(resp) => send.send_response(resp),
                        Err(e) => send.send_error(e),
                    }
                });
            }
        });
        Client::new(svc, "default")
    }

    /// Switches a fault on (or off, with [`Fault::None`]).
    pub fn set_fault(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Holds back every write (POST, PUT, PATCH, DELETE) of client `name` until called again
    /// with `false`; then they are served, in whatever order they wake.
    pub fn hold_writes(&self, name: &str, hold: bool) {
        self.held.send_modify(|h| {
            if hold {
                h.insert(name.to_string());
            } else {
                h.remove(name);
            }
        });
    }

    /// Ends every open watch; a watch from a version before now gets 410 Gone (as after the
    /// API server compacted its history), so clients must list again.
    pub fn expire_watches(&self) {
        {
            let mut st = self.lock();
            st.compacted = st.rv + 1;
        }
        self.epoch.send_modify(|e| *e += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the server down (every request fails as if refused, watches end) or brings it
    /// back: [`Fault::Refuse`] or [`Fault::None`].
    pub fn set_down(&self, down: bool) {
        self.set_fault(if down { Fault::Refuse } else { Fault::None });
    }

    /// How many watches were answered 410 Gone.
    pub fn gone_served(&self) -> u64 {
        self.lock().gone
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    /// Writes whose path contains `part`.
    pub fn writes_to(&self, part: &str) -> Vec<Write> {
        self.writes()
            .into_iter()
            .filter(|w| w.path.contains(part))
            .collect()
    }

    pub fn clear_writes(&self) {
        self.lock().writes.clear();
    }

    /// The stored object, if any.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Puts an object in the store as if a user had applied it (not recorded as a write).
    /// `plural` is the resource name; the namespace is read from the object.
    pub fn put(&self, plural: &str, mut obj: Value) {
        let namespace = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut st = self.lock();
        let key = (plural.to_string(), namespace.clone(), name);
        let type_ = if st.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.store_object(&mut st, key, &mut obj, type_);
    }

    /// Removes an object as if a user had deleted it.
    pub fn remove(&self, plural: &str, namespace: &str, name: &str) {
        let mut st = self.lock();
        let key = (plural.to_string(), namespace.to_string(), name.to_string());
        if let Some(mut obj) = st.objects.remove(&key) {
            st.rv += 1;
            let rv = st.rv;
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            self.emit(&mut st, rv, &key, "DELETED", obj);
        }
    }

    fn store_object(
        &self,
        st: &mut Store,
        key: (String, String, String),
        obj: &mut Value,
        type_: &'static str,
    ) {
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj.pointer("/metadata/uid").is_none() {
            obj["metadata"]["uid"] = json!(format!("uid-{rv}"));
        }
        st.objects.insert(key.clone(), obj.clone());
        self.emit(st, rv, &key, type_, obj.clone());
    }

    fn emit(
        &self,
        st: &mut Store,
        rv: u64,
        key: &(String, String, String),
        type_: &'static str,
        object: Value,
    ) {
        let ev = Event {
            rv,
            plural: key.0.clone(),
            namespace: key.1.clone(),
            type_,
            object,
        };
        st.log.push(ev.clone());
        let _ = self.events.send(ev);
    }

    /// Answers one request of an anonymous client.
    pub async fn serve(&self, req: Request<kube::client::Body>) -> Result<Response<Body>, Down> {
        self.serve_as("", req).await
    }

    /// Answers one request of client `name`, through the fault switched on.
    pub async fn serve_as(
        &self,
        name: &str,
        req: Request<kube::client::Body>,
    ) -> Result<Response<Body>, Down> {
        let fault = *self.fault.borrow();
        match fault {
            Fault::None => {}
            Fault::Refuse => return Err(Down),
            Fault::Hang => std::future::pending::<()>().await,
            Fault::Status(code) => {
                let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return Ok(status(code, "ServiceUnavailable", "scripted failure"));
            }
            Fault::TooMany(secs) => {
                let mut r = status(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "slow down",
                );
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from(secs));
                return Ok(r);
            }
            Fault::Slow(d) => tokio::time::sleep(d).await,
        }
        if req.method() != http::Method::GET {
            let mut held = self.held.subscribe();
            let _ = held.wait_for(|h| !h.contains(name)).await;
        }
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let q = query(req.uri());
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let Some(t) = parse_path(&path) else {
            return Ok(status(StatusCode::NOT_FOUND, "NotFound", "no such path"));
        };
        let body: Value = match req.into_body().collect_bytes().await {
            Ok(b) if !b.is_empty() => serde_json::from_slice(&b).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let resp = match method.as_str() {
            "GET"
                if t.name.is_none() && q.get("watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                return Ok(self.watch(t, q));
            }
            "GET" if t.name.is_none() => self.list_response(&t, &q),
            "GET" => match self.get(&t.plural, &t.namespace, t.name.as_deref().unwrap_or("")) {
                Some(o) => full(StatusCode::OK, &o),
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            },
            "POST" => self.create(&t, body.clone()),
            "PUT" => self.replace(&t, body.clone()),
            "PATCH" => self.patch(&t, &body, &content_type),
            "DELETE" => {
                let name = t.name.clone().unwrap_or_default();
                if self.get(&t.plural, &t.namespace, &name).is_some() {
                    let o = self.get(&t.plural, &t.namespace, &name).unwrap_or_default();
                    self.remove(&t.plural, &t.namespace, &name);
                    full(StatusCode::OK, &o)
                } else {
                    status(StatusCode::NOT_FOUND, "NotFound", "not found")
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "no"),
        };
        self.lock().writes.push(Write {
            method,
            path,
            body,
            code: resp.status().as_u16(),
        });
        Ok(resp)
    }

    fn list_response(&self, t: &Target, q: &BTreeMap<String, String>) -> Response<Body> {
        let st = self.lock();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((p, ns, _), o)| {
                *p == t.plural
                    && (t.namespace.is_empty() || *ns == t.namespace)
                    && selector_matches(q.get("labelSelector"), o)
            })
            .map(|(_, o)| o.clone())
            .collect();
        full(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
        )
    }

    fn watch(&self, t: Target, q: BTreeMap<String, String>) -> Response<Body> {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if from > 0 && from < self.lock().compacted {
            self.lock().gone += 1;
            return full(
                StatusCode::OK,
                &json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                        "metadata": {}, "status": "Failure", "reason": "Expired",
                        "message": "too old resource version", "code": 410}}),
            );
        }
        let selector = q.get("labelSelector").cloned();
        let wanted = move |e: &Event| {
            e.plural == t.plural
                && (t.namespace.is_empty() || e.namespace == t.namespace)
                && selector_matches(selector.as_ref(), &e.object)
        };
        // Subscribe before reading the log so that no event falls between the two.
        let mut rx = self.events.subscribe();
        let backlog: Vec<Event> = self
            .lock()
            .log
            .iter()
            .filter(|e| e.rv > from && wanted(e))
            .cloned()
            .collect();
        let mut last = backlog.last().map_or(from, |e| e.rv);
        let mut fault = self.fault.subscribe();
        let mut epoch = self.epoch.subscribe();
        let line = |e: &Event| {
            let mut b = serde_json::to_vec(&json!({"type": e.type_, "object": e.object}))
                .unwrap_or_default();
            b.push(b'\n');
            Ok(Frame::data(Bytes::from(b)))
        };
        let head: Vec<Result<Frame<Bytes>, Infallible>> = backlog.iter().map(line).collect();
        let live = async_stream(move |tx| async move {
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(e) if e.rv > last && wanted(&e) => {
                            last = e.rv;
                            // A hung server sends nothing until it recovers.
                            let gone = fault.wait_for(|f| *f != Fault::Hang).await.map(|_| ()).is_err();
                            if gone { return; }
                            if tx.send(line(&e)).is_err() { return; }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = ended(&mut fault) => return,
                    _ = epoch.changed() => return,
                }
            }
        });
        let stream = futures::stream::iter(head).chain(live).boxed();
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(StreamBody::new(stream))
            .unwrap()
    }

    fn create(&self, t: &Target, mut obj: Value) -> Response<Body> {
        let mut st = self.lock();
        let name = match obj.pointer("/metadata/name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                let Some(prefix) = obj
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                else {
                    drop(st);
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "no name");
                };
                st.generated += 1;
                format!("{prefix}{:05}", st.generated)
            }
        };
        obj["metadata"]["name"] = json!(name);
        if !t.namespace.is_empty() {
            obj["metadata"]["namespace"] = json!(t.namespace);
        }
        let key = (t.plural.clone(), t.namespace.clone(), name);
        if st.objects.contains_key(&key) {
            return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
        }
        self.store_object(&mut st, key, &mut obj, "ADDED");
        full(StatusCode::CREATED, &obj)
    }

    fn replace(&self, t: &Target, mut obj: Value) -> Response<Body> {
        let mut st = self.lock();
        let key = t.key();
        let Some(current) = st.objects.get(&key) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        let have = current.pointer("/metadata/resourceVersion").cloned();
        let want = obj.pointer("/metadata/resourceVersion").cloned();
        if want.is_some() && want != have {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified",
            );
        }
        self.store_object(&mut st, key, &mut obj, "MODIFIED");
        full(StatusCode::OK, &obj)
    }

    fn patch(&self, t: &Target, patch: &Value, content_type: &str) -> Response<Body> {
        if content_type.contains("json-patch") {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported",
                content_type,
            );
        }
        let mut st = self.lock();
        let key = t.key();
        let Some(current) = st.objects.get(&key) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        // A resourceVersion in the patch is a precondition, as on a real API server.
        if let Some(want) = patch.pointer("/metadata/resourceVersion")
            && current.pointer("/metadata/resourceVersion") != Some(want)
        {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        let mut obj = current.clone();
        if t.status {
            // The status subresource takes status and metadata, never spec.
            let mut p = patch.clone();
            if let Value::Object(m) = &mut p {
                m.retain(|k, _| k == "status" || k == "metadata");
            }
            merge(&mut obj, &p);
        } else {
            let mut p = patch.clone();
            if let Value::Object(m) = &mut p {
                m.remove("status");
            }
            merge(&mut obj, &p);
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        self.store_object(&mut st, key, &mut obj, "MODIFIED");
        full(StatusCode::OK, &obj)
    }
}

/// Until a fault that ends watches is switched on.
async fn ended(fault: &mut watch::Receiver<Fault>) {
    let _ = fault.wait_for(|f| f.ends_watches()).await.map(|_| ());
}

/// A stream fed by a task through an unbounded channel.
fn async_stream<F, Fut>(f: F) -> BoxStream<'static, Result<Frame<Bytes>, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// A LoadBalancer Service, as a user would create it.
pub fn lb_service(namespace: &str, name: &str, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"port": p, "protocol": "TCP"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "LoadBalancer", "ports": ports, "selector": {"app": name},
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"}
    })
}

/// An IPAddressPool in metallb-system.
pub fn pool(name: &str, addresses: &[&str]) -> Value {
    json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "metallb-system"},
        "spec": {"addresses": addresses}
    })
}

/// The ingress IPs a stored Service shows.
pub fn ingress_ips(svc: &Value) -> Vec<String> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `f` every 20 ms for up to `secs` seconds.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
