//! `lb-bin controller` and two `lb-bin speaker`s, the real binaries, against the scripted API
//! server served over HTTP inside a network namespace, and a client host on the same bridge:
//!
//! ```text
//!  ns <tag>api eth0 192.0.2.250  the scripted API server (this test) and the controller
//!  ns <tag>n1  eth0 192.0.2.11   speaker node1
//!  ns <tag>n2  eth0 192.0.2.12   speaker node2
//!  ns <tag>cl  eth0 192.0.2.100  the client (the kernel's ARP)
//! ```
//! The controller allocates from the pool and writes the Services' status; the speakers read
//! it, elect an owner per address and answer ARP for it; the client's neighbour table shows
//! which node answers. Then the API server goes away: the speakers keep answering, and when an
//! owner crashes the other takes its address over without the API. A second test runs one
//! speaker against BIRD (in the client host) with the BGP password only in a Secret. Needs
//! root, iproute2 and ping (see `lab`), and bird2 for the second. The speakers run as
//! deploy/03-speaker.yaml has them: root with every capability dropped but NET_RAW (`setpriv`
//! from util-linux), which is how these tests show that NET_ADMIN is not needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    unsafe_code
)]

#[path = "../../lb-k8s/tests/api/mod.rs"]
mod api;
mod lab;

use std::time::Duration;

use api::{FakeApi, ingress_ips, lb_service, pool};
use http_body_util::BodyExt;
use lab::{Net, until};
use serde_json::{Value, json};

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: 'http://192.0.2.250:6443'}
users:
- name: lab
  user: {}
contexts:
- name: lab
  context: {cluster: lab, user: lab, namespace: default}
current-context: lab
";

/// Serves `api` over HTTP/1.1 on 192.0.2.250:6443 inside the `api` host; returns the path of
/// a kubeconfig that points there.
fn serve(net: &Net, rt: &tokio::runtime::Runtime, api: FakeApi) -> String {
    let listener = net.inside("api", || {
        std::net::TcpListener::bind("192.0.2.250:6443").unwrap()
    });
    listener.set_nonblocking(true).unwrap();
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let api = api.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let api = api.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let req = http::Request::from_parts(
                                parts,
                                kube::client::Body::from(bytes.to_vec()),
                            );
                            // Down: the error closes the connection, as a dead server would.
                            api.serve(req).await
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    std::fs::write(net.path("kubeconfig"), KUBECONFIG).unwrap();
    net.path("kubeconfig")
}

/// Starts speaker `i` (node`i`, in host n`i`) as deploy/03-speaker.yaml runs it: root with
/// every capability dropped but NET_RAW.
fn start_speaker(net: &mut Net, i: u8, kubeconfig: &str) {
    net.spawn(
        &format!("speaker{i}"),
        &format!("n{i}"),
        "setpriv",
        &[
            "--bounding-set=-all,+net_raw",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_lb-bin"),
            "speaker",
            "--node-name",
            &format!("node{i}"),
            "--bind",
            &format!("192.0.2.1{i}:7946"),
            "--http",
            "127.0.0.1:7472",
            "--log-format",
            "text",
        ],
        &[
            ("KUBECONFIG", kubeconfig),
            ("RUST_LOG", "info,lb_bin::speaker=debug"),
        ],
    );
}

fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn slice(service: &str, nodes: &[&str]) -> Value {
    let endpoints: Vec<Value> = nodes
        .iter()
        .map(|n| json!({"addresses": ["198.51.100.7"], "nodeName": n, "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-x"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "endpoints": endpoints})
}

/// The node a ServiceL2Status names for `service`, if exactly one does.
fn l2_owner(api: &FakeApi, service: &str) -> Option<String> {
    let owners: Vec<String> = api
        .list("servicel2statuses")
        .iter()
        .filter(|s| s.pointer("/status/serviceName") == Some(&json!(service)))
        .filter_map(|s| {
            s.pointer("/status/node")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    (owners.len() == 1).then(|| owners[0].clone())
}

/// The MAC the client learns for `ip` after asking once.
fn answered_by(net: &Net, ip: &str) -> Option<String> {
    net.flush_neighbours("cl");
    // No kernel on the speakers owns the address (kube-proxy would deliver it), so the echo
    // goes unanswered; the ARP reply is what the test reads.
    let _ = net.ping_once("cl", ip);
    net.neighbour("cl", ip)
}

#[test]
fn controller_and_speakers_allocate_announce_and_keep_announcing_without_the_api() {
    if !lab::available("Kubernetes component tests") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut net = Net::new(
        "lbk",
        &[
            ("api", "192.0.2.250/24"),
            ("n1", "192.0.2.11/24"),
            ("n2", "192.0.2.12/24"),
            ("cl", "192.0.2.100/24"),
        ],
    );
    let api = FakeApi::new();
    api.put("nodes", node("node1", "192.0.2.11"));
    api.put("nodes", node("node2", "192.0.2.12"));
    api.put("ipaddresspools", pool("lan", &["192.0.2.200-192.0.2.210"]));
    api.put("services", lb_service("default", "web", &[80]));
    api.put("endpointslices", slice("web", &["node1", "node2"]));
    let mut local = lb_service("default", "local", &[443]);
    local["spec"]["externalTrafficPolicy"] = json!("Local");
    api.put("services", local);
    api.put("endpointslices", slice("local", &["node2"]));
    let kubeconfig = serve(&net, &rt, api.clone());
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info")];
    let bin = env!("CARGO_BIN_EXE_lb-bin");

    net.spawn(
        "controller",
        "api",
        bin,
        &[
            "controller",
            "--http",
            "127.0.0.1:7472",
            "--identity",
            "ctrl-0",
            "--log-format",
            "text",
        ],
        &env,
    );
    let svc = |name: &str| api.get("services", "default", name).unwrap();
    assert!(
        until(20, || !ingress_ips(&svc("web")).is_empty()
            && !ingress_ips(&svc("local")).is_empty()),
        "controller log:\n{}",
        net.log("controller")
    );
    let web_ip = ingress_ips(&svc("web"))[0].clone();
    let local_ip = ingress_ips(&svc("local"))[0].clone();
    assert_ne!(web_ip, local_ip);

    let start_speaker = |net: &mut Net, i: u8| start_speaker(net, i, &kubeconfig);
    for i in 1..=2 {
        start_speaker(&mut net, i);
    }
    // The L2Advertisement arrives after the speakers started with none (ready: a plan is
    // applied): they must start their layer 2 announcers then.
    assert!(until(20, || (1..=2).all(|i| {
        net.get(&format!("n{i}"), "127.0.0.1:7472", "/readyz")
            .as_deref()
            == Some("ready\n")
    })));
    api.put(
        "l2advertisements",
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "lan", "namespace": "metallb-system"}, "spec": {}}),
    );
    let logs = |net: &Net| {
        format!(
            "speaker1:\n{}\nspeaker2:\n{}",
            net.log("speaker1"),
            net.log("speaker2")
        )
    };
    assert!(
        until(20, || l2_owner(&api, "web").is_some()
            && l2_owner(&api, "local").is_some()),
        "{}",
        logs(&net)
    );
    // ETP Local: node2 has the only endpoint.
    assert_eq!(l2_owner(&api, "local").as_deref(), Some("node2"));
    let web_owner = l2_owner(&api, "web").unwrap();
    let host_of = |node: &str| if node == "node1" { "n1" } else { "n2" };
    assert!(
        until(10, || answered_by(&net, &local_ip) == Some(net.mac("n2"))),
        "{}",
        logs(&net)
    );
    assert!(
        until(10, || answered_by(&net, &web_ip)
            == Some(net.mac(host_of(&web_owner)))),
        "{}",
        logs(&net)
    );
    // The controller created the membership key; the speakers seal with it. Rotating it in the
    // Secret (new key first, then the new key alone) reaches both speakers without a restart
    // and moves no address.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret = api
        .get("secrets", "metallb-system", "memberlist")
        .expect("the controller created Secret memberlist");
    let old = String::from_utf8(
        b64.decode(secret["data"]["secretkey"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let ids = |text: &str| -> Vec<String> {
        lb_bin::members::Keyring::parse(text)
            .unwrap()
            .ids()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let key_ids = |net: &Net, i: u8| -> Vec<String> {
        net.get(&format!("n{i}"), "127.0.0.1:7472", "/status")
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|st| {
                st["membership"]["key_ids"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(until(10, || (1..=2).all(|i| key_ids(&net, i) == ids(&old))));
    let new = "a rotated membership key for the speakers";
    for text in [format!("{new}\n\n{old}"), new.to_string()] {
        api.put(
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                   "metadata": {"name": "memberlist", "namespace": "metallb-system"},
                   "data": {"secretkey": b64.encode(&text)}}),
        );
        assert!(
            until(10, || (1..=2).all(|i| key_ids(&net, i) == ids(&text))),
            "speakers took {text:?}: {:?}\n{}",
            (key_ids(&net, 1), key_ids(&net, 2)),
            logs(&net)
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(l2_owner(&api, "web").as_deref(), Some(web_owner.as_str()));
        assert_eq!(
            answered_by(&net, &web_ip),
            Some(net.mac(host_of(&web_owner)))
        );
    }
    // Each speaker and the controller report their configuration (MetalLB's ConfigurationState).
    for name in ["controller", "speaker-node1", "speaker-node2"] {
        assert!(
            until(10, || api
                .get("configurationstates", "metallb-system", name)
                .is_some_and(
                    |s| s.pointer("/status/result") == Some(&json!("Valid"))
                )),
            "ConfigurationState {name}: {:?}",
            api.get("configurationstates", "metallb-system", name)
        );
    }
    // The speaker's metrics say what it announces, with MetalLB's name.
    let metrics = net
        .get(host_of(&web_owner), "127.0.0.1:7472", "/metrics")
        .unwrap_or_default();
    assert!(
        metrics.contains(&format!(
            "metallb_speaker_announced{{service=\"default/web\",protocol=\"layer2\",node=\"{web_owner}\",ip=\"{web_ip}\"}} 1"
        )),
        "{metrics}"
    );
    assert_eq!(
        net.get(host_of(&web_owner), "127.0.0.1:7472", "/readyz")
            .as_deref(),
        Some("ready\n")
    );

    // The controller's metrics: the pool's use, with MetalLB's names, and its leadership.
    let metrics = net
        .get("api", "127.0.0.1:7472", "/metrics")
        .unwrap_or_default();
    for line in [
        "metallb_allocator_addresses_in_use_total{pool=\"lan\"} 2",
        "metallb_allocator_addresses_total{pool=\"lan\"} 11",
        "metallb_k8s_client_config_loaded_bool 1",
        "lb_controller_leader 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert_eq!(
        net.get("api", "127.0.0.1:7472", "/readyz").as_deref(),
        Some("ready\n")
    );

    // Changes of one EndpointSlice and one Service, each decided from what the speakers kept
    // (no whole decision): the ETP Local endpoint moves to node1 and back; a new service gets
    // an address from the controller's pass over it and is announced.
    for (nodes, host) in [(["node1"], "n1"), (["node2"], "n2")] {
        api.put("endpointslices", slice("local", &nodes));
        assert!(
            until(10, || answered_by(&net, &local_ip) == Some(net.mac(host))),
            "local's endpoint on {nodes:?}\n{}",
            logs(&net)
        );
    }
    api.put("endpointslices", slice("late", &["node1", "node2"]));
    api.put("services", lb_service("default", "late", &[8080]));
    assert!(
        until(10, || !ingress_ips(&svc("late")).is_empty()),
        "controller log:\n{}",
        net.log("controller")
    );
    let late_ip = ingress_ips(&svc("late"))[0].clone();
    assert!(
        until(10, || l2_owner(&api, "late").is_some()),
        "{}",
        logs(&net)
    );
    let late_owner = l2_owner(&api, "late").unwrap();
    assert!(
        until(10, || answered_by(&net, &late_ip)
            == Some(net.mac(host_of(&late_owner)))),
        "{}",
        logs(&net)
    );
    // The change reached the owner's metrics and /status too (each updated by the change
    // alone, not rebuilt).
    let late_host = host_of(&late_owner);
    let late_row = format!(
        "metallb_speaker_announced{{service=\"default/late\",protocol=\"layer2\",node=\"{late_owner}\",ip=\"{late_ip}\"}} 1"
    );
    let shows_late = |net: &Net| {
        let metrics = net
            .get(late_host, "127.0.0.1:7472", "/metrics")
            .unwrap_or_default();
        let status = net
            .get(late_host, "127.0.0.1:7472", "/status")
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or_default();
        let listed = status["announcements"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["service"] == json!("default/late") && x["ip"] == json!(late_ip))
        });
        (metrics.contains(&late_row), listed)
    };
    assert!(
        until(10, || shows_late(&net) == (true, true)),
        "{:?}\n{}",
        shows_late(&net),
        logs(&net)
    );
    api.remove("services", "default", "late");
    assert!(
        until(10, || answered_by(&net, &late_ip).is_none()),
        "{}",
        logs(&net)
    );
    assert!(
        until(10, || l2_owner(&api, "late").is_none()
            && shows_late(&net) == (false, false)),
        "{:?}\n{}",
        shows_late(&net),
        logs(&net)
    );

    // The other speaker restarts (a rolling update): it must not claim the owner's address,
    // even for a moment, while it finds the membership again. The client's entry is watched
    // without flushing it, so a stray gratuitous ARP would show.
    let (other, other_host) = if web_owner == "node1" {
        (2, "n2")
    } else {
        (1, "n1")
    };
    assert!(net.signal(&format!("speaker{other}"), "-TERM").success());
    std::thread::sleep(Duration::from_millis(500));
    let _ = net.ping_once("cl", &web_ip);
    let owner_mac = net.mac(host_of(&web_owner));
    assert_eq!(net.neighbour("cl", &web_ip), Some(owner_mac.clone()));
    start_speaker(&mut net, other);
    let mut seen = std::collections::BTreeSet::new();
    let watch_until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < watch_until {
        if let Some(mac) = net.neighbour("cl", &web_ip) {
            seen.insert(mac);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !seen.contains(&net.mac(other_host)),
        "the restarted speaker claimed {web_ip}: {seen:?}\n{}",
        logs(&net)
    );
    assert!(
        until(20, || net
            .get(other_host, "127.0.0.1:7472", "/readyz")
            .as_deref()
            == Some("ready\n")),
        "{}",
        logs(&net)
    );

    // The API server goes away. Announcements stay.
    api.set_down(true);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        answered_by(&net, &web_ip),
        Some(net.mac(host_of(&web_owner)))
    );
    assert_eq!(answered_by(&net, &local_ip), Some(net.mac("n2")));

    // The web owner crashes while the API is away: the other speaker takes the address over
    // by membership alone.
    let (dead, survivor) = if web_owner == "node1" {
        ("1", "n2")
    } else {
        ("2", "n1")
    };
    net.signal(&format!("speaker{dead}"), "-KILL");
    net.link_down(&format!("n{dead}"));
    assert!(
        until(10, || answered_by(&net, &web_ip) == Some(net.mac(survivor))),
        "{}",
        logs(&net)
    );

    // The API is back: the survivor records what it announces.
    api.set_down(false);
    let survivor_node = if survivor == "n1" { "node1" } else { "node2" };
    assert!(
        until(20, || {
            api.list("servicel2statuses").iter().any(|s| {
                s.pointer("/status/serviceName") == Some(&json!("web"))
                    && s.pointer("/status/node") == Some(&json!(survivor_node))
            })
        }),
        "{}",
        logs(&net)
    );

    // SIGTERM: the controller exits cleanly and hands its Lease back.
    let st = net.signal("controller", "-TERM");
    assert!(st.success(), "controller log:\n{}", net.log("controller"));
    let lease = api
        .get("leases", "metallb-system", "lb-controller")
        .unwrap();
    assert_eq!(lease.pointer("/spec/holderIdentity"), None, "{lease}");
    let speaker = format!("speaker{}", if survivor == "n1" { 1 } else { 2 });
    assert!(net.signal(&speaker, "-TERM").success(), "{}", logs(&net));
}

#[test]
fn a_speaker_advertises_to_bird_with_the_password_from_a_secret() {
    if !lab::available("Kubernetes component tests") {
        return;
    }
    if !lab::bird_available() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut net = Net::new(
        "lbb",
        &[
            ("api", "192.0.2.250/24"),
            ("n1", "192.0.2.11/24"),
            ("cl", "192.0.2.100/24"),
        ],
    );
    // The client host is the router: BIRD, passive, with a TCP-MD5 password.
    let bird = net.bird("cl", "bird", &lab::bird_conf("192.0.2.100", Some("s3cret")));

    let api = FakeApi::new();
    api.put("nodes", node("node1", "192.0.2.11"));
    api.put("ipaddresspools", pool("routed", &["203.0.113.0/28"]));
    api.put(
        "bgpadvertisements",
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "routed", "namespace": "metallb-system"},
               "spec": {"ipAddressPools": ["routed"], "communities": ["64512:7"]}}),
    );
    // No controller here to create the membership key: the operator's Secret.
    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "memberlist", "namespace": "metallb-system"},
               "data": {"secretkey": "YSBtZW1iZXJzaGlwIGtleSBvZiBhdCBsZWFzdCBzaXh0ZWVuIGJ5dGVz"}}),
    );
    // The password only in a Secret: no session unless the speaker reads it.
    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "router-password", "namespace": "metallb-system"},
               "data": {"password": "czNjcmV0"}}),
    );
    api.put(
        "bgppeers",
        json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
               "metadata": {"name": "router", "namespace": "metallb-system"},
               "spec": {"myASN": 64512, "peerASN": 64500, "peerAddress": "192.0.2.100",
                        "holdTime": "9s",
                        "passwordSecret": {"name": "router-password", "namespace": "metallb-system"}}}),
    );
    api.put("services", lb_service("default", "web", &[80]));
    api.put("endpointslices", slice("web", &["node1"]));
    let kubeconfig = serve(&net, &rt, api.clone());
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info")];
    let bin = env!("CARGO_BIN_EXE_lb-bin");
    net.spawn(
        "controller",
        "api",
        bin,
        &[
            "controller",
            "--http",
            "127.0.0.1:7472",
            "--log-format",
            "text",
        ],
        &env,
    );
    start_speaker(&mut net, 1, &kubeconfig);
    assert!(
        until(30, || bird.routes().contains("203.0.113.0/32")),
        "BIRD has no route:\n{}\ncontroller:\n{}\nspeaker:\n{}",
        bird.routes(),
        net.log("controller"),
        net.log("speaker1")
    );
    let r = bird.routes();
    assert!(r.contains("BGP.community: (64512,7)"), "{r}");
    assert!(r.contains("BGP.next_hop: 192.0.2.11"), "{r}");
    assert!(
        until(10, || api.list("servicebgpstatuses").iter().any(|s| {
            s.pointer("/status/node") == Some(&json!("node1"))
                && s.pointer("/status/peers") == Some(&json!(["router"]))
        })),
        "{}",
        net.log("speaker1")
    );
    // The metrics text is refreshed every second.
    let metrics = || {
        net.get("n1", "127.0.0.1:7472", "/metrics")
            .unwrap_or_default()
    };
    assert!(
        until(5, || metrics()
            .contains("metallb_bgp_session_up{peer=\"router\"} 1")),
        "{}",
        metrics()
    );
    // A rotated password: the router first, then the Secret. The session with the old key
    // is gone for good; only the speaker reading the new Secret brings it back.
    let since = bird.session();
    bird.reconfigure(&lab::bird_conf("192.0.2.100", Some("n3wkey")));
    assert!(until(10, || !bird.session().contains("Established")));
    assert!(!until(3, || bird.session().contains("Established")));
    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "router-password", "namespace": "metallb-system"},
               "data": {"password": "bjN3a2V5"}}),
    );
    assert!(
        until(30, || {
            let s = bird.session();
            s.contains("Established") && s != since && bird.routes().contains("203.0.113.0/32")
        }),
        "the rotated password never reached the session:\n{}\n{}",
        bird.session(),
        net.log("speaker1")
    );
    // SIGTERM: a Cease, and BIRD drops the route at once.
    assert!(net.signal("speaker1", "-TERM").success());
    let r = bird.routes();
    assert!(
        !r.contains("203.0.113.0/32"),
        "routes left after SIGTERM:\n{r}"
    );
    assert!(net.signal("controller", "-TERM").success());
}

/// Three speakers announce six L2 addresses; then the API server fails (`fault`) and two
/// owners crash one after the other. Each address must reach its new owner within a second,
/// as in standalone mode: the survivor of the first crash has status objects to write then
/// (the API cannot take them), and must take over the second crash's addresses all the same.
/// When the API returns, the survivor's ServiceL2Status objects appear.
fn speakers_fail_over_while_the_api(fault: api::Fault, tag: &str) {
    if !lab::available("Kubernetes component tests") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut net = Net::new(
        tag,
        &[
            ("api", "192.0.2.250/24"),
            ("n1", "192.0.2.11/24"),
            ("n2", "192.0.2.12/24"),
            ("n3", "192.0.2.13/24"),
            ("cl", "192.0.2.100/24"),
        ],
    );
    let api = FakeApi::new();
    for i in 1..=3 {
        api.put("nodes", node(&format!("node{i}"), &format!("192.0.2.1{i}")));
    }
    api.put("ipaddresspools", pool("lan", &["192.0.2.200-192.0.2.210"]));
    api.put(
        "l2advertisements",
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "lan", "namespace": "metallb-system"}, "spec": {}}),
    );
    api.put(
        "secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "memberlist", "namespace": "metallb-system"},
               "data": {"secretkey": "YSBtZW1iZXJzaGlwIGtleSBvZiBhdCBsZWFzdCBzaXh0ZWVuIGJ5dGVz"}}),
    );
    // Addresses as a controller would have written them.
    let services: Vec<(String, String)> = (0..6)
        .map(|i| (format!("svc{i}"), format!("192.0.2.20{i}")))
        .collect();
    for (name, ip) in &services {
        let mut s = lb_service("default", name, &[80]);
        s["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        api.put("services", s);
        api.put("endpointslices", slice(name, &["node1", "node2", "node3"]));
    }
    let kubeconfig = serve(&net, &rt, api.clone());
    for i in 1..=3 {
        start_speaker(&mut net, i, &kubeconfig);
    }
    let logs = |net: &Net| {
        (1..=3)
            .map(|i| format!("speaker{i}:\n{}", net.log(&format!("speaker{i}"))))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let owners = || -> Option<std::collections::BTreeMap<String, String>> {
        services
            .iter()
            .map(|(name, _)| Some((name.clone(), l2_owner(&api, name)?)))
            .collect()
    };
    let host = |node: &str| node.replace("node", "n");
    let ip_of = |svc: &str| services.iter().find(|(n, _)| n == svc).unwrap().1.clone();
    // Every service has one owner by its status objects, and the owner answers for it: while
    // the speakers still find each other, a status object may name a node that has just let
    // go of the address (its delete and the new owner's create are apart), so both must agree.
    let mut before = None;
    assert!(
        until(30, || {
            before = owners().filter(|o| {
                o.iter().all(|(svc, owner)| {
                    answered_by(&net, &ip_of(svc)) == Some(net.mac(&host(owner)))
                })
            });
            before.is_some()
        }),
        "every service gets one owner, which answers for it: {:?}\n{}",
        owners(),
        logs(&net)
    );
    let before = before.unwrap();
    // `/status` says when each announcement began.
    let st: Value = serde_json::from_str(
        &net.get("n1", "127.0.0.1:7472", "/status")
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let since: Vec<u64> = st["announcements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["since"].as_u64())
        .collect();
    assert!(
        !since.is_empty() && since.iter().all(|s| *s > 1_600_000_000),
        "{st}"
    );
    // The first victim owns svc0; the second is another node that owns something.
    let first = before["svc0"].clone();
    let second = (1..=3)
        .map(|i| format!("node{i}"))
        .find(|n| *n != first && before.values().any(|o| o == n));
    let Some(second) = second else {
        panic!("only {first} owns anything: {before:?}");
    };
    let survivor = (1..=3)
        .map(|i| format!("node{i}"))
        .find(|n| *n != first && *n != second)
        .unwrap();
    let survivor_mac = net.mac(&host(&survivor));
    // The client learns every owner, so that a gratuitous ARP is what moves each entry.
    for (_, ip) in &services {
        let _ = net.ping_once("cl", ip);
    }

    api.set_fault(fault);
    std::thread::sleep(Duration::from_millis(300));
    // Crash 1: every address of `first` moves within a second.
    let crash = |net: &mut Net, victim: &str| {
        net.signal(&format!("speaker{}", &victim[4..]), "-KILL");
        net.link_down(&host(victim));
        std::time::Instant::now()
    };
    let moved_within = |net: &Net, victim: &str, t0: std::time::Instant, to: Option<&str>| {
        let theirs: Vec<String> = before
            .iter()
            .filter(|(_, o)| *o == victim)
            .map(|(s, _)| ip_of(s))
            .collect();
        let dead = net.mac(&host(victim));
        let ok = until(3, || {
            theirs.iter().all(|ip| match net.neighbour("cl", ip) {
                Some(m) => m != dead && to.is_none_or(|to| m == to),
                None => false,
            })
        });
        (ok, t0.elapsed(), theirs)
    };
    let t0 = crash(&mut net, &first);
    let (ok, took, ips) = moved_within(&net, &first, t0, None);
    assert!(ok, "{ips:?} of {first} never moved:\n{}", logs(&net));
    eprintln!("{fault:?}: {first}'s {ips:?} moved in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Crash 2: the survivor alone is left, with writes the API has not taken.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = crash(&mut net, &second);
    let (ok, took, ips) = moved_within(&net, &second, t0, Some(&survivor_mac));
    assert!(
        ok,
        "{ips:?} of {second} never reached {survivor}:\n{}",
        logs(&net)
    );
    eprintln!("{fault:?}: {second}'s {ips:?} moved to {survivor} in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    for ip in before.keys().map(|s| ip_of(s)) {
        assert_eq!(net.neighbour("cl", &ip), Some(survivor_mac.clone()), "{ip}");
    }
    // The survivor served each membership change from what it kept: the pass after it
    // applied a change, not a whole decision (which reads every object again).
    let log = net.log(&format!("speaker{}", &survivor[4..]));
    let after_changes: Vec<&str> = log
        .split("membership changed")
        .skip(1)
        .map(|rest| {
            let change = rest.find("a change, applied as one").unwrap_or(usize::MAX);
            let whole = rest.find("a whole decision").unwrap_or(usize::MAX);
            if change < whole { "change" } else { "whole" }
        })
        .collect();
    assert!(
        after_changes.len() >= 2 && after_changes.iter().all(|p| *p == "change"),
        "{after_changes:?}\n{log}"
    );

    // `/status` says why the survivor's writes wait.
    let survivor_host = host(&survivor);
    let api_error = || {
        net.get(&survivor_host, "127.0.0.1:7472", "/status")
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|s| s.get("api_error").cloned())
    };
    assert!(until(15, || api_error().is_some()), "{}", logs(&net));
    eprintln!("{fault:?}: api_error {:?}", api_error());
    // The API returns: the survivor's status objects catch up.
    api.set_fault(api::Fault::None);
    // (The dead nodes' objects stay: each speaker writes only its own.)
    let survivor_has = |svc: &str| {
        api.list("servicel2statuses").iter().any(|s| {
            s.pointer("/status/serviceName") == Some(&json!(svc))
                && s.pointer("/status/node") == Some(&json!(survivor))
        })
    };
    assert!(
        until(30, || services.iter().all(|(n, _)| survivor_has(n))),
        "{}",
        logs(&net)
    );
    assert!(until(10, || api_error().is_none()), "{:?}", api_error());
    let st = net.signal(&format!("speaker{}", &survivor[4..]), "-TERM");
    assert!(st.success(), "{}", logs(&net));
}

#[test]
fn speakers_fail_over_within_a_second_while_the_api_hangs() {
    speakers_fail_over_while_the_api(api::Fault::Hang, "lbh");
}

#[test]
fn speakers_fail_over_within_a_second_while_the_api_answers_503() {
    speakers_fail_over_while_the_api(api::Fault::Status(503), "lb5");
}
