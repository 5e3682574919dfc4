//! `[log]` and `[tracing]`.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing `EnvFilter` directive, e.g. `info` or `authz=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// The `[tracing]` section. Restart-only: a reload that changes it is refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans are sent: the collector's OTLP/HTTP traces URL, path included, e.g.
    /// `http://otel-collector:4318/v1/traces`. Bodies are protobuf (`application/x-protobuf`);
    /// OTLP over gRPC (port 4317) is not spoken. Unset (the default): tracing is off and the
    /// Check does no trace work at all.
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` resource attribute. Default `authz`.
    pub service_name: String,
    /// The fraction of new traces that are recorded, 0.0 to 1.0. A Check that continues a trace
    /// (a valid `traceparent`) follows the caller's sampled flag instead. Default 1.0.
    pub sample_ratio: f64,
    /// How long one export may take; the last export at shutdown waits at most this long too.
    /// Default 10s, at most 60s.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

// === impl Log, TracingConfig ===

impl Log {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| ("log.level", e.to_string()))
    }
}

impl TracingConfig {
    /// Longest `export_timeout`: shutdown waits for the last export.
    const EXPORT_TIMEOUT_LIMIT: Duration = Duration::from_secs(60);

    /// Checks what serde cannot; the error names the full key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.otlp_endpoint {
            if !super::is_http_url(endpoint) {
                return Err((
                    "tracing.otlp_endpoint",
                    "must be an http(s) URL, e.g. http://otel-collector:4318/v1/traces".into(),
                ));
            }
            if !endpoint.username().is_empty() || endpoint.password().is_some() {
                return Err((
                    "tracing.otlp_endpoint",
                    "must not carry credentials (set OTEL_EXPORTER_OTLP_HEADERS instead)".into(),
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return Err(("tracing.service_name", "must not be blank".into()));
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("tracing.sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        if self.export_timeout.is_zero() || self.export_timeout > Self::EXPORT_TIMEOUT_LIMIT {
            return Err((
                "tracing.export_timeout",
                "must be greater than zero and at most 60s".into(),
            ));
        }
        Ok(())
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "authz".into(),
            sample_ratio: 1.0,
            export_timeout: Duration::from_secs(10),
        }
    }
}
