//! A custom [`Announcer`] plugged into lb-core's [`Runtime`], without lb-bin: this one "announces"
//! by writing every change of its layer 2 set to a file, one line per address (a stand-in for
//! programming a hardware load balancer, a cloud API or a router's config). The runtime plans
//! from the elector's members with the same rules as lb-bin, and hands the announcer its part.
//!
//! Run it: `cargo run -p lb-core --example custom_announcer -- /tmp/announced.txt`.
//! `cargo test -p lb-core` runs its test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use lb_core::alloc::Allocation;
use lb_core::announce::AnnounceError;
use lb_core::objects::ServiceKey;
use lb_core::{Announcement, Announcer, Protocol, Rules, Runtime, StaticElector};
use serde_json::json;

/// Writes the announced set to `path` whenever it changes.
#[derive(Debug)]
struct FileAnnouncer {
    path: PathBuf,
    last: std::sync::Mutex<Option<Vec<String>>>,
}

#[async_trait]
impl Announcer for FileAnnouncer {
    fn protocol(&self) -> Protocol {
        Protocol::Layer2
    }

    async fn announce(&self, desired: &[Announcement]) -> Result<(), AnnounceError> {
        // In the plan's order (by service).
        let lines: Vec<String> = desired
            .iter()
            .map(|a| format!("{} {}", a.ip, a.service))
            .collect();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(&lines) {
            return Ok(()); // idempotent: the same set writes nothing
        }
        std::fs::write(&self.path, lines.join("\n") + "\n").map_err(|e| AnnounceError::Other {
            protocol: Protocol::Layer2,
            source: Arc::new(e),
        })?;
        *last = Some(lines);
        Ok(())
    }
}

/// Two services, one node alone, then a second node joins: what the file says each time.
async fn run(path: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let config = lb_core::config::load_values([
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "lan", "namespace": "metallb-system"},
               "spec": {"addresses": ["192.0.2.10-192.0.2.20"]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "lan", "namespace": "metallb-system"}, "spec": {}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 8443}]}}),
    ]);
    if !config.is_valid() {
        return Err(format!("{:?}", config.errors).into());
    }
    // The allocations come from wherever the operator keeps them.
    let allocations: BTreeMap<ServiceKey, Allocation> =
        [("web", "192.0.2.10"), ("api", "192.0.2.11")]
            .into_iter()
            .map(|(name, ip)| -> Result<_, std::net::AddrParseError> {
                Ok((
                    ServiceKey::new("shop", name),
                    Allocation {
                        pool: "lan".into(),
                        ips: vec![ip.parse()?],
                    },
                ))
            })
            .collect::<Result<_, _>>()?;
    let announcer = Arc::new(FileAnnouncer {
        path: path.to_path_buf(),
        last: Default::default(),
    });
    let mut runtime = Runtime::new("node-a", vec![announcer as Arc<dyn Announcer>]);
    let mut seen = Vec::new();
    for members in [vec!["node-a"], vec!["node-a", "node-b"]] {
        let elector = StaticElector::new("node-a", members.iter().map(|m| m.to_string()));
        let (_, applied) = runtime
            .pass(
                &config.config,
                &allocations,
                &elector,
                Rules::standalone(),
                &BTreeSet::new(),
                0,
            )
            .await;
        if let Some(e) = applied.errors.first() {
            return Err(e.to_string().into());
        }
        seen.push(std::fs::read_to_string(path)?);
    }
    Ok(seen)
}

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("announced.txt"), PathBuf::from);
    for (i, text) in run(&path).await?.iter().enumerate() {
        println!("pass {}: {}\n{text}", i + 1, path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_runtime_drives_a_custom_announcer_with_plans_rules() {
        let path = std::env::temp_dir().join(format!("lb-custom-{}.txt", std::process::id()));
        let seen = run(&path).await.expect("the example runs");
        let _ = std::fs::remove_file(&path);
        // Alone, node-a announces both.
        assert_eq!(seen[0], "192.0.2.11 shop/api\n192.0.2.10 shop/web\n");
        // With node-b, each address has one owner by MetalLB's hash: node-a keeps exactly
        // the ones the plan's rules give it.
        let two: BTreeSet<String> = ["node-a".to_string(), "node-b".to_string()].into();
        let mine: Vec<&str> = ["192.0.2.10", "192.0.2.11"]
            .into_iter()
            .filter(|ip| lb_core::plan::owner_of(&two, ip).as_deref() == Some("node-a"))
            .collect();
        let lines: Vec<&str> = seen[1].lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), mine.len(), "{seen:?}");
        for ip in mine {
            assert!(seen[1].contains(ip), "{seen:?}");
        }
    }
}
