//! Logs and traces.
//!
//! Logs: JSON lines to stdout by default, one object per event (`[log]`).
//!
//! Traces, off unless `tracing.otlp_endpoint` is set: one span per Check, continuing the trace
//! Envoy forwarded in `traceparent`/`tracestate` (W3C Trace Context), with a child span around
//! token verification and each group lookup on a cache miss. Spans go to an OpenTelemetry
//! collector over OTLP/HTTP with protobuf bodies, in batches, from the SDK's own thread.
//!
//! **Invariant:** no identity and no token is ever a span attribute. Only spans declared with
//! the [`TRACE_TARGET`] target are exported, and no event is: the audit event names the user,
//! and would otherwise become a span event. The log, in turn, never sees those spans, so tracing
//! changes no log line.

use std::time::Duration;

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracer, SdkTracerProvider, TracerProviderBuilder},
};
use tracing::{Span, Subscriber, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{FilterExt, filter_fn},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};
use url::Url;

use crate::config::{Log, LogFormat, TracingConfig};

/// The target of the spans that are exported, and of no other span or event.
pub const TRACE_TARGET: &str = "authz::trace";

/// The running trace pipeline, if any: flushed by [`Telemetry::shutdown`].
#[derive(Debug)]
#[must_use = "call shutdown() on exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    export_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("tracing.otlp_endpoint: cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Installs the global subscriber: the log, and the OpenTelemetry layer when
/// `tracing.otlp_endpoint` is set. Call once, outside the async runtime (the exporter's HTTP
/// client is a blocking one, with its own thread).
pub fn init(log: &Log, tracing: &TracingConfig) -> Result<Telemetry, TelemetryError> {
    let provider = match &tracing.otlp_endpoint {
        Some(endpoint) => Some(provider(endpoint, tracing)?),
        None => None,
    };
    let tracer = provider.as_ref().map(|p| p.tracer("authz"));
    // Fails only when a subscriber is already installed (tests); the first one stays.
    let _ = tracing_subscriber::registry()
        .with(layers(log, tracer))
        .try_init();
    Ok(Telemetry {
        provider,
        export_timeout: tracing.export_timeout,
    })
}

/// The subscriber's layers. The log takes every event and span `log.level` allows, except the
/// trace spans; the OpenTelemetry layer, when there is a tracer, takes the trace spans and
/// nothing else. Without a tracer no layer wants a trace span, so creating one is a disabled
/// no-op and the Check does no trace work.
pub fn layers<S>(log: &Log, tracer: Option<SdkTracer>) -> Vec<Box<dyn Layer<S> + Send + Sync>>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    // The level was validated with the config; an invalid one cannot reach here.
    let level = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let not_traces = filter_fn(|meta| meta.target() != TRACE_TARGET);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stdout);
    let log_layer = match log.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(level.and(not_traces))
            .boxed(),
        LogFormat::Text => fmt.with_filter(level.and(not_traces)).boxed(),
    };
    let mut layers = vec![log_layer];
    if let Some(tracer) = tracer {
        let only_trace_spans = filter_fn(|meta| meta.is_span() && meta.target() == TRACE_TARGET);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                // Source locations and thread names say nothing about a request.
                .with_location(false)
                .with_threads(false)
                .with_filter(only_trace_spans)
                .boxed(),
        );
    }
    layers
}

/// The trace pipeline: the OTLP/HTTP exporter behind a batch processor (a bounded queue:
/// spans beyond it are dropped, never buffered without end).
fn provider(endpoint: &Url, config: &TracingConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.as_str())
        .with_timeout(config.export_timeout)
        .build()?;
    Ok(pipeline(config).with_batch_exporter(exporter).build())
}

/// Sampling and resource, whatever the exporter: a trace the caller started is recorded when
/// its `traceparent` says sampled; a new one with probability `sample_ratio`.
fn pipeline(config: &TracingConfig) -> TracerProviderBuilder {
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(resource)
}

/// The span of one Check. When tracing is on, its parent is the remote span named by the
/// request's `traceparent` (and `tracestate`); a missing or malformed one starts a new trace,
/// and never fails the Check. When tracing is off the span is disabled and the headers are
/// not looked at.
pub fn check_span(request_id: &str, headers: Option<&dyn Extractor>) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "check",
        otel.kind = "server",
        otel.status_code = field::Empty,
        rpc.system = "grpc",
        rpc.service = "envoy.service.auth.v3.Authorization",
        rpc.method = "Check",
        authz.request_id = request_id,
        authz.decision = field::Empty,
        authz.reason = field::Empty,
        authz.policy = field::Empty,
        authz.rule = field::Empty,
        authz.cache = field::Empty,
        authz.endpoint = field::Empty,
    );
    if !span.is_disabled() {
        // Against an empty context, not the thread's current one: without a valid header the
        // Check starts its own trace, whatever this thread ran before.
        let parent = match headers {
            Some(headers) => {
                TraceContextPropagator::new().extract_with_context(&Context::new(), headers)
            }
            None => Context::new(),
        };
        // Cannot fail here: the span is enabled and has not been entered yet.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records the decision on the Check's span: what was decided, why, whether the cache answered,
/// and under which policy and rule (`None` for a decision no policy made). Never who.
pub fn record_decision(
    span: &Span,
    decision: &str,
    reason: &str,
    cache: &str,
    policy: Option<(&str, &str)>,
) {
    span.record("authz.decision", decision);
    span.record("authz.reason", reason);
    span.record("authz.cache", cache);
    if let Some((policy, rule)) = policy {
        span.record("authz.policy", policy);
        span.record("authz.rule", rule);
    }
}

/// Records "could not decide" on the Check's span, as an error naming the endpoint that failed
/// (never its answer, which may echo a token).
pub fn record_outage(span: &Span, endpoint: &str) {
    span.record("otel.status_code", "error");
    span.record("authz.decision", "unavailable");
    span.record("authz.reason", "backend_unavailable");
    span.record("authz.endpoint", endpoint);
}

/// A child span around a token's verification (a verdict-cache and identity-cache miss).
pub fn verify_span(credential: &'static str) -> Span {
    tracing::info_span!(target: TRACE_TARGET, "verify_token", authz.credential = credential)
}

/// A child span around one group-membership lookup (a verdict-cache miss whose policy needs a
/// group).
pub fn group_span() -> Span {
    tracing::info_span!(target: TRACE_TARGET, "group_lookup")
}

// === impl Telemetry ===

impl Telemetry {
    /// Exports the spans still queued and stops the exporter, waiting at most
    /// `tracing.export_timeout`. Nothing to do when tracing is off.
    pub fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        if let Err(error) = provider.shutdown_with_timeout(self.export_timeout) {
            tracing::warn!(error = %error, "the last spans could not be exported");
        }
    }
}

#[cfg(test)]
mod tests;
