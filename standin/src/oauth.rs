//! The OAuth token endpoint, `POST /token` (Google's `https://oauth2.googleapis.com/token`).
//!
//! It dispatches on `grant_type`: the JWT-bearer grant (RFC 7523) that service accounts use,
//! here, the authorization-code grant of Google's sign-in, in `code_grant.rs`, and the
//! refresh-token grant of offline access, in `refresh_grant.rs`. Another grant
//! is one more arm in [`token`] and one more function.

mod code_grant;
mod refresh_grant;

pub(crate) use refresh_grant::RefreshTokens;

use std::sync::Arc;

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    Shared,
    api_tokens::Principal,
    google_error::oauth_error,
    now,
    routes::{gate, json_response},
    stats::Counter,
};

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const AUTHORIZATION_CODE: &str = "authorization_code";
const REFRESH_TOKEN: &str = "refresh_token";

/// How far `iat` may lie in the future, and `exp` in the past: Google tolerates small skews.
const SKEW: u64 = 60;

/// Google's answer when delegation does not cover the request (its exact text).
const UNAUTHORIZED_CLIENT: &str = "Client is unauthorized to retrieve access tokens using this \
                                   method, or client not authorized for any of the scopes \
                                   requested.";

/// The form fields of a token request; each grant reads the ones it needs. A repeated field
/// makes the form unreadable, which RFC 6749 §3.2 asks for.
#[derive(Default, Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: Option<String>,
    assertion: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

/// `POST /token`, form-encoded.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    // The grant's own counter counts faulted requests too, like every counter.
    let grant_type = form
        .as_ref()
        .ok()
        .and_then(|Form(r)| r.grant_type.as_deref());
    if grant_type == Some(AUTHORIZATION_CODE) {
        shared.counters.hit(Counter::TokenAuthorizationCode);
    }
    if let Some(faulted) = gate(&shared, Counter::Token).await {
        return faulted;
    }
    let Ok(Form(request)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Expected a form-encoded body.",
        );
    };
    match request.grant_type.as_deref() {
        Some(JWT_BEARER) => jwt_bearer(&shared, request.assertion.as_deref().unwrap_or("")),
        Some(AUTHORIZATION_CODE) => code_grant::exchange(&shared, &headers, &request),
        Some(REFRESH_TOKEN) => refresh_grant::refresh(&shared, &headers, &request),
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: grant_type",
        ),
        Some(_) => json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type: "}),
        ),
    }
}

/// Why an assertion is refused, with Google's wording where known.
#[derive(Debug, thiserror::Error)]
enum AssertionError {
    #[error("Invalid JWT: malformed token")]
    Malformed,
    #[error("Invalid grant: account not found")]
    UnknownAccount,
    #[error("Invalid JWT Signature.")]
    Signature,
    #[error("Invalid JWT: Failed audience check. The right audience is {0}")]
    Audience(String),
    #[error(
        "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
         timeframe. Check your iat and exp values in the JWT claim."
    )]
    Timeframe,
    #[error("Invalid JWT: {0}")]
    Other(String),
}

/// The claims Google reads from an assertion.
#[derive(Debug, Deserialize)]
struct Assertion {
    iat: i64,
    exp: i64,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    sub: Option<String>,
}

/// The JWT-bearer grant: a service account's signed assertion for an access token, optionally
/// for a Workspace user (`sub`) under domain-wide delegation.
fn jwt_bearer(shared: &Shared, assertion: &str) -> Response {
    let token_url = format!("{}/token", shared.issuer);
    let (account, claims) = match check_assertion(shared, assertion, &token_url) {
        Ok(checked) => checked,
        Err(err) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &err.to_string());
        }
    };
    let scopes: Vec<String> = claims
        .scope
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    if let Some(sub) = &claims.sub {
        let delegated = scopes.iter().all(|s| account.delegated_scopes.contains(s));
        if !delegated || !shared.directory.is_admin(sub) {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                UNAUTHORIZED_CLIENT,
            );
        }
    }
    let principal = Principal::ServiceAccount {
        email: account.email.clone(),
        subject: claims.sub.map(|s| s.to_lowercase()),
    };
    let (token, _) = shared.api_tokens.issue(principal, scopes, 3599, now());
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
    )
}

/// Checks an assertion as Google does: RS256 by the key its `kid` names, of the account its
/// `iss` names, for this token URL, short-lived and current.
fn check_assertion(
    shared: &Shared,
    assertion: &str,
    token_url: &str,
) -> Result<(Arc<crate::accounts::ServiceAccount>, Assertion), AssertionError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AssertionError::Malformed)?;
    let iss = unverified_claims(assertion)
        .and_then(|c| c.get("iss").and_then(Value::as_str).map(str::to_owned))
        .ok_or(AssertionError::Malformed)?;
    let account = shared
        .accounts
        .get(&iss)
        .ok_or(AssertionError::UnknownAccount)?;
    if header.alg != Algorithm::RS256 {
        return Err(AssertionError::Signature);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| account.key(kid))
        .ok_or(AssertionError::Signature)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[token_url]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    validation.leeway = SKEW;
    let claims = jsonwebtoken::decode::<Assertion>(assertion, &key.decoding, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature => AssertionError::Signature,
            ErrorKind::InvalidAudience => AssertionError::Audience(token_url.to_owned()),
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => AssertionError::Timeframe,
            _ => AssertionError::Other(err.to_string()),
        })?
        .claims;
    let skew = i64::try_from(SKEW).unwrap_or(i64::MAX);
    if claims.exp - claims.iat > 3600 || claims.iat > now() + skew || claims.exp <= claims.iat {
        return Err(AssertionError::Timeframe);
    }
    Ok((account, claims))
}

/// The claims of a JWT, before its signature is checked (to learn who claims to sign it).
fn unverified_claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}
