//! The outcome of one authorization, before it is turned into an Envoy response.

use std::sync::Arc;

use crate::{
    credentials::CredentialError, google::TokenError, policy::Forbidden, principal::Principal,
};

/// What we decided. Cheap to clone: the cache hands out copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through with this identity.
    Allow(Arc<Principal>),
    /// The token is valid but the account may not pass (403).
    Forbidden(Arc<Principal>, Forbidden),
    /// No valid token (401, or 400 for a token in the query string).
    Unauthenticated(Unauthenticated),
}

/// Why a request carries no valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    Credential(CredentialError),
    Token(TokenError),
}

impl Verdict {
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Verdict::Allow(p) | Verdict::Forbidden(p, _) => Some(p),
            Verdict::Unauthenticated(_) => None,
        }
    }

    /// A stable, low-cardinality reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Allow(_) => "allowed",
            Verdict::Forbidden(_, why) => why.reason(),
            Verdict::Unauthenticated(Unauthenticated::Credential(e)) => e.reason(),
            Verdict::Unauthenticated(Unauthenticated::Token(e)) => e.reason(),
        }
    }

    pub fn decision(&self) -> &'static str {
        match self {
            Verdict::Allow(_) => "allow",
            Verdict::Forbidden(..) => "forbidden",
            Verdict::Unauthenticated(_) => "unauthenticated",
        }
    }
}
