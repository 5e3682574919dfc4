//! Credentials for calling Google APIs as our service account: an OAuth access token, cached
//! until shortly before it expires and refreshed once however many callers are waiting.
//!
//! Three ways to get one, all ending in an access token for the configured scope:
//! - a service-account key file: a JWT signed locally (RS256, `kid` = `private_key_id`) and
//!   exchanged at the token endpoint (`jwt-bearer`); with a `subject` the JWT carries `sub` and
//!   the token speaks for that Workspace user (domain-wide delegation);
//! - an `external_account` file (Workload Identity Federation, AWS source): a SigV4-signed
//!   GetCallerIdentity request swapped at Google's STS for a federated token, which impersonates
//!   the service account (`generateAccessToken`); with a `subject`, that service account has IAM
//!   sign the same JWT (`signJwt`) and the signed JWT goes through the `jwt-bearer` exchange;
//! - either without a `subject`: the service account's own token (Cloud Identity with the Group
//!   Administrator role, no delegation).
//!
//! The credential JSON comes through [`crate::secrets`] (a file, inline, or AWS Secrets Manager)
//! and is re-read there on an interval: a rotated key is parsed on the next token request, and
//! the cached token, which belongs to the old credentials, is dropped. A new value that does not
//! parse changes nothing (WARN, and the previous credentials stay in use).
//!
//! Every URL comes from the config or from the credential file; nothing here knows whether it is
//! talking to Google or to a stand-in.

mod aws;
mod external;
mod key_file;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use crate::{
    config::CredentialsConfig,
    metrics::{GoogleEndpoint, Metrics, Outcome},
    principal::unix_now,
    secret_string::SecretString,
    secrets::{Derived, SecretValue},
};

pub use aws::AwsEnv;

/// Scope for IAM Credentials (`generateAccessToken`, `signJwt`).
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The endpoints the credential flows call.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// OAuth token endpoint: the `jwt-bearer` exchange, and the JWT audience.
    pub token_url: Url,
    /// IAM Credentials base (`generateAccessToken`, `signJwt`).
    pub iam_credentials_url: Url,
}

/// Why no access token could be had. Every cause means "cannot call Google right now".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {problem}")]
pub struct AuthError {
    pub step: Step,
    pub problem: String,
    /// Google (or AWS) refused our credentials (HTTP 400/401/403): a configuration problem that
    /// will not heal by itself, as opposed to an outage.
    pub rejected: bool,
}

/// Which step of a credential flow failed, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SignJwtLocally,
    TokenExchange,
    AwsCredentials,
    AwsRegion,
    StsExchange,
    GenerateAccessToken,
    SignJwt,
}

/// Hands out access tokens for one scope, cached and refreshed once.
#[derive(Debug)]
pub struct ServiceAuth {
    /// Parsed from the credential JSON, again whenever the secret changes.
    flow: Derived<Flow>,
    http: reqwest::Client,
    endpoints: Endpoints,
    scope: String,
    subject: Option<String>,
    cache: Mutex<CacheState>,
    /// Held by the one caller that refreshes; the others wait on it and then read the cache.
    refresh: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
enum Flow {
    Key(key_file::ServiceAccountKey),
    External(Box<external::ExternalAccount>),
}

#[derive(Debug, Default)]
struct CacheState {
    token: Option<CachedToken>,
    /// The last refresh failure; callers who were already waiting when it happened share it
    /// rather than each trying again.
    failure: Option<(Instant, AuthError)>,
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: SecretString,
    refresh_at: Instant,
    /// The credentials it was obtained with; a token of replaced credentials is not served.
    flow: Arc<Flow>,
}

/// An access token and how long Google says it lives.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub(crate) token: SecretString,
    pub(crate) expires_in: Duration,
}

/// The claims of a `jwt-bearer` assertion (RFC 7523 as Google reads it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

/// Longest lifetime Google accepts for an assertion.
const ASSERTION_LIFETIME: u64 = 3600;
/// Refresh this long before the token expires, so no request carries a token about to die.
const REFRESH_EARLY: Duration = Duration::from_secs(300);

// === impl ServiceAuth ===

impl ServiceAuth {
    /// Parses and checks `credential`, the JSON `config` names, already resolved; no network.
    pub fn new(
        config: &CredentialsConfig,
        credential: SecretValue,
        endpoints: Endpoints,
        scope: &str,
        aws_env: AwsEnv,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<ServiceAuth> {
        let flow = match config {
            CredentialsConfig::ServiceAccountKey { .. } => Derived::new(credential, |text| {
                key_file::ServiceAccountKey::parse(text).map(Flow::Key)
            })?,
            CredentialsConfig::ExternalAccount {
                service_account, ..
            } => {
                let service_account = service_account.clone();
                let iam_credentials_url = endpoints.iam_credentials_url.clone();
                Derived::new(credential, move |text| {
                    let account = external::ExternalAccount::parse(
                        text,
                        service_account.as_deref(),
                        &iam_credentials_url,
                        aws_env.clone(),
                    )?;
                    Ok(Flow::External(Box::new(account)))
                })?
            }
        };
        let subject = config.subject().map(str::to_string);
        if let Some(subject) = &subject {
            anyhow::ensure!(
                subject.contains('@'),
                "groups.credentials.subject: {subject:?} is not an email address"
            );
        }
        Ok(ServiceAuth {
            flow,
            http,
            endpoints,
            scope: scope.to_string(),
            subject,
            cache: Mutex::default(),
            refresh: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    /// The service account the tokens belong to (per the current credentials).
    pub fn service_account(&self) -> String {
        self.flow.get().service_account().to_string()
    }

    /// A valid access token: the cached one, or a fresh one from a single refresh.
    pub async fn token(&self) -> Result<SecretString, AuthError> {
        let asked = Instant::now();
        if let Some(token) = self.cached(asked) {
            return Ok(token);
        }
        let _refreshing = self.refresh.lock().await;
        // Whoever held the lock before us may have just refreshed, or just failed.
        if let Some(token) = self.cached(Instant::now()) {
            return Ok(token);
        }
        if let Some((at, error)) = &self.lock_cache().failure {
            if *at >= asked {
                return Err(error.clone());
            }
        }
        let started = std::time::Instant::now();
        let flow = self.flow.get();
        let fetched = self.fetch(&flow).await;
        let outcome = match &fetched {
            Ok(_) => Outcome::Ok,
            Err(error) if error.rejected => Outcome::Rejected,
            Err(_) => Outcome::Error,
        };
        (self.metrics).google(GoogleEndpoint::ServiceToken, outcome, started.elapsed());
        match fetched {
            Ok(fresh) => {
                let now = Instant::now();
                let early = REFRESH_EARLY.min(fresh.expires_in / 2);
                let mut cache = self.lock_cache();
                cache.token = Some(CachedToken {
                    token: fresh.token.clone(),
                    refresh_at: now + fresh.expires_in - early,
                    flow,
                });
                cache.failure = None;
                Ok(fresh.token)
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    service_account = flow.service_account(),
                    "could not obtain a Google API access token"
                );
                self.lock_cache().failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// Drops the cached token, after Google refused it (revoked, or the grant changed).
    pub fn forget_token(&self) {
        self.lock_cache().token = None;
    }

    fn cached(&self, now: Instant) -> Option<SecretString> {
        let flow = self.flow.get();
        let cache = self.lock_cache();
        let cached = cache.token.as_ref()?;
        let current = now < cached.refresh_at && Arc::ptr_eq(&cached.flow, &flow);
        current.then(|| cached.token.clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // Nothing panics while holding this lock; a poisoned lock still holds consistent data.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn fetch(&self, flow: &Flow) -> Result<AccessToken, AuthError> {
        let claims = |iss: &str| {
            assertion_claims(
                iss,
                self.subject.as_deref(),
                &self.scope,
                self.endpoints.token_url.as_str(),
                unix_now(),
            )
        };
        match flow {
            Flow::Key(key) => {
                let assertion = key.sign(&claims(&key.client_email))?;
                jwt_bearer(&self.http, &self.endpoints.token_url, &assertion).await
            }
            Flow::External(account) => {
                let federated = account.federated_token(&self.http).await?;
                match &self.subject {
                    None => {
                        account
                            .generate_access_token(&self.http, &federated, &self.scope)
                            .await
                    }
                    Some(_) => {
                        let sa_token = account
                            .generate_access_token(&self.http, &federated, CLOUD_PLATFORM_SCOPE)
                            .await?;
                        let claims = claims(&account.service_account);
                        let assertion = account
                            .sign_jwt(&self.http, &sa_token.token, &claims)
                            .await?;
                        jwt_bearer(&self.http, &self.endpoints.token_url, &assertion).await
                    }
                }
            }
        }
    }
}

/// The claims Google's token endpoint wants for a `jwt-bearer` grant; `sub` only when we act
/// for a Workspace user.
pub fn assertion_claims(
    service_account: &str,
    subject: Option<&str>,
    scope: &str,
    token_url: &str,
    now: u64,
) -> AssertionClaims {
    AssertionClaims {
        iss: service_account.to_string(),
        sub: subject.map(str::to_string),
        scope: scope.to_string(),
        aud: token_url.to_string(),
        iat: now,
        exp: now + ASSERTION_LIFETIME,
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

/// `POST token_url` with `grant_type=jwt-bearer`: a signed assertion for an access token.
async fn jwt_bearer(
    http: &reqwest::Client,
    token_url: &Url,
    assertion: &SecretString,
) -> Result<AccessToken, AuthError> {
    let response = http
        .post(token_url.clone())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.expose()),
        ])
        .send()
        .await
        .map_err(|e| unreachable(Step::TokenExchange, &e))?;
    let body: TokenResponse = read_json(Step::TokenExchange, response).await?;
    Ok(AccessToken {
        token: SecretString::new(body.access_token),
        expires_in: Duration::from_secs(body.expires_in.unwrap_or(3600)),
    })
}

/// Reads a JSON body from a 200, or turns the status into an error. Error bodies from token
/// endpoints (`{"error":"invalid_grant","error_description":...}`) name the problem and carry
/// no secret, so a short prefix goes into the message.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    step: Step,
    response: reqwest::Response,
) -> Result<T, AuthError> {
    let status = response.status();
    if status == StatusCode::OK {
        return response.json().await.map_err(|e| AuthError {
            step,
            problem: format!("unreadable response: {}", error_chain(&e)),
            rejected: false,
        });
    }
    let body = response.text().await.unwrap_or_default();
    let detail: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
    Err(AuthError {
        step,
        problem: format!("HTTP {status}: {detail}"),
        rejected: matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ),
    })
}

pub(crate) fn unreachable(step: Step, error: &reqwest::Error) -> AuthError {
    let problem = if error.is_timeout() {
        "timed out".to_string()
    } else {
        format!("request failed: {}", error_chain(error))
    };
    AuthError {
        step,
        problem,
        rejected: false,
    }
}

/// The causes of a reqwest error without its URL (a GET URL may carry a query).
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.is_empty() {
        text = "unknown error".into();
    }
    text
}

// === impl Flow ===

impl Flow {
    fn service_account(&self) -> &str {
        match self {
            Flow::Key(key) => &key.client_email,
            Flow::External(account) => &account.service_account,
        }
    }
}

// === impl Step ===

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::SignJwtLocally => "signing the assertion",
            Step::TokenExchange => "token endpoint (jwt-bearer)",
            Step::AwsCredentials => "AWS credentials",
            Step::AwsRegion => "AWS region",
            Step::StsExchange => "STS token exchange",
            Step::GenerateAccessToken => "IAM generateAccessToken",
            Step::SignJwt => "IAM signJwt",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
