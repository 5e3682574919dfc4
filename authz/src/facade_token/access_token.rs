//! Our access tokens: ES256 JWTs (RFC 9068 shape) with `aud` = the URL of the one MCP server
//! (protected resource) they were issued for, verified locally on the Check path with no
//! network. Any of our resources verifies here; the authorizer then refuses the token at every
//! resource but its own.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use super::keys::SigningKeys;
use crate::random::random_token;
use crate::{
    errors::TokenError,
    principal::{Issued, Parts, Principal, TokenSource, unix_now},
};

/// The claims of an access token we issue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub hd: Option<String>,
    pub client_id: String,
    /// The name the client registered (or its metadata document gives), unverified: for
    /// audit events, which name the application that acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub scope: String,
    /// The sign-in session (refresh-token family): revoking it refuses this token.
    pub sid: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

/// Who a token is for, as established at sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub sub: String,
    pub email: String,
    pub hd: Option<String>,
}

/// What verification needs besides the keys.
#[derive(Debug, Clone)]
pub struct Audience {
    pub issuer: String,
    /// Every protected resource's URL: the audiences a token of ours may name.
    pub resources: Vec<String>,
    pub leeway: u64,
}

/// What an access token is for: whom, at which MCP server, through which client.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The protected resource's URL: the token's `aud`.
    pub resource: &'a str,
    pub user: &'a User,
    pub client_id: &'a str,
    pub client_name: Option<&'a str>,
    pub scope: &'a str,
    pub session: &'a str,
}

/// Mints an access token for `grant`, valid `ttl` seconds.
pub fn issue(
    keys: &SigningKeys,
    audience: &Audience,
    grant: Grant<'_>,
    ttl: u64,
) -> Result<(String, AccessClaims), jsonwebtoken::errors::Error> {
    let now = unix_now();
    let user = grant.user;
    let claims = AccessClaims {
        iss: audience.issuer.clone(),
        aud: grant.resource.to_string(),
        sub: user.sub.clone(),
        email: user.email.clone(),
        hd: user.hd.clone(),
        client_id: grant.client_id.to_string(),
        client_name: grant.client_name.map(str::to_string),
        scope: grant.scope.to_string(),
        sid: grant.session.to_string(),
        jti: random_token(),
        iat: now,
        exp: now + ttl,
    };
    let (kid, key) = keys.signer();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_string());
    header.typ = Some("at+jwt".to_string());
    let token = jsonwebtoken::encode(&header, &claims, key)?;
    Ok((token, claims))
}

/// Whether `token` is a JWT signed by one of our keys (so it is ours to verify, not Google's).
/// Reads only the header; proves nothing.
pub fn is_ours(keys: &SigningKeys, token: &str) -> bool {
    read_kid(token).is_some_and(|kid| keys.is_ours(&kid))
}

/// Verifies one of our access tokens. `expired_ok` is for revocation, which must accept a
/// token whatever its age.
pub fn verify(
    keys: &SigningKeys,
    audience: &Audience,
    token: &str,
    expired_ok: bool,
) -> Result<AccessClaims, TokenError> {
    let kid = read_kid(token).ok_or(TokenError::Malformed)?;
    let key = keys.verifier(&kid).ok_or(TokenError::UnknownKeyId)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = audience.leeway;
    validation.set_audience(&audience.resources);
    validation.set_issuer(&[&audience.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.validate_exp = !expired_ok;
    let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidAudience => TokenError::WrongAudience,
            ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
            ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
            _ => TokenError::Malformed,
        })?
        .claims;
    if claims.iat > unix_now() + audience.leeway {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// The principal an access token of ours speaks for, at its audience only.
pub fn principal(claims: AccessClaims) -> Principal {
    let parts = Parts {
        sub: &claims.sub,
        email: Some(&claims.email),
        // Checked by Google at sign-in; we issue nothing for an unverified address.
        email_verified: true,
        hosted_domain: claims.hd.as_deref(),
        expires_at: claims.exp,
        source: TokenSource::Facade,
        session: Some(&claims.sid),
    };
    let issued = Issued {
        audience: &claims.aud,
        client: client_label(&claims.client_id),
        client_name: claims.client_name.as_deref(),
    };
    Principal::issued(parts, issued)
}

/// How audit events name a client: a metadata document's URL says which product it is; a
/// registered client id (a sealed registration, hundreds of characters) is cut to the prefix
/// the sign-in log shows too.
pub fn client_label(client_id: &str) -> &str {
    let max = if client_id.starts_with("https://") {
        200
    } else {
        48
    };
    let end = client_id
        .char_indices()
        .nth(max)
        .map_or(client_id.len(), |(i, _)| i);
    &client_id[..end]
}

fn read_kid(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        kid: Option<String>,
    }
    let encoded = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let header: Header = serde_json::from_slice(&bytes).ok()?;
    (header.alg == "ES256").then_some(header.kid).flatten()
}
