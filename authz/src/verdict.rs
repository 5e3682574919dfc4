//! The outcome of one authorization, before it is turned into an Envoy response.

use std::sync::Arc;

use crate::{
    credentials::CredentialError,
    google::TokenError,
    policy::{Grant, Refusal},
    principal::Principal,
};

/// What we decided. Cheap to clone: the cache hands out copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through with this identity.
    Allow(Arc<Principal>, Arc<Grant>),
    /// The token is valid but the policy refuses the request (403).
    Forbidden(Arc<Principal>, Arc<Refusal>),
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
            Verdict::Allow(p, _) | Verdict::Forbidden(p, _) => Some(p),
            Verdict::Unauthenticated(_) => None,
        }
    }

    /// A stable, low-cardinality reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Allow(..) => "allowed",
            Verdict::Forbidden(_, refusal) => refusal.why.reason(),
            Verdict::Unauthenticated(Unauthenticated::Credential(e)) => e.reason(),
            Verdict::Unauthenticated(Unauthenticated::Token(e)) => e.reason(),
        }
    }

    pub fn decision(&self) -> &'static str {
        match self {
            Verdict::Allow(..) => "allow",
            Verdict::Forbidden(..) => "forbidden",
            Verdict::Unauthenticated(_) => "unauthenticated",
        }
    }

    /// The policy, rule and group behind the verdict, when a policy was applied.
    pub fn policy(&self) -> Option<(&str, &str, Option<&str>)> {
        match self {
            Verdict::Allow(_, grant) => Some((&grant.policy, &grant.rule, grant.group.as_deref())),
            Verdict::Forbidden(_, refusal) => {
                Some((&refusal.policy, &refusal.rule, refusal.group.as_deref()))
            }
            Verdict::Unauthenticated(_) => None,
        }
    }
}
