//! Values handed out under a random id, redeemable once and only within their lifetime: the
//! pending sign-in requests and the authorization codes.
//!
//! Anyone can open a registered client's authorization URL, so unauthenticated callers grow
//! these tables: each has a fixed capacity, and when it is full the expired entries go first,
//! then the oldest. Dropping a live entry fails closed (its sign-in or code exchange is refused).

use std::{collections::HashMap, sync::Mutex};

pub(crate) struct SingleUse<T> {
    /// Seconds an entry lives.
    ttl: i64,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry<T>>>,
}

struct Entry<T> {
    value: T,
    expires: i64,
}

impl<T: Clone> SingleUse<T> {
    pub(crate) fn new(ttl: i64, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `value` under `id` (a fresh random id: a collision replaces the older entry).
    pub(crate) fn insert(&self, id: String, value: T, now: i64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.expires > now);
        }
        if entries.len() >= self.capacity {
            // Every entry has the same lifetime: the one expiring first is the oldest. A scan
            // is fine at these sizes, and only happens while the table is full.
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let expires = now.saturating_add(self.ttl);
        entries.insert(id, Entry { value, expires });
    }

    /// The live value under `id`, removed: a second `take` finds nothing.
    pub(crate) fn take(&self, id: &str, now: i64) -> Option<T> {
        self.lock()
            .remove(id)
            .filter(|e| e.expires > now)
            .map(|e| e.value)
    }

    /// The live value under `id`, left in place.
    pub(crate) fn peek(&self, id: &str, now: i64) -> Option<T> {
        self.lock()
            .get(id)
            .filter(|e| e.expires > now)
            .map(|e| e.value.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        self.entries
            .lock()
            .expect("single-use table mutex poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_and_within_the_lifetime() {
        let table = SingleUse::new(600, 10);
        table.insert("a".into(), 1, 1000);
        table.insert("b".into(), 2, 1000);
        assert_eq!(table.peek("a", 1599), Some(1));
        assert_eq!(table.take("a", 1599), Some(1));
        assert_eq!(table.take("a", 1599), None);
        assert_eq!(table.peek("a", 1599), None);
        // Expired at exactly ttl seconds, and gone once looked at.
        assert_eq!(table.peek("b", 1600), None);
        assert_eq!(table.take("b", 1600), None);
        assert_eq!(table.take("b", 1000), None);
        assert_eq!(table.take("never", 1000), None);
    }

    #[test]
    fn bounded() {
        let table = SingleUse::new(600, 3);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            table.insert(id.into(), i, 1000 + i64::try_from(i).unwrap());
        }
        // Full of live entries: the oldest goes.
        table.insert("d".into(), 3, 1010);
        assert_eq!(table.lock().len(), 3);
        assert_eq!(table.peek("a", 1010), None);
        assert_eq!(table.peek("b", 1010), Some(1));
        // Full, with expired entries: they all go, the live ones stay.
        table.insert("e".into(), 4, 1601);
        assert_eq!(table.lock().len(), 3);
        assert_eq!(table.peek("c", 1601), Some(2));
        assert_eq!(table.peek("d", 1601), Some(3));
        assert_eq!(table.peek("e", 1601), Some(4));
    }
}
