//! The verdict cache: bounded, keyed by a hash, each entry living no longer than its token.
//!
//! The key is SHA-256 over the token and everything else the decision read (today the policy
//! fingerprint), so the raw token is never stored and a verdict reached under one policy can
//! never answer under another. Backend errors are returned, not cached: a Google blip must not
//! lock anyone out. Concurrent misses for one key share a single verification (moka's
//! `or_try_insert_with` runs one init future per key and hands its result to every waiter).

use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use moka::{Expiry, future::Cache};
use sha2::{Digest, Sha256};

use crate::{principal::unix_now, verdict::Verdict};

/// SHA-256 of the token and the decision's other inputs.
pub type CacheKey = [u8; 32];

#[derive(Debug, Clone)]
pub struct VerdictCache {
    entries: Cache<CacheKey, Verdict>,
}

/// How long each verdict may live.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Upper bound for verdicts about valid tokens (allow and forbidden).
    pub allow: Duration,
    /// Verdicts about invalid tokens.
    pub deny: Duration,
}

struct VerdictExpiry(Lifetimes);

impl Expiry<CacheKey, Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &CacheKey, verdict: &Verdict, _: Instant) -> Option<Duration> {
        Some(lifetime(verdict, self.0, unix_now()))
    }
}

/// A verdict about a valid token lives min(allow TTL, time left on the token); one about an
/// invalid token lives the short deny TTL.
pub fn lifetime(verdict: &Verdict, lifetimes: Lifetimes, now: u64) -> Duration {
    match verdict.principal() {
        Some(principal) => {
            let left = Duration::from_secs(principal.expires_at.saturating_sub(now));
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
    hash.finalize().into()
}

impl VerdictCache {
    pub fn new(max_entries: u64, lifetimes: Lifetimes) -> VerdictCache {
        VerdictCache {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(VerdictExpiry(lifetimes))
                .build(),
        }
    }

    /// Returns the cached verdict, or runs `verify` (once per key, however many callers wait)
    /// and caches its answer. The flag says whether this call's answer came from the cache.
    pub async fn get_or_verify<E, F>(
        &self,
        key: CacheKey,
        verify: F,
    ) -> Result<(Verdict, bool), Arc<E>>
    where
        F: Future<Output = Result<Verdict, E>>,
        E: Send + Sync + 'static,
    {
        let entry = self.entries.entry(key).or_try_insert_with(verify).await?;
        let hit = !entry.is_fresh();
        Ok((entry.into_value(), hit))
    }

    pub async fn invalidate(&self, key: &CacheKey) {
        self.entries.invalidate(key).await;
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
