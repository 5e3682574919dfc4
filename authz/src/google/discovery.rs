//! OpenID Connect discovery through `openidconnect`, which also checks that the document's
//! `issuer` is byte-identical to the configured one.

use openidconnect::{IssuerUrl, core::CoreProviderMetadata};
use url::Url;

use super::{BackendError, Endpoint};

/// What we take from the discovery document.
#[derive(Debug)]
pub struct Found {
    pub jwks_uri: Url,
    pub userinfo_url: Url,
}

pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Found, BackendError> {
    let fail = |problem: String| BackendError {
        endpoint: Endpoint::Discovery,
        problem,
    };
    let issuer = IssuerUrl::new(issuer.to_string()).map_err(|e| fail(e.to_string()))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| fail(error_chain(&e)))?;
    let userinfo = metadata
        .userinfo_endpoint()
        .ok_or_else(|| fail("discovery document has no userinfo_endpoint".into()))?;
    Ok(Found {
        jwks_uri: metadata.jwks_uri().url().clone(),
        userinfo_url: userinfo.url().clone(),
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
