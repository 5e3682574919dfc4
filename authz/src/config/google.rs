//! Which tokens are accepted: `[google]` (how tokens are checked), `[access]` (which
//! Workspace domains) and `[cache]` (how long verdicts live).

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::string_list;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Google {
    /// OAuth client ids whose tokens we accept (`aud`, and `azp` when present).
    #[serde(deserialize_with = "string_list")]
    pub client_ids: Vec<String>,
    /// OIDC discovery base; `{issuer}/.well-known/openid-configuration` is fetched at start-up.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_tokeninfo_url")]
    pub tokeninfo_url: Url,
    /// Timeout of every call to Google (discovery, JWKS, tokeninfo, userinfo). Keep it below
    /// Envoy's ext_authz timeout so a slow Google is our 503, not Envoy's.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Leeway for `exp` and `iat` against clock skew between us and the token issuer.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Minimum time between two JWKS fetches caused by an unknown `kid` (fetch-storm guard).
    #[serde(default = "default_jwks_refetch_interval", with = "humantime_serde")]
    pub jwks_refetch_interval: Duration,
    /// Refresh period when the JWKS response carries no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_default_refresh: Duration,
    /// At most this many never-seen access tokens are verified at once; more are a 503.
    #[serde(default = "default_max_concurrent_new_tokens")]
    pub max_concurrent_new_tokens: usize,
    /// At most this many never-seen access tokens start verification per second (burst: as
    /// many); more are a 503.
    #[serde(default = "default_new_tokens_per_second")]
    pub new_tokens_per_second: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Allowed Google Workspace domains, matched against the `hd` claim only.
    #[serde(deserialize_with = "string_list")]
    pub domains: Vec<String>,
    /// The policy for requests that neither Envoy nor `[[routes]]` assign one. Default
    /// `default`: `[policies.default]` if defined, else the domain check alone.
    #[serde(default)]
    pub default_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Upper bound on cached verdicts; unauthenticated callers cannot grow memory past it.
    pub max_entries: u64,
    /// Longest life of a cached allow (also capped by the token's own expiry).
    #[serde(with = "humantime_serde")]
    pub allow_ttl: Duration,
    /// Life of a cached denial for an invalid token.
    #[serde(with = "humantime_serde")]
    pub deny_ttl: Duration,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            max_entries: 100_000,
            allow_ttl: Duration::from_secs(300),
            deny_ttl: Duration::from_secs(10),
        }
    }
}

pub(super) const GOOGLE_ISSUER: &str = "https://accounts.google.com";

pub(super) fn check_domain(domain: &str) -> Result<(), String> {
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !domain.starts_with('.')
        && !domain.ends_with('.');
    if valid {
        Ok(())
    } else {
        Err(format!("{domain:?} is not a domain name"))
    }
}

fn default_issuer() -> String {
    GOOGLE_ISSUER.to_string()
}
fn default_tokeninfo_url() -> Url {
    Url::parse("https://oauth2.googleapis.com/tokeninfo").expect("constant URL parses")
}
fn default_request_timeout() -> Duration {
    Duration::from_millis(800)
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_refetch_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_concurrent_new_tokens() -> usize {
    32
}
fn default_new_tokens_per_second() -> u32 {
    50
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(3600)
}

// === impl Google, Access, Cache ===

impl Google {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.client_ids.is_empty() {
            return Err((
                "google.client_ids",
                "at least one client id is required".into(),
            ));
        }
        if self.client_ids.iter().any(|id| id.trim().is_empty()) {
            return Err(("google.client_ids", "client ids must not be blank".into()));
        }
        let issuer = Url::parse(&self.issuer);
        if !matches!(issuer, Ok(ref u) if u.scheme() == "https" || u.scheme() == "http") {
            return Err(("google.issuer", "must be an http(s) URL".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(("google.request_timeout", "must be greater than zero".into()));
        }
        let refetch = self.jwks_refetch_interval;
        if refetch < Duration::from_secs(1) || refetch > Duration::from_secs(3600) {
            return Err((
                "google.jwks_refetch_interval",
                "must be between 1s and 1h".into(),
            ));
        }
        if self.jwks_default_refresh < refetch {
            return Err((
                "google.jwks_default_refresh",
                "must not be shorter than google.jwks_refetch_interval".into(),
            ));
        }
        Ok(())
    }
}

impl Access {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.domains.is_empty() {
            return Err((
                "access.domains",
                "at least one Workspace domain is required".into(),
            ));
        }
        for domain in &self.domains {
            check_domain(domain).map_err(|message| ("access.domains", message))?;
        }
        Ok(())
    }
}

impl Cache {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_entries == 0 {
            return Err(("cache.max_entries", "must be greater than zero".into()));
        }
        Ok(())
    }
}
