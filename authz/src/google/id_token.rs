//! Google ID tokens (RS256 JWTs), verified locally: no network on the hot path except the
//! rate-limited JWKS refetch for an unknown `kid`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{Jwks, Settings, TokenError, VerifyError};
use crate::principal::{Parts, Principal, TokenSource, unix_now};

/// The JOSE header fields we read. Parsed by us, not by `jsonwebtoken`, so that `none`, `HS256`
/// and unknown algorithms are told apart from garbage.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    // `sub`, `exp` and `iat` are required; they are optional here so that a missing one is
    // reported as `MissingClaim`, not as an unreadable token.
    sub: Option<String>,
    email: Option<String>,
    #[serde(default, deserialize_with = "super::access_token::lenient_bool")]
    email_verified: bool,
    hd: Option<String>,
    azp: Option<String>,
    nonce: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
}

pub async fn verify(
    token: &str,
    jwks: &Jwks,
    settings: &Settings,
) -> Result<Principal, VerifyError> {
    verify_claims(token, jwks, settings)
        .await
        .map(|(principal, _)| principal)
}

/// [`verify`], and the token's `nonce` must equal `nonce` (compared in constant time).
pub async fn verify_with_nonce(
    token: &str,
    jwks: &Jwks,
    settings: &Settings,
    nonce: &str,
) -> Result<Principal, VerifyError> {
    use subtle::ConstantTimeEq as _;
    let (principal, claimed) = verify_claims(token, jwks, settings).await?;
    let matches =
        claimed.is_some_and(|claimed| bool::from(claimed.as_bytes().ct_eq(nonce.as_bytes())));
    if !matches {
        return Err(TokenError::WrongNonce.into());
    }
    Ok(principal)
}

async fn verify_claims(
    token: &str,
    jwks: &Jwks,
    settings: &Settings,
) -> Result<(Principal, Option<String>), VerifyError> {
    let header = read_header(token)?;
    if header.alg != "RS256" {
        return Err(TokenError::UnsupportedAlgorithm.into());
    }
    let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
    let key = jwks.key(&kid).await?.ok_or(TokenError::UnknownKeyId)?;

    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = settings.clock_skew.as_secs();
    validation.set_audience(&settings.client_ids);
    validation.set_issuer(&settings.issuers);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| map_error(e.kind()))?
        .claims;

    let (Some(sub), Some(expires_at), Some(issued_at)) = (claims.sub, claims.exp, claims.iat)
    else {
        return Err(TokenError::MissingClaim.into());
    };
    if issued_at > unix_now() + settings.clock_skew.as_secs() {
        return Err(TokenError::NotYetValid.into());
    }
    // The library does not check azp; Google sets it to the client that asked for the token.
    if let Some(azp) = &claims.azp {
        if !settings.client_ids.iter().any(|id| id == azp) {
            return Err(TokenError::WrongAuthorizedParty.into());
        }
    }
    let principal = Principal::new(Parts {
        sub: &sub,
        email: claims.email.as_deref(),
        email_verified: claims.email_verified,
        hosted_domain: claims.hd.as_deref(),
        expires_at,
        source: TokenSource::GoogleIdToken,
        session: None,
    });
    Ok((principal, claims.nonce))
}

fn read_header(token: &str) -> Result<Header, TokenError> {
    let encoded = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            TokenError::UnsupportedAlgorithm
        }
        _ => TokenError::Malformed,
    }
}
