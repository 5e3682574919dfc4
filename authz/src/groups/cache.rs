//! The membership cache: bounded, keyed by (lower-cased email, lower-cased group), serving
//! answers within their TTL, refreshing ahead of expiry in the background, serving expired
//! answers for a bounded time while Google cannot be asked, and backing off after quota errors.
//!
//! Expiry is decided here against tokio's clock (so tests run on paused time); moka only bounds
//! the memory and drops entries once even a stale answer would be too old. Errors are never
//! cached. Concurrent misses for one key share one Google call: the first caller creates a
//! `OnceCell` for the key and everyone who finds it waits on the same initialisation; if the
//! caller running it is cancelled (Envoy gave up on its request), a waiter takes over.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::future::Cache;
use tokio::{sync::OnceCell, time::Instant};

use super::{Freshness, GroupsError, Membership};

/// Asks Google (or a fake, in tests) one membership question.
pub(crate) trait Lookup: Send + Sync + 'static {
    fn lookup(
        &self,
        email: &str,
        group: &str,
    ) -> impl Future<Output = Result<bool, GroupsError>> + Send;
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) positive_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) refresh_ahead: Duration,
    pub(crate) stale_bound: Duration,
    pub(crate) max_entries: u64,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    email: String,
    group: String,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    is_member: bool,
    fetched: Instant,
    ttl: Duration,
}

type Flight = Arc<OnceCell<Result<bool, GroupsError>>>;

#[derive(Debug)]
pub(crate) struct MembershipCache<L> {
    lookup: L,
    settings: Settings,
    entries: Cache<Key, Entry>,
    /// Lookups in progress, one per key. A std mutex: held for a map operation, never across
    /// an await.
    in_flight: Mutex<HashMap<Key, Flight>>,
    backoff: Mutex<Backoff>,
    /// Bumped by `invalidate_user`; a lookup that started before the bump does not store its
    /// answer, so an off-boarded user's in-flight "member" cannot land after the purge.
    epoch: AtomicU64,
}

/// Quota backoff, shared by all keys: the quota is per project and impersonated admin.
#[derive(Debug)]
struct Backoff {
    until: Option<Instant>,
    next: Duration,
}

// === impl MembershipCache ===

impl<L: Lookup> MembershipCache<L> {
    pub(crate) fn new(lookup: L, settings: Settings) -> MembershipCache<L> {
        // moka drops an entry once it could no longer be served even as stale.
        let longest = settings.positive_ttl.max(settings.negative_ttl) + settings.stale_bound;
        MembershipCache {
            lookup,
            settings,
            entries: Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(longest)
                .support_invalidation_closures()
                .build(),
            in_flight: Mutex::default(),
            backoff: Mutex::new(Backoff {
                until: None,
                next: settings.backoff_initial,
            }),
            epoch: AtomicU64::new(0),
        }
    }

    pub(crate) async fn is_member(
        self: &Arc<Self>,
        email: &str,
        group: &str,
    ) -> Result<Membership, GroupsError> {
        let key = Key::new(email, group);
        let known = self.entries.get(&key).await;
        let now = Instant::now();
        if let Some(entry) = known {
            let expires = entry.fetched + entry.ttl;
            if now < expires {
                let window = self.settings.refresh_ahead.min(entry.ttl / 2);
                if now >= expires - window && !self.backing_off(now) {
                    self.refresh_in_background(key);
                }
                return Ok(entry.answer(Freshness::Cached));
            }
        }
        let stale = known.filter(|e| now < e.fetched + e.ttl + self.settings.stale_bound);
        if self.backing_off(now) {
            return stale
                .map(|e| e.answer(Freshness::Stale))
                .ok_or(GroupsError::BackingOff);
        }
        match self.fetch(&key, self.flight(&key).0).await {
            Ok(is_member) => Ok(Membership {
                is_member,
                freshness: Freshness::Fresh,
            }),
            Err(error) => match stale {
                Some(entry) => {
                    tracing::debug!(reason = error.reason(), "serving a stale group membership");
                    Ok(entry.answer(Freshness::Stale))
                }
                None => Err(error),
            },
        }
    }

    /// Returns how many cached answers about `email` there were (counted just before the
    /// purge, so an answer landing in between is purged but not counted).
    pub(crate) fn invalidate_user(&self, email: &str) -> u64 {
        let email = email.to_lowercase();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        // A request arriving after this must not join a lookup that started before it.
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| key.email != email);
        let count = self
            .entries
            .iter()
            .filter(|(key, _)| key.email == email)
            .count() as u64;
        // Only fails when the builder did not enable closures, which `new` does.
        let _ = self
            .entries
            .invalidate_entries_if(move |key, _| key.email == email);
        count
    }

    /// The flight for `key`, and whether this call created it.
    fn flight(&self, key: &Key) -> (Flight, bool) {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match in_flight.get(key) {
            Some(flight) => (flight.clone(), false),
            None => {
                let flight = Flight::default();
                in_flight.insert(key.clone(), flight.clone());
                (flight, true)
            }
        }
    }

    /// Starts one background refresh for `key`, unless a lookup for it is already running.
    fn refresh_in_background(self: &Arc<Self>, key: Key) {
        let (flight, created) = self.flight(&key);
        if !created {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            // Errors are logged inside; the cached answer stays until it expires.
            let _ = this.fetch(&key, flight).await;
        });
    }

    /// Runs (or waits for) the lookup of `flight`, stores a good answer, and retires the
    /// flight.
    async fn fetch(&self, key: &Key, flight: Flight) -> Result<bool, GroupsError> {
        let result = flight
            .get_or_init(|| async {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let result = self.lookup.lookup(&key.email, &key.group).await;
                match &result {
                    Ok(is_member) => {
                        self.record_success();
                        if self.epoch.load(Ordering::SeqCst) == epoch {
                            let entry = Entry {
                                is_member: *is_member,
                                fetched: Instant::now(),
                                ttl: if *is_member {
                                    self.settings.positive_ttl
                                } else {
                                    self.settings.negative_ttl
                                },
                            };
                            self.entries.insert(key.clone(), entry).await;
                        }
                    }
                    Err(error) => {
                        if error.is_quota() {
                            self.record_quota_error();
                        }
                        tracing::warn!(
                            %error,
                            reason = error.reason(),
                            group = %key.group,
                            "group membership lookup failed"
                        );
                    }
                }
                result
            })
            .await
            .clone();
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if in_flight.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            in_flight.remove(key);
        }
        result
    }

    fn backing_off(&self, now: Instant) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff.until.is_some_and(|until| now < until)
    }

    fn record_quota_error(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let pause = backoff.next;
        backoff.until = Some(Instant::now() + pause);
        backoff.next = (pause * 2).min(self.settings.backoff_max);
        tracing::warn!(
            pause_ms = pause.as_millis() as u64,
            "Google quota exceeded; no group lookups until the pause ends"
        );
    }

    fn record_success(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff.until = None;
        backoff.next = self.settings.backoff_initial;
    }

    /// moka's count, which lags pending maintenance: good enough for a gauge.
    pub(crate) fn cached_entries(&self) -> u64 {
        self.entries.entry_count()
    }

    pub(crate) async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

impl Key {
    fn new(email: &str, group: &str) -> Key {
        Key {
            email: email.trim().to_lowercase(),
            group: group.trim().to_lowercase(),
        }
    }
}

impl Entry {
    fn answer(self, freshness: Freshness) -> Membership {
        Membership {
            is_member: self.is_member,
            freshness,
        }
    }
}
