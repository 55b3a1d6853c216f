//! Logs (tracing), trace export (OpenTelemetry OTLP) and Prometheus metrics.

use crate::config::{LogColor, LogConfig, LogFormat, OpenTelemetryConfig};
use anyhow::Context as _;
use ferrocast_node::Node;
use ferrocast_node::metrics as m;
use ferrocast_node::telemetry;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::{Resource, runtime};
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global log subscriber (stderr, text or JSON) without trace export.
pub fn init_logging(cfg: &LogConfig) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(cfg))
        .try_init();
}

fn log_layer<S>(cfg: &LogConfig) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_new(log_directives(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new(log_directives("info")));
    use std::io::IsTerminal;
    let color = match cfg.color {
        LogColor::Auto => std::io::stderr().is_terminal(),
        LogColor::Always => true,
        LogColor::Never => false,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color);
    match cfg.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    }
}

/// The level filter with the Redis client library quietened to errors unless the filter
/// names it: while a Redis node is down it reports every reconnection attempt, and the
/// engine already logs what matters (unreachable, reachable, pub/sub lost, reconnected).
fn log_directives(level: &str) -> String {
    if level.contains("redis") {
        level.to_string()
    } else {
        format!("{level},redis=error")
    }
}

/// Failed exports are logged at most this often.
const EXPORT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The OTLP exporter, with failed exports reported in the log (the SDK drops them silently).
#[derive(Debug)]
struct LoggedExporter<E> {
    inner: E,
    last_warning: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl<E: SpanExporter> SpanExporter for LoggedExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        async move {
            let result = self.inner.export(batch).await;
            if let Err(e) = &result {
                let mut last = self.last_warning.lock();
                if last.is_none_or(|t| t.elapsed() >= EXPORT_WARNING_EVERY) {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(error = %e, spans, "trace export failed; spans dropped (logged at most once a minute)");
                }
            }
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The installed trace exporter; [`Tracing::shutdown`] flushes what is buffered.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Flushes buffered spans to the collector (bounded by the export timeout).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(Duration::from_secs(10), flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "trace exporter shutdown failed"),
            _ => tracing::warn!("trace exporter did not shut down in time"),
        }
    }
}

/// Installs logging and, when `otel.enabled`, OTLP trace export of the spans in
/// [`telemetry::TARGET`]. Must run inside the Tokio runtime (the exporter's batch task
/// runs on it). `instance` becomes `service.instance.id` when not empty.
pub fn init_tracing(
    log: &LogConfig,
    otel: &OpenTelemetryConfig,
    instance: &str,
) -> anyhow::Result<Tracing> {
    if !otel.enabled {
        init_logging(log);
        return Ok(Tracing { provider: None });
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otel.endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .with_context(|| format!("cannot set up OTLP export to {}", otel.endpoint))?;
    let mut resource = Resource::builder().with_service_name(otel.service_name.clone());
    if !instance.is_empty() {
        resource =
            resource.with_attribute(KeyValue::new("service.instance.id", instance.to_string()));
    }
    let exporter = LoggedExporter {
        inner: exporter,
        last_warning: parking_lot::Mutex::new(None),
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otel.sample_ratio,
        ))))
        .with_resource(resource.build())
        .build();
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("ferrocast"))
        .with_filter(Targets::new().with_target(telemetry::TARGET, tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(log_layer(log))
        .with(spans)
        .try_init()
        .context("cannot install the log subscriber")?;
    telemetry::enable();
    tracing::info!(endpoint = %otel.endpoint, sample_ratio = otel.sample_ratio, "exporting traces over OTLP");
    Ok(Tracing {
        provider: Some(provider),
    })
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
        m::register_zeros(
            &ferrocast_node::api::ApiMethod::ALL
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>(),
        );
        Metrics {
            handle: Some(handle),
        }
    }

    /// Renders the Prometheus text exposition, refreshing the node gauges first.
    pub fn render(&self, node: &Arc<Node>) -> String {
        let s = node.stats();
        metrics::gauge!(m::CONNECTIONS).set(s.clients as f64);
        metrics::gauge!(m::USERS).set(s.users as f64);
        metrics::gauge!(m::CHANNELS).set(s.channels as f64);
        metrics::gauge!(m::SUBSCRIPTIONS).set(s.subscriptions as f64);
        metrics::gauge!("ferrocast_ready").set(if node.is_ready() { 1.0 } else { 0.0 });
        process_metrics();
        self.handle.as_ref().map(|h| h.render()).unwrap_or_default()
    }
}

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Sets the process and runtime gauges from `/proc/self` (Linux; elsewhere only the
/// runtime ones) and tokio's runtime.
fn process_metrics() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    {
        metrics::gauge!(m::PROCESS_RESIDENT_MEMORY).set(kb * 1024.0);
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        // Fields after the command name, which is in parentheses and may hold spaces.
        && let Some((_, rest)) = stat.rsplit_once(") ")
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        // utime and stime are fields 14 and 15 of stat(5), starttime 22 (1-based, with
        // pid and comm before `rest`).
        if let (Some(user), Some(system)) = (num(11), num(12)) {
            // A gauge holding the running total: counters of the recorder are integers.
            metrics::gauge!(m::PROCESS_CPU).set((user + system) / TICKS_PER_SEC);
        }
        if let (Some(start), Some(boot)) = (num(19), boot_time()) {
            metrics::gauge!(m::PROCESS_START_TIME).set(boot + start / TICKS_PER_SEC);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(m::PROCESS_OPEN_FDS).set(fds.count() as f64);
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let rm = rt.metrics();
        metrics::gauge!(m::RUNTIME_ALIVE_TASKS).set(rm.num_alive_tasks() as f64);
        metrics::gauge!(m::RUNTIME_WORKERS).set(rm.num_workers() as f64);
    }
}

/// When the machine booted, Unix seconds (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}
