//! `[client_metadata]`: OAuth clients whose `client_id` is a metadata document's URL.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::string_list;

/// The `[client_metadata]` section: accepting OAuth clients whose `client_id` is the https URL of
/// a Client ID Metadata Document, fetched by us. Anyone can name such a URL in an authorization
/// request, so every fetch is bounded in time, size and destination, and cached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientMetadataConfig {
    /// Accept client ids that are metadata document URLs. Default true.
    pub enabled: bool,
    /// Total time for one fetch: resolving, connecting, TLS, headers and body. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest document accepted, in bytes; reading stops as soon as a response passes it.
    /// Default 16384.
    pub max_bytes: u64,
    /// Upper bound on cached documents (and cached failures); unauthenticated callers cannot
    /// grow memory past it. Default 1000.
    pub max_entries: u64,
    /// Shortest life of a cached document, whatever `Cache-Control: max-age` says, so that a
    /// document cannot make us refetch it on every request. Default 1m.
    #[serde(with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Longest life of a cached document, whatever `Cache-Control: max-age` says. Default 24h.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Life of a cached document whose response carries no `Cache-Control` lifetime (within
    /// `min_ttl`..`max_ttl`). Default 10m.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Life of a cached failure (unreachable host, error status, invalid document), so that a
    /// bad URL named in many requests costs one fetch per period. Default 30s.
    #[serde(with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// Hosts (`host`, any port) or host and port (`host:port`, `[v6]:port`) fetched from even
    /// though they resolve to private, loopback or otherwise non-public addresses: for a
    /// company whose own MCP clients publish their metadata on internal hosts. Listing a host
    /// here is an operator's decision to let unauthenticated callers make us fetch from it.
    /// Default: none.
    #[serde(deserialize_with = "string_list")]
    pub allow_hosts: Vec<String>,
    /// A PEM file of root CA certificates trusted in addition to the built-in roots, for
    /// internal hosts. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Fetches running at once, whatever the URLs; past it a request is refused (not cached).
    /// Default 8.
    pub max_concurrent_fetches: usize,
    /// Fetches per host and minute (each `?1`, `?2`, ... of one host counts); past it a
    /// request is refused (not cached), so nobody can make us hammer a host. Default 10.
    pub fetches_per_host_per_minute: u32,
}

// === impl ClientMetadataConfig ===

impl ClientMetadataConfig {
    /// Largest `max_bytes`: a metadata document is a few hundred bytes.
    const MAX_BYTES_LIMIT: u64 = 1024 * 1024;
    /// Longest `timeout`: an authorization request waits on the fetch.
    const TIMEOUT_LIMIT: Duration = Duration::from_secs(60);

    /// Checks what serde cannot; the error names the key within the section.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.timeout.is_zero() || self.timeout > Self::TIMEOUT_LIMIT {
            return Err((
                "timeout",
                "must be greater than zero and at most 60s".into(),
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > Self::MAX_BYTES_LIMIT {
            return Err(("max_bytes", "must be between 1 and 1048576 (1 MiB)".into()));
        }
        if self.max_entries == 0 {
            return Err(("max_entries", "must be greater than zero".into()));
        }
        if self.max_ttl < self.min_ttl {
            return Err(("max_ttl", "must not be shorter than min_ttl".into()));
        }
        if self.failure_ttl.is_zero() {
            return Err((
                "failure_ttl",
                "must be greater than zero: failures are cached so a bad URL cannot make us hammer a host".into(),
            ));
        }
        for entry in &self.allow_hosts {
            crate::client_metadata::AllowHost::parse(entry).map_err(|e| ("allow_hosts", e))?;
        }
        Ok(())
    }
}

impl Default for ClientMetadataConfig {
    fn default() -> Self {
        ClientMetadataConfig {
            enabled: true,
            timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            max_entries: 1000,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(600),
            failure_ttl: Duration::from_secs(30),
            allow_hosts: Vec::new(),
            ca_file: None,
            max_concurrent_fetches: 8,
            fetches_per_host_per_minute: 10,
        }
    }
}
