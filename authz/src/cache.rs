//! The caches in front of Google: bounded, keyed by a hash, each entry living no longer than its
//! token. Two are built from [`TtlCache`]: the identity cache (what a token proves, keyed by the
//! token) and the verdict cache (the final answer, keyed by the token and everything the policy
//! read: policy name, HTTP method, MCP method and tool).
//!
//! Keys are SHA-256 over the token and those inputs, so the raw token is never stored and a
//! verdict reached for one route, policy or tool can never answer for another. Backend errors are returned, not cached: a Google blip must not
//! lock anyone out. Concurrent misses for one key share a single verification (moka's
//! `or_try_insert_with` runs one init future per key and hands its result to every waiter).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
    time::Instant,
};

use moka::{Expiry, future::Cache};
use sha2::{Digest, Sha256};

use crate::{
    google::TokenError,
    principal::{Principal, unix_now},
    verdict::Verdict,
};

/// SHA-256 of the token and the decision's other inputs.
pub type CacheKey = [u8; 32];

/// What a token proves: who it speaks for, or why it is not valid.
pub type Identity = Result<Arc<Principal>, TokenError>;

/// A value whose cache lifetime follows a token.
pub trait Cached: Clone + Send + Sync + 'static {
    /// The token's expiry (unix seconds) when it was valid; `None` for an invalid token.
    fn token_expiry(&self) -> Option<u64>;
    /// The verified email the entry is about, if any (for off-boarding).
    fn email(&self) -> Option<&str>;
}

impl Cached for Verdict {
    fn token_expiry(&self) -> Option<u64> {
        self.principal().map(|p| p.expires_at)
    }
    fn email(&self) -> Option<&str> {
        self.principal().and_then(|p| p.email.as_deref())
    }
}

impl Cached for Identity {
    fn token_expiry(&self) -> Option<u64> {
        self.as_ref().ok().map(|p| p.expires_at)
    }
    fn email(&self) -> Option<&str> {
        self.as_ref().ok().and_then(|p| p.email.as_deref())
    }
}

/// A bounded map from key hash to value, each entry expiring with its token.
#[derive(Debug, Clone)]
pub struct TtlCache<V: Cached> {
    entries: Cache<CacheKey, V>,
    /// Hits and misses since start-up, for the admin API. Relaxed atomics: figures, not locks.
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A cache's figures since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
}

pub type VerdictCache = TtlCache<Verdict>;
pub type IdentityCache = TtlCache<Identity>;

/// How long each verdict may live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Upper bound for verdicts about valid tokens (allow and forbidden).
    pub allow: Duration,
    /// Verdicts about invalid tokens.
    pub deny: Duration,
}

struct TokenExpiry(Lifetimes);

impl<V: Cached> Expiry<CacheKey, V> for TokenExpiry {
    fn expire_after_create(&self, _: &CacheKey, value: &V, _: Instant) -> Option<Duration> {
        Some(lifetime(value, self.0, unix_now()))
    }
}

/// An entry about a valid token lives min(allow TTL, time left on the token); one about an
/// invalid token lives the short deny TTL.
pub fn lifetime(value: &impl Cached, lifetimes: Lifetimes, now: u64) -> Duration {
    match value.token_expiry() {
        Some(expires_at) => {
            let left = Duration::from_secs(expires_at.saturating_sub(now));
            lifetimes.allow.min(left)
        }
        None => lifetimes.deny,
    }
}

/// SHA-256 in lower-case hex: how a secret is named when it only needs to be recognised
/// (store keys, browser bindings) and what SigV4 signs.
pub fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Hashes the token and the decision's other inputs, each length-prefixed so that no two
/// different inputs can produce the same byte stream.
pub fn key(token: &str, inputs: &[&[u8]]) -> CacheKey {
    let mut hash = Sha256::new();
    hash.update(b"authz.verdict.v1");
    for part in std::iter::once(token.as_bytes()).chain(inputs.iter().copied()) {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

impl<V: Cached> TtlCache<V> {
    pub fn new(max_entries: u64, lifetimes: Lifetimes) -> TtlCache<V> {
        TtlCache {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(TokenExpiry(lifetimes))
                .build(),
            counts: Arc::default(),
        }
    }

    /// Returns the cached value, or runs `verify` (once per key, however many callers wait)
    /// and caches its answer. The flag says whether this call's answer came from the cache.
    /// An `Err` is handed to every waiter and cached for nobody.
    pub async fn get_or_verify<E, F>(&self, key: CacheKey, verify: F) -> Result<(V, bool), Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let entry = self.entries.entry(key).or_try_insert_with(verify).await?;
        let hit = !entry.is_fresh();
        let count = if hit {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        count.fetch_add(1, Ordering::Relaxed);
        Ok((entry.into_value(), hit))
    }

    pub async fn invalidate(&self, key: &CacheKey) {
        self.entries.invalidate(key).await;
    }

    /// Off-boarding: removes every entry whose principal has this email (case-insensitive) and
    /// returns how many. Keys are hashes, so this walks the cache (an admin action, not the hot
    /// path) and removes the keys it found; that gives an exact count and spares the builder
    /// `support_invalidation_closures()`, which would make every read check the predicates.
    /// A fill in flight when this runs may still land afterwards; its group lookups are cut
    /// off by the membership cache's own invalidation.
    pub async fn invalidate_email(&self, email: &str) -> u64 {
        let email = email.to_lowercase();
        let keys: Vec<Arc<CacheKey>> = self
            .entries
            .iter()
            .filter(|(_, value)| {
                value
                    .email()
                    .is_some_and(|found| found.to_lowercase() == email)
            })
            .map(|(key, _)| key)
            .collect();
        for key in &keys {
            self.entries.invalidate(key.as_ref()).await;
        }
        keys.len() as u64
    }

    /// Entries (after pending maintenance), hits and misses since start-up.
    pub async fn stats(&self) -> Stats {
        self.entries.run_pending_tasks().await;
        Stats {
            entries: self.entries.entry_count(),
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, counts); for tests and metrics.
    pub async fn flush(&self) {
        self.entries.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
