//! Proof Key for Code Exchange (RFC 7636), as Google's authorization server applies it: a
//! `code_challenge` at the authorization endpoint, its `code_verifier` at the token endpoint.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// How the verifier is turned into the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// The challenge is the verifier itself (Google still allows it).
    Plain,
    /// The challenge is base64url(SHA-256(verifier)).
    S256,
}

/// A challenge from an authorization request, bound to the code it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    method: Method,
    value: String,
}

/// Why a challenge is refused; the text goes into nothing but the stand-in's own log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChallengeError {
    #[error("invalid code_challenge_method")]
    Method,
    #[error("invalid code_challenge")]
    Value,
    #[error("code_challenge_method without code_challenge")]
    MethodOnly,
}

impl Challenge {
    /// The challenge of an authorization request, if it carries one. A missing method means
    /// `plain`, as RFC 7636 and Google's documentation both say.
    pub(crate) fn parse(
        value: Option<&str>,
        method: Option<&str>,
    ) -> Result<Option<Self>, ChallengeError> {
        let Some(value) = value else {
            return match method {
                Some(_) => Err(ChallengeError::MethodOnly),
                None => Ok(None),
            };
        };
        let method = match method.unwrap_or("plain") {
            "plain" => Method::Plain,
            "S256" => Method::S256,
            _ => return Err(ChallengeError::Method),
        };
        // An S256 challenge is a base64url SHA-256: exactly 43 characters.
        let fits = match method {
            Method::Plain => is_verifier_shaped(value),
            Method::S256 => value.len() == 43 && is_verifier_shaped(value),
        };
        if !fits {
            return Err(ChallengeError::Value);
        }
        Ok(Some(Self {
            method,
            value: value.to_owned(),
        }))
    }

    /// Whether `verifier` answers the challenge. Constant time in the challenge's content, as
    /// the comparison stands between a stolen code and its tokens.
    pub(crate) fn verify(&self, verifier: &str) -> bool {
        if !is_verifier_shaped(verifier) {
            return false;
        }
        let expected = match self.method {
            Method::Plain => verifier.to_owned(),
            Method::S256 => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        };
        let (a, b) = (Sha256::digest(expected), Sha256::digest(&self.value));
        a.ct_eq(&b).into()
    }
}

/// 43 to 128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
fn is_verifier_shaped(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn s256() {
        let challenge = Challenge::parse(Some(CHALLENGE), Some("S256"))
            .unwrap()
            .unwrap();
        assert!(challenge.verify(VERIFIER));
        assert!(!challenge.verify(CHALLENGE));
        assert!(!challenge.verify(&VERIFIER.replace('d', "e")));
        assert!(!challenge.verify(""));
    }

    #[test]
    fn plain_is_the_default() {
        let challenge = Challenge::parse(Some(VERIFIER), None).unwrap().unwrap();
        assert!(challenge.verify(VERIFIER));
        assert!(!challenge.verify(CHALLENGE));
    }

    #[test]
    fn refused_challenges() {
        assert_eq!(Challenge::parse(None, None), Ok(None));
        for (value, method, error) in [
            (None, Some("S256"), ChallengeError::MethodOnly),
            (Some(CHALLENGE), Some("s256"), ChallengeError::Method),
            (Some(CHALLENGE), Some("S512"), ChallengeError::Method),
            (Some("short"), Some("S256"), ChallengeError::Value),
            (Some("a".repeat(129).as_str()), None, ChallengeError::Value),
            (
                Some(&format!("{CHALLENGE}=")),
                Some("plain"),
                ChallengeError::Value,
            ),
        ] {
            assert_eq!(
                Challenge::parse(value, method),
                Err(error),
                "{value:?} {method:?}"
            );
        }
    }
}
