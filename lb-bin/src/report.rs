//! What `check` and `plan` compute and print: pure functions from file text to a report, so
//! that tests need no process and the binary only adds IO.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use lb_core::alloc::converge::inputs_from;
use lb_core::alloc::{Outcome, Placement, PoolAllocator, converge};
use lb_core::config::{Config, ConfigError, Severity, load_str};
use lb_core::plan::{How, Interfaces, Plan, PlanInput, Skip, plan};
use serde::Serialize;

/// The result of `check`: every finding, and whether the file is valid.
#[derive(Debug)]
pub struct CheckReport {
    pub findings: Vec<ConfigError>,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let level = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let _ = writeln!(out, "{level}: {f}");
        }
        let warnings = self.findings.len() - self.errors();
        let _ = writeln!(
            out,
            "{}: {} error(s), {} warning(s)",
            if self.errors() == 0 {
                "valid"
            } else {
                "invalid"
            },
            self.errors(),
            warnings
        );
        out
    }
}

/// Every finding of the file, and the configuration read (for a command that exits without
/// freeing it).
pub fn check_parts(text: String) -> (CheckReport, Config) {
    let loaded = load_str(&text);
    drop(text);
    (
        CheckReport {
            findings: loaded.errors,
        },
        loaded.config,
    )
}

#[derive(Debug, Serialize)]
pub struct ServiceLine {
    pub namespace: String,
    pub name: String,
    pub ips: Vec<String>,
    pub pool: String,
}

#[derive(Debug, Serialize)]
pub struct PendingLine {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// The result of `plan`.
#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub services: Vec<ServiceLine>,
    pub pending: Vec<PendingLine>,
    /// With `--node`: what that node announces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub announcements: Option<Vec<lb_core::plan::Announcement>>,
    /// With `--node`: why that node does not announce the other services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Vec<Skip>>,
    #[serde(skip)]
    pub findings: Vec<ConfigError>,
}

/// Allocates every service of the file from scratch (status addresses are re-claimed first) and,
/// with `node`, plans that node taking every Node in the file and `node` itself as live members.
/// Returns the report, and what it read and allocated (for a command that exits without
/// freeing them).
pub fn plan_parts(
    text: String,
    node: Option<&str>,
    placement: Placement,
) -> (PlanReport, impl Sized) {
    let loaded = load_str(&text);
    // The file is read: its text is not held through allocation (18 MB at 100,000 services).
    drop(text);
    let config = loaded.config;
    let outcome = allocate(&config, placement);
    let (announcements, skipped) = match node {
        Some(n) => {
            let p = plan_node(&config, &outcome, n);
            (Some(p.announcements), Some(p.skipped))
        }
        None => (None, None),
    };
    let report = PlanReport {
        services: outcome
            .allocated
            .iter()
            .map(|(k, a)| ServiceLine {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                ips: a.ips.iter().map(|i| i.to_string()).collect(),
                pool: a.pool.clone(),
            })
            .collect(),
        pending: outcome
            .pending
            .iter()
            .map(|(k, reason)| PendingLine {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                reason: reason.to_string(),
            })
            .collect(),
        node: node.map(str::to_string),
        announcements,
        skipped,
        findings: loaded.errors,
    };
    (report, (config, outcome))
}

/// Allocates every service of `config` from scratch. The allocator is freed here: kept to the
/// end, its memory would not serve the plan's (25 MB more at 100,000 services).
pub fn allocate(config: &Config, placement: Placement) -> Outcome {
    let pools: Vec<_> = config.pools.values().cloned().collect();
    let mut alloc = PoolAllocator::with_placement(&pools, placement);
    converge(&mut alloc, inputs_from(config, None))
}

pub fn plan_node(config: &Config, outcome: &Outcome, node: &str) -> Plan {
    let mut members: BTreeSet<String> = config.nodes.keys().cloned().collect();
    members.insert(node.to_string());
    plan(&PlanInput::new(
        config,
        &outcome.allocated,
        &members,
        node,
        lb_core::Rules::standalone(),
    ))
}

impl PlanReport {
    pub fn render_table(&self) -> String {
        let mut rows = vec![["SERVICE".to_string(), "POOL".into(), "IPS".into()]];
        for s in &self.services {
            rows.push([
                format!("{}/{}", s.namespace, s.name),
                s.pool.clone(),
                s.ips.join(","),
            ]);
        }
        let mut out = table(&rows);
        if !self.pending.is_empty() {
            let mut rows = vec![["PENDING".to_string(), "REASON".into()]];
            for p in &self.pending {
                rows.push([format!("{}/{}", p.namespace, p.name), p.reason.clone()]);
            }
            out.push('\n');
            out += &table(&rows);
        }
        if let (Some(node), Some(anns)) = (&self.node, &self.announcements) {
            let _ = writeln!(out, "\nnode {node} announces:");
            let mut rows = vec![[
                "SERVICE".to_string(),
                "IP".into(),
                "PROTOCOL".into(),
                "DETAILS".into(),
            ]];
            for a in anns {
                let (proto, details) = match &a.how {
                    How::Layer2 { interfaces } => (
                        lb_core::Protocol::Layer2,
                        match interfaces {
                            Interfaces::All => "interfaces: all".to_string(),
                            Interfaces::Only(set) => format!(
                                "interfaces: {}",
                                set.iter().cloned().collect::<Vec<_>>().join(",")
                            ),
                        },
                    ),
                    How::Bgp { routes } => (
                        lb_core::Protocol::Bgp,
                        routes
                            .iter()
                            .map(|r| {
                                let mut s = format!("{} to {}", r.prefix, r.peers.join(","));
                                if let Some(lp) = r.local_pref {
                                    let _ = write!(s, " localPref {lp}");
                                }
                                if !r.communities.is_empty() {
                                    let c: Vec<String> =
                                        r.communities.iter().map(|c| c.to_string()).collect();
                                    let _ = write!(s, " communities {}", c.join(","));
                                }
                                s
                            })
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                };
                rows.push([
                    a.service.to_string(),
                    a.ip.to_string(),
                    proto.to_string(),
                    details,
                ]);
            }
            out += &table(&rows);
        }
        out
    }
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Written in place (a plan of 100,000 services is as many rows).
    let mut out = String::with_capacity(rows.len() * (widths.iter().sum::<usize>() + 2 * N));
    for row in rows {
        let start = out.len();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            out.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
        }
        let line = out[start..].trim_end().len();
        out.truncate(start + line);
        out.push('\n');
    }
    out
}
