//! The authorization-code grant: a confidential web client redeems the code the sign-in page
//! issued (`signin.rs`) for an access token and an ID token, as at Google.
//!
//! The client authenticates with `client_secret_post` or `client_secret_basic`; then the code
//! must be live and unused, issued to that client for that `redirect_uri`, and answer its PKCE
//! challenge. The code is spent by the first exchange that names it, failed or not, so it can
//! be tried only once.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use tracing::info;

use super::TokenRequest;
use crate::{
    AccessTokenSpec, Shared, google_error::oauth_error, now, routes::json_response, signin::Grant,
    sigv4::percent_decode, tokens::random_with_prefix,
};

/// The lifetime of the access token, in seconds, as Google reports it.
const ACCESS_TOKEN_LIFETIME: i64 = 3599;
/// The lifetime of the ID token.
const ID_TOKEN_LIFETIME: i64 = 3600;

/// Why an exchange is refused; [`ExchangeError::response`] gives Google's answer for each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ExchangeError {
    #[error("Could not determine client ID from request.")]
    NoClient,
    #[error("Client authentication must use either HTTP Basic or the request body, not both.")]
    TwoClientAuthentications,
    #[error("Unauthorized")]
    MalformedBasic,
    #[error("The OAuth client was not found.")]
    UnknownClient,
    #[error("client_secret is missing.")]
    MissingSecret,
    #[error("Unauthorized")]
    WrongSecret,
    #[error("Missing required parameter: {0}")]
    Missing(&'static str),
    /// Unknown, used, expired, or issued to another client.
    #[error("Bad Request")]
    Code,
    #[error("Bad Request")]
    RedirectUri,
    #[error("Missing code verifier.")]
    MissingVerifier,
    /// A verifier that does not answer the challenge, or one without a challenge to answer
    /// (a client that forgot its challenge would otherwise go unnoticed).
    #[error("Bad Request")]
    Verifier,
}

impl ExchangeError {
    /// Google's status and `error` code for each cause; the description is the message.
    pub(super) fn response(&self) -> Response {
        let (status, error) = match self {
            ExchangeError::NoClient
            | ExchangeError::TwoClientAuthentications
            | ExchangeError::MissingSecret
            | ExchangeError::Missing(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ExchangeError::MalformedBasic
            | ExchangeError::UnknownClient
            | ExchangeError::WrongSecret => (StatusCode::UNAUTHORIZED, "invalid_client"),
            ExchangeError::Code | ExchangeError::MissingVerifier | ExchangeError::Verifier => {
                (StatusCode::BAD_REQUEST, "invalid_grant")
            }
            ExchangeError::RedirectUri => (StatusCode::BAD_REQUEST, "redirect_uri_mismatch"),
        };
        oauth_error(status, error, &self.to_string())
    }
}

/// `grant_type=authorization_code`.
pub(super) fn exchange(shared: &Shared, headers: &HeaderMap, request: &TokenRequest) -> Response {
    match redeem(shared, headers, request) {
        Ok(grant) => tokens(shared, &grant),
        Err(err) => {
            info!(%err, "authorization code exchange refused");
            err.response()
        }
    }
}

/// The grant behind the request's code, once everything checks out.
fn redeem(
    shared: &Shared,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<std::sync::Arc<Grant>, ExchangeError> {
    let client_id = authenticate(shared, headers, request)?;
    let code = present(&request.code).ok_or(ExchangeError::Missing("code"))?;
    let redirect_uri =
        present(&request.redirect_uri).ok_or(ExchangeError::Missing("redirect_uri"))?;
    let grant = shared
        .sign_ins
        .codes
        .take(code, now())
        .ok_or(ExchangeError::Code)?;
    if grant.client_id != client_id {
        return Err(ExchangeError::Code);
    }
    if grant.redirect_uri != redirect_uri {
        return Err(ExchangeError::RedirectUri);
    }
    match (&grant.challenge, present(&request.code_verifier)) {
        (None, None) => {}
        (Some(_), None) => return Err(ExchangeError::MissingVerifier),
        (Some(challenge), Some(verifier)) if challenge.verify(verifier) => {}
        (_, Some(_)) => return Err(ExchangeError::Verifier),
    }
    Ok(grant)
}

/// The client the request authenticates as: HTTP Basic (`client_secret_basic`) or the form's
/// `client_id` and `client_secret` (`client_secret_post`), not both.
pub(super) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    request: &TokenRequest,
) -> Result<String, ExchangeError> {
    let (client_id, secret) = match basic_credentials(headers)? {
        Some((id, secret)) => {
            let other_id = present(&request.client_id).is_some_and(|c| c != id);
            if request.client_secret.is_some() || other_id {
                return Err(ExchangeError::TwoClientAuthentications);
            }
            (id, Some(secret))
        }
        None => {
            let id = present(&request.client_id).ok_or(ExchangeError::NoClient)?;
            (id.to_owned(), request.client_secret.clone())
        }
    };
    let client = shared
        .oauth_clients
        .get(&client_id)
        .ok_or(ExchangeError::UnknownClient)?;
    let secret = secret
        .filter(|s| !s.is_empty())
        .ok_or(ExchangeError::MissingSecret)?;
    if !client.secret_matches(&secret) {
        return Err(ExchangeError::WrongSecret);
    }
    Ok(client_id)
}

/// `Authorization: Basic base64(id ":" secret)`, each part form-URL-encoded first (RFC 6749
/// §2.3.1). `None` without a Basic header.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ExchangeError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ExchangeError::MalformedBasic)?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(ExchangeError::MalformedBasic)?;
    let (id, secret) = decoded
        .split_once(':')
        .ok_or(ExchangeError::MalformedBasic)?;
    // Form encoding: `+` is a space, `%2B` a plus.
    let form_decode = |part: &str| percent_decode(&part.replace('+', " "));
    match (form_decode(id), form_decode(secret)) {
        (Some(id), Some(secret)) if !id.is_empty() => Ok(Some((id, secret))),
        _ => Err(ExchangeError::MalformedBasic),
    }
}

pub(super) fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Google's token response for `grant`: a `ya29.` access token tokeninfo and userinfo know, an
/// ID token signed with the current key, and for offline access a refresh token.
pub(super) fn tokens(shared: &Shared, grant: &Grant) -> Response {
    let now = now();
    let user = &grant.user;
    let scope = grant.scopes.granted();
    let (access_token, _) = shared.tokens.mint(
        AccessTokenSpec {
            sub: user.sub.clone(),
            email: grant.scopes.email.then(|| user.email.clone()),
            email_verified: user.email_verified,
            hd: user.hd.clone(),
            name: user.name.clone().filter(|_| grant.scopes.profile),
            aud: grant.client_id.clone(),
            azp: None,
            scope: scope.clone(),
            expires_in: ACCESS_TOKEN_LIFETIME,
        },
        now,
    );
    let claims = id_token_claims(&shared.issuer, grant, &access_token, now);
    let id_token = match shared.keys.current().sign(&claims, None, None) {
        Ok(token) => token,
        Err(err) => {
            tracing::error!(%err, "signing an ID token failed");
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_failure",
                "Internal error",
            );
        }
    };
    let mut body = json!({
        "access_token": access_token,
        "expires_in": ACCESS_TOKEN_LIFETIME,
        "scope": scope,
        "token_type": "Bearer",
        "id_token": id_token,
    });
    if grant.offline {
        // Redeemable with the refresh_token grant (`refresh_grant.rs`) while the account is
        // active; a refresh answers without a new refresh token, as Google does.
        let refresh_token = random_with_prefix("1//0", 99);
        shared.refresh_tokens.insert(&refresh_token, grant);
        body["refresh_token"] = json!(refresh_token);
    }
    let mut response = json_response(StatusCode::OK, &body);
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The ID token's claims, as Google sets them: `email` and `email_verified` with the `email`
/// scope, `name` with `profile`, `hd` for Workspace accounts whatever the scopes, `nonce` when
/// the authorization request carried one.
fn id_token_claims(issuer: &str, grant: &Grant, access_token: &str, now: i64) -> Value {
    let user = &grant.user;
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(issuer));
    claims.insert("azp".into(), json!(grant.client_id));
    claims.insert("aud".into(), json!(grant.client_id));
    claims.insert("sub".into(), json!(user.sub));
    if let Some(hd) = &user.hd {
        claims.insert("hd".into(), json!(hd));
    }
    if grant.scopes.email {
        claims.insert("email".into(), json!(user.email));
        claims.insert("email_verified".into(), json!(user.email_verified));
    }
    claims.insert("at_hash".into(), json!(at_hash(access_token)));
    if let Some(nonce) = &grant.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    if let (true, Some(name)) = (grant.scopes.profile, &user.name) {
        claims.insert("name".into(), json!(name));
    }
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ID_TOKEN_LIFETIME));
    Value::Object(claims)
}

/// OpenID Connect's `at_hash` for RS256: base64url of the left half of SHA-256(token).
fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encoded = STANDARD.encode("web%3A1+x:s%2Bcr+t%25");
        assert_eq!(
            basic_credentials(&basic(&format!("Basic {encoded}"))),
            Ok(Some(("web:1 x".to_owned(), "s+cr t%".to_owned())))
        );
        assert_eq!(basic_credentials(&HeaderMap::new()), Ok(None));
        assert_eq!(basic_credentials(&basic("Bearer ya29.x")), Ok(None));
        for bad in [
            "Basic !!!".to_owned(),
            format!("Basic {}", STANDARD.encode("no-colon")),
            format!("Basic {}", STANDARD.encode(":secret")),
            format!("Basic {}", STANDARD.encode("id:%zz")),
        ] {
            assert_eq!(
                basic_credentials(&basic(&bad)),
                Err(ExchangeError::MalformedBasic),
                "{bad}"
            );
        }
    }

    /// The example of OpenID Connect Core's appendix A.3 (its token is signed with RS256).
    #[test]
    fn at_hash_of_the_openid_example() {
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
