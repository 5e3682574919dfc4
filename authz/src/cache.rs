//! The caches in front of Google: bounded, keyed by a hash, each entry living no longer than its
//! token. Two are built from [`TtlCache`]: the identity cache (what a token proves, keyed by the
//! token) and the verdict cache (the final answer, keyed by the token and everything the policy
//! read: policy name, HTTP method, MCP method and tool).
//!
//! Keys are SHA-256 over the token and those inputs, so the raw token is never stored and a
//! verdict reached for one route, policy or tool can never answer for another. Backend errors
//! are returned, not cached: a Google blip must not lock anyone out. Concurrent misses for one
//! key share a single verification (`flight`). Storage is `pool`: compact, bounded, CLOCK
//! eviction.

use std::{
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use sha2::{Digest, Sha256};

use flight::{Flights, SharedError};
use pool::Pool;

use crate::{
    errors::TokenError,
    principal::{Principal, unix_now},
    verdict::Verdict,
};

/// The first 128 bits of SHA-256 over the token and the decision's other inputs. Answering for
/// someone else's cached entry would take a token whose key matches one of the N cached keys:
/// a second-preimage search of 2^128 / N hashes. Sixteen bytes, not 32, because a million
/// entries store a key each, twice (identity and verdict).
pub type CacheKey = [u8; 16];

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
        self.principal().and_then(|p| p.email())
    }
}

impl Cached for Identity {
    fn token_expiry(&self) -> Option<u64> {
        self.as_ref().ok().map(|p| p.expires_at)
    }
    fn email(&self) -> Option<&str> {
        self.as_ref().ok().and_then(|p| p.email())
    }
}

/// A bounded map from key hash to value, each entry expiring with its token.
///
/// Answers about valid tokens and answers about invalid ones live in separate pools: the
/// second is what a caller without a token can fill, and it holds an eighth of the first, so a
/// flood of junk tokens only ever evicts other junk.
pub struct TtlCache<V: Cached> {
    valid: Pool<V>,
    invalid: Pool<V>,
    flights: Flights<V>,
    lifetimes: Lifetimes,
    /// Hits and misses since start-up, for the admin API. Relaxed atomics: figures, not locks.
    counts: Counts,
}

impl<V: Cached> std::fmt::Debug for TtlCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("valid", &self.valid.len())
            .field("invalid", &self.invalid.len())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
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

/// Hashes the token and the decision's other inputs, each length-prefixed so that no two
/// different inputs can produce the same byte stream.
pub fn key(token: &str, inputs: &[&[u8]]) -> CacheKey {
    let mut hash = Sha256::new();
    hash.update(b"authz.verdict.v1");
    for part in std::iter::once(token.as_bytes()).chain(inputs.iter().copied()) {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut key = CacheKey::default();
    key.copy_from_slice(&digest[..std::mem::size_of::<CacheKey>()]);
    key
}

impl<V: Cached> TtlCache<V> {
    /// At most `max_entries` answers about valid tokens, and an eighth of that (at least one)
    /// about invalid ones.
    pub fn new(max_entries: u64, lifetimes: Lifetimes) -> TtlCache<V> {
        TtlCache {
            valid: Pool::new(max_entries),
            invalid: Pool::new((max_entries / 8).max(1)),
            flights: Flights::default(),
            lifetimes,
            counts: Counts::default(),
        }
    }

    /// Returns the cached value, or runs the future `verify` makes (once per key, however many
    /// callers wait) and caches its answer. The flag says whether this call's answer came
    /// without running it (from the cache, or from a concurrent caller's verification). An
    /// `Err` is handed to every waiter and cached for nobody.
    ///
    /// `verify` is a closure, and its future is boxed, so that the hit path does not carry the
    /// miss path's state: a verification that calls Google is a future of tens of KiB, which
    /// every request (boxed by tonic, moved by `instrument`) would otherwise allocate and copy.
    pub async fn get_or_verify<E, F, Fut>(
        &self,
        key: CacheKey,
        verify: F,
    ) -> Result<(V, bool), Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(value) = self.get(&key) {
            self.counts.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((value, true));
        }
        let joined = self.flights.join(key);
        let ran = AtomicBool::new(false);
        let result = joined
            .flight()
            .get_or_init(|| async {
                // A flight that ended just before we joined has already stored its answer.
                if let Some(value) = self.get(&key) {
                    return Ok(value);
                }
                ran.store(true, Ordering::Relaxed);
                let value = Box::pin(verify())
                    .await
                    .map_err(|e| Arc::new(e) as SharedError)?;
                self.insert(key, value.clone());
                Ok(value)
            })
            .await
            .clone();
        drop(joined);
        let ran = ran.load(Ordering::Relaxed);
        let count = if ran {
            &self.counts.misses
        } else {
            &self.counts.hits
        };
        count.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(value) => Ok((value, !ran)),
            // Every caller of one cache passes the same error type.
            Err(shared) => Err(shared.downcast::<E>().unwrap_or_else(|_| {
                unreachable!("one cache, one error type: {}", std::any::type_name::<E>())
            })),
        }
    }

    fn get(&self, key: &CacheKey) -> Option<V> {
        self.valid.get(key).or_else(|| self.invalid.get(key))
    }

    fn insert(&self, key: CacheKey, value: V) {
        let lifetime = lifetime(&value, self.lifetimes, unix_now());
        if value.token_expiry().is_some() {
            self.valid.insert(key, value, lifetime);
        } else {
            self.invalid.insert(key, value, lifetime);
        }
    }

    pub async fn invalidate(&self, key: &CacheKey) {
        self.valid.remove(key);
        self.invalid.remove(key);
    }

    /// Off-boarding: removes every entry whose principal has this email (case-insensitive) and
    /// returns how many. Keys are hashes, so this walks the cache: an admin action, not the hot
    /// path. A fill in flight when this runs may still land afterwards; its group lookups are
    /// cut off by the membership cache's own invalidation.
    pub async fn invalidate_email(&self, email: &str) -> u64 {
        let email = email.to_lowercase();
        self.valid.remove_where(|value| {
            value
                .email()
                .is_some_and(|found| found.to_lowercase() == email)
        })
    }

    /// Entries (expired ones removed first), hits and misses since start-up.
    pub async fn stats(&self) -> Stats {
        self.flush().await;
        Stats {
            entries: self.entry_count(),
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
        }
    }

    /// Entries held, including expired ones not yet removed.
    pub fn entry_count(&self) -> u64 {
        self.valid.len() + self.invalid.len()
    }

    /// Removes expired entries now; for tests, stats and measurements.
    pub async fn flush(&self) {
        self.valid.purge_expired();
        self.invalid.purge_expired();
    }
}

/// The pools' and flights' locks. A poisoned lock still guards consistent data: every
/// mutation under them completes before any call that could panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

mod flight;
mod pool;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
