//! Google access tokens (opaque `ya29.` strings), verified by asking Google: tokeninfo for the
//! audience and expiry, userinfo for the Workspace domain (`hd`) and `email_verified`. The two
//! calls run concurrently; the verdict cache makes sure a token costs one round trip, not one
//! per request.

use reqwest::StatusCode;
use serde::{Deserialize, Deserializer};
use url::Url;

use super::{BackendError, Endpoint, Settings, TokenError, VerifyError};
use crate::{
    metrics::{GoogleEndpoint, Metrics},
    principal::{Parts, Principal, TokenSource, unix_now},
};

/// The HTTP client and where its calls are recorded.
type Http<'a> = (&'a reqwest::Client, &'a Metrics);

/// tokeninfo's answer. Google sends numbers and booleans as strings (`"3599"`, `"true"`).
#[derive(Deserialize)]
struct TokenInfo {
    aud: Option<String>,
    azp: Option<String>,
    sub: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct UserInfo {
    sub: String,
    email: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    email_verified: bool,
    hd: Option<String>,
}

pub async fn verify(
    token: &str,
    http: Http<'_>,
    settings: &Settings,
    userinfo_url: &Url,
) -> Result<Principal, VerifyError> {
    // tokeninfo first, and userinfo only once it accepts: a junk token costs one call to
    // Google, not two. It is the authority on whether the token is ours and alive.
    let info = tokeninfo(token, http, &settings.tokeninfo_url).await?;
    let Some(aud) = &info.aud else {
        // A 200 without an audience is a broken answer, not a verdict on the token: caching a
        // denial for it would lock a user out over a Google glitch.
        return Err(BackendError {
            endpoint: Endpoint::Tokeninfo,
            problem: "answer without aud".into(),
        }
        .into());
    };
    if !settings.client_ids.contains(aud) {
        return Err(TokenError::WrongAudience.into());
    }
    if let Some(azp) = &info.azp {
        if !settings.client_ids.contains(azp) {
            return Err(TokenError::WrongAuthorizedParty.into());
        }
    }
    let now = unix_now();
    let expires_at = info
        .exp
        .or_else(|| info.expires_in.map(|left| now + left))
        .ok_or_else(|| BackendError {
            endpoint: Endpoint::Tokeninfo,
            problem: "answer without exp or expires_in".into(),
        })?;
    if expires_at <= now {
        return Err(TokenError::Expired.into());
    }
    let user = userinfo(token, http, userinfo_url).await?;
    if info.sub.as_deref().is_some_and(|sub| sub != user.sub) {
        return Err(TokenError::SubjectMismatch.into());
    }
    Ok(Principal::new(Parts {
        sub: &user.sub,
        email: user.email.as_deref(),
        email_verified: user.email_verified,
        hosted_domain: user.hd.as_deref(),
        expires_at,
        source: TokenSource::GoogleAccessToken,
        session: None,
    }))
}

/// POST, not GET: a token in a URL ends up in access logs along the way.
async fn tokeninfo(
    token: &str,
    (http, metrics): Http<'_>,
    url: &Url,
) -> Result<TokenInfo, VerifyError> {
    let send = http
        .post(url.clone())
        .form(&[("access_token", token)])
        .send();
    let response = metrics
        .google_http(GoogleEndpoint::Tokeninfo, send)
        .await
        .map_err(|e| unreachable(Endpoint::Tokeninfo, &e))?;
    match response.status() {
        StatusCode::OK => response
            .json()
            .await
            .map_err(|e| bad_body(Endpoint::Tokeninfo, &e)),
        // Google answers 400 invalid_token for unknown, expired and revoked tokens.
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => Err(TokenError::Rejected.into()),
        status => Err(bad_status(Endpoint::Tokeninfo, status)),
    }
}

async fn userinfo(
    token: &str,
    (http, metrics): Http<'_>,
    url: &Url,
) -> Result<UserInfo, VerifyError> {
    let send = http.get(url.clone()).bearer_auth(token).send();
    let response = metrics
        .google_http(GoogleEndpoint::Userinfo, send)
        .await
        .map_err(|e| unreachable(Endpoint::Userinfo, &e))?;
    match response.status() {
        StatusCode::OK => response
            .json()
            .await
            .map_err(|e| bad_body(Endpoint::Userinfo, &e)),
        StatusCode::UNAUTHORIZED => Err(TokenError::Rejected.into()),
        status => Err(bad_status(Endpoint::Userinfo, status)),
    }
}

// reqwest's Display never includes the request body or headers, so no token can leak through it.
fn unreachable(endpoint: Endpoint, error: &reqwest::Error) -> VerifyError {
    let problem = if error.is_timeout() {
        "timed out".to_string()
    } else {
        format!("request failed: {}", without_url(error))
    };
    BackendError { endpoint, problem }.into()
}

fn bad_body(endpoint: Endpoint, error: &reqwest::Error) -> VerifyError {
    BackendError {
        endpoint,
        problem: format!("unreadable response: {}", without_url(error)),
    }
    .into()
}

fn bad_status(endpoint: Endpoint, status: StatusCode) -> VerifyError {
    BackendError {
        endpoint,
        problem: format!("HTTP {status}"),
    }
    .into()
}

/// The URL of a GET could carry a query; ours never does, but keep errors URL-free anyway.
fn without_url(error: &reqwest::Error) -> String {
    let mut error_text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(cause) = source {
        if !error_text.is_empty() {
            error_text.push_str(": ");
        }
        error_text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error_text.is_empty() {
        error_text = "unknown error".into();
    }
    error_text
}

/// `true`, `"true"` (any case) -> true; anything else -> false.
pub(super) fn lenient_bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

/// `3599` or `"3599"`; anything unparsable is treated as absent.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokeninfo_accepts_strings_and_numbers() {
        let info: TokenInfo = serde_json::from_str(
            r#"{"aud":"a","azp":"a","sub":"1","exp":"1767225600","expires_in":"3599","email_verified":"true"}"#,
        )
        .unwrap();
        assert_eq!(info.exp, Some(1_767_225_600));
        assert_eq!(info.expires_in, Some(3599));
        let info: TokenInfo =
            serde_json::from_str(r#"{"exp":1767225600,"expires_in":"x"}"#).unwrap();
        assert_eq!(info.exp, Some(1_767_225_600));
        assert_eq!(info.expires_in, None);
    }

    #[test]
    fn userinfo_email_verified_is_lenient_and_fails_closed() {
        for (json, expected) in [
            (r#"{"sub":"1","email_verified":true}"#, true),
            (r#"{"sub":"1","email_verified":"TRUE"}"#, true),
            (r#"{"sub":"1","email_verified":"false"}"#, false),
            (r#"{"sub":"1","email_verified":1}"#, false),
            (r#"{"sub":"1"}"#, false),
        ] {
            let user: UserInfo = serde_json::from_str(json).unwrap();
            assert_eq!(user.email_verified, expected, "{json}");
        }
    }
}
