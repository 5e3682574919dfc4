//! `oauth.client_id_metadata_hosts`: the hosts whose metadata documents the operator accepts as
//! client ids (like Pomerium's `mcp_allowed_client_id_domains`). A matter of trust in who
//! publishes the client's name and redirect URIs, checked before anything is fetched; not to be
//! confused with `client_metadata.allow_hosts`, which lets the fetch reach private addresses.

use url::Url;

use crate::config::ClientIdHost;

/// Whether a metadata document at `client_id` may be used under `allowed` (empty: any host).
/// `client_id` that is not a URL is never allowed here; it is refused elsewhere anyway.
pub fn host_allowed(allowed: &[ClientIdHost], client_id: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    Url::parse(client_id).is_ok_and(|url| allowed.iter().any(|entry| entry.matches(&url)))
}
