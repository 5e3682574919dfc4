//! The `[oauth]` config section: the authorization server MCP clients sign in through.

use std::{fmt, time::Duration};

use serde::Deserialize;
use url::Url;

use super::{ClientIdHost, SecretRef, string_list};

/// `[oauth]`. Absent: no facade; only Google's own tokens are accepted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Our issuer identifier: the public origin clients reach through Envoy, e.g.
    /// `https://mcp.example.com`. Used byte for byte in metadata, tokens and responses.
    pub issuer: String,
    /// The confidential Google OAuth client (web application) users sign in through. Must be
    /// one of `google.client_ids`; its redirect URI at Google is `{issuer}/oauth/callback`.
    pub google_client_id: String,
    /// That client's secret (a secret reference: inline, `{ file }` or `{ aws_secret }`). Sent
    /// only to Google's token endpoint; re-read like every secret, so it rotates without restart.
    pub google_client_secret: SecretRef,
    /// ES256 (P-256) private keys: one secret holding one or more PKCS#8 PEM blocks. The first
    /// signs; all verify, so a key is rotated by adding the new one second, then moving it
    /// first, then dropping the old one (each step picked up without a restart). Absent: one
    /// key is generated at start (tokens then do not survive a restart; refused with the Redis
    /// store, where replicas must share keys).
    #[serde(default)]
    pub signing_keys: Option<SecretRef>,
    /// HMAC keys that seal registered client ids and consent forms: one secret holding one or
    /// more keys separated by whitespace, each at least 32 characters. The first seals; all
    /// open. Absent: generated at start, like `signing_keys`.
    #[serde(default)]
    pub sealing_keys: Option<SecretRef>,
    /// Access-token life. Default 10m.
    #[serde(default = "default_access_token_ttl", with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// A refresh token not used for this long expires. Default 14d.
    #[serde(default = "default_refresh_token_ttl", with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// No refresh-token family (one sign-in) lives longer than this. Default 90d.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// How long a refresh may rely on Google's last word about the account. A refresh due for
    /// a check redeems the Google refresh token kept for the session, so a suspended or
    /// deleted account, or one that lost its `hd`, cannot refresh. Default 0s: every refresh
    /// asks Google, so an off-boarded user's access ends at most one access-token lifetime
    /// later.
    #[serde(default, with = "humantime_serde")]
    pub reverify_interval: Duration,
    /// Life of an authorization code we issue. Default 60s.
    #[serde(default = "default_code_ttl", with = "humantime_serde")]
    pub code_ttl: Duration,
    /// Sign-ins waiting for Google's callback that one replica admits at once (each holds a
    /// few KB until the callback or `sign_in_ttl`); past it, new sign-ins are refused until
    /// room frees up. Default 5000.
    #[serde(default = "default_max_pending_sign_ins")]
    pub max_pending_sign_ins: usize,
    /// Time a user has from the consent page to finishing Google's sign-in. Default 10m.
    #[serde(default = "default_sign_in_ttl", with = "humantime_serde")]
    pub sign_in_ttl: Duration,
    /// How long a dynamically registered client id stays valid. Default 90d.
    #[serde(default = "default_registration_ttl", with = "humantime_serde")]
    pub registration_ttl: Duration,
    /// Scopes we advertise and grant. Default `["mcp"]`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Human-readable name in the protected resource metadata and on the consent page.
    #[serde(default = "default_resource_name")]
    pub resource_name: String,
    /// Private-use redirect URIs (RFC 8252 s7.1) clients may register or list in their
    /// metadata documents, beside https and loopback http: `scheme://host` entries, e.g.
    /// `"cursor://anysphere.cursor-mcp"` for Cursor; a redirect URI matches when its scheme
    /// and host are equal (ASCII case ignored) and it has no port; its path is free. Off by
    /// default: any application on the user's machine can claim a scheme. `http`, `https`,
    /// `javascript`, `data`, `file` and other schemes browsers handle are refused here.
    #[serde(default, deserialize_with = "entries")]
    pub redirect_schemes: Vec<PrivateUseScheme>,
    /// Hosts whose Client ID Metadata Documents are accepted as client ids: `claude.ai`
    /// (exactly that host) or `*.example.com` (any host below it). A metadata client id on
    /// any other host is refused before anything is fetched. Empty (the default): any host
    /// (still public addresses only, see `client_metadata.allow_hosts`, a different list).
    #[serde(default, deserialize_with = "entries")]
    pub client_id_metadata_hosts: Vec<ClientIdHost>,
}

// === impl OAuthConfig ===

impl OAuthConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn validate(&self, google_client_ids: &[String]) -> Result<(), (String, String)> {
        let fail = |key: &str, message: &str| Err((format!("oauth.{key}"), message.to_string()));
        match Url::parse(&self.issuer) {
            Ok(url)
                if (url.scheme() == "https" || url.scheme() == "http")
                    && url.query().is_none()
                    && url.fragment().is_none()
                    && !self.issuer.ends_with('/') => {}
            _ => {
                return fail(
                    "issuer",
                    "must be an http(s) URL without query, fragment or trailing slash",
                );
            }
        }
        if !google_client_ids.contains(&self.google_client_id) {
            return fail(
                "google_client_id",
                "must be one of google.client_ids (its ID tokens are verified like any other)",
            );
        }
        for (key, ttl) in [
            ("access_token_ttl", self.access_token_ttl),
            ("code_ttl", self.code_ttl),
            ("sign_in_ttl", self.sign_in_ttl),
            ("refresh_token_ttl", self.refresh_token_ttl),
            ("registration_ttl", self.registration_ttl),
        ] {
            if ttl < Duration::from_secs(1) {
                return fail(key, "must be at least 1s");
            }
        }
        if self.reverify_interval > Duration::from_secs(24 * 3600) {
            return fail(
                "reverify_interval",
                "must be at most 24h: a session must not outlive its Google account by days",
            );
        }
        if self.max_pending_sign_ins == 0 {
            return fail("max_pending_sign_ins", "must be at least 1");
        }
        if self.session_ttl < self.refresh_token_ttl {
            return fail(
                "session_ttl",
                "must not be shorter than oauth.refresh_token_ttl",
            );
        }
        if self.scopes.is_empty() || self.scopes.iter().any(|s| !is_scope_token(s)) {
            return fail(
                "scopes",
                "must list at least one scope of printable characters",
            );
        }
        Ok(())
    }

    /// Where Google sends the browser back to.
    pub fn callback_url(&self) -> String {
        format!("{}/oauth/callback", self.issuer)
    }
}

/// One `oauth.redirect_schemes` entry: `scheme://host`, lower-cased. A redirect URI matches it
/// when its scheme and host are equal, ignoring ASCII case (RFC 3986 s3.1, s3.2.2), and it has
/// no port; its path and query are free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateUseScheme {
    scheme: String,
    host: String,
}

/// Schemes a browser or the OS handles itself, or that run code: never a private-use redirect,
/// whatever the operator lists. `http` and `https` have rules of
/// their own (`crate::oauth::redirect`).
pub(crate) const NEVER_PRIVATE_USE: &[&str] = &[
    "http",
    "https",
    "ws",
    "wss",
    "ftp",
    "file",
    "javascript",
    "vbscript",
    "data",
    "blob",
    "about",
    "filesystem",
    "view-source",
    "mailto",
    "tel",
    "sms",
    "intent",
];

// === impl PrivateUseScheme ===

impl PrivateUseScheme {
    /// `scheme://host`, nothing more (a trailing `/` is tolerated). The scheme must be a valid
    /// URI scheme and not one browsers handle themselves (see `NEVER_PRIVATE_USE`); the host a
    /// name of letters, digits, `-`, `.` and `_`.
    pub fn parse(entry: &str) -> Result<PrivateUseScheme, String> {
        let refuse = |why: &str| Err(format!("{entry:?}: {why}"));
        let Some((scheme, rest)) = entry.split_once("://") else {
            return refuse("must be scheme://host, e.g. \"cursor://anysphere.cursor-mcp\"");
        };
        let scheme = scheme.to_ascii_lowercase();
        let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !valid_scheme {
            return refuse("is not a URI scheme");
        }
        if NEVER_PRIVATE_USE.contains(&scheme.as_str()) {
            return refuse(
                "is not a private-use scheme (https and loopback http are always allowed; \
                 schemes such as javascript, data and file never are)",
            );
        }
        let host = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
        let valid_host = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            });
        if !valid_host {
            return refuse("must be scheme://host: a host name, with no port, path or query");
        }
        Ok(PrivateUseScheme { scheme, host })
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    pub fn host(&self) -> &str {
        &self.host
    }
}

impl TryFrom<String> for PrivateUseScheme {
    type Error = String;

    fn try_from(entry: String) -> Result<PrivateUseScheme, String> {
        PrivateUseScheme::parse(&entry)
    }
}

impl fmt::Display for PrivateUseScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)
    }
}

/// A list given as a TOML array or as one comma-separated string (as the config's other lists,
/// convenient in env vars), each entry parsed; the error names the entry and what is wrong.
fn entries<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<String, Error = String>,
{
    let texts = string_list(deserializer)?;
    texts
        .into_iter()
        .map(|text| T::try_from(text).map_err(serde::de::Error::custom))
        .collect()
}

/// RFC 6749 s3.3 scope-token: printable ASCII without space, `"` or `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

fn default_access_token_ttl() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_refresh_token_ttl() -> Duration {
    Duration::from_secs(14 * 24 * 3600)
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_code_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_sign_in_ttl() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_max_pending_sign_ins() -> usize {
    5000
}
fn default_registration_ttl() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}
fn default_scopes() -> Vec<String> {
    vec!["mcp".to_string()]
}
fn default_resource_name() -> String {
    "MCP servers".to_string()
}
