//! Prometheus text for `/metrics`, with MetalLB's metric names where MetalLB has one, so that
//! existing dashboards and alerts keep working. Every series is rendered from current state, so
//! a pool or service that goes away takes its series with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::alloc::PoolUsage;
use lb_core::metrics::prometheus_client::collector::Collector;
use lb_core::metrics::prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use lb_core::metrics::prometheus_client::metrics::MetricType;
use lb_core::metrics::{Kind, family, single};

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
    announced: std::collections::BTreeSet<[String; 4]>,
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
        // Each pass counts in the first bucket it fits (the encoder makes them cumulative);
        // one slower than every bound counts only in +Inf, which is `reconciles`.
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            m.duration_buckets[i] += 1;
        }
    }

    /// Services whose address is held because its pool failed to load.
    pub fn set_held(&self, n: usize) {
        self.lock().held = n;
    }

    /// The speaker's announcements, as (service, address, protocol, node).
    pub fn set_announced(&self, announced: Vec<[String; 4]>) {
        self.lock().announced = announced.into_iter().collect();
    }

    /// A change of the speaker's announcements: rows `gone` go, rows `new` come (each as in
    /// [`Metrics::set_announced`]); the others stay.
    pub fn change_announced(&self, gone: Vec<[String; 4]>, new: Vec<[String; 4]>) {
        let mut m = self.lock();
        for row in &gone {
            m.announced.remove(row);
        }
        m.announced.extend(new);
    }

    /// The Prometheus text exposition of this component alone.
    pub fn render(&self, component: &str) -> String {
        lb_core::metrics::render(vec![self.collector(component)])
    }

    /// This component's metrics as a collector, to render with others (the announcers', the
    /// membership's) through [`lb_core::metrics::render`].
    pub fn collector(&self, component: &str) -> Box<dyn Collector> {
        Box::new(Component {
            metrics: self.clone(),
            name: component.to_string(),
        })
    }
}

/// One component's metrics, labelled with its name.
#[derive(Debug)]
struct Component {
    metrics: Metrics,
    name: String,
}

impl Collector for Component {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = self.metrics.lock();
        let component = [("component", self.name.as_str())];
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
            let series = m
                .pools
                .iter()
                .map(|(pool, c)| ([("pool", pool.as_str())], capped(f(c))));
            family(&mut out, name, help, Kind::Gauge, series)?;
        }
        single(
            &mut out,
            "metallb_k8s_client_updates_total",
            "Writes to the API server",
            Kind::Counter,
            m.updates,
        )?;
        single(
            &mut out,
            "metallb_k8s_client_update_errors_total",
            "Failed writes to the API server",
            Kind::Counter,
            m.update_errors,
        )?;
        single(
            &mut out,
            "metallb_k8s_client_config_loaded_bool",
            "1 once a configuration has been loaded",
            Kind::Gauge,
            u64::from(m.config_loaded),
        )?;
        single(
            &mut out,
            "metallb_k8s_client_config_stale_bool",
            "1 while the newest configuration has errors and the previous one runs",
            Kind::Gauge,
            u64::from(m.config_stale),
        )?;
        if self.name == "controller" {
            single(
                &mut out,
                "lb_controller_leader",
                "1 while this replica holds the Lease",
                Kind::Gauge,
                u64::from(m.leader),
            )?;
            single(
                &mut out,
                "lb_controller_held_services",
                "Services whose address is kept unchanged because its pool failed to load",
                Kind::Gauge,
                m.held as u64,
            )?;
        }
        family(
            &mut out,
            "lb_reconcile_total",
            "Reconcile passes",
            Kind::Counter,
            [(component, m.reconciles)],
        )?;
        family(
            &mut out,
            "lb_reconcile_errors_total",
            "Reconcile passes with a failed write",
            Kind::Counter,
            [(component, m.reconcile_errors)],
        )?;
        let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(m.duration_buckets).collect();
        let mut histogram = out.encode_descriptor(
            "lb_reconcile_duration_seconds",
            "Time of one reconcile pass, writes included",
            None,
            MetricType::Histogram,
        )?;
        histogram
            .encode_family(&component)?
            .encode_histogram::<NoLabelSet>(m.duration_sum, m.reconciles, &buckets, None)?;
        if self.name == "speaker" {
            let series = m.announced.iter().map(|[service, protocol, node, ip]| {
                let labels = [
                    ("service", service.as_str()),
                    ("protocol", protocol.as_str()),
                    ("node", node.as_str()),
                    ("ip", ip.as_str()),
                ];
                (labels, 1)
            });
            family(
                &mut out,
                "metallb_speaker_announced",
                "Services this node announces",
                Kind::Gauge,
                series,
            )?;
        }
        Ok(())
    }
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
