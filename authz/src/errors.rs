//! The failures every layer passes up: a token we refuse (a 401) and a backend we cannot ask
//! (a 503, never a 401). Defined below every client and cache so that each can name them
//! without depending on the others.

/// Google's verdict on a token it could judge: the token is not valid for us (a 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("token algorithm is not RS256")]
    UnsupportedAlgorithm,
    #[error("token header names no key id")]
    MissingKeyId,
    #[error("token is signed by an unknown key")]
    UnknownKeyId,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not one of our client ids")]
    WrongAudience,
    #[error("token authorized party is not one of our client ids")]
    WrongAuthorizedParty,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("Google does not recognise the access token")]
    Rejected,
    #[error("tokeninfo and userinfo disagree about the subject")]
    SubjectMismatch,
    #[error("token nonce does not match the sign-in")]
    WrongNonce,
    #[error("token has been revoked")]
    Revoked,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed_token",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::MissingKeyId => "missing_kid",
            TokenError::UnknownKeyId => "unknown_kid",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::WrongAuthorizedParty => "wrong_azp",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::MissingClaim => "missing_claim",
            TokenError::Rejected => "rejected_by_google",
            TokenError::SubjectMismatch => "subject_mismatch",
            TokenError::WrongNonce => "wrong_nonce",
            TokenError::Revoked => "revoked",
        }
    }
}

/// Google could not be asked or did not answer usably: we cannot decide (a 503, never a 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint}: {problem}")]
pub struct BackendError {
    pub endpoint: Endpoint,
    pub problem: String,
}

/// Which Google endpoint failed, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Discovery,
    Jwks,
    Tokeninfo,
    Userinfo,
    /// Group membership (Directory or Cloud Identity, and the credentials to call them).
    Groups,
    /// Not Google: this replica's copy of our own revocations is stale, so tokens of ours
    /// cannot be judged.
    Revocations,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Discovery => "discovery",
            Endpoint::Jwks => "jwks",
            Endpoint::Tokeninfo => "tokeninfo",
            Endpoint::Userinfo => "userinfo",
            Endpoint::Groups => "groups",
            Endpoint::Revocations => "revocations",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of verifying a token: a principal, a verdict against the token, or no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}
