//! Redirect URIs: which may be registered, and whether a requested one matches a registered
//! one. Exact string match, except that a loopback `http` URI matches on any port (RFC 8252
//! s7.3: native clients listen on an ephemeral port; Claude Code registers no port at all).
//!
//! Registrable: https, http on a loopback host, and, only where the operator listed its scheme
//! and host in `oauth.redirect_schemes`, a private-use scheme (RFC 8252 s7.1, e.g. Cursor's
//! `cursor://anysphere.cursor-mcp/oauth/callback`). Private-use schemes are off by default:
//! any application on the user's machine can claim a scheme, so the code could go to whichever
//! registered it last (PKCE keeps such a code useless to anyone without the verifier, but the
//! operator should decide).

use url::{Host, Url};

use crate::config::{NEVER_PRIVATE_USE, PrivateUseScheme};

/// Longest redirect URI we accept; they travel inside self-describing client ids.
pub const MAX_URI_LEN: usize = 512;

/// Why a URI may not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    #[error("redirect URI is not an absolute URL")]
    NotAUrl,
    #[error("redirect URI is too long")]
    TooLong,
    #[error("redirect URI must be https, or http on a loopback address")]
    Insecure,
    #[error(
        "redirect URI uses a private-use scheme this server does not allow \
         (its operator may list scheme://host in oauth.redirect_schemes)"
    )]
    PrivateUseNotAllowed,
    #[error("redirect URI must not have a fragment")]
    Fragment,
    #[error("redirect URI must not carry credentials")]
    Credentials,
}

/// What may be registered beyond https and loopback http.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectPolicy {
    private_use: Vec<PrivateUseScheme>,
}

/// Checks a URI a client wants to register: at most [`MAX_URI_LEN`] bytes (it is sealed into
/// the client id), and [`check_listed`].
pub fn check_registrable(uri: &str, policy: &RedirectPolicy) -> Result<(), RedirectError> {
    if uri.len() > MAX_URI_LEN {
        return Err(RedirectError::TooLong);
    }
    check_listed(uri, policy)
}

/// Checks a URI a client lists (registered, or in its metadata document): https, http on a
/// loopback host, or a private-use scheme the operator allowed; no fragment, no credentials.
pub fn check_listed(uri: &str, policy: &RedirectPolicy) -> Result<(), RedirectError> {
    let url = Url::parse(uri).map_err(|_| RedirectError::NotAUrl)?;
    if url.fragment().is_some() {
        return Err(RedirectError::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::Credentials);
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        scheme if NEVER_PRIVATE_USE.contains(&scheme) || url.host().is_none() => {
            Err(RedirectError::Insecure)
        }
        _ if policy.allows(&url) => Ok(()),
        _ => Err(RedirectError::PrivateUseNotAllowed),
    }
}

/// Whether `requested` is one of `registered`: byte-for-byte, or a loopback http URI equal
/// to a registered one but for the port.
pub fn matches(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|uri| uri == requested) {
        return true;
    }
    let Ok(requested_url) = Url::parse(requested) else {
        return false;
    };
    if requested_url.scheme() != "http" || !is_loopback(&requested_url) {
        return false;
    }
    registered.iter().any(|uri| {
        Url::parse(uri).is_ok_and(|registered_url| {
            registered_url.scheme() == "http"
                && is_loopback(&registered_url)
                && same_but_port(&registered_url, &requested_url)
        })
    })
}

// === impl RedirectPolicy ===

impl RedirectPolicy {
    pub fn new(private_use: Vec<PrivateUseScheme>) -> RedirectPolicy {
        RedirectPolicy { private_use }
    }

    /// `url` has a listed private-use scheme and host, and no port.
    fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        url.port().is_none()
            && self.private_use.iter().any(|entry| {
                entry.scheme().eq_ignore_ascii_case(url.scheme())
                    && entry.host().eq_ignore_ascii_case(host)
            })
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`: the hosts RFC 8252 allows for http redirects.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// Host, path and query equal; ports free. `http://127.0.0.1/` registered matches
/// `http://127.0.0.1:33418/`, but never `http://localhost:33418/` (another host) nor a
/// different path.
fn same_but_port(registered: &Url, requested: &Url) -> bool {
    registered.host() == requested.host()
        && registered.path() == requested.path()
        && registered.query() == requested.query()
        && registered.fragment().is_none()
        && requested.fragment().is_none()
        && requested.username().is_empty()
        && requested.password().is_none()
}
