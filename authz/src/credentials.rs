//! Finding the bearer token in a request and telling its kind, before any verification.
//!
//! Only the `Authorization: Bearer` header is a credential (RFC 6750 s2.1). A token in the query
//! string (`?access_token=`) is refused outright, with or without a header: the MCP authorization
//! spec forbids it because URLs end up in logs and browser history.

/// Longest token we look at. Google ID tokens are ~1.3 KiB; anything far larger is junk and is
/// refused before hashing, parsing or any network call.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Google access tokens are documented as at most 2048 bytes.
const MAX_OPAQUE_LEN: usize = 2048;

/// What verification will be attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// Three base64url segments: a signed JWT (a Google ID token).
    Jwt(&'a str),
    /// Anything else token-shaped: a Google access token, checked with tokeninfo and userinfo.
    Opaque(&'a str),
}

impl<'a> Credential<'a> {
    /// The token itself, whatever its kind.
    pub fn token(self) -> &'a str {
        match self {
            Credential::Jwt(token) | Credential::Opaque(token) => token,
        }
    }
}

/// Why no usable credential was found. Each maps to a 401 (or 400 for the query-string case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no bearer token")]
    Missing,
    #[error("access token in the query string is not accepted")]
    InQueryString,
    #[error("authorization scheme is not Bearer")]
    NotBearer,
    #[error("authorization header is not valid UTF-8")]
    NotUtf8,
    #[error("token is too long")]
    TooLong,
    #[error("token has invalid characters")]
    BadCharacters,
    /// Not about the token: the path is not in the form the upstream reads (encoded, doubled
    /// or dot segments), so no policy can be chosen for it safely.
    #[error("the request path is not in normal form (encoded characters, // or dot segments)")]
    PathNotNormal,
}

impl CredentialError {
    /// A stable, low-cardinality reason for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            CredentialError::Missing => "missing_token",
            CredentialError::InQueryString => "token_in_query",
            CredentialError::NotBearer => "not_bearer",
            CredentialError::NotUtf8 => "header_not_utf8",
            CredentialError::TooLong => "token_too_long",
            CredentialError::BadCharacters => "malformed_token",
            CredentialError::PathNotNormal => "path_not_normal",
        }
    }

    /// Whether the caller presented something (drives `error="invalid_token"` in the challenge).
    pub fn token_presented(self) -> bool {
        !matches!(self, CredentialError::Missing)
    }
}

/// Extracts the credential from the request's `Authorization` header value and `:path`.
pub fn extract<'a>(
    authorization: Option<&'a [u8]>,
    path: &str,
) -> Result<Credential<'a>, CredentialError> {
    if !crate::request_path::is_normal(path) {
        return Err(CredentialError::PathNotNormal);
    }
    if query_has_access_token(path) {
        return Err(CredentialError::InQueryString);
    }
    let raw = authorization.ok_or(CredentialError::Missing)?;
    if raw.len() > MAX_TOKEN_LEN + "Bearer ".len() + 16 {
        return Err(CredentialError::TooLong);
    }
    let value = std::str::from_utf8(raw).map_err(|_| CredentialError::NotUtf8)?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::Missing);
    }
    let (scheme, token) = value.split_once(' ').ok_or(CredentialError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(CredentialError::NotBearer);
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(CredentialError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(CredentialError::TooLong);
    }
    classify(token)
}

fn classify(token: &str) -> Result<Credential<'_>, CredentialError> {
    let mut segments = token.split('.');
    let is_jwt = match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(header), Some(payload), Some(signature), None) => [header, payload, signature]
            .iter()
            .all(|s| !s.is_empty() && s.bytes().all(|b| BASE64URL[usize::from(b)])),
        _ => false,
    };
    if is_jwt {
        return Ok(Credential::Jwt(token));
    }
    // RFC 6750 b64token; this also refuses comma-joined duplicate headers ("Bearer a,Bearer b").
    let body = token.trim_end_matches('=');
    if token.len() > MAX_OPAQUE_LEN || !body.bytes().all(|b| B64TOKEN[usize::from(b)]) {
        return Err(CredentialError::BadCharacters);
    }
    Ok(Credential::Opaque(token))
}

/// Byte classes as lookup tables: this runs over every token on every request.
const BASE64URL: [bool; 256] = byte_class(b"-_");
const B64TOKEN: [bool; 256] = byte_class(b"-._~+/");

/// ASCII letters and digits plus `extra`.
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

fn query_has_access_token(path: &str) -> bool {
    let Some((_, query)) = path.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes()).any(|(name, _)| name == "access_token")
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
