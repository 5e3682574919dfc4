//! Google's Security Token Service (`https://sts.googleapis.com/v1/token`, RFC 8693 token
//! exchange) for AWS workloads, and the workload-identity bindings tests register.
//!
//! An AWS workload proves who it is with a SigV4-signed `GetCallerIdentity` request it does not
//! send, but serializes into the subject token; Google checks it is bound to the provider
//! (`x-goog-cloud-target-resource`) and lets AWS verify the signature. The stand-in checks the
//! same structure, and the signature itself with the binding's secret key.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    Shared,
    api_tokens::Principal,
    clock::parse_amz_date,
    google_error::oauth_error,
    now,
    routes::{gate, json_response},
    sigv4::{self, Authorization},
    stats::Counter,
};

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub(crate) const AWS_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";
/// How far `x-amz-date` may be from now: AWS refuses older signatures.
const SIGNATURE_AGE: i64 = 15 * 60;

/// Body of `POST /_standin/workload_identity`, and the argument of
/// [`StandIn::add_workload_identity`](crate::StandIn::add_workload_identity): lets the AWS
/// identity with these keys exchange tokens for `audience`, and impersonate `service_account`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentitySpec {
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`.
    pub audience: String,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    /// The session token of temporary credentials (default: a random one). A subject token
    /// carrying `x-amz-security-token` must carry this one; the metadata server hands it out.
    #[serde(default)]
    pub aws_session_token: Option<String>,
    pub service_account: String,
}

/// The registered bindings, one per audience; the most recent also feeds the metadata server.
#[derive(Default)]
pub(crate) struct WorkloadIdentities(Mutex<Vec<WorkloadIdentitySpec>>);

impl WorkloadIdentities {
    /// Registers `spec`, replacing the binding of the same audience. Without a session token
    /// it gets one, so the metadata server always hands out complete temporary credentials.
    pub(crate) fn add(&self, mut spec: WorkloadIdentitySpec) {
        if spec.aws_session_token.is_none() {
            spec.aws_session_token = Some(crate::tokens::random_token());
        }
        let mut bindings = self.lock();
        bindings.retain(|b| b.audience != spec.audience);
        bindings.push(spec);
    }

    pub(crate) fn get(&self, audience: &str) -> Option<WorkloadIdentitySpec> {
        self.lock().iter().find(|b| b.audience == audience).cloned()
    }

    pub(crate) fn latest(&self) -> Option<WorkloadIdentitySpec> {
        self.lock().last().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<WorkloadIdentitySpec>> {
        self.0.lock().expect("workload identity mutex poisoned")
    }
}

/// A token-exchange request; form fields are snake_case, JSON ones may be camelCase.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExchangeRequest {
    #[serde(alias = "grantType")]
    grant_type: String,
    audience: String,
    scope: String,
    #[serde(alias = "requestedTokenType")]
    requested_token_type: String,
    #[serde(alias = "subjectToken")]
    subject_token: String,
    #[serde(alias = "subjectTokenType")]
    subject_token_type: String,
}

/// `POST /v1/token`, form-encoded or JSON: exchanges a signed AWS `GetCallerIdentity` request
/// for a federated access token.
pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::Sts).await {
        return faulted;
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed = if is_json {
        serde_json::from_slice::<ExchangeRequest>(&body).map_err(|e| e.to_string())
    } else {
        let fields: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(&body)
            .into_owned()
            .map(|(k, v)| (k, v.into()))
            .collect();
        serde_json::from_value::<ExchangeRequest>(fields.into()).map_err(|e| e.to_string())
    };
    let request = match parsed {
        Ok(request) => request,
        Err(err) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &err),
    };
    if request.grant_type != TOKEN_EXCHANGE {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            &format!("Unsupported grant type: {:?}", request.grant_type),
        );
    }
    if request.requested_token_type != ACCESS_TOKEN_TYPE {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid value for \"requested_token_type\".",
        );
    }
    if request.subject_token_type != AWS_SUBJECT_TOKEN_TYPE {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid value for \"subject_token_type\".",
        );
    }
    let Some(binding) = shared.workload.get(&request.audience) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might \
             either be because the pool or provider is disabled or deleted or because it \
             doesn't exist.",
        );
    };
    let scopes: Vec<String> = request
        .scope
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "Scope(s) must be provided.",
        );
    }
    if let Err(err) = check_subject_token(&request.subject_token, &binding, now()) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &err.to_string());
    }
    let principal = Principal::Federated {
        audience: binding.audience.clone(),
        service_account: binding.service_account.to_lowercase(),
    };
    let (token, _) = shared.api_tokens.issue(principal, scopes, 3600, now());
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": 3600,
        }),
    )
}

/// Why a subject token is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubjectTokenError {
    #[error("The subject token is not a serialized AWS GetCallerIdentity request: {0}")]
    Malformed(String),
    #[error("The AWS request must be a POST to sts.<region>.amazonaws.com GetCallerIdentity.")]
    NotGetCallerIdentity,
    #[error("The AWS request lacks the {0} header.")]
    MissingHeader(&'static str),
    #[error("The AWS request is not bound to this provider (x-goog-cloud-target-resource).")]
    WrongTarget,
    #[error("The AWS credentials are not those the provider accepts.")]
    WrongCredentials,
    #[error("The AWS request's signing date or scope is invalid or expired.")]
    Stale,
    #[error("The AWS request signature does not match (SignatureDoesNotMatch).")]
    Signature,
}

#[derive(Debug, Deserialize)]
struct SerializedRequest {
    url: String,
    method: String,
    headers: Vec<KeyValue>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeyValue {
    key: String,
    value: String,
}

/// Checks a subject token (the URL-encoded JSON Google's AWS flow produces) against `binding`.
pub(crate) fn check_subject_token(
    subject_token: &str,
    binding: &WorkloadIdentitySpec,
    now: i64,
) -> Result<(), SubjectTokenError> {
    use SubjectTokenError as E;
    let json = if subject_token.trim_start().starts_with('{') {
        subject_token.to_owned()
    } else {
        sigv4::percent_decode(subject_token)
            .ok_or_else(|| E::Malformed("bad URL encoding".into()))?
    };
    let request: SerializedRequest =
        serde_json::from_str(&json).map_err(|e| E::Malformed(e.to_string()))?;
    let url = url::Url::parse(&request.url).map_err(|e| E::Malformed(e.to_string()))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let region = if host == "sts.amazonaws.com" {
        "us-east-1"
    } else {
        host.strip_prefix("sts.")
            .and_then(|h| h.strip_suffix(".amazonaws.com"))
            .ok_or(E::NotGetCallerIdentity)?
    };
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let has = |k: &str, v: &str| query.iter().any(|(qk, qv)| qk == k && qv == v);
    if request.method != "POST"
        || url.scheme() != "https"
        || !has("Action", "GetCallerIdentity")
        || !has("Version", "2011-06-15")
    {
        return Err(E::NotGetCallerIdentity);
    }

    let mut headers: HashMap<String, String> = HashMap::new();
    for KeyValue { key, value } in request.headers {
        if headers.insert(key.to_lowercase(), value).is_some() {
            return Err(E::Malformed(format!("header {key} repeated")));
        }
    }
    let header = |name: &'static str| headers.get(name).ok_or(E::MissingHeader(name));
    if header("host")? != &host {
        return Err(E::NotGetCallerIdentity);
    }
    if header("x-goog-cloud-target-resource")? != &binding.audience {
        return Err(E::WrongTarget);
    }
    let auth = Authorization::parse(header("authorization")?)
        .ok_or_else(|| E::Malformed("bad Authorization header".into()))?;
    if auth.access_key_id != binding.aws_access_key_id {
        return Err(E::WrongCredentials);
    }
    let session = headers.get("x-amz-security-token");
    if session.is_some() && session != binding.aws_session_token.as_ref() {
        return Err(E::WrongCredentials);
    }
    let amz_date = header("x-amz-date")?.clone();
    let signed_at = parse_amz_date(&amz_date).ok_or(E::Stale)?;
    if (now - signed_at).abs() > SIGNATURE_AGE
        || !amz_date.starts_with(&auth.date)
        || auth.region != region
        || auth.service != "sts"
    {
        return Err(E::Stale);
    }
    // What Google binds the request to must be covered by the signature.
    for required in ["host", "x-amz-date", "x-goog-cloud-target-resource"]
        .into_iter()
        .chain(
            headers
                .contains_key("x-amz-security-token")
                .then_some("x-amz-security-token"),
        )
    {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(E::Signature);
        }
    }
    let signed = sigv4::Request {
        method: &request.method,
        path: url.path(),
        query,
        headers: headers.into_iter().collect(),
        body: request.body.as_deref().unwrap_or("").as_bytes(),
    };
    let expected = sigv4::signature(&signed, &auth, &amz_date, &binding.aws_secret_access_key)
        .ok_or(E::Signature)?;
    if expected != auth.signature {
        return Err(E::Signature);
    }
    Ok(())
}
