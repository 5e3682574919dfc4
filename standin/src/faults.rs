//! Injected failures, so tests can see how the caller copes when Google misbehaves.

use std::{sync::Mutex, time::Duration};

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use serde::Deserialize;

use crate::{
    google_error::{Family, api_error_body},
    stats::Endpoint,
};

/// How long `hang` stalls: far beyond any sane client timeout, short enough that a forgotten
/// fault does not wedge a test run.
pub const HANG: Duration = Duration::from_secs(30);

/// What a faulted endpoint does instead of answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultMode {
    /// Answer normally (clears the fault).
    Ok,
    /// Answer `status` with a small JSON error body.
    Error,
    /// Wait [`HANG`], then answer normally.
    Hang,
    /// Answer 200 with a body that is not JSON, though labelled `application/json` so the
    /// caller's parser, not its content-type check, is what fails.
    Garbage,
    /// Start a 200 response and break the connection before the body arrives, as a reset or a
    /// crashing proxy would: the caller sees an incomplete message, not an HTTP status.
    Reset,
    /// Answer 200 with well-formed but empty JSON: `{"keys":[]}` (a JWKS with no usable keys)
    /// on the JWKS endpoint, `{}` elsewhere.
    Empty,
    /// Answer as Google does when a quota runs out: 403 `userRateLimitExceeded` on the
    /// Directory API (its documented rate-limit answer), 429 `RESOURCE_EXHAUSTED` elsewhere.
    Quota,
}

/// The body of `POST /_standin/fault`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub mode: FaultMode,
    /// Status for `error`; default 503.
    #[serde(default)]
    pub status: Option<u16>,
    /// The endpoints affected; default all of them ([`Endpoint::ALL`]).
    #[serde(default)]
    pub endpoints: Option<Vec<Endpoint>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    Error(StatusCode),
    Hang,
    Garbage,
    Reset,
    Empty(Endpoint),
    Quota(Endpoint),
}

/// The fault in force on each endpoint, if any.
#[derive(Default)]
pub(crate) struct Faults(Mutex<[Option<Fault>; Endpoint::ALL.len()]>);

impl Faults {
    /// Sets (or, for `ok`, clears) the fault on the spec's endpoints.
    pub(crate) fn set(&self, spec: &FaultSpec) -> anyhow::Result<()> {
        let fault = match spec.mode {
            FaultMode::Ok => None,
            FaultMode::Error => {
                let code = spec.status.unwrap_or(503);
                let status = StatusCode::from_u16(code)
                    .map_err(|_| anyhow::anyhow!("{code} is not an HTTP status"))?;
                Some(Fault::Error(status))
            }
            FaultMode::Hang => Some(Fault::Hang),
            FaultMode::Garbage => Some(Fault::Garbage),
            FaultMode::Reset => Some(Fault::Reset),
            // Per endpoint: filled in below.
            FaultMode::Empty | FaultMode::Quota => None,
        };
        let endpoints = spec.endpoints.as_deref().unwrap_or(&Endpoint::ALL);
        let mut table = self.0.lock().expect("fault table mutex poisoned");
        for endpoint in endpoints {
            table[endpoint.index()] = match spec.mode {
                FaultMode::Empty => Some(Fault::Empty(*endpoint)),
                FaultMode::Quota => Some(Fault::Quota(*endpoint)),
                _ => fault,
            };
        }
        Ok(())
    }

    pub(crate) fn get(&self, endpoint: Endpoint) -> Option<Fault> {
        self.0.lock().expect("fault table mutex poisoned")[endpoint.index()]
    }
}

impl Fault {
    /// Plays the fault: the response to send instead of the real one, or `None` to go on and
    /// answer normally (after a hang).
    pub(crate) async fn play(self) -> Option<Response> {
        match self {
            Fault::Error(status) => Some(
                (
                    status,
                    [(header::CONTENT_TYPE, crate::routes::JSON)],
                    r#"{"error":"standin_fault","error_description":"fault injected by the stand-in"}"#,
                )
                    .into_response(),
            ),
            Fault::Hang => {
                tokio::time::sleep(HANG).await;
                None
            }
            Fault::Garbage => Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, crate::routes::JSON)],
                    "<html><body>502 upstream garbage {not json",
                )
                    .into_response(),
            ),
            Fault::Reset => {
                // The body stream fails at once, so the server aborts the connection after
                // the status line and headers (which promise a body that never comes).
                let broken = futures::stream::once(async {
                    Err::<axum::body::Bytes, _>(std::io::Error::other("injected reset"))
                });
                Some(
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, crate::routes::JSON), (header::CONTENT_LENGTH, "64")],
                        axum::body::Body::from_stream(broken),
                    )
                        .into_response(),
                )
            }
            Fault::Empty(endpoint) => Some(
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, crate::routes::JSON)],
                    if endpoint == Endpoint::Jwks { r#"{"keys":[]}"# } else { "{}" },
                )
                    .into_response(),
            ),
            Fault::Quota(endpoint) => Some(quota_exceeded(endpoint)),
        }
    }
}

/// Google's rate-limit answer for `endpoint`.
fn quota_exceeded(endpoint: Endpoint) -> Response {
    let message = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per \
                   user' of service 'googleapis.com' (injected by the stand-in).";
    let (family, status, domain, reason) = if endpoint == Endpoint::Directory {
        let status = StatusCode::FORBIDDEN;
        (
            Family::Admin,
            status,
            "usageLimits",
            "userRateLimitExceeded",
        )
    } else {
        let status = StatusCode::TOO_MANY_REQUESTS;
        (Family::Cloud, status, "global", "rateLimitExceeded")
    };
    let body = api_error_body(family, status, message, domain, reason);
    crate::routes::json_response(status, &body)
}
