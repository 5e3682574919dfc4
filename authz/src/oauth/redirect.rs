//! Redirect URIs: which may be registered, and whether a requested one matches a registered
//! one. Exact string match, except that a loopback `http` URI matches on any port (RFC 8252
//! s7.3: native clients listen on an ephemeral port; Claude Code registers no port at all).

use url::{Host, Url};

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
    #[error("redirect URI must not have a fragment")]
    Fragment,
    #[error("redirect URI must not carry credentials")]
    Credentials,
}

/// Checks a URI a client wants to register: https, or http on a loopback host. Private-use
/// schemes are refused: any app can claim one on a user's machine.
pub fn check_registrable(uri: &str) -> Result<(), RedirectError> {
    if uri.len() > MAX_URI_LEN {
        return Err(RedirectError::TooLong);
    }
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
        _ => Err(RedirectError::Insecure),
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
