//! The controller against a scripted API server (no cluster): status writes, pending services,
//! sharing, dual-stack, pool removal, restarts, Lease-elected replicas and events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;

use std::time::Duration;

use api::{FakeApi, eventually, ingress_ips, lb_service, pool};
use lb_k8s::controller::{Options, run};
use lb_k8s::lease::{self, Leadership, LeaseConfig};
use lb_k8s::metrics::Metrics;
use serde_json::{Value, json};

const ANNO: &str = "metallb.io/ip-allocated-from-pool";

fn options() -> Options {
    options_for("test")
}

/// The options of replica `id`: a full pass every 200 ms.
fn options_for(id: &str) -> Options {
    let mut o = Options::new("metallb-system", id);
    o.resync = Duration::from_millis(200);
    o
}

/// The controller's view of a Lease's leadership.
fn elector(identity: &str, l: Leadership) -> std::sync::Arc<dyn lb_core::LeaderElector> {
    std::sync::Arc::new(lease::LeaseElector::over(identity, l))
}

/// A controller replica: its Lease election (a 2 s lease) through `lease_client` and its
/// controller writing through `client`.
struct Replica {
    leader: Leadership,
    lease: tokio::task::JoinHandle<()>,
    ctrl: tokio::task::JoinHandle<()>,
    /// Held: dropping it ends the election.
    _stop: tokio::sync::watch::Sender<bool>,
}

fn replica(lease_client: &kube::Client, client: kube::Client, id: &str) -> Replica {
    let cfg = LeaseConfig::new("metallb-controller", "metallb-system", id).timing(
        Duration::from_secs(2),
        Duration::from_millis(1200),
        Duration::from_millis(100),
    );
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (leader, lease) = lease::spawn(lease_client.clone(), cfg, stop_rx);
    let ctrl = tokio::spawn(run(
        lb_k8s::Clients::single(client),
        options_for(id),
        elector(id, leader.clone()),
        Metrics::default(),
    ));
    Replica {
        leader,
        lease,
        ctrl,
        _stop: stop,
    }
}

fn start(api_client: kube::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(
        lb_k8s::Clients::single(api_client),
        options(),
        elector("test", Leadership::always()),
        Metrics::default(),
    ))
}

fn svc(api: &FakeApi, ns: &str, name: &str) -> Value {
    api.get("services", ns, name).expect("service exists")
}

fn status_writes(api: &FakeApi) -> Vec<api::Write> {
    api.writes()
        .into_iter()
        .filter(|w| w.path.starts_with("/api/v1/namespaces/") && w.path.ends_with("/status"))
        .collect()
}

fn events_for(api: &FakeApi, name: &str, reason: &str) -> usize {
    api.writes()
        .iter()
        .filter(|w| {
            w.path.contains("/events")
                && w.method == "POST"
                && w.body.pointer("/regarding/name").and_then(Value::as_str) == Some(name)
                && w.body.get("reason").and_then(Value::as_str) == Some(reason)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_service_gets_exactly_the_expected_status_write() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.10-192.0.2.20"]));
    api.put("services", lb_service("default", "web", &[80]));
    let task = start(client);
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            == ["192.0.2.10"])
        .await
    );
    // Let several resyncs pass: nothing more may be written to the service.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let writes = status_writes(&api);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let w = &writes[0];
    assert_eq!(w.method, "PATCH");
    assert_eq!(w.path, "/api/v1/namespaces/default/services/web/status");
    // Fenced by the version the controller read (the pool is 1, the service 2).
    assert_eq!(
        w.body,
        json!({"metadata": {"annotations": {ANNO: "main"}, "resourceVersion": "2"},
               "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}})
    );
    assert_eq!(events_for(&api, "web", "IPAllocated"), 1);
    // The pool's status counts the address.
    assert!(
        eventually(5, || {
            api.get("ipaddresspools", "metallb-system", "main")
                .and_then(|p| p.pointer("/status/assignedIPv4").cloned())
                == Some(json!(1))
        })
        .await
    );
    let p = api.get("ipaddresspools", "metallb-system", "main").unwrap();
    assert_eq!(p.pointer("/status/availableIPv4"), Some(&json!(10)));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_stays_pending_until_a_pool_appears_with_one_event() {
    let (api, client) = FakeApi::start();
    api.put("services", lb_service("default", "web", &[80]));
    let task = start(client);
    assert!(eventually(5, || events_for(&api, "web", "AllocationFailed") == 1).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(ingress_ips(&svc(&api, "default", "web")).is_empty());
    assert_eq!(
        events_for(&api, "web", "AllocationFailed"),
        1,
        "one event per change, not per pass"
    );
    api.put("ipaddresspools", pool("main", &["198.51.100.0/30"]));
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            == ["198.51.100.0"])
        .await
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_share_an_address_by_key_and_dual_stack_gets_both_families() {
    let (api, client) = FakeApi::start();
    api.put(
        "ipaddresspools",
        pool("dual", &["192.0.2.0/29", "2001:db8::/125"]),
    );
    for (name, port) in [("a", 80), ("b", 443)] {
        let mut s = lb_service("default", name, &[port]);
        s["metadata"]["annotations"] = json!({"metallb.io/allow-shared-ip": "k"});
        api.put("services", s);
    }
    let mut ds = lb_service("default", "ds", &[80]);
    ds["spec"]["ipFamilies"] = json!(["IPv4", "IPv6"]);
    ds["spec"]["ipFamilyPolicy"] = json!("RequireDualStack");
    api.put("services", ds);
    let task = start(client);
    assert!(
        eventually(5, || {
            let a = ingress_ips(&svc(&api, "default", "a"));
            let ds = ingress_ips(&svc(&api, "default", "ds"));
            !a.is_empty() && ds.len() == 2
        })
        .await
    );
    let a = ingress_ips(&svc(&api, "default", "a"));
    assert_eq!(a, ingress_ips(&svc(&api, "default", "b")));
    let ds = ingress_ips(&svc(&api, "default", "ds"));
    assert!(ds.iter().any(|ip| ip.contains(':')) && ds.iter().any(|ip| ip.contains('.')));
    assert!(!ds.contains(&a[0]));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_moves_its_services_to_another() {
    let (api, client) = FakeApi::start();
    let mut first = pool("first", &["192.0.2.0/30"]);
    first["spec"]["serviceAllocation"] = json!({"priority": 1, "namespaces": ["default"]});
    api.put("ipaddresspools", first);
    api.put("ipaddresspools", pool("second", &["203.0.113.0/30"]));
    api.put("services", lb_service("default", "web", &[80]));
    let task = start(client);
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            == ["192.0.2.0"])
        .await
    );
    api.remove("ipaddresspools", "metallb-system", "first");
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            == ["203.0.113.0"])
        .await
    );
    let s = svc(&api, "default", "web");
    assert_eq!(
        s.pointer("/metadata/annotations/metallb.io~1ip-allocated-from-pool"),
        Some(&json!("second"))
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_stops_being_a_load_balancer_or_changes_class_is_released() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/30"]));
    api.put("services", lb_service("default", "a", &[80]));
    api.put("services", lb_service("default", "b", &[80]));
    let task = start(client);
    assert!(
        eventually(5, || {
            !ingress_ips(&svc(&api, "default", "a")).is_empty()
                && !ingress_ips(&svc(&api, "default", "b")).is_empty()
        })
        .await
    );
    let mut a = svc(&api, "default", "a");
    a["spec"]["type"] = json!("ClusterIP");
    api.put("services", a);
    let mut b = svc(&api, "default", "b");
    b["spec"]["loadBalancerClass"] = json!("other.example/lb");
    api.put("services", b);
    assert!(
        eventually(5, || {
            ["a", "b"].iter().all(|n| {
                let s = svc(&api, "default", n);
                ingress_ips(&s).is_empty()
                    && s.pointer("/metadata/annotations/metallb.io~1ip-allocated-from-pool")
                        .is_none()
            })
        })
        .await
    );
    assert!(eventually(5, || events_for(&api, "a", "ClearAssignment") == 1).await);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_against_a_thousand_allocated_services_changes_no_address() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("big", &["2001:db8:1::/118"]));
    // Addresses handed out in a scattered order, as years of churn leave them (7919 is prime,
    // so i * 7919 mod 1024 never repeats), and pending services whose names sort first: they
    // would take the lowest addresses if they were served before the held ones are claimed.
    let v6 = |mut s: Value| {
        s["spec"]["ipFamilies"] = json!(["IPv6"]);
        s
    };
    for i in 0..1000u32 {
        let ip = format!("2001:db8:1::{:x}", (i * 7919) % 1024);
        let mut s = v6(lb_service("default", &format!("svc-{i:04}"), &[80]));
        s["metadata"]["annotations"] = json!({ANNO: "big"});
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        api.put("services", s);
    }
    for i in 0..5 {
        api.put(
            "services",
            v6(lb_service("default", &format!("aaa-{i}"), &[80])),
        );
    }
    let held = |api: &FakeApi| -> Vec<(String, Vec<String>)> {
        api.list("services")
            .iter()
            .filter(|s| {
                s.pointer("/metadata/name")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .starts_with("svc-")
            })
            .map(|s| {
                (
                    s.pointer("/metadata/name")
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_string(),
                    ingress_ips(s),
                )
            })
            .collect()
    };
    let before = held(&api);
    let task = start(client);
    assert!(
        eventually(10, || (0..5).all(|i| {
            !ingress_ips(&svc(&api, "default", &format!("aaa-{i}"))).is_empty()
        }))
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let held_writes: Vec<_> = status_writes(&api)
        .into_iter()
        .filter(|w| w.path.contains("/svc-"))
        .collect();
    assert!(held_writes.is_empty(), "a restart wrote {held_writes:#?}");
    assert_eq!(before, held(&api));
    let taken: std::collections::BTreeSet<String> =
        before.into_iter().flat_map(|(_, ips)| ips).collect();
    for i in 0..5 {
        let ips = ingress_ips(&svc(&api, "default", &format!("aaa-{i}")));
        assert!(!taken.contains(&ips[0]), "aaa-{i} took a held address");
    }
    assert!(
        eventually(5, || {
            api.get("ipaddresspools", "metallb-system", "big")
                .and_then(|p| p.pointer("/status/assignedIPv6").cloned())
                == Some(json!(1005))
        })
        .await
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_the_other_takes_over_when_it_expires() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/28"]));
    api.put("services", lb_service("default", "one", &[80]));
    let a = replica(&client, client.clone(), "replica-a");
    assert!(eventually(5, || a.leader.is_leader()).await);
    let b = replica(&client, client.clone(), "replica-b");
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "one"))
            == ["192.0.2.0"])
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b.leader.is_leader());
    let by_instance = |api: &FakeApi, who: &str| {
        api.writes()
            .iter()
            .filter(|w| {
                w.path.contains("/events")
                    && w.body.get("reportingInstance").and_then(Value::as_str) == Some(who)
            })
            .count()
    };
    assert_eq!(by_instance(&api, "replica-b"), 0);
    assert!(eventually(5, || by_instance(&api, "replica-a") == 1).await);

    // Replica A dies without releasing the Lease: its renewals stop.
    a.lease.abort();
    a.ctrl.abort();
    let started = tokio::time::Instant::now();
    assert!(eventually(10, || b.leader.is_leader()).await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "B took over after {took:?}, before A's lease could have expired"
    );
    api.put("services", lb_service("default", "two", &[80]));
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "two"))
            == ["192.0.2.1"])
        .await
    );
    // The event follows the status write.
    assert!(eventually(5, || by_instance(&api, "replica-b") == 1).await);
    assert_eq!(
        ingress_ips(&svc(&api, "default", "one")),
        ["192.0.2.0"],
        "the new leader keeps what the old one wrote"
    );
    let lease = api
        .get("leases", "metallb-system", "metallb-controller")
        .unwrap();
    assert_eq!(
        lease.pointer("/spec/holderIdentity"),
        Some(&json!("replica-b"))
    );
    b.ctrl.abort();
    b.lease.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_sent_once_per_change_across_many_passes() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/30"]));
    api.put("services", lb_service("default", "web", &[80]));
    let task = start(client);
    assert!(eventually(5, || events_for(&api, "web", "IPAllocated") == 1).await);
    // Unrelated changes and resyncs drive many passes.
    for i in 0..10 {
        api.put("services", lb_service("other", &format!("x{i}"), &[80]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(events_for(&api, "web", "IPAllocated"), 1);
    // Four addresses, eleven services: seven are pending, each told once.
    let failed: usize = (0..10)
        .map(|i| events_for(&api, &format!("x{i}"), "AllocationFailed"))
        .sum();
    assert_eq!(failed, 7);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_services_of_the_configured_class_are_served() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/30"]));
    api.put("services", lb_service("default", "plain", &[80]));
    let mut mine = lb_service("default", "mine", &[80]);
    mine["spec"]["loadBalancerClass"] = json!("example.com/lb");
    api.put("services", mine);
    let task = tokio::spawn(run(
        lb_k8s::Clients::single(client),
        {
            let mut o = options();
            o.lb_class = Some("example.com/lb".into());
            o
        },
        elector("test", Leadership::always()),
        Metrics::default(),
    ));
    assert!(eventually(5, || !ingress_ips(&svc(&api, "default", "mine")).is_empty()).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ingress_ips(&svc(&api, "default", "plain")).is_empty());
    assert_eq!(events_for(&api, "plain", "AllocationFailed"), 0);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_pool_keeps_the_previous_pools_and_every_address() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/29"]));
    api.put("services", lb_service("default", "web", &[80]));
    let metrics = Metrics::default();
    let task = tokio::spawn(run(
        lb_k8s::Clients::single(client),
        options(),
        elector("test", Leadership::always()),
        metrics.clone(),
    ));
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            == ["192.0.2.0"])
        .await
    );
    // "a-clash" overlaps "main" and sorts first, so "main" is the one reported: without the
    // stale rule, main would vanish and web would lose its address.
    api.put("ipaddresspools", pool("a-clash", &["192.0.2.0/24"]));
    api.put("services", lb_service("default", "new", &[80]));
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "new"))
            == ["192.0.2.1"])
        .await
    );
    assert!(
        metrics
            .render("controller")
            .contains("metallb_k8s_client_config_stale_bool 1")
    );
    assert_eq!(ingress_ips(&svc(&api, "default", "web")), ["192.0.2.0"]);
    assert_eq!(
        status_writes(&api)
            .iter()
            .filter(|w| w.path.ends_with("/web/status"))
            .count(),
        1
    );
    // Fixed: no longer stale, nothing moves.
    api.remove("ipaddresspools", "metallb-system", "a-clash");
    assert!(
        eventually(5, || metrics
            .render("controller")
            .contains("metallb_k8s_client_config_stale_bool 0"))
        .await
    );
    assert_eq!(ingress_ips(&svc(&api, "default", "web")), ["192.0.2.0"]);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_annotation_is_honoured_and_warned_about_once() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/29"]));
    let mut s = lb_service("default", "old", &[80]);
    s["metadata"]["annotations"] = json!({"metallb.universe.tf/loadBalancerIPs": "192.0.2.5"});
    api.put("services", s);
    let task = start(client);
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "old"))
            == ["192.0.2.5"])
        .await
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(events_for(&api, "old", "deprecatedAnnotation"), 1);
    task.abort();
}

/// MetalLB 0.15.3+: the controller reports in ConfigurationState `controller` whether its
/// configuration validates (result, errorSummary, the configReconcilerValid condition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reports_its_configuration_in_a_configuration_state() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/29"]));
    let task = start(client);
    let state = |api: &FakeApi| api.get("configurationstates", "metallb-system", "controller");
    assert!(
        eventually(5, || state(&api).is_some_and(|s| s
            .pointer("/status/result")
            == Some(&Value::from("Valid"))))
        .await,
        "{:?}",
        state(&api)
    );
    let s = state(&api).unwrap();
    assert_eq!(
        s.pointer("/metadata/labels/metallb.io~1component-type"),
        Some(&Value::from("controller"))
    );
    assert_eq!(
        s.pointer("/status/conditions/0/type"),
        Some(&Value::from("configReconcilerValid"))
    );
    api.put("ipaddresspools", pool("a-clash", &["192.0.2.0/24"]));
    assert!(
        eventually(5, || state(&api).is_some_and(|s| s
            .pointer("/status/result")
            == Some(&Value::from("Invalid"))))
        .await
    );
    let s = state(&api).unwrap();
    let summary = s
        .pointer("/status/errorSummary")
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert!(summary.contains("overlaps"), "{summary}");
    assert_eq!(
        s.pointer("/status/conditions/0/reason"),
        Some(&Value::from("ConfigurationError"))
    );
    task.abort();
}

/// A pool that breaks while the leader runs, then a new leader (its Lease expired), then a
/// restart: neither successor knows the pool, and both must keep what the Services' status
/// shows, write nothing for those services and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_or_a_restart_with_a_broken_pool_keeps_its_addresses_and_writes_nothing() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/29"]));
    api.put("ipaddresspools", pool("other", &["198.51.100.0/29"]));
    api.put("services", lb_service("default", "web", &[80]));
    let lease_cfg = |id: &str| {
        LeaseConfig::new("metallb-controller", "metallb-system", id).timing(
            Duration::from_secs(2),
            Duration::from_millis(1200),
            Duration::from_millis(100),
        )
    };
    let replica = |id: &str, leadership: Leadership, metrics: Metrics| {
        tokio::spawn(run(
            lb_k8s::Clients::single(client.clone()),
            options_for(id),
            elector(id, leadership),
            metrics,
        ))
    };
    let (stop_a, stop_a_rx) = tokio::sync::watch::channel(false);
    let (leader_a, lease_a) = lease::spawn(client.clone(), lease_cfg("replica-a"), stop_a_rx);
    assert!(eventually(5, || leader_a.is_leader()).await);
    let ctrl_a = replica("replica-a", leader_a, Metrics::default());
    let (_stop_b, stop_b_rx) = tokio::sync::watch::channel(false);
    let (leader_b, lease_b) = lease::spawn(client.clone(), lease_cfg("replica-b"), stop_b_rx);
    let metrics_b = Metrics::default();
    let ctrl_b = replica("replica-b", leader_b.clone(), metrics_b.clone());
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            == ["192.0.2.0"])
        .await
    );
    // The pool breaks (an address that is not one) while A leads: A keeps it in force.
    let mut broken = pool("main", &["192.0.2.0/29", "192.0.2.300"]);
    broken["metadata"]["namespace"] = json!("metallb-system");
    api.put("ipaddresspools", broken);
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.clear_writes();
    let web_writes = |api: &FakeApi| {
        status_writes(api)
            .iter()
            .filter(|w| w.path.ends_with("/web/status"))
            .count()
    };
    // A dies; B takes over knowing only "other".
    lease_a.abort();
    ctrl_a.abort();
    drop(stop_a);
    assert!(eventually(10, || leader_b.is_leader()).await);
    assert!(eventually(5, || events_for(&api, "web", "AddressHeld") == 1).await);
    // Several passes: nothing written for web, and a new service still gets an address.
    api.put("services", lb_service("default", "new", &[80]));
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "new"))
            == ["198.51.100.0"])
        .await
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(web_writes(&api), 0, "{:#?}", status_writes(&api));
    assert_eq!(ingress_ips(&svc(&api, "default", "web")), ["192.0.2.0"]);
    assert_eq!(
        svc(&api, "default", "web").pointer(&format!(
            "/metadata/annotations/{}",
            ANNO.replace('/', "~1")
        )),
        Some(&json!("main"))
    );
    assert!(
        metrics_b
            .render("controller")
            .contains("lb_controller_held_services 1"),
        "{}",
        metrics_b.render("controller")
    );
    // B restarts: the same.
    ctrl_b.abort();
    lease_b.abort();
    let metrics_c = Metrics::default();
    let ctrl_c = replica("replica-c", Leadership::always(), metrics_c.clone());
    assert!(
        eventually(5, || metrics_c
            .render("controller")
            .contains("lb_controller_held_services 1"))
        .await
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(web_writes(&api), 0, "{:#?}", status_writes(&api));
    assert_eq!(ingress_ips(&svc(&api, "default", "web")), ["192.0.2.0"]);
    // Fixed: the pool is loaded, web keeps its address, still nothing to write.
    api.put("ipaddresspools", pool("main", &["192.0.2.0/29"]));
    assert!(
        eventually(5, || metrics_c
            .render("controller")
            .contains("lb_controller_held_services 0"))
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(web_writes(&api), 0, "{:#?}", status_writes(&api));
    assert_eq!(ingress_ips(&svc(&api, "default", "web")), ["192.0.2.0"]);
    // Deleted: only now is the address released.
    api.remove("ipaddresspools", "metallb-system", "main");
    assert!(
        eventually(5, || ingress_ips(&svc(&api, "default", "web"))
            != ["192.0.2.0"])
        .await
    );
    ctrl_c.abort();
}

/// A leader's write that the network delays until after its term ended, and after the new
/// leader wrote, is refused by the API server: the service keeps the new leader's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_delayed_write_is_refused_and_the_new_leaders_status_stays() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/28"]));
    // A's controller writes through its own client, whose writes the test can hold back.
    let a = replica(&client, api.client("a"), "replica-a");
    assert!(eventually(5, || a.leader.is_leader()).await);
    let b = replica(&client, client.clone(), "replica-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A computes a write for the new service; the network holds it.
    api.hold_writes("a", true);
    api.put("services", lb_service("default", "web", &[80]));
    let patches = |api: &FakeApi| -> Vec<api::Write> {
        status_writes(api)
            .into_iter()
            .filter(|w| w.path.ends_with("/web/status"))
            .collect()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(patches(&api).is_empty(), "{:#?}", patches(&api));
    // A's term ends (its renewals stop); B takes over and writes.
    a.lease.abort();
    assert!(eventually(10, || b.leader.is_leader()).await);
    assert!(!a.leader.is_leader());
    assert!(eventually(5, || patches(&api).iter().any(|w| w.code == 200)).await);
    let after_b = svc(&api, "default", "web");
    // The held write arrives now.
    api.hold_writes("a", false);
    assert!(
        eventually(5, || patches(&api).len() >= 2).await,
        "{:#?}",
        patches(&api)
    );
    let all = patches(&api);
    let late = all.iter().find(|w| w.code != 200).expect("A's write");
    assert_eq!(late.code, 409, "{all:#?}");
    assert_eq!(all.iter().filter(|w| w.code == 200).count(), 1, "{all:#?}");
    assert_eq!(
        svc(&api, "default", "web"),
        after_b,
        "the service is as B left it"
    );
    a.ctrl.abort();
    b.ctrl.abort();
    b.lease.abort();
}

/// Two replicas started with the same identity: the token in the Lease tells them apart, and
/// never do both lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_the_same_identity_never_both_lead() {
    let (api, client) = FakeApi::start();
    let cfg = LeaseConfig::new("metallb-controller", "metallb-system", "same").timing(
        Duration::from_secs(2),
        Duration::from_millis(1200),
        Duration::from_millis(100),
    );
    let (_s1, r1) = tokio::sync::watch::channel(false);
    let (_s2, r2) = tokio::sync::watch::channel(false);
    let (l1, t1) = lease::spawn(client.clone(), cfg.clone(), r1);
    let (l2, t2) = lease::spawn(client.clone(), cfg, r2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (mut one, mut two) = (0, 0);
    while tokio::time::Instant::now() < deadline {
        match (l1.is_leader(), l2.is_leader()) {
            (true, true) => panic!("both lead"),
            (true, false) | (false, true) => one += 1,
            (false, false) => {}
        }
        two += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(one > two / 2, "a leader most of the time: {one} of {two}");
    let lease = api
        .get("leases", "metallb-system", "metallb-controller")
        .unwrap();
    assert!(
        lease
            .pointer("/metadata/annotations/lb-bin~1holder-token")
            .is_some(),
        "{lease}"
    );
    t1.abort();
    t2.abort();
}

/// The API server compacts its history: every watch ends and resuming from the last version
/// gets 410 Gone. The store lists again; what changed meanwhile is seen, and no address is
/// released or rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ending_in_410_gone_relists_and_releases_nothing() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/28"]));
    for name in ["a", "b", "gone"] {
        api.put("services", lb_service("default", name, &[80]));
    }
    let task = start(client);
    assert!(
        eventually(5, || ["a", "b", "gone"]
            .iter()
            .all(|n| !ingress_ips(&svc(&api, "default", n)).is_empty()))
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<Vec<String>> = ["a", "b"]
        .iter()
        .map(|n| ingress_ips(&svc(&api, "default", n)))
        .collect();
    let gone_ip = ingress_ips(&svc(&api, "default", "gone"));
    api.clear_writes();
    // Compacted; meanwhile one service goes and one comes.
    api.expire_watches();
    api.remove("services", "default", "gone");
    api.put("services", lb_service("default", "c", &[80]));
    // c gets the address "gone" left: both changes were seen through the relist.
    assert!(
        eventually(10, || ingress_ips(&svc(&api, "default", "c")) == gone_ip).await,
        "{:?} {:?}",
        ingress_ips(&svc(&api, "default", "c")),
        gone_ip
    );
    assert!(api.gone_served() > 0, "no watch was told 410 Gone");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after: Vec<Vec<String>> = ["a", "b"]
        .iter()
        .map(|n| ingress_ips(&svc(&api, "default", n)))
        .collect();
    assert_eq!(before, after);
    let rewritten: Vec<String> = status_writes(&api)
        .iter()
        .map(|w| w.path.clone())
        .filter(|p| !p.ends_with("/c/status"))
        .collect();
    assert!(rewritten.is_empty(), "{rewritten:?}");
    task.abort();
}

/// A throttling (429 with Retry-After) or slow API server delays the controller's writes;
/// nothing is lost and nothing is written twice once it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_or_slow_api_delays_writes_and_loses_none() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.0/28"]));
    let task = start(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.set_fault(api::Fault::TooMany(1));
    api.put("services", lb_service("default", "web", &[80]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(ingress_ips(&svc(&api, "default", "web")).is_empty());
    api.set_fault(api::Fault::Slow(Duration::from_millis(300)));
    assert!(
        eventually(10, || ingress_ips(&svc(&api, "default", "web"))
            == ["192.0.2.0"])
        .await
    );
    api.set_fault(api::Fault::None);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ok: Vec<api::Write> = status_writes(&api)
        .into_iter()
        .filter(|w| w.code == 200)
        .collect();
    assert_eq!(ok.len(), 1, "{ok:#?}");
    task.abort();
}

/// The controller does not reconcile its own writes: the watch's echoes of 50 status writes
/// (and of the pool's status) wake no pass. With no resync during the test, one pass allocates
/// all 50; the writes' echoes would each have woken another (the passes are counted by
/// `lb_reconcile_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echoes_of_its_own_status_writes_wake_no_pass() {
    let (api, client) = FakeApi::start();
    api.put("ipaddresspools", pool("main", &["192.0.2.10-192.0.2.100"]));
    for i in 0..50 {
        api.put(
            "services",
            lb_service("default", &format!("s{i:02}"), &[80]),
        );
    }
    let metrics = Metrics::default();
    let mut opts = options();
    opts.resync = Duration::from_secs(600);
    let task = tokio::spawn(run(
        lb_k8s::Clients::single(client),
        opts,
        elector("test", Leadership::always()),
        metrics.clone(),
    ));
    assert!(
        eventually(10, || (0..50).all(|i| ingress_ips(&svc(
            &api,
            "default",
            &format!("s{i:02}")
        ))
        .len()
            == 1))
        .await
    );
    // Every echo has arrived well within this.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = metrics.render("controller");
    let passes: u64 = text
        .lines()
        .find(|l| l.starts_with("lb_reconcile_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(passes <= 2, "{passes} passes for one change:\n{text}");
    assert_eq!(status_writes(&api).len(), 50);
    task.abort();
}
