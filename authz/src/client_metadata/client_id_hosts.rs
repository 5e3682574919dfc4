//! `oauth.client_id_metadata_hosts`: the hosts whose metadata documents the operator accepts as
//! client ids (like Pomerium's `mcp_allowed_client_id_domains`). A matter of trust in who
//! publishes the client's name and redirect URIs, checked before anything is fetched; not to be
//! confused with `client_metadata.allow_hosts`, which lets the fetch reach private addresses.

use url::Url;

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

/// Whether a metadata document at `client_id` may be used under `allowed` (empty: any host).
/// `client_id` that is not a URL is never allowed here; it is refused elsewhere anyway.
pub fn host_allowed(allowed: &[ClientIdHost], client_id: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    Url::parse(client_id).is_ok_and(|url| allowed.iter().any(|entry| entry.matches(&url)))
}
