//! How authz serves: `[listen]`, `[runtime]`, `[headers]` (what the upstream is told) and
//! `[envoy]` (how an outage reaches Envoy).

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use super::SecretRef;

/// The threads that serve requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads; unset: one per core. A sidecar sharing one or two
    /// cores with Envoy answers cached checks faster with 1 (no wake-ups of a second worker to
    /// steal work), at the price of verifying new tokens on one core (see BENCHMARKS.md).
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// ext_authz `Check` and `grpc.health.v1`.
    pub grpc: SocketAddr,
    /// `/healthz` and `/readyz`.
    pub http: SocketAddr,
    /// The admin gRPC API (`authz.admin.v1.Admin`). Loopback only: it can flush caches.
    pub admin: SocketAddr,
    /// The bearer token every admin call must carry (a secret reference). Loopback is not a
    /// boundary where containers share a network namespace (an ECS task with awsvpc): without
    /// it, any process there could off-board anyone, so authz warns at start.
    pub admin_token: Option<SecretRef>,
    /// How long in-flight checks may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// Upstream header carrying the verified email.
    pub email: String,
    /// Upstream header carrying the Google subject (`sub`), the stable user id.
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Envoy {
    /// How "could not decide" (Google down) reaches Envoy.
    pub outage_response: OutageResponse,
}

/// How an outage is reported to Envoy. Both end in a 503 for the client when the filter has
/// `status_on_error: 503`; neither is ever a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutageResponse {
    /// A failed RPC (gRPC UNAVAILABLE). Works with every Envoy version.
    GrpcUnavailable,
    /// `CheckResponse.error_response` with a 503, a JSON body and `Retry-After`: needs an Envoy that knows the field (late 2025 on; tested with 1.40).
    ErrorResponse,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            grpc: SocketAddr::from(([127, 0, 0, 1], 9191)),
            http: SocketAddr::from(([127, 0, 0, 1], 9192)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9193)),
            admin_token: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            email: "x-auth-request-email".into(),
            user: "x-auth-request-user".into(),
        }
    }
}

impl Default for Envoy {
    fn default() -> Self {
        Envoy {
            outage_response: OutageResponse::GrpcUnavailable,
        }
    }
}

fn check_identity_header(name: &str) -> Result<(), String> {
    let token_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(format!("{name:?} must be a lower-case header name"));
    }
    if matches!(name, "authorization" | "host" | "cookie" | "content-length") {
        return Err(format!("{name:?} cannot carry identity"));
    }
    Ok(())
}

// === impl Listen, Runtime, Headers ===

impl Listen {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.admin.ip().is_loopback() {
            return Err((
                "listen.admin",
                "must be a loopback address (127.0.0.1 or ::1): the admin API is not for the network"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Runtime {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.worker_threads == Some(0) {
            return Err(("runtime.worker_threads", "must be greater than zero".into()));
        }
        Ok(())
    }
}

impl Headers {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, name) in [("headers.email", &self.email), ("headers.user", &self.user)] {
            check_identity_header(name).map_err(|message| (key, message))?;
        }
        if self.email == self.user {
            return Err(("headers.user", "must differ from headers.email".into()));
        }
        Ok(())
    }
}
