//! Google's error bodies. Callers branch on them (a 400 "Invalid Input" from `hasMember` is what
//! makes oauth2-proxy-style callers fall back to `members.get`), so the shapes are Google's.
//!
//! Two families: the OAuth endpoints (`/token`, STS) answer RFC 6749 style
//! `{"error","error_description"}`; the APIs answer
//! `{"error":{"code","message","errors":[{"message","domain","reason"}]}}`, to which the Cloud
//! APIs (Cloud Identity, IAM Credentials) add the gRPC `status` name.

use axum::{http::StatusCode, response::Response};
use serde_json::{Value, json};

use crate::routes::json_response;

/// Which API family answers: the Admin SDK (no `status`) or a Cloud API (with `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Admin,
    Cloud,
}

/// `{"error":{"code","message","errors":[...]}}`, plus `status` for the Cloud APIs.
pub(crate) fn api_error_body(
    family: Family,
    status: StatusCode,
    message: &str,
    domain: &str,
    reason: &str,
) -> Value {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "errors": [{"message": message, "domain": domain, "reason": reason}],
    });
    if family == Family::Cloud {
        error["status"] = json!(grpc_status(status));
    }
    json!({ "error": error })
}

pub(crate) fn api_error(
    family: Family,
    status: StatusCode,
    message: &str,
    reason: &str,
) -> Response {
    json_response(
        status,
        &api_error_body(family, status, message, "global", reason),
    )
}

/// No usable bearer token: the exact answer Google gives for a missing or dead token.
pub(crate) fn unauthenticated(family: Family) -> Response {
    api_error(
        family,
        StatusCode::UNAUTHORIZED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
         cookie or other valid authentication credential. See \
         https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "authError",
    )
}

/// A live token whose scopes do not cover the method.
pub(crate) fn insufficient_scopes(family: Family) -> Response {
    api_error(
        family,
        StatusCode::FORBIDDEN,
        "Request had insufficient authentication scopes.",
        "insufficientPermissions",
    )
}

/// The gRPC status name Google's Cloud APIs put next to an HTTP status.
fn grpc_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// An OAuth error: `{"error": code, "error_description": description}`.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}
