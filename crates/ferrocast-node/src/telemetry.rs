//! Distributed tracing across the cluster (OpenTelemetry, W3C trace context).
//!
//! The server installs an exporter and calls [`enable`]; until then no span is created
//! and every helper here costs one relaxed atomic load. A publish carries the
//! `traceparent` of its span inside the engine envelope; the fan-out span on each node
//! that delivers it takes that as its parent, so one trace shows the API call (or the
//! command stream entry), the publish and the delivery on every node.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Target of every span meant for export; the exporter's filter selects it.
pub const TARGET: &str = "ferrocast::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns span creation on (called once the exporter is installed).
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Whether spans are created and exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of the current span, when tracing is on and the span has a
/// valid context.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| format_traceparent(sc))
}

/// Formats a span context as a version-00 `traceparent` header value.
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    )
}

/// Parses a `traceparent` header value; `None` when it is malformed or all-zero.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let well_formed = version.len() == 2
        && version != "ff"
        && trace.len() == 32
        && span.len() == 16
        && flags.len() == 2
        && (version != "00" || parts.next().is_none());
    if !well_formed {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Makes `span` a child of the remote span `traceparent` names (nothing when it is
/// absent or malformed: the span starts a new trace).
pub fn set_remote_parent(span: &Span, traceparent: Option<&str>) {
    if let Some(sc) = traceparent.and_then(parse_traceparent) {
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "trace parent not set");
        }
    }
}

/// Span of one server API call (HTTP), child of the caller's `traceparent`.
pub fn api_span(method: &str, traceparent: Option<&str>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span =
        tracing::info_span!(target: TARGET, "api", otel.kind = "server", api.method = method);
    set_remote_parent(&span, traceparent);
    span
}

/// Span of one backend command stream entry, child of the entry's `traceparent` field.
pub fn ingest_span(id: &str, method: &str, traceparent: Option<&str>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "ingest",
        otel.kind = "consumer",
        stream.entry = id,
        api.method = method
    );
    set_remote_parent(&span, traceparent);
    span
}

/// Span of one proxy hook call to the application backend.
pub fn proxy_span(hook: &str, proxy: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "proxy", otel.kind = "client", proxy.hook = hook, proxy.name = proxy)
}

/// Span of one publish into the engine.
pub fn publish_span(channel: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: TARGET, "publish", otel.kind = "producer", channel = channel)
}

/// Span of the delivery of one publication to this node's subscribers, child of the
/// publish span on whichever node published it.
pub fn fan_out_span(channel: &str, traceparent: Option<&str>) -> Span {
    if !enabled() || traceparent.is_none() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "fan_out",
        otel.kind = "consumer",
        channel = channel,
        subscribers = tracing::field::Empty
    );
    set_remote_parent(&span, traceparent);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = parse_traceparent(v).expect("valid");
        assert!(sc.is_remote());
        assert!(sc.is_sampled());
        assert_eq!(format_traceparent(&sc), v);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn nothing_is_traced_until_enabled() {
        assert!(current_traceparent().is_none());
        assert!(api_span("publish", None).is_none());
    }
}
