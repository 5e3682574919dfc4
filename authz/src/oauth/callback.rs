//! `/oauth/callback`: Google sends the browser back here. The pending sign-in is taken (a state
//! works once, and only in the browser that gave consent), Google's code is exchanged with our
//! confidential client (the secret goes nowhere else), the ID token is verified like any other
//! plus the nonce, the default policy is applied (domain from `hd`, groups), and the client
//! gets a single-use code and our `iss` (RFC 9207).

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;

use super::{
    Facade,
    access_token::User,
    authorize::{browser_cookie, unavailable_page},
    page, random_token,
    reverify::GoogleLink,
    sessions::{CodeGrant, PendingSignIn},
};
use crate::{
    digest::hex_sha256,
    errors::VerifyError,
    principal::{Principal, unix_now},
    resource::McpResource,
};

#[derive(Debug, Default, Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// Google's token response: the ID token, and the refresh token we keep encrypted to check
/// the account again at refresh (`reverify.rs`).
#[derive(Deserialize)]
struct GoogleTokens {
    id_token: Option<String>,
    refresh_token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Why a sign-in went back to the client as an error.
pub(super) enum Failure {
    Denied(String),
    Unavailable(String),
}

/// `GET /oauth/callback`.
pub async fn callback(
    State(facade): State<Arc<Facade>>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let Some(state) = query.state.as_deref().filter(|s| !s.is_empty()) else {
        return page::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "Google's answer carries no state.",
        );
    };
    let pending = match facade.sessions.take_pending(state).await {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            return page::error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "This sign-in has expired or was already used.",
            );
        }
        Err(error) => {
            tracing::error!(%error, "reading a pending sign-in failed");
            return unavailable_page();
        }
    };
    // Login CSRF: finishing someone else's sign-in in this browser must not work.
    let same_browser = browser_cookie(&headers)
        .is_some_and(|cookie| hex_sha256(cookie.as_bytes()) == pending.browser);
    if !same_browser {
        tracing::warn!(
            reason = "callback_other_browser",
            "sign-in callback refused"
        );
        return page::error_page(
            StatusCode::FORBIDDEN,
            "Sign-in refused",
            "This sign-in was started in another browser.",
        );
    }
    let request = &pending.request;
    let back = |error: &str, description: &str| {
        facade.error_redirect(
            &request.redirect_uri,
            request.state.as_deref(),
            error,
            description,
        )
    };
    if query.error.is_some() {
        return back("access_denied", "Google sign-in was not completed");
    }
    let Some(code) = query.code.as_deref() else {
        return back("access_denied", "Google returned no code");
    };
    // Before Google is asked: an off-boarding from this moment on refuses the code.
    let checked_at = crate::store::unix_ms();
    let (user, google) = match facade.sign_in(code, &pending).await {
        Ok(signed_in) => signed_in,
        Err(Failure::Denied(why)) => return back("access_denied", &why),
        Err(Failure::Unavailable(why)) => {
            tracing::warn!(problem = %why, "sign-in could not complete");
            return back(
                "temporarily_unavailable",
                "sign-in is unavailable; try again shortly",
            );
        }
    };
    let now = unix_now();
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        scope: request.scope.clone(),
        resource: request.resource.clone(),
        user,
        session: random_token(),
        session_expires: now + facade.settings.session_ttl.as_secs(),
        google,
        checked_at,
    };
    let our_code = random_token();
    if let Err(error) = facade
        .sessions
        .save_code(&our_code, &grant, facade.settings.code_ttl)
        .await
    {
        tracing::error!(%error, "saving an authorization code failed");
        return back(
            "temporarily_unavailable",
            "sign-in is unavailable; try again shortly",
        );
    }
    tracing::info!(
        event = "sign_in",
        email = %grant.user.email,
        client_id = %short(&grant.client_id),
        "signed in"
    );
    facade.answer_client(
        &request.redirect_uri,
        request.state.as_deref(),
        &[("code", &our_code)],
    )
}

// === impl Facade ===

impl Facade {
    /// Google's code -> verified ID token -> an admitted user, and Google's refresh token
    /// (encrypted) when Google gave one.
    async fn sign_in(
        &self,
        code: &str,
        pending: &PendingSignIn,
    ) -> Result<(User, Option<GoogleLink>), Failure> {
        let callback = self.settings.callback_url();
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &callback),
            ("code_verifier", &pending.verifier),
        ];
        let response = self.google_token_endpoint(&grant).await?;
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Unavailable(format!(
                "Google token endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            tracing::warn!(%status, "Google refused our code exchange");
            return Err(Failure::Denied("Google refused the sign-in".into()));
        }
        let tokens: GoogleTokens = response
            .json()
            .await
            .map_err(|e| Failure::Unavailable(format!("Google token response: {e}")))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| Failure::Denied("Google returned no ID token".into()))?;
        let principal = match self.google.verify_sign_in(&id_token, &pending.nonce).await {
            Ok(principal) => principal,
            Err(VerifyError::Token(error)) => {
                tracing::warn!(
                    reason = error.reason(),
                    "Google ID token at sign-in refused"
                );
                return Err(Failure::Denied(
                    "the Google sign-in could not be verified".into(),
                ));
            }
            Err(VerifyError::Backend(error)) => {
                return Err(Failure::Unavailable(error.to_string()));
            }
        };
        let resource = self.resource_of(pending.request.resource.as_deref())?;
        self.admit(&principal, resource).await?;
        let email = principal
            .email()
            .map(str::to_owned)
            .ok_or_else(|| Failure::Denied("the Google account has no email address".into()))?;
        if tokens.refresh_token.is_none() {
            tracing::warn!(
                "Google returned no refresh token: this session is checked with Google's access \
                 token while it lives, then must sign in again"
            );
        }
        let google = GoogleLink::new(
            &self.sealer.get(),
            tokens.refresh_token.as_deref(),
            tokens.access_token.as_deref(),
            tokens.expires_in,
        );
        let user = User {
            sub: principal.sub().to_owned(),
            email,
            hd: principal.hosted_domain().map(str::to_owned),
        };
        Ok((user, google))
    }

    /// POSTs `grant` to Google's token endpoint as our confidential client (the secret read
    /// now, so a rotated one is used at once). `Err`: Google could not be asked.
    pub(super) async fn google_token_endpoint(
        &self,
        grant: &[(&str, &str)],
    ) -> Result<reqwest::Response, Failure> {
        let endpoints = self
            .google
            .sign_in_endpoints()
            .ok_or_else(|| Failure::Unavailable("Google discovery not done".into()))?;
        let client_secret = self.google_client_secret.current();
        let client = [
            ("client_id", self.settings.google_client_id.as_str()),
            ("client_secret", client_secret.expose()),
        ];
        let form: Vec<(&str, &str)> = grant.iter().chain(&client).copied().collect();
        self.http
            .post(endpoints.token)
            .form(&form)
            .send()
            .await
            .map_err(|e| Failure::Unavailable(format!("Google token endpoint: {e}")))
    }

    /// The MCP server a sign-in or session is for, as recorded (`None`: the default one).
    pub(super) fn resource_of(&self, recorded: Option<&str>) -> Result<&McpResource, Failure> {
        self.resources
            .of_grant(recorded)
            .map(|resource| &**resource)
            .ok_or_else(|| Failure::Denied("that MCP server is no longer served here".into()))
    }

    /// The domain, user and group requirements of the resource's policy (at sign-in and at
    /// refresh): a user it would refuse gets no token for it.
    pub(super) async fn admit(
        &self,
        principal: &Principal,
        resource: &McpResource,
    ) -> Result<(), Failure> {
        match self.authorizer.admit_sign_in(principal, resource).await {
            Ok(Ok(_grant)) => Ok(()),
            Ok(Err(refusal)) => {
                tracing::info!(
                    event = "sign_in_refused",
                    reason = refusal.why.reason(),
                    policy = %refusal.policy,
                    "account not admitted"
                );
                Err(Failure::Denied(format!(
                    "this account is not allowed: {}",
                    refusal.why
                )))
            }
            Err(error) => Err(Failure::Unavailable(error.to_string())),
        }
    }
}

/// Sealed client ids are long; logs need only enough to tell clients apart.
pub(super) fn short(client_id: &str) -> &str {
    crate::facade_token::access_token::client_label(client_id)
}
