//! `POST /oauth/revoke` (RFC 7009). Revoking either token of a session ends the session: its
//! refresh tokens stop working and its access tokens are refused by the Check (at once on this
//! replica, within the revocation poll interval on the others). An unknown token is a 200, as
//! the RFC asks, so the endpoint tells a caller nothing about tokens it does not hold.

use std::sync::Arc;

use axum::{Form, extract::State, http::StatusCode, response::Response};
use serde::Deserialize;

use super::{Facade, access_token, callback::short, page};
use crate::principal::unix_now;

#[derive(Debug, Default, Deserialize)]
pub struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
}

pub async fn revoke(
    State(facade): State<Arc<Facade>>,
    form: Result<Form<RevokeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    let Some(token) = form.token.as_deref().filter(|t| !t.is_empty()) else {
        return page::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is required",
        );
    };
    if let Some(client_id) = form.client_id.as_deref() {
        if let Err(error) = facade.clients.resolve(client_id).await {
            return page::oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                &error.to_string(),
            );
        }
    }
    // Which session the token belongs to, and which client holds it.
    let found = match facade.sessions.peek_refresh(token).await {
        Ok(Some(grant)) => Some((grant.session, grant.session_expires, grant.client_id)),
        Ok(None) => access_token::verify(
            &facade.tokens.keys.get(),
            &facade.tokens.audience,
            token,
            true,
        )
        .ok()
        .map(|claims| {
            let expires = unix_now() + facade.settings.session_ttl.as_secs();
            (claims.sid, expires, claims.client_id)
        }),
        Err(error) => {
            tracing::error!(%error, "the OAuth store failed");
            return page::unavailable("the session store");
        }
    };
    let Some((session, expires, holder)) = found else {
        return ok();
    };
    if form.client_id.as_deref().is_some_and(|id| id != holder) {
        return page::oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "the token was not issued to this client",
        );
    }
    if let Err(error) = facade.sessions.revoke(&session, expires).await {
        tracing::error!(%error, "the OAuth store failed");
        return page::unavailable("the session store");
    }
    tracing::info!(event = "session_revoked", client_id = %short(&holder), "revoked by the client");
    ok()
}

fn ok() -> Response {
    page::json(StatusCode::OK, &serde_json::json!({}))
}
