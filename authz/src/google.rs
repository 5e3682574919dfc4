//! Verifying Google tokens: ID tokens locally against the discovered JWKS, access tokens through
//! tokeninfo and userinfo. Every URL comes from the config or from discovery; nothing here knows
//! whether it is talking to Google or to a stand-in.

mod access_token;
mod discovery;
pub(crate) mod http;
mod id_token;
mod jwks;
mod new_tokens;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use url::Url;

use crate::{
    config::Config,
    credentials::Credential,
    errors::{BackendError, Endpoint, TokenError, VerifyError},
    metrics::Metrics,
    principal::Principal,
};

pub use jwks::Jwks;

/// Settings every verifier reads, copied out of the config once.
#[derive(Debug, Clone)]
struct Settings {
    client_ids: Vec<String>,
    issuers: Vec<String>,
    tokeninfo_url: Url,
    clock_skew: Duration,
}

/// Verifies Google tokens. Cheap to share (`Arc`); ready once discovery and the JWKS are loaded.
#[derive(Debug)]
pub struct Google {
    http: reqwest::Client,
    settings: Settings,
    issuer: String,
    jwks_refetch_interval: Duration,
    jwks_default_refresh: Duration,
    metrics: Arc<Metrics>,
    /// Set once by the background task when discovery succeeds.
    discovered: OnceLock<Discovered>,
    /// The bound on verifying never-seen access tokens.
    new_tokens: new_tokens::NewTokens,
}

#[derive(Debug)]
struct Discovered {
    jwks: Jwks,
    userinfo_url: Url,
    sign_in: Option<SignInEndpoints>,
}

/// Whether a token is known to have been valid before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Before,
}

/// Google's OAuth endpoints for signing a user in, from discovery.
#[derive(Debug, Clone)]
pub struct SignInEndpoints {
    pub authorization: Url,
    pub token: Url,
}

impl Google {
    /// A client recording into a registry of its own (nobody scrapes it).
    pub fn new(config: &Config) -> anyhow::Result<Arc<Google>> {
        Google::with_metrics(config, Arc::default())
    }

    /// A client recording its calls to Google into `metrics`.
    pub fn with_metrics(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Google>> {
        Ok(Arc::new(Google {
            http: http::client(config.google.request_timeout)?,
            settings: Settings {
                client_ids: config.google.client_ids.clone(),
                issuers: config.accepted_issuers(),
                tokeninfo_url: config.google.tokeninfo_url.clone(),
                clock_skew: config.google.clock_skew,
            },
            issuer: config.google.issuer.clone(),
            jwks_refetch_interval: config.google.jwks_refetch_interval,
            jwks_default_refresh: config.google.jwks_default_refresh,
            metrics,
            discovered: OnceLock::new(),
            new_tokens: new_tokens::NewTokens::new(
                config.google.max_concurrent_new_tokens,
                config.google.new_tokens_per_second,
            ),
        }))
    }

    /// Where this client and the authorizer built on it record.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Ready means: discovery done and a JWKS with at least one usable key loaded.
    pub fn is_ready(&self) -> bool {
        self.discovered.get().is_some_and(|d| d.jwks.has_keys())
    }

    /// Verifies a credential and returns who it speaks for. Domain policy is not applied here.
    /// An access token counts against the bound on never-seen tokens.
    pub async fn verify(&self, credential: Credential<'_>) -> Result<Principal, VerifyError> {
        self.verify_seen(credential, Seen::New).await
    }

    /// [`Google::verify`] for a token known to have been valid (verified before, or held by
    /// a signed-in session): not subject to the bound on never-seen tokens, so a spray of junk
    /// tokens cannot shed the users whose cached identity just expired.
    pub async fn verify_seen(
        &self,
        credential: Credential<'_>,
        seen: Seen,
    ) -> Result<Principal, VerifyError> {
        let discovered = self.discovered.get().ok_or_else(|| BackendError {
            endpoint: Endpoint::Discovery,
            problem: "OpenID discovery has not completed yet".into(),
        })?;
        match credential {
            Credential::Jwt(token) => {
                id_token::verify(token, &discovered.jwks, &self.settings).await
            }
            Credential::Opaque(token) => {
                let admitted = match seen {
                    Seen::Before => None,
                    Seen::New => Some(self.new_tokens.admit()),
                };
                let _permit = admitted.transpose().map_err(|shed| {
                    self.metrics.verification_shed(shed.as_str());
                    BackendError {
                        endpoint: Endpoint::Tokeninfo,
                        problem: format!(
                            "shed: too many new access tokens being verified ({})",
                            shed.as_str()
                        ),
                    }
                })?;
                let http = (&self.http, &*self.metrics);
                access_token::verify(token, http, &self.settings, &discovered.userinfo_url).await
            }
        }
    }

    /// Google's sign-in endpoints, once discovery is done.
    pub fn sign_in_endpoints(&self) -> Option<SignInEndpoints> {
        self.discovered.get().and_then(|d| d.sign_in.clone())
    }

    /// Verifies the ID token of a sign-in we started: every check of [`Google::verify`], plus
    /// the `nonce` we sent (constant-time), which binds the token to this sign-in.
    pub async fn verify_sign_in(
        &self,
        id_token: &str,
        nonce: &str,
    ) -> Result<Principal, VerifyError> {
        let discovered = self.discovered.get().ok_or_else(|| BackendError {
            endpoint: Endpoint::Discovery,
            problem: "OpenID discovery has not completed yet".into(),
        })?;
        id_token::verify_with_nonce(id_token, &discovered.jwks, &self.settings, nonce).await
    }

    /// Runs discovery (retrying with backoff), loads the JWKS, then keeps it fresh until cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        let discovered = loop {
            match discovery::discover(&self.http, &self.issuer, &self.metrics).await {
                Ok(found) => break found,
                Err(error) => {
                    tracing::warn!(%error, "OpenID discovery failed; retrying");
                    if shutdown.run_until_cancelled(backoff.wait()).await.is_none() {
                        return;
                    }
                }
            }
        };
        tracing::info!(jwks_uri = %discovered.jwks_uri, "OpenID discovery done");
        let jwks = Jwks::new(
            self.http.clone(),
            discovered.jwks_uri,
            self.jwks_refetch_interval,
            self.jwks_default_refresh,
            self.metrics.clone(),
        );
        let _ = self.discovered.set(Discovered {
            jwks,
            userinfo_url: discovered.userinfo_url,
            sign_in: discovered.sign_in,
        });
        if let Some(d) = self.discovered.get() {
            d.jwks.keep_fresh(shutdown).await;
        }
    }
}

/// Exponential backoff from 500 ms to 30 s, so an outage is retried without a hot loop.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(500),
        }
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(30));
    }

    pub(crate) fn reset(&mut self) {
        *self = Backoff::new();
    }
}
