//! Access tokens for Google's APIs (Directory, Cloud Identity, IAM Credentials), as issued by
//! the token endpoint, STS and `generateAccessToken`. Unlike the tokens of `tokens`, which stand
//! for end users, these stand for a service account or a federated workload: each API checks
//! who the bearer is, what it may impersonate and which scopes it holds.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::http::{HeaderMap, header};

use crate::tokens::random_token;

/// Who a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A service account (lowercased email), acting as itself or, with `subject`, as that
    /// Workspace user through domain-wide delegation.
    ServiceAccount {
        email: String,
        subject: Option<String>,
    },
    /// A workload federated through STS: its provider `audience`, and the service account its
    /// binding lets it impersonate.
    Federated {
        audience: String,
        service_account: String,
    },
}

#[derive(Debug)]
pub(crate) struct ApiToken {
    pub(crate) principal: Principal,
    pub(crate) scopes: Vec<String>,
    pub(crate) exp: i64,
}

impl ApiToken {
    /// Whether the token holds any of `scopes`.
    pub(crate) fn has_any_scope(&self, scopes: &[&str]) -> bool {
        self.scopes.iter().any(|s| scopes.contains(&s.as_str()))
    }

    /// The service account behind the token, when it acts as itself (no delegation).
    pub(crate) fn service_account(&self) -> Option<&str> {
        match &self.principal {
            Principal::ServiceAccount {
                email,
                subject: None,
            } => Some(email),
            _ => None,
        }
    }
}

/// Every API token issued so far; expired ones stay and simply stop answering.
#[derive(Default)]
pub(crate) struct ApiTokens(Mutex<HashMap<String, Arc<ApiToken>>>);

impl ApiTokens {
    /// Stores a new token valid for `lifetime` seconds; returns it with its expiry.
    pub(crate) fn issue(
        &self,
        principal: Principal,
        scopes: Vec<String>,
        lifetime: i64,
        now: i64,
    ) -> (String, i64) {
        let token = random_token();
        let exp = now.saturating_add(lifetime);
        let issued = Arc::new(ApiToken {
            principal,
            scopes,
            exp,
        });
        self.lock().insert(token.clone(), issued);
        (token, exp)
    }

    /// The live token presented as `Authorization: Bearer` in `headers`.
    pub(crate) fn bearer(&self, headers: &HeaderMap, now: i64) -> Option<Arc<ApiToken>> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        self.lock()
            .get(token.trim())
            .filter(|t| t.exp > now)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ApiToken>>> {
        self.0.lock().expect("API token mutex poisoned")
    }
}
