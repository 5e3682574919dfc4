//! The IAM Service Account Credentials API (`https://iamcredentials.googleapis.com`):
//! `signJwt` and `generateAccessToken`, which let a workload without a key file act as a
//! service account — including, through `signJwt`, signing the delegated assertion that
//! domain-wide delegation needs.
//!
//! Who may impersonate whom: a federated (STS) token of a workload-identity binding may act for
//! the binding's service account; a service account's own token may sign JWTs as itself.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Shared,
    api_tokens::{ApiToken, Principal},
    clock::rfc3339,
    google_error::{Family, api_error, insufficient_scopes, unauthenticated},
    now,
    routes::{gate, json_response},
    stats::Counter,
};

const SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/iam",
];

/// The longest `generateAccessToken` lifetime without the org policy that extends it.
const MAX_LIFETIME: i64 = 3600;
/// How far in the future `signJwt` lets `exp` be.
const MAX_JWT_LIFETIME: i64 = 12 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    SignJwt,
    GenerateAccessToken,
}

/// `POST /v1/projects/-/serviceAccounts/{email}:{method}` (axum cannot route on a suffix of a
/// path segment, so the method is split off here).
pub(crate) async fn dispatch(
    State(shared): State<Arc<Shared>>,
    Path((_project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (email, method) = match name.rsplit_once(':') {
        Some((email, "signJwt")) => (email, Method::SignJwt),
        Some((email, "generateAccessToken")) => (email, Method::GenerateAccessToken),
        _ => {
            return api_error(
                Family::Cloud,
                StatusCode::NOT_FOUND,
                "Not Found",
                "notFound",
            );
        }
    };
    let counter = match method {
        Method::SignJwt => Counter::IamcredentialsSignJwt,
        Method::GenerateAccessToken => Counter::IamcredentialsGenerateAccessToken,
    };
    if let Some(faulted) = gate(&shared, counter).await {
        return faulted;
    }
    let Some(token) = shared.api_tokens.bearer(&headers, now()) else {
        return unauthenticated(Family::Cloud);
    };
    let email = email.to_lowercase();
    if !may_impersonate(&token, &email, method) {
        let permission = match method {
            Method::SignJwt => "iam.serviceAccounts.signJwt",
            Method::GenerateAccessToken => "iam.serviceAccounts.getAccessToken",
        };
        return api_error(
            Family::Cloud,
            StatusCode::FORBIDDEN,
            &format!("Permission '{permission}' denied on resource (or it may not exist)."),
            "forbidden",
        );
    }
    if !token.has_any_scope(&SCOPES) {
        return insufficient_scopes(Family::Cloud);
    }
    if shared.accounts.get(&email).is_none() {
        return api_error(
            Family::Cloud,
            StatusCode::NOT_FOUND,
            &format!("Not found; Gaia id not found for email {email}"),
            "notFound",
        );
    }
    match method {
        Method::SignJwt => sign_jwt(&shared, &email, &body).await,
        Method::GenerateAccessToken => generate_access_token(&shared, &email, &body),
    }
}

fn may_impersonate(token: &ApiToken, email: &str, method: Method) -> bool {
    match &token.principal {
        Principal::Federated {
            service_account, ..
        } => service_account == email,
        Principal::ServiceAccount { .. } => {
            method == Method::SignJwt && token.service_account() == Some(email)
        }
    }
}

fn invalid_argument(message: &str) -> Response {
    api_error(
        Family::Cloud,
        StatusCode::BAD_REQUEST,
        message,
        "badRequest",
    )
}

/// `delegates` (delegation chains) is accepted, as serde ignores unknown fields, but not
/// modelled.
#[derive(Debug, Deserialize)]
struct SignJwtRequest {
    payload: String,
}

/// `signJwt` `{"payload": "<claims JSON>"}` → `{"keyId", "signedJwt"}`, signed RS256 with the
/// account's system-managed key.
async fn sign_jwt(shared: &Shared, email: &str, body: &[u8]) -> Response {
    let request: SignJwtRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_argument(&format!("Invalid JSON payload received. {err}")),
    };
    let claims: Value = match serde_json::from_str(&request.payload) {
        Ok(claims @ Value::Object(_)) => claims,
        _ => return invalid_argument("Payload is not a valid JSON object."),
    };
    if claims
        .get("exp")
        .and_then(Value::as_i64)
        .is_some_and(|exp| exp > now() + MAX_JWT_LIFETIME)
    {
        return invalid_argument("The exp claim must be no more than 12 hours in the future.");
    }
    let Some(account) = shared.accounts.get(email) else {
        return invalid_argument("Unknown service account.");
    };
    let signed = match account.system_key().await {
        Ok(key) => key.sign(&claims).map(|jwt| (key.kid.clone(), jwt)),
        Err(err) => Err(err),
    };
    match signed {
        Ok((key_id, jwt)) => json_response(
            StatusCode::OK,
            &json!({ "keyId": key_id, "signedJwt": jwt }),
        ),
        Err(err) => api_error(
            Family::Cloud,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{err:#}"),
            "backendError",
        ),
    }
}

#[derive(Debug, Deserialize)]
struct GenerateAccessTokenRequest {
    #[serde(default)]
    scope: Vec<String>,
    #[serde(default)]
    lifetime: Option<String>,
}

/// `generateAccessToken` `{"scope": [...], "lifetime"?: "3600s"}` →
/// `{"accessToken", "expireTime"}`: a token of the service account itself.
fn generate_access_token(shared: &Shared, email: &str, body: &[u8]) -> Response {
    let request: GenerateAccessTokenRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(err) => return invalid_argument(&format!("Invalid JSON payload received. {err}")),
    };
    if request.scope.is_empty() {
        return invalid_argument("Scope is required.");
    }
    let lifetime = match request.lifetime.as_deref().map(parse_duration) {
        None => MAX_LIFETIME,
        Some(Some(secs)) if (1..=MAX_LIFETIME).contains(&secs) => secs,
        Some(_) => {
            return invalid_argument(
                "The lifetime must be a duration of at most 3600s (e.g. \"3600s\").",
            );
        }
    };
    let principal = Principal::ServiceAccount {
        email: email.to_owned(),
        subject: None,
    };
    let (token, exp) = shared
        .api_tokens
        .issue(principal, request.scope, lifetime, now());
    json_response(
        StatusCode::OK,
        &json!({ "accessToken": token, "expireTime": rfc3339(exp) }),
    )
}

/// A protobuf JSON duration such as `3600s` or `1.5s`, in whole seconds.
fn parse_duration(value: &str) -> Option<i64> {
    let secs: f64 = value.strip_suffix('s')?.parse().ok()?;
    // Finite and in range, so the cast only drops the fraction.
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then_some(secs as i64)
}
