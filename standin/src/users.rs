//! The Google accounts that can sign in at the authorization endpoint, registered by tests.
//!
//! An account is a Workspace (or Cloud Identity) account when it has an `hd`, a consumer account
//! otherwise, whatever its email's domain: a relying party must decide the domain from `hd`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// Body of `POST /_standin/user`, and the argument of
/// [`StandIn::add_user`](crate::StandIn::add_user).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub email: String,
    /// The stable Google id; default: 21 digits derived from the lowercased email, so the same
    /// email gets the same `sub` in every run.
    #[serde(default)]
    pub sub: Option<String>,
    /// The Workspace domain; absent for a consumer account.
    #[serde(default)]
    pub hd: Option<String>,
    /// Default `true`.
    #[serde(default = "yes")]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
    /// A suspended account cannot sign in, its refresh tokens are refused (`invalid_grant`)
    /// and its access tokens stop working, as at Google. Default `false`.
    #[serde(default)]
    pub suspended: bool,
    /// Archived (a former employee's account kept for its data): the Directory API says so.
    /// Default `false`.
    #[serde(default)]
    pub archived: bool,
    /// The organizational unit, as the Directory API's `orgUnitPath`. Default `/`.
    #[serde(default)]
    pub org_unit: Option<String>,
}

fn yes() -> bool {
    true
}

impl UserSpec {
    /// A verified account with a derived `sub`, no name, and `hd` when given.
    pub fn new(email: &str, hd: Option<&str>) -> Self {
        Self {
            email: email.to_owned(),
            sub: None,
            hd: hd.map(str::to_owned),
            email_verified: true,
            name: None,
            suspended: false,
            archived: false,
            org_unit: None,
        }
    }
}

/// A registered account, as the ID token and userinfo describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    /// As registered (Google keeps the case the user chose).
    pub(crate) email: String,
    pub(crate) sub: String,
    pub(crate) hd: Option<String>,
    pub(crate) email_verified: bool,
    pub(crate) name: Option<String>,
    pub(crate) suspended: bool,
    pub(crate) archived: bool,
    pub(crate) org_unit: String,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UserError {
    #[error("email must be an email address")]
    Email,
    #[error("sub, hd and name must not be empty when given")]
    Empty,
}

/// The registered accounts, by lowercased email (Google matches emails without case), and the
/// `sub`s of accounts suspended or deleted, whose access tokens Google no longer honours.
#[derive(Default)]
pub(crate) struct Users(Mutex<Accounts>);

#[derive(Default)]
struct Accounts {
    by_email: HashMap<String, Arc<User>>,
    disabled: HashSet<String>,
}

impl Users {
    /// Registers (or replaces) the account `spec` describes; returns it.
    pub(crate) fn add(&self, spec: UserSpec) -> Result<Arc<User>, UserError> {
        let email = spec.email.trim().to_owned();
        if email
            .split_once('@')
            .is_none_or(|(l, d)| l.is_empty() || d.is_empty())
        {
            return Err(UserError::Email);
        }
        let blank = |v: &Option<String>| v.as_deref().is_some_and(|v| v.trim().is_empty());
        if blank(&spec.sub) || blank(&spec.hd) || blank(&spec.name) {
            return Err(UserError::Empty);
        }
        let key = email.to_lowercase();
        let user = Arc::new(User {
            sub: spec.sub.unwrap_or_else(|| derived_sub(&key)),
            email,
            hd: spec.hd.map(|hd| hd.to_lowercase()),
            email_verified: spec.email_verified,
            name: spec.name,
            suspended: spec.suspended,
            archived: spec.archived,
            org_unit: spec.org_unit.unwrap_or_else(|| "/".to_owned()),
        });
        let mut accounts = self.lock();
        if user.suspended {
            accounts.disabled.insert(user.sub.clone());
        } else {
            accounts.disabled.remove(&user.sub);
        }
        accounts.by_email.insert(key, user.clone());
        Ok(user)
    }

    pub(crate) fn get(&self, email: &str) -> Option<Arc<User>> {
        self.lock()
            .by_email
            .get(&email.trim().to_lowercase())
            .cloned()
    }

    /// Deletes an account: it can no longer sign in, and its tokens stop working.
    pub(crate) fn remove(&self, email: &str) -> Option<Arc<User>> {
        let mut accounts = self.lock();
        let user = accounts.by_email.remove(&email.trim().to_lowercase())?;
        accounts.disabled.insert(user.sub.clone());
        Some(user)
    }

    /// Whether the account with this `sub` was suspended or deleted.
    pub(crate) fn is_disabled(&self, sub: &str) -> bool {
        self.lock().disabled.contains(sub)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Accounts> {
        self.0.lock().expect("user mutex poisoned")
    }
}

/// `1` and 20 digits of SHA-256(email): the shape of Google's numeric ids, stable per email.
fn derived_sub(email: &str) -> String {
    let digest = Sha256::digest(email.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    format!("1{:020}", u64::from_be_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts() {
        let users = Users::default();
        let ada = users
            .add(UserSpec::new("Ada@Example.com", Some("Example.com")))
            .unwrap();
        assert_eq!(ada.sub.len(), 21);
        assert!(ada.sub.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(ada.hd.as_deref(), Some("example.com"));
        assert_eq!(users.get("ada@example.com"), Some(ada.clone()));
        // The derived sub is stable, and differs between emails.
        let again = Users::default()
            .add(UserSpec::new("ada@example.com", None))
            .unwrap();
        assert_eq!(again.sub, ada.sub);
        let bob = users.add(UserSpec::new("bob@example.com", None)).unwrap();
        assert_ne!(bob.sub, ada.sub);
        assert_eq!(bob.hd, None);

        let mut given = UserSpec::new("ada@example.com", None);
        given.sub = Some("42".into());
        assert_eq!(users.add(given).unwrap().sub, "42");
        assert_eq!(users.get("ADA@example.com").unwrap().hd, None);

        assert!(matches!(
            users.add(UserSpec::new("nobody", None)),
            Err(UserError::Email)
        ));
        assert!(matches!(
            users.add(UserSpec::new("a@", None)),
            Err(UserError::Email)
        ));
        assert!(matches!(
            users.add(UserSpec::new("a@b", Some(" "))),
            Err(UserError::Empty)
        ));
        assert_eq!(users.get("nobody"), None);

        // Suspension and deletion disable the account's sub; reinstating enables it again.
        let mut suspended = UserSpec::new("carol@example.com", Some("example.com"));
        suspended.suspended = true;
        let carol = users.add(suspended.clone()).unwrap();
        assert!(users.is_disabled(&carol.sub));
        suspended.suspended = false;
        users.add(suspended).unwrap();
        assert!(!users.is_disabled(&carol.sub));
        assert_eq!(users.remove("Carol@example.com").unwrap().sub, carol.sub);
        assert!(users.is_disabled(&carol.sub));
        assert_eq!(users.get("carol@example.com"), None);
        assert_eq!(users.remove("carol@example.com"), None);
    }
}
