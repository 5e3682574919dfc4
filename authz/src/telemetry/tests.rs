use std::{cell::Cell, collections::HashMap, sync::Arc, time::Duration};

use envoy_types::{
    ext_authz::v3::pb::{Authorization, CheckRequest},
    pb::envoy::{
        config::core::v3::{HeaderMap, HeaderValue},
        service::auth::v3::attribute_context,
    },
};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tracing::subscriber::DefaultGuard;

use super::*;
use crate::{
    authorizer::Authorizer, check::CheckService, config::Config, google::Google,
    principal::unix_now, test_support,
};

// === config ===

/// Discovery never completes against this issuer (nothing listens on port 9), so a Check that
/// needs Google is an outage, and no test reaches the real one.
const BASE: &str = r#"
[google]
client_ids = ["a.apps.googleusercontent.com"]
issuer = "http://127.0.0.1:9"
tokeninfo_url = "http://127.0.0.1:9/tokeninfo"
[access]
domains = ["example.com"]
[resource]
url = "https://mcp.example.com/mcp"
"#;

fn load(section: &str) -> Result<Config, crate::config::ConfigError> {
    Config::load(Some(&format!("{BASE}{section}")), [])
}

#[test]
fn tracing_is_off_by_default() {
    let config = load("").unwrap();
    assert_eq!(config.tracing, TracingConfig::default());
    assert_eq!(config.tracing.otlp_endpoint, None);
    assert_eq!(config.tracing.service_name, "authz");
    assert_eq!(config.tracing.sample_ratio, 1.0);
    assert_eq!(config.tracing.export_timeout, Duration::from_secs(10));
}

#[test]
fn tracing_keys_from_the_file_and_the_environment() {
    let config = load(
        r#"
[tracing]
otlp_endpoint = "http://otel-collector:4318/v1/traces"
service_name = "authz-eu"
sample_ratio = 0.25
export_timeout = "3s"
"#,
    )
    .unwrap();
    let endpoint = config.tracing.otlp_endpoint.unwrap();
    assert_eq!(endpoint.as_str(), "http://otel-collector:4318/v1/traces");
    assert_eq!(config.tracing.service_name, "authz-eu");
    assert_eq!(config.tracing.sample_ratio, 0.25);
    assert_eq!(config.tracing.export_timeout, Duration::from_secs(3));

    let env = [
        (
            "AUTHZ_TRACING__OTLP_ENDPOINT",
            "https://collector.internal/v1/traces",
        ),
        ("AUTHZ_TRACING__SAMPLE_RATIO", "0"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::load(Some(BASE), env).unwrap();
    assert_eq!(
        config.tracing.otlp_endpoint.unwrap().as_str(),
        "https://collector.internal/v1/traces"
    );
    assert_eq!(config.tracing.sample_ratio, 0.0);
}

#[test]
fn bad_tracing_keys_are_refused_naming_the_key() {
    for (section, key) in [
        (
            r#"otlp_endpoint = "grpc://collector:4317""#,
            "tracing.otlp_endpoint",
        ),
        (
            r#"otlp_endpoint = "collector:4318""#,
            "tracing.otlp_endpoint",
        ),
        (
            r#"otlp_endpoint = "https://user:pw@collector/v1/traces""#,
            "tracing.otlp_endpoint",
        ),
        ("sample_ratio = 1.5", "tracing.sample_ratio"),
        ("sample_ratio = -0.1", "tracing.sample_ratio"),
        ("sample_ratio = nan", "tracing.sample_ratio"),
        (r#"service_name = " ""#, "tracing.service_name"),
        (r#"export_timeout = "0s""#, "tracing.export_timeout"),
        (r#"export_timeout = "2m""#, "tracing.export_timeout"),
        ("protocol = \"grpc\"", "tracing.protocol"),
    ] {
        let error = load(&format!("[tracing]\n{section}\n")).unwrap_err();
        assert_eq!(error.key, key, "{section}: {error}");
        assert!(!error.to_string().contains("pw@"), "{error}");
    }
}

// === spans ===

const CLIENT: &str = "tracing.apps.googleusercontent.com";
const EMAIL: &str = "ada@example.com";
const SUBJECT: &str = "110169484474386276334";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A log that prints nothing, so the audit events stay out of the test output.
fn quiet() -> Log {
    Log {
        level: "off".into(),
        format: LogFormat::Json,
    }
}

/// This thread's subscriber for the test: the production layers, with the production
/// sampling, exporting into memory as each span ends.
struct Traced {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _subscriber: DefaultGuard,
}

fn traced(config: &TracingConfig) -> Traced {
    let exporter = InMemorySpanExporter::default();
    let provider = pipeline(config)
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(layers(&quiet(), Some(provider.tracer("authz"))));
    Traced {
        exporter,
        _provider: provider,
        _subscriber: tracing::subscriber::set_default(subscriber),
    }
}

impl Traced {
    /// Takes the spans exported so far.
    fn take(&self) -> Vec<SpanData> {
        let spans = self.exporter.get_finished_spans().unwrap();
        self.exporter.reset();
        spans
    }
}

fn attributes(span: &SpanData) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn the_check_span(spans: &[SpanData]) -> &SpanData {
    let checks: Vec<_> = spans.iter().filter(|s| s.name == "check").collect();
    assert_eq!(checks.len(), 1, "{spans:#?}");
    checks[0]
}

/// The real Check service in front of the Google stand-in, ready to verify ID tokens.
struct Service {
    check: CheckService,
    token: String,
    _google: test_support::ReadyGoogle,
}

async fn service() -> Service {
    let ready = test_support::ready_google(CLIENT, Arc::default()).await;
    let issuer = ready.standin.issuer();
    let now = unix_now();
    let token = ready.standin.mint_id_token(&serde_json::json!({
        "iss": issuer, "aud": CLIENT, "azp": CLIENT, "sub": SUBJECT,
        "email": EMAIL, "email_verified": true, "hd": "example.com",
        "iat": now, "exp": now + 600,
    }));
    let authorizer = Arc::new(Authorizer::new(&ready.config, ready.google.clone(), None));
    Service {
        check: CheckService::new(&ready.config, authorizer),
        token,
        _google: ready,
    }
}

fn request(headers: &[(&str, &str)]) -> tonic::Request<CheckRequest> {
    tonic::Request::new(test_support::check_request(
        attribute_context::HttpRequest {
            id: "12345".into(),
            method: "GET".into(),
            path: "/mcp".into(),
            headers: test_support::headers(headers),
            ..Default::default()
        },
    ))
}

impl Service {
    /// One Check with the stand-in's valid token and these extra headers; returns the
    /// gRPC status code of the answer (0: allowed).
    async fn check(&self, extra: &[(&str, &str)]) -> i32 {
        let bearer = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        let response = self.check.check(request(&headers)).await.unwrap();
        response.into_inner().status.unwrap().code
    }
}

#[tokio::test]
async fn the_check_continues_the_callers_trace() {
    let service = service().await;
    let traced = traced(&TracingConfig::default());
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");

    let status = service
        .check(&[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
            ("x-request-id", "req-traced"),
        ])
        .await;
    assert_eq!(status, 0);

    let spans = traced.take();
    let check = the_check_span(&spans);
    assert_eq!(
        check.span_context.trace_id(),
        TraceId::from_hex(TRACE_ID).unwrap()
    );
    assert_eq!(check.parent_span_id, SpanId::from_hex(PARENT_ID).unwrap());
    assert!(check.parent_span_is_remote);
    assert!(check.span_context.is_sampled());
    assert_eq!(
        check.span_context.trace_state().header(),
        "vendor=opaque",
        "tracestate is carried on"
    );
    assert_eq!(check.span_kind, SpanKind::Server);
    assert_eq!(check.status, Status::Unset);
    let attributes = attributes(check);
    for (key, value) in [
        ("authz.request_id", "req-traced"),
        ("authz.decision", "allow"),
        ("authz.reason", "allowed"),
        ("authz.policy", "default"),
        ("authz.cache", "miss"),
        ("rpc.method", "Check"),
    ] {
        assert_eq!(
            attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }

    // The verification on the cache miss is a child of the Check's span.
    let verify: Vec<_> = spans.iter().filter(|s| s.name == "verify_token").collect();
    assert_eq!(verify.len(), 1, "{spans:#?}");
    assert_eq!(
        verify[0].span_context.trace_id(),
        check.span_context.trace_id()
    );
    assert_eq!(verify[0].parent_span_id, check.span_context.span_id());
    assert_eq!(
        attributes_of(verify[0], "authz.credential"),
        Some("jwt".into())
    );

    // A second Check is a verdict-cache hit: no verification, no child span.
    let status = service
        .check(&[("traceparent", &traceparent), ("x-request-id", "req-hit")])
        .await;
    assert_eq!(status, 0);
    let spans = traced.take();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(attributes_of(&spans[0], "authz.cache"), Some("hit".into()));
}

fn attributes_of(span: &SpanData, key: &str) -> Option<String> {
    attributes(span).remove(key)
}

#[tokio::test]
async fn without_or_with_a_malformed_traceparent_a_new_trace_starts_and_the_check_still_answers() {
    let service = service().await;
    let traced = traced(&TracingConfig::default());
    let malformed = [
        None,
        Some("garbage"),
        Some("00-zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-00f067aa0ba902b7-01"),
        // All-zero ids are invalid by the spec.
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        // Two headers, comma-joined by Envoy.
        Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01,00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let mut seen = Vec::new();
    for traceparent in malformed {
        let headers: Vec<_> = traceparent.iter().map(|t| ("traceparent", *t)).collect();
        assert_eq!(service.check(&headers).await, 0, "{traceparent:?}");
        let spans = traced.take();
        let check = the_check_span(&spans);
        assert!(check.span_context.is_valid(), "{traceparent:?}");
        assert_eq!(check.parent_span_id, SpanId::INVALID, "{traceparent:?}");
        assert!(!check.parent_span_is_remote, "{traceparent:?}");
        assert_ne!(
            check.span_context.trace_id(),
            TraceId::from_hex(TRACE_ID).unwrap(),
            "{traceparent:?}"
        );
        seen.push(check.span_context.trace_id().to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        malformed.len(),
        "every new trace has its own id"
    );
}

#[tokio::test]
async fn the_callers_sampled_flag_decides_and_ratio_applies_to_new_traces_only() {
    let service = service().await;
    let never_new = TracingConfig {
        sample_ratio: 0.0,
        ..TracingConfig::default()
    };
    let traced = traced(&never_new);

    // Not sampled upstream: nothing is exported, and the Check answers all the same.
    let unsampled = format!("00-{TRACE_ID}-{PARENT_ID}-00");
    assert_eq!(service.check(&[("traceparent", &unsampled)]).await, 0);
    assert!(traced.take().is_empty());

    // Sampled upstream: exported even though no new trace would be.
    let sampled = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(service.check(&[("traceparent", &sampled)]).await, 0);
    assert_eq!(
        the_check_span(&traced.take()).parent_span_id.to_string(),
        PARENT_ID
    );

    // A new trace at ratio 0: not exported.
    assert_eq!(service.check(&[]).await, 0);
    assert!(traced.take().is_empty());
}

#[tokio::test]
async fn no_span_carries_the_token_or_the_identity() {
    let service = service().await;
    let traced = traced(&TracingConfig::default());
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    service.check(&[("traceparent", &traceparent)]).await;
    // An unauthenticated one and an outsider's too.
    let denied = service
        .check
        .check(request(&[("traceparent", &traceparent)]))
        .await
        .unwrap();
    assert_ne!(denied.into_inner().status.unwrap().code, 0);

    let spans = traced.take();
    assert_eq!(spans.iter().filter(|s| s.name == "check").count(), 2);
    let mut text = String::new();
    for span in &spans {
        text.push_str(&format!("{span:?}"));
        assert!(span.events.is_empty(), "no event becomes a span event");
    }
    for secret in [service.token.as_str(), EMAIL, SUBJECT, "ada@"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

#[tokio::test]
async fn raw_header_maps_carry_the_trace_too() {
    let service = service().await;
    let traced = traced(&TracingConfig::default());
    let mut request = request(&[]);
    let http = request
        .get_mut()
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: "authorization".into(),
                value: String::new(),
                raw_value: format!("Bearer {}", service.token).into_bytes(),
            },
            HeaderValue {
                key: "traceparent".into(),
                value: String::new(),
                raw_value: format!("00-{TRACE_ID}-{PARENT_ID}-01").into_bytes(),
            },
        ],
    });
    let response = service.check.check(request).await.unwrap();
    assert_eq!(response.into_inner().status.unwrap().code, 0);
    let spans = traced.take();
    let check = the_check_span(&spans);
    assert_eq!(check.parent_span_id, SpanId::from_hex(PARENT_ID).unwrap());
}

#[tokio::test]
async fn an_outage_is_an_error_span() {
    let config = load("").unwrap();
    let google = Google::new(&config).unwrap();
    let check = CheckService::new(&config, Arc::new(Authorizer::new(&config, google, None)));
    let traced = traced(&TracingConfig::default());
    let status = check
        .check(request(&[("authorization", "Bearer ya29.abc")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let spans = traced.take();
    let span = the_check_span(&spans);
    assert!(matches!(span.status, Status::Error { .. }), "{span:?}");
    assert_eq!(
        attributes_of(span, "authz.decision"),
        Some("unavailable".into())
    );
    assert_eq!(
        attributes_of(span, "authz.endpoint"),
        Some("discovery".into())
    );
}

/// Counts how often the propagator reads a header.
#[derive(Default)]
struct Counting {
    reads: Cell<u32>,
}

impl Extractor for Counting {
    fn get(&self, _key: &str) -> Option<&str> {
        self.reads.set(self.reads.get() + 1);
        None
    }
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

#[test]
fn with_tracing_off_the_check_span_is_disabled_and_no_header_is_read() {
    // The production log layer at its default level: it would take an INFO span of any other
    // target.
    let subscriber = tracing_subscriber::registry().with(layers(&Log::default(), None));
    let _guard = tracing::subscriber::set_default(subscriber);
    let headers = Counting::default();
    let span = check_span("req", Some(&headers));
    assert!(span.is_disabled());
    assert_eq!(headers.reads.get(), 0);
    assert!(verify_span("jwt").is_disabled());
    assert!(group_span().is_disabled());
}

#[test]
fn with_tracing_on_the_check_span_reads_the_trace_headers() {
    let traced = traced(&TracingConfig::default());
    let headers = Counting::default();
    let span = check_span("req", Some(&headers));
    assert!(!span.is_disabled());
    assert!(headers.reads.get() > 0);
    drop(span);
    assert_eq!(traced.take().len(), 1);
}
