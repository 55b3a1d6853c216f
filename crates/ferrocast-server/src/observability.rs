//! Logs (tracing) and Prometheus metrics.

use crate::config::{LogConfig, LogFormat};
use ferrocast_node::Node;
use ferrocast_node::metrics as m;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber (stderr, text or JSON).
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The Prometheus recorder of this process.
#[derive(Clone)]
pub struct Metrics {
    handle: Option<PrometheusHandle>,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

impl Metrics {
    /// Installs the global recorder (once per process) and its upkeep task.
    pub fn install() -> Metrics {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS);
        let handle = match builder.and_then(|b| b.install_recorder()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                return Metrics { handle: None };
            }
        };
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(5));
            loop {
                t.tick().await;
                upkeep.run_upkeep();
            }
        });
        Metrics {
            handle: Some(handle),
        }
    }

    /// Renders the Prometheus text exposition, refreshing the node gauges first.
    pub fn render(&self, node: &Arc<Node>) -> String {
        let s = node.hub.stats();
        metrics::gauge!(m::CONNECTIONS).set(s.clients as f64);
        metrics::gauge!(m::USERS).set(s.users as f64);
        metrics::gauge!(m::CHANNELS).set(s.channels as f64);
        metrics::gauge!(m::SUBSCRIPTIONS).set(s.subscriptions as f64);
        metrics::gauge!("ferrocast_ready").set(if node.is_ready() { 1.0 } else { 0.0 });
        self.handle.as_ref().map(|h| h.render()).unwrap_or_default()
    }
}
