//! `/oauth/authorize`: the client's authorization request, checked, then a consent page per
//! client; the user's "Allow" then starts Google's sign-in with our own state, nonce and PKCE.
//!
//! Until the client and its redirect URI are known to belong together, every error is a page,
//! never a redirect (a redirect would hand the error, or later a code, to whoever wrote the
//! URL). The consent form is stateless: the checked request travels sealed in it, and its CSRF
//! token is a MAC over that and a `__Host-` cookie only this browser has.

use std::sync::Arc;

use axum::{
    Form,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

use super::{
    Facade,
    clients::{ApplicationType, ClientError},
    page, random_token, redirect, resource_param,
    seal::Purpose,
    sessions::PendingSignIn,
};
use crate::{digest::hex_sha256, principal::unix_now, resource::McpResource};

/// The browser-binding cookie. `__Host-`: Secure, no Domain, Path=/, so no sibling host can
/// set or read it.
pub const BROWSER_COOKIE: &str = "__Host-authz-browser";
/// Longest client `state` we carry (it travels sealed in a form and back in a redirect).
const MAX_STATE: usize = 1024;

/// The query of an authorization request; every field optional so that a missing one gets
/// our error, not axum's.
#[derive(Debug, Default, Deserialize)]
pub struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// An authorization request that passed every check, as carried through consent and Google.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: String,
    /// The protected MCP server the sign-in is for (its URL); absent in forms from before
    /// resources were recorded: the default one.
    #[serde(default)]
    pub resource: Option<String>,
    /// Unix seconds after which the consent form is refused.
    pub expires: u64,
}

/// The consent form's fields.
#[derive(Debug, Deserialize)]
pub struct ConsentForm {
    request: String,
    csrf: String,
    decision: String,
}

/// `GET /oauth/authorize`.
pub async fn show_consent(
    State(facade): State<Arc<Facade>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let (rest, resources) = resource_param::split(raw.as_deref().unwrap_or_default());
    let Ok(query) = serde_urlencoded::from_str::<AuthorizeQuery>(&rest) else {
        return bad_request("The authorization request could not be read.");
    };
    let Some(client_id) = query.client_id.as_deref().filter(|id| !id.is_empty()) else {
        return bad_request("The authorization request names no client (client_id).");
    };
    let client = match facade.clients.resolve(client_id).await {
        Ok(client) => client,
        Err(error) => return client_error_page(&error),
    };
    let Some(redirect_uri) = query.redirect_uri.as_deref() else {
        return bad_request("The authorization request has no redirect_uri.");
    };
    if !redirect::matches(&client.redirect_uris, redirect_uri) {
        tracing::info!(
            reason = "redirect_uri_mismatch",
            "authorization request refused"
        );
        return bad_request(
            "The redirect address is not registered for this client, so you are not sent there.",
        );
    }
    // From here the redirect URI is registered, but registration is open to anyone: sending
    // the browser there before the user did anything would make us an open redirector
    // (RFC 9700 s4.11.2). So an error before consent is a page, and the user may follow its
    // link back to the application.
    let state = query.state.as_deref();
    let back = |error: &str, description: &str| {
        facade.error_page_to_client(redirect_uri, state, error, description)
    };
    if state.is_some_and(|s| s.len() > MAX_STATE) {
        return back("invalid_request", "state is too long");
    }
    if query.response_type.as_deref() != Some("code") {
        return back(
            "unsupported_response_type",
            "only response_type=code is supported",
        );
    }
    let Some(challenge) = query.code_challenge.as_deref() else {
        return back("invalid_request", "PKCE is required: send code_challenge");
    };
    if query.code_challenge_method.as_deref() != Some("S256") {
        return back("invalid_request", "code_challenge_method must be S256");
    }
    if !is_s256_challenge(challenge) {
        return back(
            "invalid_request",
            "code_challenge must be a base64url SHA-256 (43 characters)",
        );
    }
    // A client that names no resource (some omit it) signs in for the default one.
    let resource = match resource_param::resolve(&facade.resources, &resources) {
        Ok(named) => named.unwrap_or_else(|| facade.resources.default_resource()),
        Err(why) => return back("invalid_target", why),
    };
    let request = AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        state: query.state.clone(),
        code_challenge: challenge.to_string(),
        scope: facade.granted_scope(query.scope.as_deref()),
        resource: Some(resource.url.clone()),
        expires: unix_now() + facade.settings.sign_in_ttl.as_secs(),
    };
    let sealed = match serde_json::to_vec(&request) {
        Ok(bytes) => facade.sealer.get().seal(Purpose::ConsentRequest, &bytes),
        Err(_) => return bad_request("The authorization request could not be read."),
    };
    let browser = browser_cookie(&headers).unwrap_or_else(random_token);
    let csrf = facade.sealer.get().tag_text(
        Purpose::ConsentCsrf,
        csrf_input(&browser, &sealed).as_bytes(),
    );
    let redirect_host = Url::parse(redirect_uri)
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_default();
    let body = consent_body(&Consent {
        organization: &facade.organization,
        client_name: client.name.as_deref(),
        claims_web_service: client.application_type == Some(ApplicationType::Web),
        redirect_host: &redirect_host,
        resource,
        sealed: &sealed,
        csrf: &csrf,
    });
    let mut response = page::html(StatusCode::OK, "Allow access?", &body);
    let google_origin = facade.google_origin();
    page::page_headers(response.headers_mut(), google_origin.as_deref());
    let cookie = format!(
        "{BROWSER_COOKIE}={browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        facade.settings.sign_in_ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// What the consent page shows.
struct Consent<'a> {
    /// Whose MCP servers these are: the configured domains.
    organization: &'a str,
    /// As the client calls itself: not verified.
    client_name: Option<&'a str>,
    /// The client registered as a web service (`application_type` `web`, the default of a
    /// registration that names none).
    claims_web_service: bool,
    redirect_host: &'a str,
    resource: &'a McpResource,
    sealed: &'a str,
    csrf: &'a str,
}

/// The consent page: what is asked (which MCP server of which organization, by which
/// application, back to which host), Allow first, and what the user cannot check said so.
fn consent_body(consent: &Consent<'_>) -> String {
    let client = match consent.client_name {
        Some(name) => format!(
            "<strong>{}</strong> <small>(the name is the application's own, not verified)</small>",
            page::escape(name)
        ),
        None => "An application that gave no name".to_string(),
    };
    let loopback = ["localhost", "127.0.0.1", "[::1]"].contains(&consent.redirect_host);
    let where_back = if loopback {
        "an application on <strong>this computer</strong> (a local address)".to_string()
    } else {
        format!("<code>{}</code>", page::escape(consent.redirect_host))
    };
    let warning = if loopback && consent.claims_web_service {
        // A web service answered on a local address: any local program listening there
        // receives the code.
        "<p><strong>Careful:</strong> this application describes itself as a web service but \
         asks to be answered on this computer. Continue only if you started it here.</p>"
    } else {
        ""
    };
    format!(
        "<p>{client} wants to use <strong>{resource}</strong> (<code>{host}</code>), one of \
         {organization}'s MCP servers, as you.</p>\
         <p>If you allow it, you sign in with Google and are then sent back to {where_back}. \
         Only continue if you just started this from that application.</p>{warning}\
         <form method=\"post\" action=\"/oauth/authorize\">\
         <input type=\"hidden\" name=\"request\" value=\"{sealed}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\" autofocus \
         style=\"font-weight:bold\">Allow</button>\
         <button type=\"submit\" name=\"decision\" value=\"deny\">Cancel</button></form>",
        resource = page::escape(&consent.resource.name),
        host = page::escape(consent.resource.host()),
        organization = page::escape(consent.organization),
        sealed = page::escape(consent.sealed),
        csrf = page::escape(consent.csrf),
    )
}

/// `POST /oauth/authorize`: the consent form's answer.
pub async fn consent_given(
    State(facade): State<Arc<Facade>>,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("The consent form could not be read.");
    };
    let request = facade
        .sealer
        .get()
        .open(Purpose::ConsentRequest, &form.request)
        .and_then(|bytes| serde_json::from_slice::<AuthorizationRequest>(&bytes).ok());
    let Some(request) = request else {
        return bad_request("The consent form was altered or is not ours.");
    };
    let Some(browser) = browser_cookie(&headers) else {
        return forbidden("The consent form did not come from this browser (no cookie).");
    };
    let csrf_ok = facade.sealer.get().verify_tag(
        Purpose::ConsentCsrf,
        csrf_input(&browser, &form.request).as_bytes(),
        &form.csrf,
    );
    if !csrf_ok {
        tracing::warn!(reason = "consent_csrf", "consent form refused");
        return forbidden("The consent form did not come from this browser.");
    }
    if request.expires <= unix_now() {
        return bad_request("The consent page has expired.");
    }
    let state = request.state.as_deref();
    if form.decision != "allow" {
        return facade.error_redirect(
            &request.redirect_uri,
            state,
            "access_denied",
            "the user declined",
        );
    }
    let Some(endpoints) = facade.google.sign_in_endpoints() else {
        return unavailable_page();
    };
    // Our state at Google is a MAC of the consent form and this browser: a form posted twice
    // maps to one pending sign-in, which stays stored (used or not) until the form expires, so
    // the form works once and a replayed post stores nothing.
    let browser_hash = hex_sha256(browser.as_bytes());
    let google_state = facade.sealer.get().tag_text(
        Purpose::ConsentState,
        format!("{browser_hash}.{}", form.request).as_bytes(),
    );
    let ttl = facade.settings.sign_in_ttl;
    let counted = match facade.pending.admit(&google_state, &browser_hash, ttl) {
        Ok(counted) => counted,
        Err(full) => {
            tracing::warn!(event = "sign_in_refused", reason = ?full, "too many sign-ins in progress");
            return page::error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins in progress",
                "Too many sign-ins are waiting for Google right now. Finish or close the \
                 others, or try again in a few minutes.",
            );
        }
    };
    let nonce = random_token();
    let verifier = random_token();
    let pending = PendingSignIn {
        request,
        nonce: nonce.clone(),
        verifier: verifier.clone(),
        browser: browser_hash,
    };
    match facade
        .sessions
        .save_pending(&google_state, &pending, ttl)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            if counted {
                // Used already, through another replica: nothing was stored here.
                facade.pending.release(&google_state);
            }
            return bad_request(
                "This consent form was already used; start again from the application.",
            );
        }
        Err(error) => {
            facade.pending.release(&google_state);
            tracing::error!(%error, "saving a pending sign-in failed");
            return unavailable_page();
        }
    }
    let mut google = endpoints.authorization;
    {
        let mut query = google.query_pairs_mut();
        query
            .append_pair("client_id", &facade.settings.google_client_id)
            .append_pair("redirect_uri", &facade.settings.callback_url())
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email")
            .append_pair("state", &google_state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &s256(&verifier))
            .append_pair("code_challenge_method", "S256")
            // Offline access gives us Google's refresh token, with which a refresh of ours asks
            // Google whether the account still exists (`reverify.rs`). Google returns one only
            // on consent, hence `consent` on every sign-in.
            .append_pair("access_type", "offline")
            .append_pair("prompt", "consent select_account");
        if let Some(domain) = &facade.domain_hint {
            query.append_pair("hd", domain);
        }
    }
    page::redirect(StatusCode::SEE_OTHER, google.as_str())
}

// === impl Facade ===

impl Facade {
    /// Sends an OAuth error to a redirect URI already checked against the client.
    pub(super) fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &str,
        description: &str,
    ) -> Response {
        let answer = [("error", error), ("error_description", description)];
        self.answer_client(redirect_uri, state, &answer)
    }

    /// Sends an authorization response (a code or an error) to a checked redirect URI, with
    /// the client's `state` and our `iss` (RFC 9207).
    pub(super) fn answer_client(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        answer: &[(&str, &str)],
    ) -> Response {
        match self.client_answer_url(redirect_uri, state, answer) {
            Some(url) => page::redirect(StatusCode::FOUND, url.as_str()),
            None => bad_request("The redirect address cannot be used."),
        }
    }

    /// An error before consent: a page (400) saying what was wrong, whose link takes the user
    /// back to the application with the error, only if they choose to follow it.
    pub(super) fn error_page_to_client(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: &str,
        description: &str,
    ) -> Response {
        let answer = [("error", error), ("error_description", description)];
        let Some(url) = self.client_answer_url(redirect_uri, state, &answer) else {
            return bad_request("The redirect address cannot be used.");
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let body = format!(
            "<p>The application's sign-in request was refused: {description}.</p>\
             <p><a href=\"{url}\" rel=\"noreferrer\">Return to the application</a> \
             (<code>{host}</code>) to tell it, or close this window.</p>",
            description = page::escape(description),
            url = page::escape(url.as_str()),
            host = page::escape(&host),
        );
        page::html(StatusCode::BAD_REQUEST, "Sign-in request refused", &body)
    }

    fn client_answer_url(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        answer: &[(&str, &str)],
    ) -> Option<Url> {
        let mut url = Url::parse(redirect_uri).ok()?;
        {
            let mut query = url.query_pairs_mut();
            query.extend_pairs(answer);
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", self.issuer());
        }
        Some(url)
    }

    /// The requested scopes we support; all of ours when none of them is requested (RFC 6749
    /// s3.3 lets the server grant a different scope, and says so in the token response).
    pub(super) fn granted_scope(&self, requested: Option<&str>) -> String {
        let ours = &self.settings.scopes;
        let granted: Vec<&str> = requested
            .unwrap_or_default()
            .split(' ')
            .filter(|scope| ours.iter().any(|s| s == scope))
            .collect();
        if granted.is_empty() {
            ours.join(" ")
        } else {
            granted.join(" ")
        }
    }

    fn google_origin(&self) -> Option<String> {
        self.google
            .sign_in_endpoints()
            .map(|endpoints| endpoints.authorization.origin().ascii_serialization())
    }
}

fn client_error_page(error: &ClientError) -> Response {
    tracing::info!(
        ?error,
        "authorization request from an unknown client refused"
    );
    bad_request(&format!("This application cannot sign in here: {error}."))
}

fn bad_request(message: &str) -> Response {
    page::error_page(StatusCode::BAD_REQUEST, "Sign-in failed", message)
}

fn forbidden(message: &str) -> Response {
    page::error_page(StatusCode::FORBIDDEN, "Sign-in refused", message)
}

pub(super) fn unavailable_page() -> Response {
    page::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in unavailable",
        "Sign-in is unavailable right now. Try again in a minute.",
    )
}

/// The browser cookie's value, if present and well formed.
pub(super) fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|value| value.len() == 43 && value.bytes().all(is_base64url))
}

fn csrf_input(browser: &str, sealed_request: &str) -> String {
    format!("{browser}.{sealed_request}")
}

/// The PKCE S256 challenge of a verifier (RFC 7636 s4.2).
pub(super) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(is_base64url)
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}
