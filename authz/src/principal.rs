//! Who a verified token speaks for: the one identity type the rest of the service sees.

use std::time::{SystemTime, UNIX_EPOCH};

/// A user whose token verified. Nothing here is secret; the token itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Google's stable user id. Key users on this, not on `email`, which can change.
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// The Google Workspace domain (`hd`). Absent for consumer accounts, whatever their email.
    pub hosted_domain: Option<String>,
    /// When the token stops being valid (unix seconds); no cached verdict outlives it.
    pub expires_at: u64,
    pub source: TokenSource,
    /// The sign-in session (refresh-token family) a token of ours belongs to; revoking the
    /// session refuses its access tokens at once. `None` for Google's tokens.
    pub session: Option<std::sync::Arc<str>>,
}

/// Which kind of token proved the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    GoogleIdToken,
    GoogleAccessToken,
    /// An access token our OAuth facade issued (ES256, audience = our resource).
    Facade,
}

impl TokenSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::GoogleIdToken => "google_id_token",
            TokenSource::GoogleAccessToken => "google_access_token",
            TokenSource::Facade => "facade",
        }
    }
}

/// Seconds since the Unix epoch, the unit every token uses.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
