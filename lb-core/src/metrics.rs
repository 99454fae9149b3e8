//! One Prometheus writer for every part. Each part (an announcer, the membership, a component's
//! counters) implements prometheus-client's [`Collector`], reading its current state when it is
//! scraped, so that a peer or an address that goes away takes its series with it; [`render`]
//! encodes them all in the Prometheus text format (0.0.4), the one MetalLB serves.
//!
//! MetalLB's names are kept where MetalLB has one, so that dashboards and alerts keep working.
//! prometheus-client writes a counter as `<name>_total`; the few MetalLB counters whose name
//! does not end so (`metallb_layer2_requests_received`, ...) are written untyped under their
//! own name, which PromQL's `rate` reads the same.
//!
//! ```
//! use lb_core::metrics::{Kind, family, render};
//! use lb_core::metrics::prometheus_client::collector::Collector;
//! use lb_core::metrics::prometheus_client::encoding::DescriptorEncoder;
//!
//! #[derive(Debug)]
//! struct Requests(u64);
//!
//! impl Collector for Requests {
//!     fn encode(&self, mut out: DescriptorEncoder) -> std::fmt::Result {
//!         family(&mut out, "my_requests_total", "Requests served.", Kind::Counter,
//!             [([("path", "/")], self.0)])
//!     }
//! }
//!
//! let text = render(vec![Box::new(Requests(3))]);
//! assert!(text.contains("# TYPE my_requests_total counter\nmy_requests_total{path=\"/\"} 3\n"));
//! ```

use std::fmt;
use std::sync::Arc;

pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::announce::Announcer;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a metric family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Only grows; the name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Written with no type, under its name as given (MetalLB's counters without `_total`).
    Untyped,
}

/// Encodes `parts` as Prometheus text, in order.
pub fn render(parts: Vec<Box<dyn Collector>>) -> String {
    let mut registry = Registry::default();
    for p in parts {
        registry.register_collector(p);
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        // Writing to a String fails only if a part reports an error of its own.
        out.push_str(&format!("# a collector failed: {e}\n"));
    }
    out
}

/// Writes one family: `name` (a counter's ends in `_total`), its help, and one sample per
/// `(labels, value)` of `series` (values are counts; a gauge above `i64::MAX` is capped). A family with no series writes nothing.
pub fn family<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: Kind,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let (base, metric_type) = match kind {
        Kind::Counter => match name.strip_suffix("_total") {
            Some(base) => (base, MetricType::Counter),
            None => (name, MetricType::Unknown),
        },
        Kind::Gauge => (name, MetricType::Gauge),
        Kind::Untyped => (name, MetricType::Unknown),
    };
    let mut family = out.encode_descriptor(base, help, None, metric_type)?;
    for (labels, value) in series {
        let sample = family.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(value).encode(sample)?,
            _ => ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(sample)?,
        }
    }
    Ok(())
}

/// Writes one family with a single unlabelled sample.
pub fn single(
    out: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: Kind,
    value: u64,
) -> fmt::Result {
    family::<[(&str, &str); 0]>(out, name, help, kind, [([], value)])
}

/// An announcer as a [`Collector`]: its [`Announcer::collect_metrics`].
#[derive(Debug)]
pub struct AnnouncerMetrics(pub Arc<dyn Announcer>);

impl Collector for AnnouncerMetrics {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        self.0.collect_metrics(&mut out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Parts;

    impl Collector for Parts {
        fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
            family(
                &mut out,
                "x_sent_total",
                "Sent.",
                Kind::Counter,
                [([("peer", "a\"b")], 2)],
            )?;
            family(
                &mut out,
                "metallb_layer2_requests_received",
                "Requests.",
                Kind::Untyped,
                [([("ip", "192.0.2.1")], 7)],
            )?;
            single(&mut out, "x_up", "Up.", Kind::Gauge, 1)?;
            family::<[(&str, &str); 1]>(&mut out, "x_none", "None.", Kind::Gauge, [])
        }
    }

    #[test]
    fn families_keep_their_names_and_escape_label_values() {
        let text = render(vec![Box::new(Parts)]);
        assert_eq!(
            text,
            "# HELP x_sent_total Sent.\n# TYPE x_sent_total counter\nx_sent_total{peer=\"a\\\"b\"} 2\n\
             # HELP metallb_layer2_requests_received Requests.\n# TYPE metallb_layer2_requests_received untyped\nmetallb_layer2_requests_received{ip=\"192.0.2.1\"} 7\n\
             # HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
