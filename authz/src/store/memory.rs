//! The store for a single replica: a map behind one mutex, with a hard cap.
//!
//! One `std::sync::Mutex` makes every operation atomic (claim and take are trivially
//! single-winner) and is never held across an `.await`. Expiry is exact: an expiry-ordered index
//! lets each operation first drop what has expired, touching only those entries, so nothing
//! expired is ever returned and memory never holds more than what is live.
//!
//! **Full means refused, not evicted.** Pending sign-ins can be created by unauthenticated
//! callers, so the map is bounded by `store.max_entries` (values plus set members). Evicting to
//! make room would let a flood of sign-ins push out a user's refresh-token family set, and
//! off-boarding would then miss that family; so when full, an insert fails with a
//! [`StoreError`] (a 503) until entries expire. Revocations are kept apart, with their own
//! bound, so a flood of sign-ins can never block a revocation.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    Claimed, Revocation, Store, StoreError, StoreFuture, check_id, check_key, ttl_ms, unix_ms,
};

const BACKEND: &str = "memory";

/// Upper bound on revocations in force. Revocations come from authenticated actions (a token's
/// owner, an administrator), so this is a backstop, not a limit anyone should meet.
pub const MAX_REVOCATIONS: usize = 1_000_000;

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// The cap on values plus set members.
    max_entries: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Every entry's (expiry, key), so pruning starts at the oldest and stops at the first live
    /// one. Kept exactly in step with `entries`.
    expiries: BTreeSet<(Instant, String)>,
    /// Values plus set members: what `max_entries` bounds.
    size: u64,
    revocations: RevocationLog,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    expires_at: Instant,
}

#[derive(Debug)]
enum Kind {
    Value { value: Vec<u8>, uses: u64 },
    Set(HashSet<String>),
}

/// Revocations by id, with two ordered indexes: by recording time for
/// [`Store::revocations_since`], by expiry for pruning.
#[derive(Debug, Default)]
struct RevocationLog {
    by_id: HashMap<String, Times>,
    by_recorded: BTreeSet<(u64, String)>,
    by_expiry: BTreeSet<(u64, String)>,
}

#[derive(Debug, Clone, Copy)]
struct Times {
    recorded_ms: u64,
    expires_ms: u64,
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store holding at most `max_entries` values and set members (revocations apart).
    pub fn new(max_entries: u64) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::default()),
            max_entries,
        }
    }

    /// Live values plus set members, after dropping what has expired.
    pub fn len(&self) -> u64 {
        let mut state = self.lock();
        state.prune(Instant::now());
        state.size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the state. No code panics while holding the lock, and each operation leaves the
    /// state consistent before it could, so a poisoned lock still holds usable state.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the pruned state, for one key that must be valid. Lazy like the Redis
    /// store's calls: nothing happens until the future is polled.
    fn with_key<'a, T: Send + 'a>(
        &'a self,
        key: &str,
        op: impl FnOnce(&mut State, &str, Instant) -> Result<T, StoreError> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let key = key.to_string();
        Box::pin(async move {
            check_key(BACKEND, &key)?;
            let now = Instant::now();
            let mut state = self.lock();
            state.prune(now);
            op(&mut state, &key, now)
        })
    }

    fn full(&self) -> StoreError {
        StoreError::new(
            BACKEND,
            format!(
                "full: {} entries (store.max_entries); refusing until some expire",
                self.max_entries
            ),
        )
    }
}

impl Store for MemoryStore {
    fn insert(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool> {
        self.with_key(key, move |state, key, now| {
            if state.entries.contains_key(key) {
                return Ok(false);
            }
            if state.size >= self.max_entries {
                return Err(self.full());
            }
            state.put(key, Kind::Value { value, uses: 0 }, expiry(now, ttl));
            Ok(true)
        })
    }

    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.with_key(key, |state, key, _| match state.entries.get(key) {
            None => Ok(None),
            Some(Entry {
                kind: Kind::Value { value, .. },
                ..
            }) => Ok(Some(value.clone())),
            Some(_) => Err(wrong_type()),
        })
    }

    fn take(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        self.with_key(key, |state, key, _| match state.entries.get(key) {
            None => Ok(None),
            Some(Entry {
                kind: Kind::Value { .. },
                ..
            }) => match state.delete(key) {
                Some(Kind::Value { value, .. }) => Ok(Some(value)),
                _ => Ok(None),
            },
            Some(_) => Err(wrong_type()),
        })
    }

    fn claim(&self, key: &str) -> StoreFuture<'_, Option<Claimed>> {
        self.with_key(key, |state, key, _| match state.entries.get_mut(key) {
            None => Ok(None),
            Some(Entry {
                kind: Kind::Value { value, uses },
                ..
            }) => {
                let earlier_uses = *uses;
                *uses = uses.saturating_add(1);
                Ok(Some(Claimed {
                    value: value.clone(),
                    earlier_uses,
                }))
            }
            Some(_) => Err(wrong_type()),
        })
    }

    fn remove(&self, key: &str) -> StoreFuture<'_, bool> {
        self.with_key(key, |state, key, _| Ok(state.delete(key).is_some()))
    }

    fn add_to_set(&self, key: &str, member: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        let member = member.to_string();
        self.with_key(key, move |state, key, now| {
            let is_new = match state.entries.get(key) {
                None => true,
                Some(Entry {
                    kind: Kind::Set(members),
                    ..
                }) => !members.contains(&member),
                Some(_) => return Err(wrong_type()),
            };
            if is_new && state.size >= self.max_entries {
                return Err(self.full());
            }
            let expires_at = expiry(now, ttl);
            match state.entries.get_mut(key) {
                Some(Entry {
                    kind: Kind::Set(members),
                    expires_at: old,
                }) => {
                    if is_new {
                        members.insert(member);
                    }
                    let old = std::mem::replace(old, expires_at);
                    state.expiries.remove(&(old, key.to_string()));
                    state.expiries.insert((expires_at, key.to_string()));
                }
                _ => {
                    let members = HashSet::from([member]);
                    state.put(key, Kind::Set(members), expires_at);
                    return Ok(());
                }
            }
            if is_new {
                state.size += 1;
            }
            Ok(())
        })
    }

    fn set_members(&self, key: &str) -> StoreFuture<'_, Vec<String>> {
        self.with_key(key, |state, key, _| match state.entries.get(key) {
            None => Ok(Vec::new()),
            Some(Entry {
                kind: Kind::Set(members),
                ..
            }) => Ok(members.iter().cloned().collect()),
            Some(_) => Err(wrong_type()),
        })
    }

    fn revoke(&self, id: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        let id = id.to_string();
        Box::pin(async move {
            check_id(BACKEND, &id)?;
            let now_ms = unix_ms();
            let mut state = self.lock();
            state.revocations.prune(now_ms);
            let expires_ms = now_ms.saturating_add(ttl_ms(ttl));
            state.revocations.record(&id, now_ms, expires_ms)
        })
    }

    fn revocations_since(&self, since_ms: u64) -> StoreFuture<'_, Vec<Revocation>> {
        Box::pin(async move {
            let now_ms = unix_ms();
            let mut state = self.lock();
            state.revocations.prune(now_ms);
            Ok(state.revocations.since(since_ms))
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}

// === impl State ===

impl State {
    /// Drops every entry that has expired at `now`.
    fn prune(&mut self, now: Instant) {
        while let Some((expires_at, _)) = self.expiries.first() {
            if *expires_at > now {
                break;
            }
            if let Some((_, key)) = self.expiries.pop_first() {
                if let Some(entry) = self.entries.remove(&key) {
                    self.size -= entry.kind.size();
                }
            }
        }
    }

    /// Adds a new entry (the caller checked it is absent and that there is room).
    fn put(&mut self, key: &str, kind: Kind, expires_at: Instant) {
        self.size += kind.size();
        self.expiries.insert((expires_at, key.to_string()));
        self.entries
            .insert(key.to_string(), Entry { kind, expires_at });
    }

    fn delete(&mut self, key: &str) -> Option<Kind> {
        let entry = self.entries.remove(key)?;
        self.expiries.remove(&(entry.expires_at, key.to_string()));
        self.size -= entry.kind.size();
        Some(entry.kind)
    }
}

impl Kind {
    fn size(&self) -> u64 {
        match self {
            Kind::Value { .. } => 1,
            Kind::Set(members) => members.len() as u64,
        }
    }
}

// === impl RevocationLog ===

impl RevocationLog {
    fn record(&mut self, id: &str, now_ms: u64, expires_ms: u64) -> Result<(), StoreError> {
        let expires_ms = match self.by_id.get(id).copied() {
            Some(old) => {
                self.by_recorded.remove(&(old.recorded_ms, id.to_string()));
                self.by_expiry.remove(&(old.expires_ms, id.to_string()));
                expires_ms.max(old.expires_ms)
            }
            None if self.by_id.len() >= MAX_REVOCATIONS => {
                return Err(StoreError::new(
                    BACKEND,
                    format!("{MAX_REVOCATIONS} revocations in force; refusing more"),
                ));
            }
            None => expires_ms,
        };
        let times = Times {
            recorded_ms: now_ms,
            expires_ms,
        };
        self.by_id.insert(id.to_string(), times);
        self.by_recorded.insert((now_ms, id.to_string()));
        self.by_expiry.insert((expires_ms, id.to_string()));
        Ok(())
    }

    /// Drops revocations whose expiry has passed.
    fn prune(&mut self, now_ms: u64) {
        while let Some((expires_ms, _)) = self.by_expiry.first() {
            if *expires_ms > now_ms {
                break;
            }
            if let Some((_, id)) = self.by_expiry.pop_first() {
                if let Some(times) = self.by_id.remove(&id) {
                    self.by_recorded.remove(&(times.recorded_ms, id));
                }
            }
        }
    }

    fn since(&self, since_ms: u64) -> Vec<Revocation> {
        self.by_recorded
            .range((since_ms, String::new())..)
            .filter_map(|(recorded_ms, id)| {
                let times = self.by_id.get(id)?;
                Some(Revocation {
                    id: id.clone(),
                    recorded_ms: *recorded_ms,
                    expires_ms: times.expires_ms,
                })
            })
            .collect()
    }
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    now + Duration::from_millis(ttl_ms(ttl))
}

fn wrong_type() -> StoreError {
    StoreError::new(
        BACKEND,
        "the key holds a set where a value was expected, or the reverse",
    )
}
