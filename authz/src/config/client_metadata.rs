//! `[client_metadata]`: OAuth clients whose `client_id` is a metadata document's URL; and the
//! host lists that decide which documents are fetched from where (`client_metadata.allow_hosts`)
//! and trusted (`oauth.client_id_metadata_hosts`).

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use url::{Host, Url};

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
            AllowHost::parse(entry).map_err(|e| ("allow_hosts", e))?;
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

/// An `allow_hosts` entry: `host` (any port) or `host:port`, exempt from the public-address
/// rule. The host is normalised as the URL parser normalises it, so `0x7f.1` and `127.0.0.1`
/// are one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowHost {
    host: Host<String>,
    port: Option<u16>,
}

// === impl AllowHost ===

impl AllowHost {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
    pub fn parse(entry: &str) -> Result<AllowHost, String> {
        let invalid = || format!("{entry:?} is not a host or host:port");
        if entry.is_empty() || entry.contains(['/', '?', '#', '@', '\\']) || entry.contains(' ') {
            return Err(invalid());
        }
        // An IPv6 address is bracketed; a bare one would leave it unclear which colon starts
        // the port, and is refused.
        let split = match entry.find(']') {
            Some(end) => entry.split_at(end + 1),
            None => match entry.rfind(':') {
                Some(colon) => entry.split_at(colon),
                None => (entry, ""),
            },
        };
        let (host, port) = match split {
            (host, _) if host.contains(':') && !host.starts_with('[') => return Err(invalid()),
            (host, "") => (host, None),
            (host, port) => {
                let port = port.strip_prefix(':').ok_or_else(invalid)?;
                match port.parse::<u16>() {
                    Ok(port) if port != 0 => (host, Some(port)),
                    _ => return Err(invalid()),
                }
            }
        };
        let url = Url::parse(&format!("https://{host}/")).map_err(|_| invalid())?;
        let host = url.host().ok_or_else(invalid)?.to_owned();
        Ok(AllowHost { host, port })
    }

    /// Whether a URL's host and port are this entry.
    pub fn matches(&self, host: &Host<&str>, port: u16) -> bool {
        self.host == host.to_owned() && self.port.is_none_or(|p| p == port)
    }

    /// The name a resolver sees for this entry, when it is a domain.
    pub(crate) fn domain(&self) -> Option<&str> {
        match &self.host {
            Host::Domain(name) => Some(name),
            Host::Ipv4(_) | Host::Ipv6(_) => None,
        }
    }
}

/// One entry: a host name (`claude.ai`, exact) or `*.` and a name (`*.example.com`: any name
/// below it, at any depth, but not `example.com` itself). Lower-cased; ports are not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdHost {
    name: String,
    subdomains: bool,
}

// === impl ClientIdHost ===

impl ClientIdHost {
    pub fn parse(entry: &str) -> Result<ClientIdHost, String> {
        let lower = entry.to_ascii_lowercase();
        let (subdomains, name) = match lower.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!(
                "{entry:?} is not a host name or *.name (no scheme, port or path; \
                 leave the list empty to accept any host)"
            ));
        }
        Ok(ClientIdHost {
            name: name.to_string(),
            subdomains,
        })
    }

    /// Whether the host of a metadata document URL is this entry.
    pub fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        if self.subdomains {
            host.strip_suffix(&self.name)
                .is_some_and(|below| below.len() > 1 && below.ends_with('.'))
        } else {
            host == self.name
        }
    }
}

impl TryFrom<String> for ClientIdHost {
    type Error = String;

    fn try_from(entry: String) -> Result<ClientIdHost, String> {
        ClientIdHost::parse(&entry)
    }
}
