//! The one HTTP client every call to Google goes through.

use std::time::Duration;

/// Builds the client: a total timeout per request, no redirects (a redirect from a token
/// endpoint is never legitimate and following one is an SSRF vector), pooled keep-alive
/// connections so the hot path does not pay a TLS handshake per call.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("authz/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(client)
}
