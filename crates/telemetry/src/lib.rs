//! Hookline's traces. With `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, the `tracing` spans the
//! services open become OpenTelemetry spans exported over OTLP/HTTP
//! (protobuf), configured by OpenTelemetry's standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`, …).
//! Unset, no OpenTelemetry layer is installed: the spans of a trace are
//! `debug` spans, which the log filter leaves disabled, and the helpers here
//! return at once.
//!
//! Trace context crosses the queue as X-Ray's header ([`xray`]) in SQS's
//! `AWSTraceHeader` system attribute, and leaves over HTTP as W3C
//! `traceparent`. Trace ids are X-Ray-compatible: the first 4 bytes are the
//! start time in Unix seconds.
//!
//! What goes into a span: names, ids, types, outcomes, error kinds. Never a
//! secret, a signature, an API key or an event body; spans only take the
//! fields Hookline's code gives them, and log events only at `warn` and
//! above (their messages are the logs', which carry no secret either).

mod export;
pub mod span;
pub mod xray;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{IdGenerator, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

pub use span::{failed, in_span, in_step, in_step_async, outcome, step, Verdict};
pub use xray::TraceHeader;

/// The trace context a message or request carries (not a secret).
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The telemetry settings could not be used.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry: {0}")]
pub struct TelemetryError(String);

/// Where log lines go besides the traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    Text,
    Json,
}

/// Whether spans are exported (an OTLP endpoint is set).
pub fn configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Whether this process exports spans (see [`init`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the global subscriber once: log lines filtered by `RUST_LOG`
/// (default `info`) on stderr, and, when an OTLP endpoint is set, the
/// OpenTelemetry layer. `service` names the service unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` does. Later calls do
/// nothing.
pub fn init(service: &'static str, logs: Logs) -> Result<(), TelemetryError> {
    use tracing_subscriber::filter::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match logs {
        Logs::Json => Some(
            fmt.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_filter(filter)
                .boxed(),
        ),
        Logs::Text => Some(fmt.with_ansi(false).with_filter(filter).boxed()),
    };
    let otel = if configured() {
        let provider = provider(service)?;
        let tracer = provider.tracer("hookline");
        let _ = PROVIDER.set(provider);
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_level(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(tracing_subscriber::filter::filter_fn(exported)),
        )
    } else {
        None
    };
    let on = otel.is_some();
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init()
        .is_ok()
    {
        ENABLED.store(on, Ordering::Relaxed);
    }
    Ok(())
}

/// What the OpenTelemetry layer takes: Hookline's `debug` spans (the spans
/// of a trace; `info` spans such as the worker's `delivery` are the logs'
/// context) and its warnings and errors, as span events.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("hookline")
        && if meta.is_span() {
            *meta.level() >= tracing::Level::DEBUG
        } else {
            *meta.level() <= tracing::Level::WARN
        }
}

fn provider(service: &'static str) -> Result<SdkTracerProvider, TelemetryError> {
    let timeout = Duration::from_secs(10);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_http_client(export::ExportClient::new(timeout)?)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|s| s.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(XrayIds)
        .with_resource(resource.build())
        .build())
}

/// Exports what is left and stops the exporter (the end of `main`). Blocks
/// up to a few seconds when a collector does not answer.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("warning: traces not all exported: {error}");
        }
    }
}

/// Trace and span ids X-Ray accepts: a trace id's first 4 bytes are the
/// Unix time in seconds.
#[derive(Debug)]
struct XrayIds;

impl IdGenerator for XrayIds {
    fn new_trace_id(&self) -> TraceId {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&u32::try_from(secs).unwrap_or(u32::MAX).to_be_bytes());
        bytes[4..].copy_from_slice(&fastrand::u128(1..).to_be_bytes()[4..]);
        TraceId::from_bytes(bytes)
    }
    fn new_span_id(&self) -> SpanId {
        SpanId::from(fastrand::u64(1..))
    }
}

/// The span's OpenTelemetry context, when spans are exported and it has one.
fn context_of(span: &tracing::Span) -> Option<SpanContext> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The X-Ray header that continues `span`'s trace on the far side of a
/// queue (`None` when spans are not exported).
pub fn xray_header(span: &tracing::Span) -> Option<String> {
    let sc = context_of(span)?;
    Some(
        TraceHeader {
            trace_id: sc.trace_id().to_bytes(),
            parent: Some(sc.span_id().to_bytes()),
            sampled: Some(sc.is_sampled()),
        }
        .to_string(),
    )
}

/// The W3C `traceparent` value for an HTTP request made inside `span`.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let sc = context_of(span)?;
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// The `traceparent` value for an HTTP request made in the current span.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent(&tracing::Span::current())
}

/// The trace id of `span` (32 hex digits), when spans are exported.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    context_of(span).map(|sc| sc.trace_id().to_string())
}

fn remote(header: &TraceHeader) -> Option<SpanContext> {
    let parent = header.parent?;
    let flags = if header.sampled == Some(false) {
        TraceFlags::NOT_SAMPLED
    } else {
        TraceFlags::SAMPLED
    };
    Some(SpanContext::new(
        TraceId::from_bytes(header.trace_id),
        SpanId::from_bytes(parent),
        flags,
        true,
        TraceState::NONE,
    ))
}

/// Makes `span` a child of the span that sent `header` (a queue message's
/// `AWSTraceHeader`); does nothing when spans are not exported or the
/// header names no parent.
pub fn continue_from(span: &tracing::Span, header: &TraceHeader) {
    if !enabled() || span.is_disabled() {
        return;
    }
    if let Some(sc) = remote(header) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_start_with_the_time_in_seconds() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let id = XrayIds.new_trace_id().to_bytes();
        let secs = u64::from(u32::from_be_bytes([id[0], id[1], id[2], id[3]]));
        assert!(secs.abs_diff(now) <= 2, "{secs} vs {now}");
        assert_ne!(XrayIds.new_trace_id(), XrayIds.new_trace_id());
        assert_ne!(XrayIds.new_span_id(), SpanId::INVALID);
    }

    #[test]
    fn without_an_exporter_nothing_is_propagated() {
        let span = tracing::info_span!("x");
        assert_eq!(xray_header(&span), None);
        assert_eq!(traceparent(&span), None);
        assert_eq!(trace_id(&span), None);
    }

    #[test]
    fn a_header_with_a_parent_is_a_remote_sampled_context() {
        let h = TraceHeader::parse(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .expect("parses");
        let sc = remote(&h).expect("has a parent");
        assert!(sc.is_remote() && sc.is_sampled() && sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(sc.span_id().to_string(), "53995c3f42cd8ad8");
        let unsampled = TraceHeader {
            sampled: Some(false),
            ..h
        };
        assert!(!remote(&unsampled).expect("has a parent").is_sampled());
        assert!(remote(&TraceHeader { parent: None, ..h }).is_none());
    }
}
