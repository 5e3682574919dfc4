//! Google's sign-in (accounts.google.com): the authorization endpoint `GET /o/oauth2/v2/auth`,
//! the account chooser it answers with, and the chooser's form, posted back to the same path,
//! which issues the authorization code. The code is redeemed at `/token` (`oauth/code_grant.rs`).
//!
//! As at Google, a request whose client or redirect URI cannot be trusted gets an error page and
//! never a redirect (which would send the browser to an unregistered URL); once both are known
//! good, the other errors go back to the client as `error=...&state=...`.

mod page;
mod scopes;

use std::sync::Arc;

use axum::{
    Form,
    extract::{
        Query, State,
        rejection::{FormRejection, QueryRejection},
    },
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use serde::Deserialize;
use tracing::info;

pub(crate) use scopes::Scopes;

use crate::{
    Shared, now,
    pkce::{Challenge, ChallengeError},
    routes::gate,
    single_use::SingleUse,
    stats::Counter,
    tokens::random_with_prefix,
    users::User,
};

/// Where the authorization endpoint and the chooser's form live.
pub(crate) const AUTHORIZE_PATH: &str = "/o/oauth2/v2/auth";
/// How long a pending request waits for its account, and a code for its exchange.
const LIFETIME: i64 = 600;
/// How many of each may be outstanding; see `single_use.rs`.
const CAPACITY: usize = 10_000;

/// The sign-ins in progress: requests waiting for an account, and codes waiting for `/token`.
pub(crate) struct SignIns {
    pending: SingleUse<Arc<Pending>>,
    pub(crate) codes: SingleUse<Arc<Grant>>,
}

impl Default for SignIns {
    fn default() -> Self {
        Self {
            pending: SingleUse::new(LIFETIME, CAPACITY),
            codes: SingleUse::new(LIFETIME, CAPACITY),
        }
    }
}

/// A checked authorization request, waiting for the person to choose an account.
#[derive(Debug)]
struct Pending {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    scopes: Scopes,
    challenge: Option<Challenge>,
    offline: bool,
    login_hint: Option<String>,
}

/// What an authorization code was issued for: what `/token` checks and puts in the tokens.
#[derive(Debug)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) challenge: Option<Challenge>,
    pub(crate) nonce: Option<String>,
    pub(crate) scopes: Scopes,
    /// `access_type=offline`: the exchange also returns a refresh token.
    pub(crate) offline: bool,
    pub(crate) user: Arc<User>,
}

/// The query of `GET /o/oauth2/v2/auth`. Unknown parameters are ignored, `hd` among them: it is
/// only a hint for Google's account chooser, and the account chosen may be in another domain or
/// in none, so the relying party must check `hd` in the ID token. A repeated parameter makes
/// the query unreadable, which is refused.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthorizeParams {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
    prompt: Option<String>,
    access_type: Option<String>,
    include_granted_scopes: Option<String>,
}

/// Why a request from a good client to a registered redirect URI is refused; each goes back to
/// the client as its OAuth `error` code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum AuthorizeError {
    #[error("missing required parameter: {0}")]
    Missing(&'static str),
    #[error("response_type must be code")]
    ResponseType,
    #[error(transparent)]
    Scope(#[from] scopes::ScopeError),
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// `prompt=none`: the stand-in has no browser session, so no sign-in without the page.
    #[error("prompt=none without a session")]
    LoginRequired,
}

impl AuthorizeError {
    fn code(&self) -> &'static str {
        match self {
            AuthorizeError::ResponseType => "unsupported_response_type",
            AuthorizeError::Scope(_) => "invalid_scope",
            AuthorizeError::LoginRequired => "login_required",
            AuthorizeError::Missing(_)
            | AuthorizeError::Challenge(_)
            | AuthorizeError::Invalid(_) => "invalid_request",
        }
    }
}

/// `GET /o/oauth2/v2/auth`: the account chooser for a good request, an error page when the
/// client or its redirect URI is wrong, a redirect with `error` for any other fault.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<AuthorizeParams>, QueryRejection>,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::Authorize).await {
        return faulted;
    }
    let Ok(Query(params)) = query else {
        return page::error(400, "invalid_request", "The request could not be read.");
    };
    let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return page::error(
            400,
            "invalid_request",
            "Missing required parameter: client_id",
        );
    };
    let Some(client) = shared.oauth_clients.get(client_id) else {
        info!(client_id, "authorization request for an unknown client");
        return page::error(401, "invalid_client", "The OAuth client was not found.");
    };
    let Some(redirect_uri) = params.redirect_uri.as_deref().filter(|r| !r.is_empty()) else {
        return page::error(
            400,
            "invalid_request",
            "Missing required parameter: redirect_uri",
        );
    };
    if !client.allows_redirect(redirect_uri) {
        info!(
            client_id,
            "authorization request with an unregistered redirect_uri"
        );
        return page::error(
            400,
            "redirect_uri_mismatch",
            "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 \
             policy. The redirect_uri does not match the ones registered for the OAuth client.",
        );
    }
    let pending = match check(&params, client_id, redirect_uri) {
        Ok(pending) => Arc::new(pending),
        Err(err) => {
            info!(client_id, %err, "authorization request refused");
            let params = [
                ("error", Some(err.code())),
                ("state", params.state.as_deref()),
            ];
            return redirect(redirect_uri, &params);
        }
    };
    let request = random_with_prefix("", 43);
    shared
        .sign_ins
        .pending
        .insert(request.clone(), pending.clone(), now());
    page::chooser(
        StatusCode::OK,
        page::Chooser {
            request: &request,
            client_id: &pending.client_id,
            email: pending.login_hint.as_deref(),
            problem: None,
        },
    )
}

/// The parameters beyond client and redirect URI, checked as Google does.
fn check(
    params: &AuthorizeParams,
    client_id: &str,
    redirect_uri: &str,
) -> Result<Pending, AuthorizeError> {
    match params.response_type.as_deref() {
        None | Some("") => return Err(AuthorizeError::Missing("response_type")),
        Some("code") => {}
        Some(_) => return Err(AuthorizeError::ResponseType),
    }
    let scopes = match params.scope.as_deref() {
        None | Some("") => return Err(AuthorizeError::Missing("scope")),
        Some(scope) => Scopes::parse(scope)?,
    };
    let challenge = Challenge::parse(
        params.code_challenge.as_deref(),
        params.code_challenge_method.as_deref(),
    )?;
    let offline = match params.access_type.as_deref() {
        None | Some("online") => false,
        Some("offline") => true,
        Some(_) => return Err(AuthorizeError::Invalid("access_type")),
    };
    if !matches!(
        params.include_granted_scopes.as_deref(),
        None | Some("true" | "false")
    ) {
        return Err(AuthorizeError::Invalid("include_granted_scopes"));
    }
    if let Some(prompt) = params.prompt.as_deref() {
        let prompts: Vec<&str> = prompt.split(' ').filter(|p| !p.is_empty()).collect();
        let known = |p: &&str| matches!(*p, "none" | "consent" | "select_account");
        if !prompts.iter().all(known) || (prompts.contains(&"none") && prompts.len() > 1) {
            return Err(AuthorizeError::Invalid("prompt"));
        }
        if prompts == ["none"] {
            return Err(AuthorizeError::LoginRequired);
        }
    }
    Ok(Pending {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: params.state.clone(),
        nonce: params.nonce.clone(),
        scopes,
        challenge,
        offline,
        login_hint: params.login_hint.clone(),
    })
}

/// The chooser's form.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SignInForm {
    request: Option<String>,
    email: Option<String>,
}

/// `POST /o/oauth2/v2/auth` (form `request`, `email`): the person chose an account. A known
/// account gets a code, sent back to the client as Google sends it; an unknown one gets the
/// chooser again, and the request stays pending.
pub(crate) async fn sign_in(
    State(shared): State<Arc<Shared>>,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    if let Some(faulted) = gate(&shared, Counter::AuthorizeSignIn).await {
        return faulted;
    }
    let expired = || {
        page::error(
            400,
            "invalid_request",
            "This sign-in request has expired or was already used. Go back to the app and \
             sign in again.",
        )
    };
    let form = form.map(|Form(f)| f).unwrap_or_default();
    let Some(request) = form.request.filter(|r| !r.is_empty()) else {
        return expired();
    };
    let now = now();
    let Some(pending) = shared.sign_ins.pending.peek(&request, now) else {
        return expired();
    };
    let email = form.email.unwrap_or_default();
    if shared.users.get(&email).is_some_and(|user| user.suspended) {
        return page::error(
            403,
            "access_denied",
            "This account has been suspended. Contact your administrator.",
        );
    }
    let Some(user) = shared.users.get(&email) else {
        return page::chooser(
            StatusCode::BAD_REQUEST,
            page::Chooser {
                request: &request,
                client_id: &pending.client_id,
                email: Some(&email),
                problem: Some("Couldn't find your Google Account"),
            },
        );
    };
    // Taken only now, so a mistyped email can be corrected; a concurrent submit loses here.
    let Some(pending) = shared.sign_ins.pending.take(&request, now) else {
        return expired();
    };
    let code = random_with_prefix("4/0A", 69);
    let hd = user.hd.clone();
    let scope = pending.scopes.redirect_param();
    let grant = Grant {
        client_id: pending.client_id.clone(),
        redirect_uri: pending.redirect_uri.clone(),
        challenge: pending.challenge.clone(),
        nonce: pending.nonce.clone(),
        scopes: pending.scopes.clone(),
        offline: pending.offline,
        user,
    };
    shared
        .sign_ins
        .codes
        .insert(code.clone(), Arc::new(grant), now);
    redirect(
        &pending.redirect_uri,
        &[
            ("state", pending.state.as_deref()),
            ("code", Some(&code)),
            ("scope", Some(&scope)),
            ("authuser", Some("0")),
            ("hd", hd.as_deref()),
            ("prompt", Some("consent")),
        ],
    )
}

/// `302` to `redirect_uri` with `params` (the `None`s left out) added to its query.
fn redirect(redirect_uri: &str, params: &[(&str, Option<&str>)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        // Registered URIs were parsed when registered.
        return page::error(
            400,
            "redirect_uri_mismatch",
            "The redirect_uri is not a URL.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, url.as_str())]).into_response()
}
