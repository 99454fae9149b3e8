//! The CEL rules of the generated CRDs, evaluated as the API server would (kube-cel, with the
//! schema's defaults applied), on objects MetalLB accepts and objects it refuses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_cel::Validator;
use serde_json::{Value, json};

/// The openAPIV3Schema of `plural` at `version`, from `lb_k8s::crds::all()`.
fn schema(plural: &str, version: &str) -> Value {
    let crd = lb_k8s::crds::all()
        .unwrap()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap();
    let v = crd
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == version)
        .unwrap();
    serde_json::to_value(v.schema.unwrap().open_api_v3_schema.unwrap()).unwrap()
}

fn errors(plural: &str, version: &str, obj: Value, old: Option<Value>) -> Vec<String> {
    match Validator::new().validate(&schema(plural, version), &obj, old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_vec().iter().map(|e| e.to_string()).collect(),
    }
}

fn peer(spec: Value) -> Value {
    json!({"apiVersion": "metallb.io/v1beta2", "kind": "BGPPeer",
           "metadata": {"name": "p", "namespace": "metallb-system"}, "spec": spec})
}

#[test]
fn connect_time_is_whole_seconds_between_1_and_65535() {
    let base = json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1"});
    for (t, ok) in [
        ("10s", true),
        ("1m", true),
        ("1500ms", false),
        ("0s", false),
        ("65536s", false),
    ] {
        let mut spec = base.clone();
        spec["connectTime"] = json!(t);
        let errs = errors("bgppeers", "v1beta2", peer(spec), None);
        assert_eq!(errs.is_empty(), ok, "connectTime {t}: {errs:?}");
    }
}

#[test]
fn exactly_one_of_each_exclusive_pair() {
    let cases = [
        (
            json!({"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1"}),
            true,
        ),
        (
            json!({"myASN": 1, "dynamicASN": "external", "interface": "eth1"}),
            true,
        ),
        (json!({"myASN": 1, "peerAddress": "192.0.2.1"}), false),
        (
            json!({"myASN": 1, "peerASN": 2, "dynamicASN": "internal", "peerAddress": "192.0.2.1"}),
            false,
        ),
        (json!({"myASN": 1, "peerASN": 2}), false),
        (
            json!({"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1", "interface": "eth1"}),
            false,
        ),
        (
            json!({"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1", "password": "x",
                   "passwordSecret": {"name": "s"}}),
            false,
        ),
    ];
    for (spec, ok) in cases {
        let errs = errors("bgppeers", "v1beta2", peer(spec.clone()), None);
        assert_eq!(errs.is_empty(), ok, "{spec}: {errs:?}");
    }
}

#[test]
fn graceful_restart_cannot_change_after_creation() {
    let spec = |gr: bool| json!({"myASN": 1, "peerASN": 2, "peerAddress": "192.0.2.1", "enableGracefulRestart": gr});
    assert!(
        errors(
            "bgppeers",
            "v1beta2",
            peer(spec(true)),
            Some(peer(spec(true)))
        )
        .is_empty()
    );
    let errs = errors(
        "bgppeers",
        "v1beta2",
        peer(spec(false)),
        Some(peer(spec(true))),
    );
    assert!(
        errs.iter().any(|e| e.contains("cannot be changed")),
        "{errs:?}"
    );
}

#[test]
fn service_selectors_need_the_default_aggregation_lengths() {
    let ad = |spec: Value| {
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "BGPAdvertisement",
               "metadata": {"name": "a", "namespace": "metallb-system"}, "spec": spec})
    };
    let sel = json!([{"matchLabels": {"app": "web"}}]);
    assert!(
        errors(
            "bgpadvertisements",
            "v1beta1",
            ad(json!({"serviceSelectors": sel})),
            None
        )
        .is_empty()
    );
    assert!(
        errors(
            "bgpadvertisements",
            "v1beta1",
            ad(json!({"serviceSelectors": sel, "aggregationLength": 32})),
            None
        )
        .is_empty()
    );
    assert!(
        !errors(
            "bgpadvertisements",
            "v1beta1",
            ad(json!({"serviceSelectors": sel, "aggregationLength": 24})),
            None
        )
        .is_empty()
    );
    assert!(
        errors(
            "bgpadvertisements",
            "v1beta1",
            ad(json!({"aggregationLength": 24})),
            None
        )
        .is_empty()
    );
}

#[test]
fn a_status_object_keeps_its_service_and_node() {
    let st = |node: &str| {
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
               "metadata": {"name": "l2-1", "namespace": "metallb-system"}, "spec": {},
               "status": {"node": node, "serviceName": "web", "serviceNamespace": "default"}})
    };
    assert!(errors("servicel2statuses", "v1beta1", st("n1"), Some(st("n1"))).is_empty());
    let errs = errors("servicel2statuses", "v1beta1", st("n2"), Some(st("n1")));
    assert!(errs.iter().any(|e| e.contains("immutable")), "{errs:?}");
}
