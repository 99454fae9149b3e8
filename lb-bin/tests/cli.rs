//! The binary as a user runs it: `check` and `plan` on files, exit codes and output shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config.yaml")
}

fn lb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lb-bin"))
        .args(args)
        .output()
        .expect("run lb-bin")
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-bin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_accepts_the_example_config() {
    let o = lb(&["check", "--config", example().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("valid: 0 error(s)"));
}

#[test]
fn check_prints_every_error_and_exits_1() {
    let p = temp_file(
        "bad.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: main, namespace: metallb-system}\nspec: {addresses: [192.0.2.0/28, 192.0.2.9-192.0.2.1]}\n---\napiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {name: r}\nspec: {myASN: 0, peerASN: 1, peerAddress: 192.0.2.1}\n",
    );
    let o = lb(&["check", "--config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains(r#"error: IPAddressPool metallb-system/main: spec.addresses[1]: "192.0.2.9-192.0.2.1": range start is after its end"#), "{out}");
    assert!(
        out.contains("error: BGPPeer metallb-system/r: spec.myASN"),
        "{out}"
    );
    assert!(out.contains("invalid: 2 error(s)"));
}

#[test]
fn unreadable_file_exits_2_with_the_path() {
    let o = lb(&["check", "--config", "/nonexistent/lb.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/lb.yaml"));
}

#[test]
fn plan_json_lists_services_and_pending_with_reasons() {
    let o = lb(&[
        "plan",
        "--config",
        example().to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(o.status.success());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let services = v["services"].as_array().unwrap();
    let find = |name: &str| services.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(find("web")["ips"], find("dns")["ips"], "shared address");
    assert_eq!(
        find("api")["ips"].as_array().unwrap().len(),
        2,
        "dual-stack"
    );
    assert_eq!(
        find("api")["ips"][0],
        "2001:db8:1::10",
        "primary family first"
    );
    assert_eq!(find("store")["pool"], "shop");
    assert_eq!(find("ingress")["ips"][0], "203.0.113.10");
    assert_eq!(
        find("legacy")["ips"][0],
        "192.0.2.70",
        "status address kept"
    );
    let pending = v["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["name"], "squatter");
    assert!(
        pending[0]["reason"]
            .as_str()
            .unwrap()
            .contains("in use by default/legacy")
    );
    assert!(
        v.get("announcements").is_none(),
        "announcements only with --node"
    );
}

#[test]
fn plan_for_a_node_lists_its_announcements() {
    let mut owners = 0;
    for node in ["node1", "node2", "node3"] {
        let o = lb(&[
            "plan",
            "--config",
            example().to_str().unwrap(),
            "--node",
            node,
            "--output",
            "json",
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let anns = v["announcements"].as_array().unwrap();
        owners += anns
            .iter()
            .filter(|a| a["ip"] == "192.0.2.64" && a["protocol"] == "layer2")
            .count();
        let bgp: Vec<&Value> = anns.iter().filter(|a| a["protocol"] == "bgp").collect();
        // ingress is externalTrafficPolicy Local with serving endpoints on node1 and node2.
        assert_eq!(!bgp.is_empty(), node != "node3", "{node}: {bgp:?}");
        if let Some(a) = bgp.first() {
            let routes = a["routes"].as_array().unwrap();
            let host = routes
                .iter()
                .find(|r| r["prefix"] == "203.0.113.10/32")
                .unwrap();
            assert_eq!(host["peers"], serde_json::json!(["router"]));
            assert!(
                host.get("localPref").is_none(),
                "localPref is for iBGP peers only"
            );
            assert_eq!(
                host["communities"],
                serde_json::json!(["65535:65281", "large:64512:1:1"])
            );
        }
    }
    assert_eq!(owners, 1, "exactly one node announces an L2 address");
}

#[test]
fn plan_reports_config_errors_on_stderr_and_plans_the_rest() {
    let p = temp_file(
        "partial.yaml",
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: bad}\nspec: {addresses: [nope]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: good}\nspec: {addresses: [192.0.2.0/30]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: LoadBalancer}\n",
    );
    let o = lb(&["plan", "--config", p.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("IPAddressPool metallb-system/bad"));
    assert!(
        stdout(&o).contains("default/s  good  192.0.2.0"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn version_names_the_compiled_features() {
    let o = lb(&["version"]);
    assert!(stdout(&o).contains("features:"));
}

#[test]
fn plan_with_hashed_placement_previews_standalone_addresses() {
    let plan = |placement: &str| {
        let o = lb(&[
            "plan",
            "--config",
            example().to_str().unwrap(),
            "--output",
            "json",
            "--placement",
            placement,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let ips = |name: &str| {
            v["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .unwrap()["ips"]
                .clone()
        };
        (ips("api"), ips("web"), ips("dns"), ips("legacy"))
    };
    let (lowest, hashed) = (plan("lowest"), plan("hashed"));
    assert_eq!(hashed, plan("hashed"), "deterministic");
    assert_ne!(hashed.0, lowest.0, "a fresh address is placed differently");
    assert_eq!(hashed.1, hashed.2, "sharing still shares");
    assert_eq!(
        hashed.3, lowest.3,
        "an address held in status is kept either way"
    );
}

#[test]
fn crds_prints_what_deploy_holds() {
    let o = lb(&["crds"]);
    assert!(o.status.success());
    let deploy = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/01-crds.yaml"),
    )
    .unwrap();
    assert!(
        stdout(&o) == deploy,
        "deploy/01-crds.yaml differs from `lb-bin crds`: regenerate it"
    );
    assert_eq!(
        stdout(&o).matches("kind: CustomResourceDefinition").count(),
        9
    );
}

#[test]
fn cluster_commands_without_a_cluster_say_so() {
    for cmd in [&["controller"][..], &["speaker", "--node-name", "n1"][..]] {
        let o = Command::new(env!("CARGO_BIN_EXE_lb-bin"))
            .args(cmd)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{cmd:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("connecting to the Kubernetes API"), "{err}");
    }
}

/// `lb-bin plan | head`: a reader that stops reading ends the output quietly, without a
/// panic and with the command's own exit code.
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::process::Stdio;
    // More output than a pipe holds (64 KiB), so that a write meets the closed pipe.
    let mut text = std::fs::read_to_string(example()).unwrap();
    for i in 0..3000 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: pipe}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n"
        ));
    }
    let file = temp_file("pipe.yaml", &text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lb-bin"))
        .args(["plan", "--config", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

/// The binary turns transparent huge pages off for its process before it reads anything
/// (`main.rs`, `huge_pages_off`: mimalloc asks for huge pages, and a fault on one stalled a
/// pass 0.4 s now and then). Seen from outside: `lb-bin plan` waits to open its config, a
/// FIFO, while the kernel's view of it says THP is off; then it gets the config and plans.
#[cfg(feature = "mimalloc")]
#[test]
fn the_process_runs_without_transparent_huge_pages() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = std::env::temp_dir().join(format!("lb-bin-thp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("config.yaml");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let child = Command::new(env!("CARGO_BIN_EXE_lb-bin"))
        .args(["plan", "--config", fifo.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    // Bounded: 100 looks, 50 ms apart. Until main runs the field reads 1 (the system's).
    let mut seen = String::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&status).unwrap_or_default();
        seen = text
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .unwrap_or("no THP_enabled line")
            .to_string();
        if seen.split_whitespace().nth(1) == Some("0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The config goes in either way, so that the child ends.
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    w.write_all(std::fs::read_to_string(example()).unwrap().as_bytes())
        .unwrap();
    drop(w);
    let o = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("default/api"), "{}", stdout(&o));
    assert_eq!(
        seen, "THP_enabled:\t0",
        "lb-bin left transparent huge pages on"
    );
}
