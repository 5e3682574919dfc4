//! One HTTP GET of a metadata document: the clients, the limits, and what the response says
//! about caching. Validation of the document itself is in `document`.

use std::{error::Error as _, sync::Arc, time::Duration};

use anyhow::Context;
use reqwest::{
    StatusCode,
    header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, HeaderMap},
};
use url::{Host, Url};

use super::{
    ClientMetadataError,
    address::{AddressError, CheckedResolver, is_public},
};
use crate::config::{AllowHost, ClientMetadataConfig};

/// The HTTP side of the fetcher: one client for the public internet and, when the operator
/// lists internal hosts, one for those.
#[derive(Debug)]
pub(crate) struct Http {
    public: reqwest::Client,
    listed: Option<reqwest::Client>,
    allow_hosts: Vec<AllowHost>,
    timeout: Duration,
    max_bytes: u64,
}

/// What a response says about caching the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caching {
    /// `no-store` or `no-cache`: do not keep it.
    Forbidden,
    /// `max-age`, before clamping.
    MaxAge(Duration),
    /// Nothing we read.
    Unspecified,
}

/// A document's bytes and how long it may be kept.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) body: Vec<u8>,
    pub(crate) caching: Caching,
}

// === impl Http ===

impl Http {
    pub(crate) fn new(settings: &ClientMetadataConfig) -> anyhow::Result<Http> {
        let allow_hosts = settings
            .allow_hosts
            .iter()
            .map(|entry| AllowHost::parse(entry).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("client_metadata.allow_hosts")?;
        let roots = match &settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("client_metadata.ca_file: reading {}", path.display())
                })?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                    format!("client_metadata.ca_file: {} is not PEM", path.display())
                })?;
                anyhow::ensure!(
                    !roots.is_empty(),
                    "client_metadata.ca_file: {} holds no certificate",
                    path.display()
                );
                roots
            }
            None => Vec::new(),
        };
        let public = client(settings.timeout, &roots, CheckedResolver::public_only())?;
        let listed = if allow_hosts.is_empty() {
            None
        } else {
            Some(client(
                settings.timeout,
                &roots,
                CheckedResolver::listed(&allow_hosts),
            )?)
        };
        Ok(Http {
            public,
            listed,
            allow_hosts,
            timeout: settings.timeout,
            max_bytes: settings.max_bytes,
        })
    }

    /// GETs `url` (already checked to be an https metadata URL) within the total timeout.
    pub(crate) async fn get(&self, url: &Url) -> Result<Fetched, ClientMetadataError> {
        let client = self.client_for(url)?;
        tokio::time::timeout(self.timeout, self.get_with(client, url))
            .await
            .unwrap_or(Err(ClientMetadataError::Timeout))
    }

    /// The client allowed to fetch `url`, after checking a literal IP host (which no resolver
    /// sees: hyper connects to it directly).
    fn client_for(&self, url: &Url) -> Result<&reqwest::Client, ClientMetadataError> {
        let host = url.host().ok_or(ClientMetadataError::NotAUrl)?;
        let port = url
            .port_or_known_default()
            .ok_or(ClientMetadataError::NotAUrl)?;
        if let Some(listed) = &self.listed {
            if self.allow_hosts.iter().any(|a| a.matches(&host, port)) {
                return Ok(listed);
            }
        }
        let literal = match host {
            Host::Ipv4(ip) => Some(ip.into()),
            Host::Ipv6(ip) => Some(ip.into()),
            // The URL parser turns every IPv4 notation into `Host::Ipv4`; a domain that still
            // parses as an address would be connected to without resolving, so check it too.
            Host::Domain(name) => name.trim_matches(['[', ']']).parse().ok(),
        };
        match literal {
            Some(ip) if !is_public(ip) => Err(ClientMetadataError::ForbiddenAddress),
            _ => Ok(&self.public),
        }
    }

    async fn get_with(
        &self,
        client: &reqwest::Client,
        url: &Url,
    ) -> Result<Fetched, ClientMetadataError> {
        let mut response = client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| classify(&e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(ClientMetadataError::Redirected);
        }
        if status != StatusCode::OK {
            return Err(ClientMetadataError::HttpStatus(status.as_u16()));
        }
        if !is_json(response.headers()) {
            return Err(ClientMetadataError::NotJson);
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(ClientMetadataError::TooLarge);
        }
        let caching = caching(response.headers());
        // Read chunk by chunk and stop at the cap: a missing or lying Content-Length cannot
        // make us buffer more than `max_bytes` (plus one chunk). No decompression is enabled,
        // so the cap is on what we hold, not on what a compressed body would expand to.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e))? {
            if (body.len() + chunk.len()) as u64 > self.max_bytes {
                return Err(ClientMetadataError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, caching })
    }
}

/// A client that connects only where `resolver` says, follows no redirects (a 3xx is an
/// error: following one would let a public URL send us inside), ignores proxy settings from
/// the environment (a proxy would resolve names itself, past our checks), and keeps no idle
/// connections: fetches are rare, and idle connections to hosts a caller picked would be file
/// descriptors an unauthenticated caller could pile up.
fn client(
    timeout: Duration,
    roots: &[reqwest::Certificate],
    resolver: CheckedResolver,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(true)
        .pool_max_idle_per_host(0)
        .dns_resolver(Arc::new(resolver))
        .user_agent(concat!("authz/", env!("CARGO_PKG_VERSION")));
    for root in roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .build()
        .context("building the client metadata HTTP client")
}

/// Turns a transport error into the error a user sees; our resolver's refusal is found in the
/// error's source chain. The chain goes to the debug log: it can name the cause (a TLS
/// certificate problem, a refused connection) that the user-facing error leaves out.
fn classify(error: &reqwest::Error) -> ClientMetadataError {
    let mut chain = error.to_string();
    let mut refused = None;
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        if let Some(address) = cause.downcast_ref::<AddressError>() {
            refused = Some(*address);
        }
        source = cause.source();
    }
    let classified = match refused {
        Some(AddressError::Forbidden) => ClientMetadataError::ForbiddenAddress,
        Some(AddressError::Resolve) => ClientMetadataError::Resolve,
        None if error.is_timeout() => ClientMetadataError::Timeout,
        None => ClientMetadataError::Unreachable,
    };
    tracing::debug!(reason = classified.reason(), error = %chain, "client metadata transport error");
    classified
}

/// `application/json` or an `application/*+json` type, any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads `Cache-Control` (every header line): `no-store` or `no-cache` anywhere wins, else the
/// first well-formed `max-age`.
pub(crate) fn caching(headers: &HeaderMap) -> Caching {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Caching::Forbidden;
            }
            if let Some(seconds) = directive.strip_prefix("max-age=") {
                if max_age.is_none() {
                    max_age = seconds.trim_matches('"').parse::<u64>().ok();
                }
            }
        }
    }
    match max_age {
        Some(seconds) => Caching::MaxAge(Duration::from_secs(seconds)),
        None => Caching::Unspecified,
    }
}
