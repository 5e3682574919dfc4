//! `POST /oauth/token`: the authorization-code grant (PKCE, redirect URI and client bound to the
//! code; a replayed code revokes what it issued) and the refresh-token grant (rotation; a
//! rotated token used again revokes the whole session; the account is checked again with
//! Google (`reverify.rs`), then the user's domain and groups). Clients are public: they
//! identify themselves with `client_id` alone.

use std::sync::Arc;

use axum::{
    extract::{RawForm, State},
    http::{HeaderMap, StatusCode, header},
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::{
    Facade,
    access_token::{self, User},
    authorize::s256,
    callback::{Failure, short},
    page, random_token, resource_param,
    sessions::{RefreshGrant, ttl_until},
};
use crate::{
    principal::{Parts, Principal, TokenSource, unix_now},
    resource::McpResource,
};

#[derive(Debug, Default, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    code_verifier: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    refresh_token: Option<String>,
    /// Every `resource` value sent (RFC 8707; some clients repeat it).
    #[serde(skip)]
    resources: Vec<String>,
}

/// An error answer: status, OAuth error code, description.
type Refused = (StatusCode, &'static str, String);

/// `POST /oauth/token`, form-encoded.
pub async fn token(
    State(facade): State<Arc<Facade>>,
    headers: HeaderMap,
    body: Result<RawForm, axum::extract::rejection::RawFormRejection>,
) -> Response {
    let form = body.ok().and_then(|RawForm(bytes)| {
        let text = std::str::from_utf8(&bytes).ok()?;
        let (rest, resources) = resource_param::split(text);
        let form = serde_urlencoded::from_str::<TokenForm>(&rest).ok()?;
        Some(TokenForm { resources, ..form })
    });
    let Some(form) = form else {
        return page::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded, each parameter once",
        );
    };
    let result = match form.grant_type.as_deref() {
        Some("authorization_code") => facade.authorization_code(&headers, &form).await,
        Some("refresh_token") => facade.refresh(&headers, &form).await,
        Some(_) => Err((
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be authorization_code or refresh_token".into(),
        )),
        None => Err((
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "grant_type is required".into(),
        )),
    };
    match result {
        Ok(response) => response,
        Err((status, code, description)) => {
            if status != StatusCode::SERVICE_UNAVAILABLE {
                tracing::info!(event = "token_refused", error = code, %description);
            }
            page::oauth_error(status, code, &description)
        }
    }
}

// === impl Facade ===

impl Facade {
    async fn authorization_code(
        &self,
        headers: &HeaderMap,
        form: &TokenForm,
    ) -> Result<Response, Refused> {
        let (client_id, client_name) = self.token_client(headers, form).await?;
        let code = form
            .code
            .as_deref()
            .ok_or_else(|| invalid_request("code is required"))?;
        let claimed = self
            .sessions
            .claim_code(code)
            .await
            .map_err(store_down)?
            .ok_or_else(|| invalid_grant("the code is unknown or has expired"))?;
        let grant = claimed.grant;
        if claimed.replayed {
            // RFC 6749 s4.1.2: a code used twice revokes what was issued with it.
            tracing::warn!(event = "code_replay", client_id = %short(&client_id), "session revoked");
            self.sessions
                .revoke(&grant.session, grant.session_expires)
                .await
                .map_err(store_down)?;
            return Err(invalid_grant(
                "the code was already used; its tokens are revoked",
            ));
        }
        if grant.client_id != client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
            return Err(invalid_grant(
                "redirect_uri must be the one of the authorization request",
            ));
        }
        let verifier = form
            .code_verifier
            .as_deref()
            .ok_or_else(|| invalid_grant("code_verifier is required (PKCE)"))?;
        let challenge_ok = is_verifier(verifier)
            && bool::from(
                s256(verifier)
                    .as_bytes()
                    .ct_eq(grant.code_challenge.as_bytes()),
            );
        if !challenge_ok {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        // Off-boarding may have revoked the session between the sign-in and this exchange, or
        // run while the sign-in was asking Google (before its session was indexed).
        self.ensure_not_revoked(&grant.session).await?;
        let invalidated = self
            .sessions
            .user_invalidated_at(&grant.user.email)
            .await
            .map_err(store_down)?;
        if invalidated.is_some_and(|at| at >= grant.checked_at) {
            return Err(invalid_grant("the account was off-boarded; sign in again"));
        }
        let resource = self.resource_of_grant(grant.resource.as_deref())?;
        self.check_resource(form, resource)?;
        let refresh = RefreshGrant {
            client_id,
            scope: grant.scope,
            resource: grant.resource,
            user: grant.user,
            session: grant.session,
            session_expires: grant.session_expires,
            google: grant.google,
        };
        self.issue(&refresh, client_name.as_deref()).await
    }

    async fn refresh(&self, headers: &HeaderMap, form: &TokenForm) -> Result<Response, Refused> {
        let (client_id, client_name) = self.token_client(headers, form).await?;
        let old = form
            .refresh_token
            .as_deref()
            .ok_or_else(|| invalid_request("refresh_token is required"))?;
        let grant = self
            .sessions
            .peek_refresh(old)
            .await
            .map_err(store_down)?
            .ok_or_else(|| invalid_grant("the refresh token is unknown or has expired"))?;
        if grant.client_id != client_id {
            return Err(invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if grant.session_expires <= unix_now() {
            return Err(invalid_grant("the session has expired; sign in again"));
        }
        self.ensure_not_revoked(&grant.session).await?;
        let Ok(resource) = self.resource_of(grant.resource.as_deref()) else {
            // The server was removed from the config: the session ends for good, so that
            // declaring it again does not revive it.
            self.sessions
                .revoke(&grant.session, grant.session_expires)
                .await
                .map_err(store_down)?;
            return Err(invalid_grant(
                "that MCP server is no longer served here; sign in again",
            ));
        };
        self.check_resource(form, resource)?;
        // The account may have been suspended, deleted or moved out of the domain (asked of
        // Google when due), or the user may have left a group, since signing in.
        let checked = if self.reverify_due(grant.google.as_ref()) {
            self.reverify(&grant.user, grant.google.as_ref(), resource)
                .await
                .map(|(user, link)| RefreshGrant {
                    user,
                    google: Some(link),
                    ..grant.clone()
                })
        } else {
            self.admit(&principal_of(&grant.user), resource)
                .await
                .map(|()| grant.clone())
        };
        let grant = match checked {
            Ok(grant) => grant,
            Err(Failure::Denied(why)) => {
                self.sessions
                    .revoke(&grant.session, grant.session_expires)
                    .await
                    .map_err(store_down)?;
                return Err(invalid_grant(&why));
            }
            Err(Failure::Unavailable(why)) => {
                tracing::warn!(problem = %why, "refresh could not check the account");
                return Err(unavailable("the account check"));
            }
        };
        // Store the successor first, then use up the old token: a store failure in between
        // leaves the old token valid rather than burning the session.
        let (response, new) = self
            .issue_with_token(&grant, client_name.as_deref())
            .await?;
        let claimed = self.sessions.claim_refresh(old).await.map_err(store_down)?;
        match claimed {
            Some(claimed) if !claimed.replayed => Ok(response),
            Some(_) => {
                tracing::warn!(event = "refresh_replay", client_id = %short(&client_id), "session revoked");
                let _ = self.sessions.forget_refresh(&new).await;
                self.sessions
                    .revoke(&grant.session, grant.session_expires)
                    .await
                    .map_err(store_down)?;
                Err(invalid_grant(
                    "the refresh token was already used; the session is revoked",
                ))
            }
            None => {
                let _ = self.sessions.forget_refresh(&new).await;
                Err(invalid_grant("the refresh token has expired"))
            }
        }
    }

    /// Refuses a grant whose session was revoked (off-boarding, a replay, `/oauth/revoke`).
    async fn ensure_not_revoked(&self, session: &str) -> Result<(), Refused> {
        if self
            .sessions
            .is_revoked(session)
            .await
            .map_err(store_down)?
        {
            return Err(invalid_grant("the session was revoked; sign in again"));
        }
        Ok(())
    }

    /// The client making a token request: `client_id` from the form (or HTTP Basic with an
    /// empty password, which some public clients send), and it must still resolve; with the
    /// name it gives itself.
    async fn token_client(
        &self,
        headers: &HeaderMap,
        form: &TokenForm,
    ) -> Result<(String, Option<String>), Refused> {
        let client_id = form
            .client_id
            .clone()
            .or_else(|| basic_user(headers))
            .ok_or_else(|| invalid_client("client_id is required"))?;
        let client = self
            .clients
            .resolve(&client_id)
            .await
            .map_err(|e| invalid_client(&e.to_string()))?;
        Ok((client_id, client.name))
    }

    /// The MCP server a grant is for; a server no longer configured ends its sessions.
    fn resource_of_grant(&self, recorded: Option<&str>) -> Result<&McpResource, Refused> {
        self.resource_of(recorded)
            .map_err(|_| invalid_grant("that MCP server is no longer served here; sign in again"))
    }

    /// A `resource` in a token request must be the grant's (RFC 8707 s2.2: a token for one
    /// MCP server cannot be exchanged for another's); absent, it is the grant's.
    fn check_resource(&self, form: &TokenForm, granted: &McpResource) -> Result<(), Refused> {
        let target = |why: &str| (StatusCode::BAD_REQUEST, "invalid_target", why.to_string());
        match resource_param::resolve(&self.resources, &form.resources) {
            Ok(None) => Ok(()),
            Ok(Some(named)) if named.url == granted.url => Ok(()),
            Ok(Some(_)) => Err(target(
                "the grant is for another resource; sign in for this one",
            )),
            Err(why) => Err(target(why)),
        }
    }

    async fn issue(
        &self,
        grant: &RefreshGrant,
        client_name: Option<&str>,
    ) -> Result<Response, Refused> {
        self.issue_with_token(grant, client_name)
            .await
            .map(|(response, _)| response)
    }

    /// Mints an access token and a refresh token of `grant`'s session; returns the response
    /// and the new refresh token.
    async fn issue_with_token(
        &self,
        grant: &RefreshGrant,
        client_name: Option<&str>,
    ) -> Result<(Response, String), Refused> {
        let ttl = self.settings.access_token_ttl.as_secs();
        let resource = self.resource_of_grant(grant.resource.as_deref())?;
        let (access, _) = access_token::issue(
            &self.tokens.keys.get(),
            &self.tokens.audience,
            access_token::Grant {
                resource: &resource.url,
                user: &grant.user,
                client_id: &grant.client_id,
                client_name,
                scope: &grant.scope,
                session: &grant.session,
            },
            ttl,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "token signing failed".into(),
            )
        })?;
        let refresh = random_token();
        let life = ttl_until(grant.session_expires).min(self.settings.refresh_token_ttl);
        self.sessions
            .save_refresh(&refresh, grant, life)
            .await
            .map_err(store_down)?;
        let body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl,
            "refresh_token": refresh,
            "scope": grant.scope,
        });
        Ok((page::json(StatusCode::OK, &body), refresh))
    }
}

/// The principal a refresh speaks for, to run the policy again.
fn principal_of(user: &User) -> Principal {
    Principal::new(Parts {
        sub: &user.sub,
        email: Some(&user.email),
        email_verified: true,
        hosted_domain: user.hd.as_deref(),
        expires_at: unix_now() + 60,
        source: TokenSource::Facade,
        session: None,
    })
}

/// RFC 7636 s4.1: 43 to 128 unreserved characters.
fn is_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn basic_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, _) = decoded.split_once(':')?;
    let user = url::form_urlencoded::parse(format!("u={user}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!user.is_empty()).then_some(user)
}

fn invalid_request(description: &str) -> Refused {
    (
        StatusCode::BAD_REQUEST,
        "invalid_request",
        description.into(),
    )
}

fn invalid_grant(description: &str) -> Refused {
    (StatusCode::BAD_REQUEST, "invalid_grant", description.into())
}

fn invalid_client(description: &str) -> Refused {
    (
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        description.into(),
    )
}

fn unavailable(what: &str) -> Refused {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        format!("{what} is unavailable; try again shortly"),
    )
}

fn store_down(error: crate::store::StoreError) -> Refused {
    tracing::error!(%error, "the OAuth store failed");
    unavailable("the session store")
}
