//! The OAuth facade's shared state: pending sign-ins, authorization codes, refresh tokens, each
//! user's refresh-token families, and revocations. One replica keeps it in memory
//! ([`memory::MemoryStore`]); several replicas share a Redis ([`redis::RedisStore`]).
//!
//! The store knows nothing about OAuth. Values are opaque bytes (callers serialize JSON), keys
//! are strings the caller namespaces (`code:<hash>`), and every key expires on its own. The
//! operations are the few the OAuth flows need, each atomic across replicas:
//! - [`Store::insert`] if absent (a new pending sign-in or code never overwrites another);
//! - [`Store::take`] (single use: of concurrent takes, one gets the value);
//! - [`Store::claim`] (single use with replay detection: the value stays, uses are counted, so a
//!   second redemption of a code or refresh token is seen and its family can be revoked);
//! - sets ([`Store::add_to_set`], [`Store::set_members`]) for a user's refresh-token families;
//! - revocations ([`Store::revoke`], [`Store::revocations_since`]), which every replica copies
//!   into a local [`revocations::Revocations`] so the Check hot path asks no network.
//!
//! **A store error is an outage, never an answer.** [`StoreError`] means "could not ask"; callers
//! answer 503 / `temporarily_unavailable`, never "invalid grant".

pub mod memory;
pub mod redis;
pub mod revocations;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;

use crate::{
    config::{StoreBackend, StoreConfig},
    metrics::Metrics,
};

/// What every store operation returns: boxed so that [`Store`] is dyn-compatible.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store could not be reached or answered nonsense: callers answer 503 /
/// `temporarily_unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{backend}: {problem}")]
pub struct StoreError {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// What went wrong, without keys' or values' contents.
    pub problem: String,
}

/// A claimed value and how often it had been claimed before.
#[derive(Clone, PartialEq, Eq)]
pub struct Claimed {
    pub value: Vec<u8>,
    /// Uses before this claim; 0 for the first.
    pub earlier_uses: u64,
}

/// One revocation, as every replica learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub id: String,
    /// When it was recorded (unix ms, by the store's clock: Redis's for the Redis store, so
    /// every replica reads times from one clock).
    pub recorded_ms: u64,
    /// When it stops mattering (unix ms): the revoked credential has expired by then.
    pub expires_ms: u64,
}

/// The shared state behind the OAuth facade. Implementations: [`memory::MemoryStore`] (one
/// replica) and [`redis::RedisStore`] (several). Keys starting with `!` are reserved for the
/// store's own bookkeeping and refused.
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores `value` for `ttl` unless `key` exists; `Ok(false)` when it did (nothing changes).
    fn insert(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool>;

    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Removes and returns atomically: of concurrent takes, at most one gets the value.
    fn take(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>>;

    /// Counts one use atomically and returns the value with the number of earlier uses; the key
    /// keeps its value and TTL (so a second use is detectable until it expires). Of N
    /// concurrent claims exactly one sees `earlier_uses == 0`. `None` when absent or expired
    /// (and creates nothing).
    fn claim(&self, key: &str) -> StoreFuture<'_, Option<Claimed>>;

    /// Removes `key` (value or set); `true` when it existed.
    fn remove(&self, key: &str) -> StoreFuture<'_, bool>;

    /// Adds `member` to the set at `key`; the set expires `ttl` after its latest addition.
    fn add_to_set(&self, key: &str, member: &str, ttl: Duration) -> StoreFuture<'_, ()>;

    /// The members of the set at `key`, in no particular order; empty when absent.
    fn set_members(&self, key: &str) -> StoreFuture<'_, Vec<String>>;

    /// Records that `id` is revoked until now + `ttl`, visible to every replica's
    /// [`Store::revocations_since`]. Revoking again moves `recorded_ms` to now and keeps the
    /// later expiry.
    fn revoke(&self, id: &str, ttl: Duration) -> StoreFuture<'_, ()>;

    /// Revocations recorded at or after `since_ms` (unix ms), still in force, oldest first.
    fn revocations_since(&self, since_ms: u64) -> StoreFuture<'_, Vec<Revocation>>;

    /// Readiness: can the store be reached now.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// `memory` or `redis`.
    fn backend(&self) -> &'static str;

    /// What the store does when it is full, if it evicts at all: Redis's `maxmemory-policy`.
    /// `None`: the store never evicts (the memory store refuses instead).
    fn eviction_policy(&self) -> StoreFuture<'_, Option<String>> {
        Box::pin(async { Ok(None) })
    }
}

/// Refuses a store that may evict keys when full: revocations and the use counters that catch
/// a replayed code or refresh token live beside everything else, and an evicted one would let
/// a revoked token or a replay through. `Err` names the problem; a policy that cannot be read
/// (a managed Redis that hides `INFO`, or Redis down at start) is only a warning.
pub async fn check_eviction_policy(store: &dyn Store) -> anyhow::Result<()> {
    match store.eviction_policy().await {
        Ok(Some(policy)) if policy != "noeviction" => anyhow::bail!(
            "store.redis: Redis's maxmemory-policy is {policy:?}; authz needs \"noeviction\" \
             (an evicted revocation or use counter would let a revoked token or a replayed code \
             through). Give authz a Redis (or database) with maxmemory-policy noeviction"
        ),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(
                %error,
                "store.redis: cannot read Redis's maxmemory-policy; it must be noeviction"
            );
            Ok(())
        }
    }
}

/// Builds the configured store. The Redis store connects lazily (the first operation connects),
/// so a Redis that is down at start-up is an outage to report, not a failed start; a URL that
/// cannot be used fails here, naming `store.redis.url`. Call it inside the Tokio runtime.
pub fn open(config: &StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match config.backend {
        StoreBackend::Memory => Arc::new(memory::MemoryStore::new(config.max_entries)),
        StoreBackend::Redis => {
            let redis = config
                .redis
                .as_ref()
                .context("store.redis: the redis backend needs a [store.redis] section")?;
            Arc::new(redis::RedisStore::open(redis)?)
        }
    })
}

/// [`open`], counting store errors by operation in `metrics`
/// (`authz_store_errors_total{backend, operation}`).
pub fn open_with_metrics(
    config: &StoreConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<dyn Store>> {
    let inner = open(config)?;
    Ok(Arc::new(Counted { inner, metrics }))
}

/// Wraps a store and counts its errors, so both backends are counted in one place.
#[derive(Debug)]
struct Counted {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

// === impl StoreError ===

impl StoreError {
    pub fn new(backend: &'static str, problem: impl Into<String>) -> StoreError {
        StoreError {
            backend,
            problem: problem.into(),
        }
    }
}

// === impl Claimed ===

/// The value may hold anything a caller stored; only its size is shown.
impl fmt::Debug for Claimed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claimed")
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("earlier_uses", &self.earlier_uses)
            .finish()
    }
}

// === impl Counted ===

impl Counted {
    fn count<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let result = call.await;
            if result.is_err() {
                self.metrics.store_error(self.inner.backend(), operation);
            }
            result
        })
    }
}

impl Store for Counted {
    fn insert(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool> {
        self.count("insert", self.inner.insert(key, value, ttl))
    }
    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.count("get", self.inner.get(key))
    }
    fn take(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.count("take", self.inner.take(key))
    }
    fn claim(&self, key: &str) -> StoreFuture<'_, Option<Claimed>> {
        self.count("claim", self.inner.claim(key))
    }
    fn remove(&self, key: &str) -> StoreFuture<'_, bool> {
        self.count("remove", self.inner.remove(key))
    }
    fn add_to_set(&self, key: &str, member: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        self.count("add_to_set", self.inner.add_to_set(key, member, ttl))
    }
    fn set_members(&self, key: &str) -> StoreFuture<'_, Vec<String>> {
        self.count("set_members", self.inner.set_members(key))
    }
    fn revoke(&self, id: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        self.count("revoke", self.inner.revoke(id, ttl))
    }
    fn revocations_since(&self, since_ms: u64) -> StoreFuture<'_, Vec<Revocation>> {
        self.count("revocations_since", self.inner.revocations_since(since_ms))
    }
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.count("ping", self.inner.ping())
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn eviction_policy(&self) -> StoreFuture<'_, Option<String>> {
        self.inner.eviction_policy()
    }
}

// === helpers shared by the backends ===

/// Refuses keys the store cannot hold: empty ones, and those starting with `!`, which the Redis
/// store uses for its own bookkeeping (use counters, the revocation log). Both backends refuse
/// the same keys so a caller cannot pass on one and fail on the other.
fn check_key(backend: &'static str, key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::new(backend, "empty key"));
    }
    if key.starts_with('!') {
        return Err(StoreError::new(
            backend,
            "keys starting with '!' are reserved for the store",
        ));
    }
    Ok(())
}

fn check_id(backend: &'static str, id: &str) -> Result<(), StoreError> {
    if id.is_empty() {
        return Err(StoreError::new(backend, "empty revocation id"));
    }
    Ok(())
}

/// The longest TTL the store keeps: far beyond any OAuth lifetime, and small enough that
/// now + TTL can never overflow a clock (Redis refuses expiry times past its range).
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A TTL in whole milliseconds, between 1 (Redis refuses `PX 0`, and a zero TTL would store
/// something already expired) and [`MAX_TTL`].
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.min(MAX_TTL).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// Wall-clock time in unix milliseconds (0 before 1970, which no real clock reports).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
