//! The refresh-token grant: a confidential web client that signed a user in with
//! `access_type=offline` trades the refresh token for a new access token and ID token, as at
//! Google.
//!
//! The answer describes the account as it is now (a changed `hd` shows in the new ID token).
//! A suspended or deleted account's refresh tokens are refused with Google's `invalid_grant`
//! ("Token has been expired or revoked."), which is how a relying party that keeps a refresh
//! token learns that the person has lost the account. Google does not rotate refresh tokens:
//! the answer carries none.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tracing::info;

use super::{
    TokenRequest,
    code_grant::{ExchangeError, authenticate, present, tokens},
};
use crate::{Shared, google_error::oauth_error, signin::Grant, signin::Scopes};

/// How many refresh tokens the stand-in keeps; past it the oldest stops working (Google does
/// the same per account and client, at 100).
const CAPACITY: usize = 10_000;

/// What a refresh token was issued for.
#[derive(Debug, Clone)]
struct Issued {
    client_id: String,
    /// The account, by lowercased email and by `sub`: a new account under the same email is
    /// another account.
    email: String,
    sub: String,
    scopes: Scopes,
}

/// The refresh tokens issued, in issue order so the oldest can be dropped.
#[derive(Default)]
pub(crate) struct RefreshTokens(Mutex<Table>);

#[derive(Default)]
struct Table {
    by_token: HashMap<String, Issued>,
    order: std::collections::VecDeque<String>,
}

impl RefreshTokens {
    /// Remembers `token`, issued with the code of `grant`.
    pub(crate) fn insert(&self, token: &str, grant: &Grant) {
        let mut table = self.0.lock().expect("refresh token mutex poisoned");
        if table.by_token.len() >= CAPACITY {
            if let Some(oldest) = table.order.pop_front() {
                table.by_token.remove(&oldest);
            }
        }
        table.by_token.insert(
            token.to_owned(),
            Issued {
                client_id: grant.client_id.clone(),
                email: grant.user.email.to_lowercase(),
                sub: grant.user.sub.clone(),
                scopes: grant.scopes.clone(),
            },
        );
        table.order.push_back(token.to_owned());
    }

    fn get(&self, token: &str) -> Option<Issued> {
        let table = self.0.lock().expect("refresh token mutex poisoned");
        table.by_token.get(token).cloned()
    }

    fn remove(&self, token: &str) {
        let mut table = self.0.lock().expect("refresh token mutex poisoned");
        table.by_token.remove(token);
    }
}

/// `grant_type=refresh_token`.
pub(super) fn refresh(shared: &Shared, headers: &HeaderMap, request: &TokenRequest) -> Response {
    let client_id = match authenticate(shared, headers, request) {
        Ok(client_id) => client_id,
        Err(err) => return err.response(),
    };
    let Some(token) = present(&request.refresh_token) else {
        return ExchangeError::Missing("refresh_token").response();
    };
    let revoked = || {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        )
    };
    let Some(issued) = shared.refresh_tokens.get(token) else {
        info!("refresh token unknown");
        return revoked();
    };
    if issued.client_id != client_id {
        // Google answers a token of another client like an unknown one.
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Bad Request");
    }
    let user = shared
        .users
        .get(&issued.email)
        .filter(|user| user.sub == issued.sub && !user.suspended);
    let Some(user) = user else {
        info!("refresh token of a suspended or deleted account refused");
        shared.refresh_tokens.remove(token);
        return revoked();
    };
    let grant = Grant {
        client_id,
        redirect_uri: String::new(),
        challenge: None,
        // A refreshed ID token carries no nonce: none was asked for.
        nonce: None,
        scopes: issued.scopes,
        offline: false,
        user: Arc::clone(&user),
    };
    tokens(shared, &grant)
}
