//! Prometheus text for `/metrics`, with MetalLB's metric names where MetalLB has one, so that
//! existing dashboards and alerts keep working. Every series is rendered from current state, so
//! a pool or service that goes away takes its series with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::alloc::PoolUsage;

/// Upper bounds of the reconcile-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Reads one count of a pool.
type Count = fn(&PoolUsage) -> u128;

#[derive(Debug, Default)]
struct Inner {
    pools: BTreeMap<String, PoolUsage>,
    updates: u64,
    update_errors: u64,
    config_loaded: bool,
    config_stale: bool,
    leader: bool,
    /// Services whose address is held while its pool is broken (controller).
    held: usize,
    ready: bool,
    reconciles: u64,
    reconcile_errors: u64,
    duration_buckets: [u64; BUCKETS.len()],
    duration_sum: f64,
    /// (service, protocol, node, ip) announced by this speaker.
    announced: Vec<[String; 4]>,
    /// Text from the announcers (L2 and BGP counters), appended as is.
    extra: String,
}

/// Shared metrics of one component. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics(Arc<Mutex<Inner>>);

fn capped(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each pool's counts.
    pub fn set_pools(&self, pools: BTreeMap<String, PoolUsage>) {
        self.lock().pools = pools;
    }

    /// One write to the API server, and whether it failed.
    pub fn update(&self, ok: bool) {
        let mut m = self.lock();
        m.updates += 1;
        if !ok {
            m.update_errors += 1;
        }
    }

    /// Whether a configuration is loaded, and whether the newest one failed and an older one runs.
    pub fn config(&self, loaded: bool, stale: bool) {
        let mut m = self.lock();
        m.config_loaded = loaded;
        m.config_stale = stale;
    }

    /// Caches are listed (controller) or a plan is applied (speaker).
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Whether the component is ready.
    pub fn is_ready(&self) -> bool {
        self.lock().ready
    }

    /// Whether this replica holds the Lease.
    pub fn leader(&self, leader: bool) {
        self.lock().leader = leader;
    }

    /// One reconcile pass: how long it took and whether its writes succeeded.
    pub fn reconciled(&self, took: Duration, ok: bool) {
        let mut m = self.lock();
        m.reconciles += 1;
        if !ok {
            m.reconcile_errors += 1;
        }
        let s = took.as_secs_f64();
        m.duration_sum += s;
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                m.duration_buckets[i] += 1;
            }
        }
    }

    /// Services whose address is held because its pool failed to load.
    pub fn set_held(&self, n: usize) {
        self.lock().held = n;
    }

    /// The speaker's announcements, as (service, address, protocol, node).
    pub fn set_announced(&self, announced: Vec<[String; 4]>) {
        self.lock().announced = announced;
    }

    /// More metrics text, appended as it is (the announcers' and membership's).
    pub fn set_extra(&self, text: String) {
        self.lock().extra = text;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, component: &str) -> String {
        let m = self.lock();
        let mut o = String::new();
        if !m.pools.is_empty() {
            let gauges: [(&str, &str, Count); 6] = [
                (
                    "metallb_allocator_addresses_total",
                    "Usable addresses per pool",
                    |c| c.ipv4_total + c.ipv6_total,
                ),
                (
                    "metallb_allocator_ipv4_addresses_total",
                    "Usable IPv4 addresses per pool",
                    |c| c.ipv4_total,
                ),
                (
                    "metallb_allocator_ipv6_addresses_total",
                    "Usable IPv6 addresses per pool",
                    |c| c.ipv6_total,
                ),
                (
                    "metallb_allocator_addresses_in_use_total",
                    "Addresses in use per pool",
                    |c| c.ipv4_in_use + c.ipv6_in_use,
                ),
                (
                    "metallb_allocator_ipv4_addresses_in_use_total",
                    "IPv4 addresses in use per pool",
                    |c| c.ipv4_in_use,
                ),
                (
                    "metallb_allocator_ipv6_addresses_in_use_total",
                    "IPv6 addresses in use per pool",
                    |c| c.ipv6_in_use,
                ),
            ];
            for (name, help, f) in gauges {
                let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
                for (pool, c) in &m.pools {
                    let _ = writeln!(o, "{name}{{pool=\"{}\"}} {}", escape(pool), capped(f(c)));
                }
            }
        }
        let _ = writeln!(
            o,
            "# HELP metallb_k8s_client_updates_total Writes to the API server\n# TYPE metallb_k8s_client_updates_total counter\nmetallb_k8s_client_updates_total {}",
            m.updates
        );
        let _ = writeln!(
            o,
            "# HELP metallb_k8s_client_update_errors_total Failed writes to the API server\n# TYPE metallb_k8s_client_update_errors_total counter\nmetallb_k8s_client_update_errors_total {}",
            m.update_errors
        );
        let _ = writeln!(
            o,
            "# HELP metallb_k8s_client_config_loaded_bool 1 once a configuration has been loaded\n# TYPE metallb_k8s_client_config_loaded_bool gauge\nmetallb_k8s_client_config_loaded_bool {}",
            u8::from(m.config_loaded)
        );
        let _ = writeln!(
            o,
            "# HELP metallb_k8s_client_config_stale_bool 1 while the newest configuration has errors and the previous one runs\n# TYPE metallb_k8s_client_config_stale_bool gauge\nmetallb_k8s_client_config_stale_bool {}",
            u8::from(m.config_stale)
        );
        if component == "controller" {
            let _ = writeln!(
                o,
                "# HELP lb_controller_leader 1 while this replica holds the Lease\n# TYPE lb_controller_leader gauge\nlb_controller_leader {}",
                u8::from(m.leader)
            );
            let _ = writeln!(
                o,
                "# HELP lb_controller_held_services Services whose address is kept unchanged because its pool failed to load\n# TYPE lb_controller_held_services gauge\nlb_controller_held_services {}",
                m.held
            );
        }
        let _ = writeln!(
            o,
            "# HELP lb_reconcile_total Reconcile passes\n# TYPE lb_reconcile_total counter\nlb_reconcile_total{{component=\"{component}\"}} {}",
            m.reconciles
        );
        let _ = writeln!(
            o,
            "# HELP lb_reconcile_errors_total Reconcile passes with a failed write\n# TYPE lb_reconcile_errors_total counter\nlb_reconcile_errors_total{{component=\"{component}\"}} {}",
            m.reconcile_errors
        );
        let _ = writeln!(
            o,
            "# HELP lb_reconcile_duration_seconds Time of one reconcile pass, writes included\n# TYPE lb_reconcile_duration_seconds histogram"
        );
        for (b, n) in BUCKETS.iter().zip(m.duration_buckets) {
            let _ = writeln!(
                o,
                "lb_reconcile_duration_seconds_bucket{{component=\"{component}\",le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "lb_reconcile_duration_seconds_bucket{{component=\"{component}\",le=\"+Inf\"}} {}\nlb_reconcile_duration_seconds_sum{{component=\"{component}\"}} {}\nlb_reconcile_duration_seconds_count{{component=\"{component}\"}} {}",
            m.reconciles, m.duration_sum, m.reconciles
        );
        if component == "speaker" {
            let _ = writeln!(
                o,
                "# HELP metallb_speaker_announced Services this node announces\n# TYPE metallb_speaker_announced gauge"
            );
            for [service, protocol, node, ip] in &m.announced {
                let _ = writeln!(
                    o,
                    "metallb_speaker_announced{{service=\"{}\",protocol=\"{}\",node=\"{}\",ip=\"{}\"}} 1",
                    escape(service),
                    escape(protocol),
                    escape(node),
                    escape(ip)
                );
            }
        }
        o.push_str(&m.extra);
        o
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_of_a_gone_service_or_pool_disappear() {
        let m = Metrics::default();
        m.set_pools(
            [
                (
                    "a".to_string(),
                    PoolUsage {
                        ipv4_total: 4,
                        ipv4_in_use: 1,
                        ..Default::default()
                    },
                ),
                ("b".to_string(), PoolUsage::default()),
            ]
            .into(),
        );
        let row = |s: &str| {
            [
                s.to_string(),
                "layer2".into(),
                "n1".into(),
                "192.0.2.1".into(),
            ]
        };
        m.set_announced(vec![row("default/x"), row("default/y")]);
        let text = m.render("speaker");
        assert!(text.contains("metallb_allocator_addresses_in_use_total{pool=\"a\"} 1"));
        assert!(text.contains("metallb_allocator_addresses_total{pool=\"a\"} 4"));
        assert!(text.contains("metallb_speaker_announced{service=\"default/y\",protocol=\"layer2\",node=\"n1\",ip=\"192.0.2.1\"} 1"));
        m.set_pools([("a".to_string(), PoolUsage::default())].into());
        m.set_announced(vec![row("default/x")]);
        let text = m.render("speaker");
        assert!(!text.contains("pool=\"b\""));
        assert!(!text.contains("default/y"));
        assert!(text.contains("default/x"));
    }

    #[test]
    fn reconcile_durations_fill_the_histogram() {
        let m = Metrics::default();
        m.reconciled(Duration::from_millis(3), true);
        m.reconciled(Duration::from_millis(300), false);
        let text = m.render("controller");
        assert!(text.contains("lb_reconcile_total{component=\"controller\"} 2"));
        assert!(text.contains("lb_reconcile_errors_total{component=\"controller\"} 1"));
        assert!(text.contains(
            "lb_reconcile_duration_seconds_bucket{component=\"controller\",le=\"0.005\"} 1"
        ));
        assert!(
            text.contains(
                "lb_reconcile_duration_seconds_bucket{component=\"controller\",le=\"1\"} 2"
            )
        );
        assert!(text.contains("lb_reconcile_duration_seconds_count{component=\"controller\"} 2"));
    }
}
