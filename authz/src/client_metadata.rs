//! OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, used by
//! MCP since 2025-11-25): a client whose `client_id` is an https URL, e.g.
//! `https://claude.ai/oauth/claude-code-client-metadata`, is described by the JSON document at
//! that URL, which we fetch.
//!
//! Anyone can send an authorization request naming any URL, so the fetch is an SSRF and
//! resource-exhaustion surface and is built as one:
//! - `address`: only public addresses are connected to, checked in the DNS resolver the HTTP
//!   client connects through (no rebinding window); literal IP hosts in any notation are
//!   checked before sending. `allow_hosts` is the operator's explicit exception.
//! - `fetch`: no redirects, no proxy, a total timeout, a streamed body cap, JSON only.
//! - `document`: typed parsing and the rules a client must meet (`client_id` equal to the URL,
//!   redirect URIs https, loopback http or `scheme://host`, public client, code flow).
//! - [`ClientMetadataFetcher`]: a bounded cache by `client_id`, lifetimes from
//!   `Cache-Control` clamped to the configured range, failures cached briefly, concurrent
//!   fetches of one URL coalesced into one request.
//! - `client_id_hosts`: the operator's optional list of hosts whose documents are trusted at
//!   all (`oauth.client_id_metadata_hosts`), checked by the OAuth facade before any fetch.

mod address;
mod client_id_hosts;
mod document;
mod fetch;

use std::{sync::Arc, time::Duration};

use moka::{Expiry, future::Cache};
use tracing::Instrument;
use url::Url;

pub use address::is_public;
pub use client_id_hosts::host_allowed;

use crate::{config::ClientMetadataConfig, metrics::Metrics};
use fetch::{Caching, Http};

/// Longest `client_id` we look at: it is a cache key an unauthenticated caller chooses.
const MAX_CLIENT_ID_LEN: usize = 2048;

/// A client described by its metadata document, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadata {
    /// The document's URL, equal to the document's own `client_id`.
    pub client_id: String,
    pub client_name: Option<String>,
    /// An https URL, or nothing (other schemes are dropped).
    pub client_uri: Option<String>,
    /// An https URL, or nothing (other schemes are dropped).
    pub logo_uri: Option<String>,
    /// At least one; each https, http to a loopback host (matching any port), or a
    /// `scheme://host` URI of another scheme, which the facade uses only where its operator
    /// allowed that scheme and host (`oauth.redirect_schemes`).
    pub redirect_uris: Vec<String>,
    /// Always `"none"`: the client proves itself with PKCE.
    pub token_endpoint_auth_method: String,
    /// As published, `["authorization_code"]` when absent; includes `authorization_code`.
    pub grant_types: Vec<String>,
    /// As published, `["code"]` when absent; includes `code`.
    pub response_types: Vec<String>,
    pub scope: Option<String>,
}

/// Why a metadata `client_id` cannot be used. The message is fit for an error page; causes
/// (addresses, TLS errors) go to the debug log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMetadataError {
    #[error("client metadata documents are not accepted by this server")]
    Disabled,
    #[error("the client_id is not a client metadata URL")]
    NotAUrl,
    #[error("the client metadata URL must use https")]
    NotHttps,
    #[error("the client metadata URL points to an address this server does not fetch from")]
    ForbiddenAddress,
    #[error("the client metadata host could not be resolved")]
    Resolve,
    #[error("the client metadata document could not be fetched")]
    Unreachable,
    #[error("the client metadata document took too long to fetch")]
    Timeout,
    #[error("the client metadata document is too large")]
    TooLarge,
    #[error("the client metadata URL answered HTTP {0}")]
    HttpStatus(u16),
    #[error("the client metadata URL answered with a redirect, which is not followed")]
    Redirected,
    #[error("the client metadata document is not JSON")]
    NotJson,
    #[error("the client metadata document is invalid: {0}")]
    Invalid(&'static str),
    /// Not fetched: too many fetches at once, or for this host this minute.
    #[error("client metadata documents cannot be fetched right now")]
    Busy,
}

/// Fetches, checks and caches metadata documents. Cheap to clone; clones share one cache.
#[derive(Debug, Clone)]
pub struct ClientMetadataFetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    http: Http,
    cache: Cache<String, Entry>,
    lifetimes: Lifetimes,
    metrics: Arc<Metrics>,
    /// Fetches running now: a URL an unauthenticated caller chooses costs us a connection
    /// for up to `timeout`, so only so many at once.
    running: Arc<tokio::sync::Semaphore>,
    /// Fetches started per host in the current minute (a bounded map: hosts seen recently).
    per_host: Cache<String, Arc<std::sync::atomic::AtomicU32>>,
    per_host_per_minute: u32,
}

/// A cached outcome, success or failure, with its lifetime.
#[derive(Debug, Clone)]
struct Entry {
    result: Result<Arc<ClientMetadata>, ClientMetadataError>,
    ttl: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    min: Duration,
    max: Duration,
    default: Duration,
    failure: Duration,
}

/// Each entry lives for its own `ttl`.
struct EntryExpiry;

// === impl ClientMetadataFetcher ===

impl ClientMetadataFetcher {
    /// Builds the HTTP clients (reading `ca_file`) and the cache.
    pub fn new(
        settings: &ClientMetadataConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<ClientMetadataFetcher> {
        let http = Http::new(settings)?;
        let cache = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(EntryExpiry)
            .build();
        let per_host = Cache::builder()
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(60))
            .build();
        Ok(ClientMetadataFetcher {
            inner: Arc::new(Inner {
                enabled: settings.enabled,
                running: Arc::new(tokio::sync::Semaphore::new(
                    settings.max_concurrent_fetches.max(1),
                )),
                per_host,
                per_host_per_minute: settings.fetches_per_host_per_minute.max(1),
                http,
                cache,
                lifetimes: Lifetimes {
                    min: settings.min_ttl,
                    max: settings.max_ttl,
                    default: settings.default_ttl,
                    failure: settings.failure_ttl,
                },
                metrics,
            }),
        })
    }

    /// The checked metadata of `client_id`, from the cache or fetched. Concurrent calls for one
    /// `client_id` share one fetch; if the caller running it gives up, a waiting one runs it.
    pub async fn fetch(&self, client_id: &str) -> Result<Arc<ClientMetadata>, ClientMetadataError> {
        if !self.inner.enabled {
            return Err(ClientMetadataError::Disabled);
        }
        // Refused before the cache: junk never takes a cache slot.
        let url = parse_metadata_url(client_id)?;
        let inner = &self.inner;
        let span = tracing::info_span!("client_metadata", client_id = %client_id);
        let entry = inner
            .cache
            .get_with(
                client_id.to_string(),
                inner.fetch_entry(client_id, &url).instrument(span),
            )
            .await;
        entry.result
    }

    /// Cached documents and failures (approximate), for metrics and the admin API.
    pub fn cached_entries(&self) -> u64 {
        self.inner.cache.entry_count()
    }
}

impl Inner {
    /// A place among the running fetches, if there is one and `url`'s host has fetches left
    /// this minute.
    async fn admit(&self, url: &Url) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering;
        let permit = self.running.clone().try_acquire_owned().ok()?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let count = self.per_host.get_with(host, async { Arc::default() }).await;
        let started = count.fetch_add(1, Ordering::Relaxed);
        (started < self.per_host_per_minute).then_some(permit)
    }

    async fn fetch_entry(&self, client_id: &str, url: &Url) -> Entry {
        let Some(_running) = self.admit(url).await else {
            self.metrics
                .client_metadata_fetch(ClientMetadataError::Busy.reason());
            tracing::info!("client metadata fetch shed (too many at once, or for this host)");
            // Not cached: the next request may find room.
            return Entry {
                result: Err(ClientMetadataError::Busy),
                ttl: Duration::ZERO,
            };
        };
        let result =
            self.http.get(url).await.and_then(|fetched| {
                Ok((document::parse(client_id, &fetched.body)?, fetched.caching))
            });
        match result {
            Ok((metadata, caching)) => {
                let ttl = self.lifetimes.of(caching);
                self.metrics.client_metadata_fetch("ok");
                tracing::info!(ttl = ?ttl, "client metadata fetched");
                Entry {
                    result: Ok(Arc::new(metadata)),
                    ttl,
                }
            }
            Err(error) => {
                self.metrics.client_metadata_fetch(error.reason());
                tracing::info!(reason = error.reason(), "client metadata fetch failed");
                // Failures are cached too, briefly: otherwise one bad URL named in many
                // requests would make us hammer its host (or a victim behind it) once per
                // request.
                Entry {
                    result: Err(error),
                    ttl: self.lifetimes.failure,
                }
            }
        }
    }
}

// === impl Lifetimes ===

impl Lifetimes {
    /// How long a good document is kept. `no-store`/`no-cache` keep it for no time at all
    /// (it still answers the callers waiting on this fetch); anything else is clamped to
    /// `min`..`max` so a document can neither make us refetch constantly nor stay forever.
    fn of(&self, caching: Caching) -> Duration {
        let wanted = match caching {
            Caching::Forbidden => return Duration::ZERO,
            Caching::MaxAge(age) => age,
            Caching::Unspecified => self.default,
        };
        wanted.max(self.min).min(self.max)
    }
}

// === impl EntryExpiry ===

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Entry,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

// === impl ClientMetadataError ===

impl ClientMetadataError {
    /// A short stable name, for logs, metrics and error codes.
    pub fn reason(&self) -> &'static str {
        match self {
            ClientMetadataError::Disabled => "disabled",
            ClientMetadataError::NotAUrl => "not_a_url",
            ClientMetadataError::NotHttps => "not_https",
            ClientMetadataError::ForbiddenAddress => "forbidden_address",
            ClientMetadataError::Resolve => "resolve",
            ClientMetadataError::Unreachable => "unreachable",
            ClientMetadataError::Timeout => "timeout",
            ClientMetadataError::TooLarge => "too_large",
            ClientMetadataError::HttpStatus(_) => "http_status",
            ClientMetadataError::Redirected => "redirected",
            ClientMetadataError::NotJson => "not_json",
            ClientMetadataError::Invalid(_) => "invalid",
            ClientMetadataError::Busy => "busy",
        }
    }
}

/// Whether `client_id` has the shape of a metadata document URL: https, a host, a path other
/// than `/`, no fragment, no user name or password, no `.` or `..` segments. A query is
/// allowed. Says nothing about whether the document can be fetched.
pub fn is_metadata_url(client_id: &str) -> bool {
    parse_metadata_url(client_id).is_ok()
}

/// The URL to fetch for `client_id`, checked as [`is_metadata_url`] says. The shape is checked
/// on the raw text as well as on the parsed URL, because parsing normalises (it removes dot
/// segments), while the document must name the raw text byte for byte.
fn parse_metadata_url(client_id: &str) -> Result<Url, ClientMetadataError> {
    use ClientMetadataError::NotAUrl;
    let printable = client_id
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\');
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_LEN || !printable {
        return Err(NotAUrl);
    }
    let url = Url::parse(client_id).map_err(|_| NotAUrl)?;
    if url.scheme() != "https" {
        return Err(ClientMetadataError::NotHttps);
    }
    if url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || client_id.contains('#')
        || url.path() == "/"
        || has_dot_segment(client_id)
    {
        return Err(NotAUrl);
    }
    Ok(url)
}

/// A `.` or `..` path segment in the raw URL, percent-encoded dots included.
fn has_dot_segment(client_id: &str) -> bool {
    let after_scheme = client_id.split_once("://").map_or("", |(_, rest)| rest);
    let path = after_scheme
        .find('/')
        .map_or("", |start| &after_scheme[start..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests;
