//! The manifests in `deploy/`: every document deserializes as the type it claims, with no
//! field the type does not know; the CRDs are exactly what `lb-bin crds` prints; the RBAC
//! grants each component what it watches and writes, and nothing with a wildcard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every document of every file, with its file name.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for doc in text.split("\n---\n") {
            let doc = doc.trim_start_matches("---\n");
            if doc
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            {
                continue;
            }
            let v: Value = serde_saphyr::from_str(doc)
                .unwrap_or_else(|e| panic!("{name}: not YAML: {e}\n{doc}"));
            out.push((name.clone(), v));
        }
    }
    out
}

/// Removes nulls and empty maps, which a typed round trip may add or drop.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalized).collect()),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && n.is_f64())
            .map(|f| Value::from(f as i64))
            .unwrap_or_else(|| v.clone()),
        _ => v.clone(),
    }
}

/// Deserializes as `T` and checks that serializing it back loses nothing.
fn typed<T: DeserializeOwned + Serialize>(file: &str, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{file}: {} does not deserialize: {e}", v["kind"]));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        normalized(&back),
        normalized(v),
        "{file}: {} {} has fields its type does not know",
        v["kind"],
        v["metadata"]["name"]
    );
    t
}

#[derive(Default)]
struct Manifests {
    crds: Vec<CustomResourceDefinition>,
    cluster_roles: Vec<ClusterRole>,
    roles: Vec<Role>,
    deployments: Vec<Deployment>,
    daemon_sets: Vec<DaemonSet>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    role_bindings: Vec<RoleBinding>,
}

fn manifests() -> Manifests {
    let mut m = Manifests::default();
    for (file, v) in documents() {
        let api = v["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        match (api.as_str(), kind.as_str()) {
            ("v1", "Namespace") => {
                typed::<Namespace>(&file, &v);
            }
            ("v1", "ServiceAccount") => {
                typed::<ServiceAccount>(&file, &v);
            }
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                m.crds.push(typed(&file, &v))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                m.cluster_roles.push(typed(&file, &v))
            }
            ("rbac.authorization.k8s.io/v1", "Role") => m.roles.push(typed(&file, &v)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                m.cluster_role_bindings.push(typed(&file, &v))
            }
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                m.role_bindings.push(typed(&file, &v))
            }
            ("apps/v1", "Deployment") => m.deployments.push(typed(&file, &v)),
            ("apps/v1", "DaemonSet") => m.daemon_sets.push(typed(&file, &v)),
            other => panic!("{file}: unexpected kind {other:?}"),
        }
    }
    m
}

#[test]
fn every_manifest_deserializes_as_the_type_it_claims() {
    let m = manifests();
    assert_eq!(m.deployments.len(), 1);
    assert_eq!(m.daemon_sets.len(), 1);
    assert_eq!(m.crds.len(), 9);
}

#[test]
fn the_crds_in_deploy_are_what_lb_bin_crds_prints() {
    let file = std::fs::read_to_string(deploy_dir().join("01-crds.yaml")).unwrap();
    let printed = lb_k8s::crds::yaml().unwrap();
    assert!(
        file == printed,
        "deploy/01-crds.yaml is stale: regenerate it with `cargo run -p lb-bin -- crds > deploy/01-crds.yaml`"
    );
    // And every kind lb-k8s reads is among them, at the version it reads.
    let m = manifests();
    for (plural, version) in [
        ("ipaddresspools", "v1beta1"),
        ("l2advertisements", "v1beta1"),
        ("bgpadvertisements", "v1beta1"),
        ("bgppeers", "v1beta2"),
        ("bgppeers", "v1beta1"),
        ("bfdprofiles", "v1beta1"),
        ("communities", "v1beta1"),
        ("servicel2statuses", "v1beta1"),
        ("servicebgpstatuses", "v1beta1"),
    ] {
        let crd = m
            .crds
            .iter()
            .find(|c| c.spec.names.plural == plural)
            .unwrap_or_else(|| panic!("no CRD for {plural}"));
        let v = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .unwrap_or_else(|| panic!("{plural} does not serve {version}"));
        assert!(v.served);
        assert_eq!(v.storage, version != "v1beta1" || plural != "bgppeers");
    }
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g == group)
            && r.resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

fn role_rules(m: &Manifests, component: &str) -> (Vec<PolicyRule>, Vec<PolicyRule>) {
    let cluster = m
        .cluster_roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&format!("lb:{component}")))
        .and_then(|r| r.rules.clone())
        .unwrap_or_default();
    let ns = m
        .roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&format!("lb-{component}")))
        .and_then(|r| r.rules.clone())
        .unwrap_or_default();
    (cluster, ns)
}

#[test]
fn rbac_grants_each_component_what_it_uses_and_no_wildcards() {
    let m = manifests();
    for r in m
        .cluster_roles
        .iter()
        .flat_map(|r| r.rules.clone().unwrap_or_default())
        .chain(
            m.roles
                .iter()
                .flat_map(|r| r.rules.clone().unwrap_or_default()),
        )
    {
        let all = r
            .verbs
            .iter()
            .chain(r.resources.iter().flatten())
            .chain(r.api_groups.iter().flatten());
        assert!(all.into_iter().all(|s| s != "*"), "wildcard in {r:?}");
    }
    let speaker_opts = lb_k8s::speaker::Options::new("n", "metallb-system");
    for (component, kinds) in [
        ("controller", lb_k8s::controller::kinds("metallb-system")),
        ("speaker", lb_k8s::speaker::kinds(&speaker_opts)),
    ] {
        let (cluster, ns) = role_rules(&m, component);
        for k in kinds {
            let rules = if k.namespace.is_some() {
                [cluster.clone(), ns.clone()].concat()
            } else {
                cluster.clone()
            };
            for verb in ["list", "watch"] {
                assert!(
                    grants(&rules, &k.resource.group, &k.resource.plural, verb),
                    "{component} may not {verb} {}",
                    k.resource.plural
                );
            }
        }
        assert!(grants(&cluster, "events.k8s.io", "events", "create"));
    }
    let (cluster, ns) = role_rules(&m, "controller");
    assert!(grants(&cluster, "", "services/status", "patch"));
    assert!(
        !grants(&cluster, "", "services", "patch"),
        "only the status is written"
    );
    assert!(grants(&ns, "metallb.io", "ipaddresspools/status", "patch"));
    assert!(grants(&ns, "coordination.k8s.io", "leases", "update"));
    // The membership key Secret: created when missing, read by name.
    assert!(grants(&ns, "", "secrets", "create"));
    assert!(grants(&ns, "", "secrets", "get"));
    assert!(
        !grants(&ns, "", "secrets", "list"),
        "the controller reads no other Secret"
    );
    for component in ["controller", "speaker"] {
        let (_, ns) = role_rules(&m, component);
        assert!(
            grants(&ns, "metallb.io", "configurationstates", "create"),
            "{component}"
        );
        assert!(
            grants(&ns, "metallb.io", "configurationstates", "get"),
            "{component}"
        );
        assert!(
            grants(&ns, "metallb.io", "configurationstates/status", "patch"),
            "{component}"
        );
    }
    let (_, ns) = role_rules(&m, "speaker");
    for verb in ["create", "delete"] {
        assert!(grants(&ns, "metallb.io", "servicel2statuses", verb));
        assert!(grants(&ns, "metallb.io", "servicebgpstatuses", verb));
    }
    assert!(grants(
        &ns,
        "metallb.io",
        "servicel2statuses/status",
        "patch"
    ));
}

#[test]
fn workloads_are_locked_down_and_probe_real_endpoints() {
    let m = manifests();
    let d = &m.deployments[0];
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
    let ds = &m.daemon_sets[0];
    let ds_pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(ds_pod.host_network, Some(true));
    let d_pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    // The speaker needs raw sockets (ARP/NDP) and nothing else; both run under the runtime's
    // default seccomp profile (set on the pod or the container).
    for (pod, caps) in [(d_pod, vec![]), (ds_pod, vec!["NET_RAW"])] {
        for c in &pod.containers {
            let sc = c.security_context.as_ref().expect("a securityContext");
            let seccomp = sc.seccomp_profile.as_ref().or(pod
                .security_context
                .as_ref()
                .and_then(|p| p.seccomp_profile.as_ref()));
            assert_eq!(
                seccomp.map(|s| s.type_.as_str()),
                Some("RuntimeDefault"),
                "{:?}",
                c.name
            );
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let cap = sc.capabilities.as_ref().unwrap();
            assert_eq!(cap.drop.as_deref(), Some(&["ALL".to_string()][..]));
            let added: Vec<&str> = cap.add.iter().flatten().map(String::as_str).collect();
            assert_eq!(added, caps);
            let ready = c
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(ready.path.as_deref(), Some("/readyz"));
            let live = c
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(live.path.as_deref(), Some("/healthz"));
            assert!(
                c.args.iter().flatten().any(|a| a == "--http"),
                "the probes' port is served"
            );
        }
    }
}
