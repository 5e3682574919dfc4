//! The outcome of one authorization, before it is turned into an Envoy response.

use std::{
    collections::HashSet,
    hash::Hash,
    sync::{Arc, Mutex},
};

use crate::{
    credentials::CredentialError,
    errors::TokenError,
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
    /// Several MCP servers are declared and the path is under none of them (404): decided
    /// before the token, since no server's policy applies.
    NotServed,
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
            Verdict::Unauthenticated(_) | Verdict::NotServed => None,
        }
    }

    /// A stable, low-cardinality reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::Allow(..) => "allowed",
            Verdict::Forbidden(_, refusal) => refusal.why.reason(),
            Verdict::Unauthenticated(Unauthenticated::Credential(e)) => e.reason(),
            Verdict::Unauthenticated(Unauthenticated::Token(e)) => e.reason(),
            Verdict::NotServed => "no_mcp_server",
        }
    }

    pub fn decision(&self) -> &'static str {
        match self {
            Verdict::Allow(..) => "allow",
            Verdict::Forbidden(..) => "forbidden",
            Verdict::Unauthenticated(_) => "unauthenticated",
            Verdict::NotServed => "not_found",
        }
    }

    /// The policy, rule and group behind the verdict, when a policy was applied.
    pub fn policy(&self) -> Option<(&str, &str, Option<&str>)> {
        match self {
            Verdict::Allow(_, grant) => Some((&grant.policy, &grant.rule, grant.group.as_deref())),
            Verdict::Forbidden(_, refusal) => {
                Some((&refusal.policy, &refusal.rule, refusal.group.as_deref()))
            }
            Verdict::Unauthenticated(_) | Verdict::NotServed => None,
        }
    }
}

/// One shared copy of each distinct grant and refusal. A million cached verdicts hold only a
/// handful of distinct outcomes (policy × rule × group × reason, all named by the config), so
/// each verdict points at a shared copy instead of owning one. Built with the rules, so a reload
/// starts afresh; past `LIMIT` distinct outcomes new ones are simply not shared.
#[derive(Debug, Default)]
pub struct Outcomes {
    grants: Mutex<HashSet<Arc<Grant>>>,
    refusals: Mutex<HashSet<Arc<Refusal>>>,
}

impl Outcomes {
    const LIMIT: usize = 4096;

    pub fn grant(&self, grant: Grant) -> Arc<Grant> {
        share(&self.grants, grant)
    }

    pub fn refusal(&self, refusal: Refusal) -> Arc<Refusal> {
        share(&self.refusals, refusal)
    }
}

fn share<T: Hash + Eq>(set: &Mutex<HashSet<Arc<T>>>, value: T) -> Arc<T> {
    let mut set = set
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(shared) = set.get(&value) {
        return shared.clone();
    }
    let value = Arc::new(value);
    if set.len() < Outcomes::LIMIT {
        set.insert(value.clone());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Forbidden;

    #[test]
    fn equal_outcomes_share_one_copy() {
        let outcomes = Outcomes::default();
        let grant = |rule: &str| Grant {
            policy: Arc::from("default"),
            rule: Arc::from(rule),
            group: None,
        };
        let a = outcomes.grant(grant("policy"));
        assert!(Arc::ptr_eq(&a, &outcomes.grant(grant("policy"))));
        assert!(!Arc::ptr_eq(&a, &outcomes.grant(grant("tools"))));
        let refusal = || Refusal {
            policy: Arc::from("default"),
            rule: Arc::from("policy"),
            why: Forbidden::NotInGroups,
            group: Some(Arc::from("eng@example.com")),
        };
        let r = outcomes.refusal(refusal());
        assert!(Arc::ptr_eq(&r, &outcomes.refusal(refusal())));
    }
}
