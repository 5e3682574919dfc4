//! Single flight: concurrent misses for one key share one verification.
//!
//! The first caller for a key registers a flight; later callers for the same key join it and
//! wait for its result (value or error), so a burst of requests carrying one new token costs one
//! Google round trip. If the caller running the verification is cancelled (Envoy gave up on the
//! request), a waiting caller runs its own verification instead (`tokio::sync::OnceCell`).
//!
//! A flight is removed from the map once it has a result or its last caller is gone, so the
//! map holds at most one entry per key being verified right now: it is bounded by the requests
//! in progress, not by how many tokens a caller sends.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::OnceCell;

use super::{CacheKey, lock};

/// An error of any type, shared by every caller of a flight.
pub(super) type SharedError = Arc<dyn Any + Send + Sync>;

/// The result every caller of a flight receives.
pub(super) type Flight<V> = OnceCell<Result<V, SharedError>>;

pub(super) struct Flights<V> {
    pending: Mutex<HashMap<CacheKey, Arc<Flight<V>>>>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Flights {
            pending: Mutex::default(),
        }
    }
}

impl<V> Flights<V> {
    /// Joins the flight for `key`, starting it if there is none.
    pub(super) fn join(&self, key: CacheKey) -> Joined<'_, V> {
        let flight = lock(&self.pending).entry(key).or_default().clone();
        Joined {
            flights: self,
            key,
            flight: Some(flight),
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// One caller's membership in a flight; leaving (drop) removes the flight when it is done or
/// when this was its last caller.
pub(super) struct Joined<'a, V> {
    flights: &'a Flights<V>,
    key: CacheKey,
    /// Taken in `drop`, so that the reference count is read and released under the lock.
    flight: Option<Arc<Flight<V>>>,
}

impl<V> Joined<'_, V> {
    pub(super) fn flight(&self) -> &Flight<V> {
        // Only `drop` takes it.
        self.flight.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl<V> Drop for Joined<'_, V> {
    fn drop(&mut self) {
        let Some(flight) = self.flight.take() else {
            return;
        };
        let mut pending = lock(&self.flights.pending);
        let ours = pending
            .get(&self.key)
            .is_some_and(|current| Arc::ptr_eq(current, &flight));
        // Clones are only made under this lock, so the count cannot rise while we look: two
        // references are the map's and ours.
        if ours && (flight.initialized() || Arc::strong_count(&flight) == 2) {
            pending.remove(&self.key);
        }
        drop(flight);
    }
}
