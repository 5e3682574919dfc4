//! OpenID Connect discovery through `openidconnect`, which also checks that the document's
//! `issuer` is byte-identical to the configured one.

use openidconnect::{IssuerUrl, core::CoreProviderMetadata};
use url::Url;

use super::{BackendError, Endpoint};
use crate::metrics::{GoogleEndpoint, Metrics, Outcome};

/// What we take from the discovery document.
#[derive(Debug)]
pub struct Found {
    pub jwks_uri: Url,
    pub userinfo_url: Url,
    /// Where the OAuth facade signs users in (absent from a document: no facade sign-in).
    pub sign_in: Option<super::SignInEndpoints>,
}

pub async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    metrics: &Metrics,
) -> Result<Found, BackendError> {
    let fail = |problem: String| BackendError {
        endpoint: Endpoint::Discovery,
        problem,
    };
    let issuer = IssuerUrl::new(issuer.to_string()).map_err(|e| fail(e.to_string()))?;
    // `openidconnect` makes the request, so only the whole exchange can be timed.
    let started = std::time::Instant::now();
    let metadata = CoreProviderMetadata::discover_async(issuer, http).await;
    let outcome = if metadata.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    metrics.google(GoogleEndpoint::Discovery, outcome, started.elapsed());
    let metadata = metadata.map_err(|e| fail(error_chain(&e)))?;
    let userinfo = metadata
        .userinfo_endpoint()
        .ok_or_else(|| fail("discovery document has no userinfo_endpoint".into()))?;
    let sign_in = metadata
        .token_endpoint()
        .map(|token| super::SignInEndpoints {
            authorization: metadata.authorization_endpoint().url().clone(),
            token: token.url().clone(),
        });
    Ok(Found {
        jwks_uri: metadata.jwks_uri().url().clone(),
        userinfo_url: userinfo.url().clone(),
        sign_in,
    })
}

/// `openidconnect` errors hide their cause in `source()`; logs need the whole chain on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
