//! Asking Google again whether the account behind a session still may sign in.
//!
//! Our refresh tokens would otherwise outlive the Google account: a suspended, deleted or
//! de-provisioned user could refresh for the whole `session_ttl`. So the sign-in asks Google
//! for offline access and keeps Google's refresh token, encrypted under our sealing keys
//! ([`GoogleLink`]); a refresh of ours that is due for a check (`oauth.reverify_interval`
//! since the last one; by default every refresh) redeems it at Google's token endpoint:
//! - Google refuses it (`invalid_grant`): the account was suspended or deleted, or the user
//!   revoked our access. The session ends.
//! - Google answers: the new ID token (or, without one, userinfo) describes the account as it
//!   is now; it must be the same `sub`, and the default policy is applied to it (a consumer
//!   account has lost its `hd`).
//! - Google cannot be asked (timeout, 5xx, 429, our own client refused): a 503, and the
//!   session stays as it was.
//!
//! Google returns a refresh token on every consent (`prompt=consent`). Should it return none,
//! or refuse our refresh request for a reason that is not about the user (our client is not
//! allowed offline access), the latest Google access token (also encrypted) stands in while it
//! lives: userinfo refuses the token of a suspended or deleted account. After that the user
//! signs in again, unless Google refuses our own client (`invalid_client`,
//! `unauthorized_client`): that is a 503 until the operator fixes the client.
//!
//! The Google refresh token never leaves this module in clear: it is encrypted before it is
//! stored, decrypted only to be sent to Google's token endpoint, and never logged.

use serde::{Deserialize, Serialize};

use super::{
    Facade,
    access_token::User,
    callback::Failure,
    seal::{Purpose, Sealer},
};
use crate::{
    credentials::Credential,
    errors::VerifyError,
    principal::{Principal, unix_now},
    resource::McpResource,
};

/// A session's tie to the Google account behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GoogleLink {
    /// Google's refresh token, encrypted ([`Sealer::encrypt`]).
    #[serde(default)]
    pub sealed_refresh_token: Option<String>,
    /// Google's latest access token, encrypted, and its expiry (unix seconds): the check when
    /// the refresh token cannot be used.
    #[serde(default)]
    pub sealed_access_token: Option<String>,
    #[serde(default)]
    pub access_expires_at: u64,
    /// Unix seconds when Google last vouched for the account.
    pub verified_at: u64,
}

/// What Google's token endpoint answers to a refresh.
#[derive(Deserialize)]
struct Refreshed {
    access_token: Option<String>,
    expires_in: Option<u64>,
    id_token: Option<String>,
    /// Google does not rotate refresh tokens, but may; a new one replaces the old.
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct GoogleError {
    error: Option<String>,
}

impl GoogleLink {
    /// A link verified now from Google's token response at sign-in: the refresh token, or
    /// without one the access token and its lifetime; `None` when Google gave neither.
    pub fn new(
        sealer: &Sealer,
        refresh_token: Option<&str>,
        access_token: Option<&str>,
        expires_in: Option<u64>,
    ) -> Option<GoogleLink> {
        let now = unix_now();
        let seal = |token: &str| sealer.encrypt(Purpose::GoogleRefreshToken, token.as_bytes());
        if refresh_token.is_none() && access_token.is_none() {
            return None;
        }
        Some(GoogleLink {
            sealed_refresh_token: refresh_token.map(seal),
            sealed_access_token: access_token.map(seal),
            // Google's access tokens live an hour; assume less when it does not say.
            access_expires_at: access_token.map_or(0, |_| now + expires_in.unwrap_or(300)),
            verified_at: now,
        })
    }

    /// The same tie, verified now.
    fn verified_now(&self) -> GoogleLink {
        GoogleLink {
            verified_at: unix_now(),
            ..self.clone()
        }
    }
}

// === impl Facade ===

impl Facade {
    /// Whether a session last checked at `link` must ask Google before it refreshes.
    pub(super) fn reverify_due(&self, link: Option<&GoogleLink>) -> bool {
        let interval = self.settings.reverify_interval.as_secs();
        link.is_none_or(|link| {
            interval == 0 || unix_now() >= link.verified_at.saturating_add(interval)
        })
    }

    /// Asks Google about the account of `user` with the session's Google token; returns the
    /// account as Google describes it now, admitted by the resource's policy, and the renewed link.
    pub(super) async fn reverify(
        &self,
        user: &User,
        link: Option<&GoogleLink>,
        resource: &McpResource,
    ) -> Result<(User, GoogleLink), Failure> {
        let sign_in_again = |why: &str| Failure::Denied(format!("{why}; sign in again"));
        let no_token = "Google gave this session no token to check the account with";
        let link = link.ok_or_else(|| sign_in_again(no_token))?;
        let sealer = self.sealer.get();
        let open = |sealed: &str| {
            sealer
                .decrypt(Purpose::GoogleRefreshToken, sealed)
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    sign_in_again("the session's Google token cannot be opened (keys rotated)")
                })
        };
        let refreshed = match &link.sealed_refresh_token {
            Some(sealed) => Some(self.refresh_at_google(&open(sealed)?).await?),
            None => None,
        };
        let (principal, link) = match refreshed {
            Some(Ok(refreshed)) => {
                let principal = self.verify_refreshed(&refreshed).await?;
                let access = refreshed.access_token.as_deref();
                let mut renewed = GoogleLink::new(&sealer, None, access, refreshed.expires_in)
                    .unwrap_or_else(|| link.verified_now());
                renewed.sealed_refresh_token = match refreshed.refresh_token.as_deref() {
                    Some(rotated) => {
                        Some(sealer.encrypt(Purpose::GoogleRefreshToken, rotated.as_bytes()))
                    }
                    None => link.sealed_refresh_token.clone(),
                };
                (principal, renewed)
            }
            not_refreshed => {
                // No refresh token, or Google would not take our refresh request for a reason
                // that is not about the user: the access token, while it lives.
                let alive = link.access_expires_at > unix_now() + 30;
                let Some(sealed) = link.sealed_access_token.as_deref().filter(|_| alive) else {
                    return Err(match not_refreshed {
                        // Google refuses our own client: not the user's doing; a 503 until the
                        // operator fixes the client, with the session kept.
                        Some(Err(why)) if is_our_client(&why) => Failure::Unavailable(why),
                        Some(Err(why)) => sign_in_again(&why),
                        _ => sign_in_again(no_token),
                    });
                };
                if let Some(Err(why)) = &not_refreshed {
                    tracing::warn!(problem = %why, "checking the account with Google's access token instead");
                }
                let access_token = open(sealed)?;
                let principal = self
                    .verify_google(Credential::Opaque(&access_token))
                    .await?;
                (principal, link.verified_now())
            }
        };
        if principal.sub() != user.sub {
            return Err(Failure::Denied(
                "Google answered for another account; sign in again".into(),
            ));
        }
        self.admit(&principal, resource).await?;
        let email = principal
            .email()
            .map(str::to_owned)
            .ok_or_else(|| Failure::Denied("the Google account has no email address".into()))?;
        let user = User {
            sub: principal.sub().to_owned(),
            email,
            hd: principal.hosted_domain().map(str::to_owned),
        };
        Ok((user, link))
    }

    /// `grant_type=refresh_token` at Google's token endpoint with our confidential client.
    /// `Ok(Err(why))`: Google refused the request for a reason that is not about the user (a
    /// 4xx other than `invalid_grant` and 429).
    async fn refresh_at_google(
        &self,
        refresh_token: &str,
    ) -> Result<Result<Refreshed, String>, Failure> {
        let grant = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let response = self.google_token_endpoint(&grant).await?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map(Ok)
                .map_err(|e| Failure::Unavailable(format!("Google token response: {e}")));
        }
        let error = response
            .json::<GoogleError>()
            .await
            .ok()
            .and_then(|body| body.error);
        // invalid_grant: suspended, deleted, or consent withdrawn; admin_policy_enforced and
        // access_denied: the Workspace admin no longer lets this user use our client.
        let about_the_user = matches!(
            error.as_deref(),
            Some("invalid_grant" | "admin_policy_enforced" | "access_denied")
        );
        if status.is_client_error() && about_the_user {
            tracing::info!(
                event = "google_refresh_refused",
                "Google no longer honours a session's sign-in"
            );
            return Err(Failure::Denied(
                "Google no longer accepts this sign-in (the account was suspended or deleted, or \
                 access was revoked); sign in again"
                    .into(),
            ));
        }
        // Anything else is not about the user: Google is down, or refuses our own client.
        let why = format!(
            "Google token endpoint answered {status} {}",
            error.as_deref().unwrap_or("")
        );
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            tracing::error!(%status, error = error.as_deref().unwrap_or(""), "Google refused our refresh request");
            return Ok(Err(why));
        }
        Err(Failure::Unavailable(why))
    }

    /// The account Google's refresh answer describes: its ID token, or else userinfo.
    async fn verify_refreshed(&self, refreshed: &Refreshed) -> Result<Principal, Failure> {
        let credential = match (&refreshed.id_token, &refreshed.access_token) {
            (Some(id_token), _) => Credential::Jwt(id_token),
            (None, Some(access_token)) => Credential::Opaque(access_token),
            (None, None) => {
                return Err(Failure::Unavailable(
                    "Google's refresh answer carries no token".into(),
                ));
            }
        };
        self.verify_google(credential).await
    }

    /// A Google token's account; a refused token means Google no longer vouches for it.
    async fn verify_google(&self, credential: Credential<'_>) -> Result<Principal, Failure> {
        // A signed-in session's token: not subject to the bound on never-seen tokens.
        match self
            .google
            .verify_seen(credential, crate::google::Seen::Before)
            .await
        {
            Ok(principal) => Ok(principal),
            Err(VerifyError::Token(error)) => {
                tracing::warn!(reason = error.reason(), "Google's refreshed token refused");
                Err(Failure::Denied(
                    "the account could not be verified with Google; sign in again".into(),
                ))
            }
            Err(VerifyError::Backend(error)) => Err(Failure::Unavailable(error.to_string())),
        }
    }
}

/// Whether a refused refresh request names our own client as the problem (a wrong secret, a
/// client not allowed this grant), as opposed to the request or grant itself.
fn is_our_client(why: &str) -> bool {
    why.contains("invalid_client") || why.contains("unauthorized_client")
}
