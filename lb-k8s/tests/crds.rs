//! The CRDs: MetalLB's objects read as our types unchanged, and the schema carries MetalLB's
//! validation (enums, ranges, defaults, CEL rules) for the API server to enforce.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lb_k8s::crds;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Reads `v` as `T` and checks nothing is lost on the way back.
fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) {
    let t: T = serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{} does not read: {e}", v["metadata"]["name"]));
    let back = serde_json::to_value(&t).unwrap();
    for (k, want) in v["spec"].as_object().unwrap() {
        assert_eq!(
            back["spec"].get(k),
            Some(want),
            "spec.{k} of {}",
            v["metadata"]["name"]
        );
    }
}

#[test]
fn the_example_configuration_reads_as_the_crd_types() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config.yaml"),
    )
    .unwrap();
    let mut seen = 0;
    for doc in text.split("\n---") {
        let Ok(v) = serde_saphyr::from_str::<Value>(doc) else {
            continue;
        };
        match (v["apiVersion"].as_str(), v["kind"].as_str()) {
            (Some("metallb.io/v1beta1"), Some("IPAddressPool")) => {
                round_trip::<crds::IPAddressPool>(&v)
            }
            (Some("metallb.io/v1beta1"), Some("L2Advertisement")) => {
                round_trip::<crds::L2Advertisement>(&v)
            }
            (Some("metallb.io/v1beta1"), Some("BGPAdvertisement")) => {
                round_trip::<crds::BGPAdvertisement>(&v)
            }
            (Some("metallb.io/v1beta1"), Some("Community")) => round_trip::<crds::Community>(&v),
            (Some("metallb.io/v1beta2"), Some("BGPPeer")) => {
                round_trip::<crds::v1beta2::BGPPeer>(&v)
            }
            (Some("metallb.io/v1beta1"), Some("BGPPeer")) => {
                round_trip::<crds::v1beta1::BGPPeer>(&v)
            }
            _ => continue,
        }
        seen += 1;
    }
    assert!(seen >= 8, "read {seen} metallb.io objects");
}

#[test]
fn a_v1beta1_peer_is_a_v1beta2_peer() {
    // The API server converts by field name ("None" strategy): every v1beta1 field must read
    // as v1beta2 with the same meaning.
    let v1 = json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "BGPPeer",
        "metadata": {"name": "old", "namespace": "metallb-system"},
        "spec": {"myASN": 64512, "peerASN": 64513, "peerAddress": "192.0.2.1",
                 "sourceAddress": "192.0.2.2", "peerPort": 1179, "holdTime": "90s",
                 "keepaliveTime": "30s", "routerID": "192.0.2.2", "password": "p",
                 "bfdProfile": "fast", "ebgpMultiHop": true,
                 "nodeSelectors": [{"matchLabels": {"a": "b"},
                                    "matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]}
    });
    round_trip::<crds::v1beta1::BGPPeer>(&v1);
    let mut v2 = v1.clone();
    v2["apiVersion"] = json!("metallb.io/v1beta2");
    round_trip::<crds::v1beta2::BGPPeer>(&v2);
}

fn crd(plural: &str) -> Value {
    let all = crds::all().unwrap();
    let c = all
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap();
    serde_json::to_value(c).unwrap()
}

fn spec_schema(plural: &str, version: &str) -> Value {
    let c = crd(plural);
    let v = c["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap()
        .clone();
    v["schema"]["openAPIV3Schema"]["properties"].clone()
}

fn rules(v: &Value) -> Vec<String> {
    v["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["rule"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bgppeer_validation_matches_metallb() {
    let s = spec_schema("bgppeers", "v1beta2")["spec"].clone();
    let p = &s["properties"];
    assert_eq!(p["peerPort"]["minimum"], json!(1.0));
    assert_eq!(p["peerPort"]["maximum"], json!(16384.0));
    assert_eq!(p["peerPort"]["default"], json!(179));
    // (An optional enum also lists null, as kube renders `Option`.)
    let modes: Vec<&Value> = p["dynamicASN"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(modes, [&json!("internal"), &json!("external")]);
    assert_eq!(p["localASN"]["minimum"], json!(1.0));
    assert_eq!(p["localASN"]["maximum"], json!(4294967295.0));
    assert!(rules(&p["enableGracefulRestart"]).contains(&"self == oldSelf".to_string()));
    let connect = rules(&p["connectTime"]);
    assert!(connect.iter().any(|r| r.contains("getSeconds() >= 1")));
    assert!(connect.iter().any(|r| r.contains("% 1000 == 0")));
    assert_eq!(s["required"], json!(["myASN"]));
    let whole = rules(&s);
    assert!(
        whole
            .iter()
            .any(|r| r.contains("peerASN") && r.contains("dynamicASN"))
    );
    // v1beta1 is served, deprecated, and not stored.
    let c = crd("bgppeers");
    let versions = c["spec"]["versions"].as_array().unwrap();
    let v1 = versions.iter().find(|v| v["name"] == "v1beta1").unwrap();
    assert_eq!(
        (v1["served"].clone(), v1["storage"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(v1["deprecated"], json!(true));
}

#[test]
fn other_kinds_carry_metallb_ranges_defaults_and_rules() {
    let bfd = spec_schema("bfdprofiles", "v1beta1")["spec"]["properties"].clone();
    for (field, lo, hi) in [
        ("receiveInterval", 10.0, 60000.0),
        ("transmitInterval", 10.0, 60000.0),
        ("echoInterval", 10.0, 60000.0),
        ("detectMultiplier", 2.0, 255.0),
        ("minimumTtl", 1.0, 254.0),
    ] {
        assert_eq!(bfd[field]["minimum"], json!(lo), "{field}");
        assert_eq!(bfd[field]["maximum"], json!(hi), "{field}");
    }
    let ad = spec_schema("bgpadvertisements", "v1beta1")["spec"].clone();
    assert_eq!(ad["properties"]["aggregationLength"]["default"], json!(32));
    assert_eq!(
        ad["properties"]["aggregationLength"]["maximum"],
        json!(32.0)
    );
    assert_eq!(
        ad["properties"]["aggregationLengthV6"]["default"],
        json!(128)
    );
    assert!(rules(&ad).iter().any(|r| r.contains("serviceSelectors")));
    let pool = spec_schema("ipaddresspools", "v1beta1");
    assert_eq!(
        pool["spec"]["properties"]["autoAssign"]["default"],
        json!(true)
    );
    assert_eq!(pool["spec"]["required"], json!(["addresses"]));
    assert!(pool["status"]["properties"]["assignedIPv4"].is_object());
    let l2 = spec_schema("l2advertisements", "v1beta1")["spec"]["properties"].clone();
    let weight = &l2["preferredNodeSelectors"]["items"]["properties"]["weight"];
    assert_eq!(
        (weight["minimum"].clone(), weight["maximum"].clone()),
        (json!(1.0), json!(100.0))
    );
    for plural in ["servicel2statuses", "servicebgpstatuses"] {
        let st = spec_schema(plural, "v1beta1")["status"]["properties"].clone();
        for f in ["node", "serviceName", "serviceNamespace"] {
            assert_eq!(rules(&st[f]), ["self == oldSelf"], "{plural} status.{f}");
        }
        assert!(crd(plural)["spec"]["versions"][0]["subresources"]["status"].is_object());
    }
}
