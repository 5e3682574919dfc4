//! What the facade must remember between requests, possibly on another replica: pending
//! sign-ins, authorization codes, refresh tokens and revoked sessions. Everything lives in the
//! [`Store`] under a key derived from a SHA-256 of the secret value (never the value itself),
//! and expires on its own.
//!
//! A session is one sign-in: its authorization code, the refresh tokens that rotate from it and
//! the access tokens they mint all carry its id, so revoking it ends all of them.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::reverify::GoogleLink;
use crate::digest::hex_sha256;
use crate::facade_token::access_token::User;
use crate::store::{Store, StoreError, revocations::Revocations};

/// A sign-in waiting for Google's callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub request: super::authorize::AuthorizationRequest,
    /// Our OIDC nonce and PKCE verifier towards Google.
    pub nonce: String,
    pub verifier: String,
    /// SHA-256 of the consent cookie: the callback must come from the same browser.
    pub browser: String,
}

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub scope: String,
    /// The MCP server the sign-in is for (URL); `None` (from before it was recorded): the
    /// default one.
    #[serde(default)]
    pub resource: Option<String>,
    pub user: User,
    pub session: String,
    /// Unix seconds after which no refresh token of this session is honoured.
    pub session_expires: u64,
    /// Google's refresh token for the account, encrypted, to check it again at refresh.
    #[serde(default)]
    pub google: Option<GoogleLink>,
    /// Unix ms when the sign-in asked Google about the account: a user invalidated at or after
    /// it cannot exchange the code.
    #[serde(default)]
    pub checked_at: u64,
}

/// What a refresh token stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub client_id: String,
    pub scope: String,
    /// As in [`CodeGrant`]: the `aud` of every access token of the session.
    #[serde(default)]
    pub resource: Option<String>,
    pub user: User,
    pub session: String,
    pub session_expires: u64,
    #[serde(default)]
    pub google: Option<GoogleLink>,
}

/// A value read with `claim`: the grant, and whether it had been used before.
#[derive(Debug)]
pub struct Claimed<T> {
    pub grant: T,
    pub replayed: bool,
}

#[derive(Debug)]
pub struct Sessions {
    store: Arc<dyn Store>,
    /// Where pending sign-ins live: a store of their own with the memory backend.
    pending: Arc<dyn Store>,
    revocations: Arc<Revocations>,
    /// How long a revoked session's access tokens can still be presented.
    access_token_ttl: Duration,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        pending: Arc<dyn Store>,
        revocations: Arc<Revocations>,
        access_token_ttl: Duration,
    ) -> Sessions {
        Sessions {
            store,
            pending,
            revocations,
            access_token_ttl,
        }
    }

    /// Stores a pending sign-in under `state` unless one is there; `Ok(false)` when it was
    /// (the consent form it comes from was already used).
    pub async fn save_pending(
        &self,
        state: &str,
        pending: &PendingSignIn,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(pending).map_err(|e| StoreError {
            backend: self.pending.backend(),
            problem: format!("encoding: {e}"),
        })?;
        self.pending.insert(&key("signin", state), bytes, ttl).await
    }

    /// The pending sign-in for `state`, used up: a state works once. It stays stored (as
    /// used) until it expires, so the consent form it came from cannot start another sign-in
    /// under the same state either.
    pub async fn take_pending(&self, state: &str) -> Result<Option<PendingSignIn>, StoreError> {
        let claimed = self.pending.claim(&key("signin", state)).await?;
        Ok(claimed
            .filter(|claimed| claimed.earlier_uses == 0)
            .and_then(|claimed| serde_json::from_slice(&claimed.value).ok()))
    }

    /// Stores a code, and indexes its session under the user at once: off-boarding that runs
    /// before the code is exchanged still finds (and revokes) the session it would start.
    pub async fn save_code(
        &self,
        code: &str,
        grant: &CodeGrant,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.index_session(&grant.user, &grant.session, grant.session_expires)
            .await?;
        self.insert(&key("code", code), grant, ttl).await
    }

    /// Uses a code. It stays stored until it expires, so a second use is seen as a replay.
    pub async fn claim_code(&self, code: &str) -> Result<Option<Claimed<CodeGrant>>, StoreError> {
        self.claim(&key("code", code)).await
    }

    pub async fn save_refresh(
        &self,
        token: &str,
        grant: &RefreshGrant,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.insert(&key("refresh", token), grant, ttl).await?;
        self.index_session(&grant.user, &grant.session, grant.session_expires)
            .await
    }

    /// Off-boarding finds a user's sessions through this index.
    async fn index_session(
        &self,
        user: &User,
        session: &str,
        session_expires: u64,
    ) -> Result<(), StoreError> {
        let index = format!("user-sessions:{}", user.email.to_lowercase());
        self.store
            .add_to_set(&index, session, ttl_until(session_expires))
            .await
    }

    /// Reads a refresh token's grant without using it.
    pub async fn peek_refresh(&self, token: &str) -> Result<Option<RefreshGrant>, StoreError> {
        let value = self.store.get(&key("refresh", token)).await?;
        Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    pub async fn claim_refresh(
        &self,
        token: &str,
    ) -> Result<Option<Claimed<RefreshGrant>>, StoreError> {
        self.claim(&key("refresh", token)).await
    }

    pub async fn forget_refresh(&self, token: &str) -> Result<(), StoreError> {
        self.store.remove(&key("refresh", token)).await.map(|_| ())
    }

    /// Ends a session: its refresh tokens stop working, and its access tokens are refused by
    /// every replica's Check within the revocation poll interval (at once on this one).
    pub async fn revoke(&self, session: &str, session_expires: u64) -> Result<(), StoreError> {
        self.store
            .insert(
                &format!("revoked:{session}"),
                b"1".to_vec(),
                ttl_until(session_expires),
            )
            .await?;
        // Access tokens live at most access_token_ttl (plus leeway): remember that long.
        let remembered = self.access_token_ttl + Duration::from_secs(120);
        self.revocations.revoke(session, remembered).await
    }

    pub async fn is_revoked(&self, session: &str) -> Result<bool, StoreError> {
        if self.revocations.is_revoked(session) {
            return Ok(true);
        }
        Ok(self
            .store
            .get(&format!("revoked:{session}"))
            .await?
            .is_some())
    }

    /// Off-boarding: revokes every session of `email` (those of codes not yet exchanged
    /// included, see [`Sessions::save_code`]) and tells every replica to drop what it cached
    /// about the user; returns how many sessions.
    pub async fn revoke_user(&self, email: &str, session_ttl: Duration) -> Result<u64, StoreError> {
        // First the time: a sign-in whose Google check came before it, and whose code is
        // stored after the index is read below, is refused when its code is exchanged.
        let now = crate::principal::unix_now();
        self.store.remove(&user_invalidated_key(email)).await?;
        self.store
            .insert(
                &user_invalidated_key(email),
                crate::store::unix_ms().to_string().into_bytes(),
                Duration::from_secs(24 * 3600),
            )
            .await?;
        let index = format!("user-sessions:{}", email.to_lowercase());
        let sessions = self.store.set_members(&index).await?;
        let expires = now + session_ttl.as_secs();
        for session in &sessions {
            self.revoke(session, expires).await?;
        }
        // Kept a day: longer than anything a replica caches about the user (verdicts,
        // identities, memberships and their stale bound all live minutes), so a replica cut
        // off from the store for less than that still reads it when it comes back.
        let remembered =
            (self.access_token_ttl + Duration::from_secs(120)).max(Duration::from_secs(24 * 3600));
        self.revocations.invalidate_user(email, remembered).await?;
        Ok(sessions.len() as u64)
    }

    /// When `email` was last off-boarded (unix ms), within the last day.
    pub async fn user_invalidated_at(&self, email: &str) -> Result<Option<u64>, StoreError> {
        let value = self.store.get(&user_invalidated_key(email)).await?;
        Ok(value.and_then(|bytes| String::from_utf8(bytes).ok()?.parse().ok()))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    async fn insert<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError {
            backend: self.store.backend(),
            problem: format!("encoding: {e}"),
        })?;
        // Keys derive from 256 random bits: a collision is not a case to handle.
        self.store.insert(key, bytes, ttl).await.map(|_| ())
    }

    async fn claim<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Claimed<T>>, StoreError> {
        let Some(claimed) = self.store.claim(key).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&claimed.value)
            .ok()
            .map(|grant| Claimed {
                grant,
                replayed: claimed.earlier_uses > 0,
            }))
    }
}

fn user_invalidated_key(email: &str) -> String {
    format!("user-invalidated:{}", email.to_lowercase())
}

/// The store key for a secret value of some kind: never the value itself.
fn key(kind: &str, secret: &str) -> String {
    format!("{kind}:{}", hex_sha256(secret.as_bytes()))
}

/// From now until `unix`, at least one second.
pub fn ttl_until(unix: u64) -> Duration {
    Duration::from_secs(unix.saturating_sub(crate::principal::unix_now()).max(1))
}
