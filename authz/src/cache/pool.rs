//! A bounded map from cache key to value with a deadline per entry: the storage behind
//! [`TtlCache`](super::TtlCache).
//!
//! Built for a million entries in little memory and a short hit path. Each shard keeps its
//! entries in one `Vec` (key, deadline, value: 48 bytes for a verdict) and a
//! `hashbrown::HashTable` of `u32` positions into it, so the key is stored once and a slot
//! costs no allocation of its own. A general-purpose cache (moka, which this replaced) spends
//! ~350 bytes per entry on its bookkeeping (access-order and timer-wheel nodes, a separately
//! allocated entry); that alone put a million cached verdicts past 1 GiB.
//!
//! Eviction is CLOCK (second chance): a hit sets the entry's `referenced` bit; when a shard is
//! full, the hand sweeps, clearing bits, and evicts the first entry that is expired or was not
//! referenced since the hand last passed. Entries a flood of one-off keys brings in are never
//! referenced, so the hand takes them before entries that are in use. Expired entries are
//! removed when a lookup finds them, when the hand passes, and by [`Pool::purge_expired`].
//!
//! The shard and the table position come from a randomly keyed SipHash of the key: the keys
//! are digests of caller-chosen tokens, and a fixed function would let a caller grind keys
//! that all land in one shard or one probe chain.

use std::{
    hash::{BuildHasher, RandomState},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hashbrown::HashTable;

use super::{CacheKey, lock};

/// Set in `Slot::deadline` when the entry was read since the clock hand last passed it.
const REFERENCED: u64 = 1 << 63;

/// Shards spread the lock; few enough that a small cache's bound stays exact.
const MAX_SHARDS: usize = 64;
/// Smallest shard worth its own lock.
const MIN_PER_SHARD: u64 = 1024;

pub(super) struct Pool<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
    /// Deadlines are milliseconds since this instant.
    epoch: Instant,
}

struct Shard<V> {
    /// Positions in `slots`, found by the key's hash.
    index: HashTable<u32>,
    slots: Vec<Slot<V>>,
    capacity: usize,
    hand: usize,
}

struct Slot<V> {
    key: CacheKey,
    /// Milliseconds since the pool's epoch; the top bit is the `REFERENCED` flag.
    deadline: u64,
    value: V,
}

impl<V: Clone> Pool<V> {
    /// A pool holding at most `capacity` entries.
    pub(super) fn new(capacity: u64) -> Pool<V> {
        let shards = (capacity / MIN_PER_SHARD).clamp(1, MAX_SHARDS as u64);
        // A power of two, so the shard is the hash's top bits.
        let shards = 1usize << (63 - shards.leading_zeros());
        let per_shard = usize::try_from(capacity / shards as u64).unwrap_or(usize::MAX);
        // Never more than `capacity` in total: the remainder goes to the first shards.
        let extra = usize::try_from(capacity % shards as u64).unwrap_or(0);
        let shards = (0..shards)
            .map(|i| Mutex::new(Shard::new(per_shard + usize::from(i < extra))))
            .collect();
        Pool {
            shards,
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// The value under `key` unless it has expired; marks it referenced.
    pub(super) fn get(&self, key: &CacheKey) -> Option<V> {
        let hash = self.hasher.hash_one(key);
        let now = self.now();
        let mut shard = self.shard(hash);
        let position = shard.find(hash, key)?;
        if shard.slots[position].deadline & !REFERENCED <= now {
            shard.remove_at(position, &self.hasher);
            return None;
        }
        let slot = &mut shard.slots[position];
        slot.deadline |= REFERENCED;
        Some(slot.value.clone())
    }

    /// Stores `value` for `lifetime`, replacing any entry under `key`; when the shard is full,
    /// the clock evicts one entry first.
    pub(super) fn insert(&self, key: CacheKey, value: V, lifetime: Duration) {
        let hash = self.hasher.hash_one(key);
        let now = self.now();
        let lifetime = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        let deadline = now.saturating_add(lifetime).min(REFERENCED - 1);
        let mut shard = self.shard(hash);
        if let Some(position) = shard.find(hash, &key) {
            shard.slots[position] = Slot {
                key,
                deadline,
                value,
            };
            return;
        }
        if shard.capacity == 0 {
            return;
        }
        if shard.slots.len() >= shard.capacity {
            shard.evict_one(now, &self.hasher);
        }
        let position = u32::try_from(shard.slots.len()).unwrap_or(u32::MAX);
        shard.slots.push(Slot {
            key,
            deadline,
            value,
        });
        let Shard { index, slots, .. } = &mut *shard;
        index.insert_unique(hash, position, |&p| {
            self.hasher.hash_one(slots[p as usize].key)
        });
    }

    pub(super) fn remove(&self, key: &CacheKey) {
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        if let Some(position) = shard.find(hash, key) {
            shard.remove_at(position, &self.hasher);
        }
    }

    /// Removes every entry the predicate selects; returns how many. Walks the whole pool, one
    /// shard locked at a time: for admin actions, not the request path.
    pub(super) fn remove_where(&self, mut select: impl FnMut(&V) -> bool) -> u64 {
        self.remove_slots(|slot| select(&slot.value))
    }

    /// Drops every expired entry now rather than when it is next looked at.
    pub(super) fn purge_expired(&self) {
        let now = self.now();
        self.remove_slots(|slot| slot.deadline & !REFERENCED <= now);
    }

    fn remove_slots(&self, mut select: impl FnMut(&Slot<V>) -> bool) -> u64 {
        let mut removed = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            let mut position = 0;
            while position < shard.slots.len() {
                if select(&shard.slots[position]) {
                    // The last slot moves into `position`: look at it next.
                    shard.remove_at(position, &self.hasher);
                    removed += 1;
                } else {
                    position += 1;
                }
            }
        }
        removed
    }

    /// Entries held, expired ones not yet removed included.
    pub(super) fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| lock(shard).slots.len() as u64)
            .sum()
    }

    /// Every value held (a snapshot, for tests and measurements).
    #[cfg(test)]
    pub(super) fn values(&self) -> Vec<V> {
        self.shards
            .iter()
            .flat_map(|shard| {
                let shard = lock(shard);
                shard
                    .slots
                    .iter()
                    .map(|slot| slot.value.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<V>> {
        let bits = self.shards.len().trailing_zeros();
        let index = if bits == 0 {
            0
        } else {
            (hash >> (64 - bits)) as usize
        };
        lock(&self.shards[index])
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(REFERENCED - 1)
    }
}

impl<V> Shard<V> {
    fn new(capacity: usize) -> Shard<V> {
        // Both grow with the entries rather than being allocated at `capacity`: a configured
        // bound far above what is ever cached must not reserve memory (or fail to) at start.
        // Large slot vectors are mmapped, so doubling one moves no data (mremap) and its unused
        // tail is never backed by memory.
        Shard {
            index: HashTable::new(),
            slots: Vec::new(),
            capacity,
            hand: 0,
        }
    }

    fn find(&self, hash: u64, key: &CacheKey) -> Option<usize> {
        self.index
            .find(hash, |&p| self.slots[p as usize].key == *key)
            .map(|&p| p as usize)
    }

    /// Second chance: clear the bit of referenced, unexpired entries and evict the first one
    /// that is neither. Ends within one sweep, since the sweep clears every bit it passes.
    fn evict_one(&mut self, now: u64, hasher: &RandomState) {
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let slot = &mut self.slots[self.hand];
            let expired = slot.deadline & !REFERENCED <= now;
            if expired || slot.deadline & REFERENCED == 0 {
                self.remove_at(self.hand, hasher);
                return;
            }
            slot.deadline &= !REFERENCED;
            self.hand += 1;
        }
    }

    /// Removes the slot at `position`; the last slot moves into its place.
    fn remove_at(&mut self, position: usize, hasher: &RandomState) {
        let hash = hasher.hash_one(self.slots[position].key);
        if let Ok(entry) = self.index.find_entry(hash, |&p| p as usize == position) {
            entry.remove();
        }
        let last = self.slots.len() - 1;
        self.slots.swap_remove(position);
        if position != last {
            let moved = hasher.hash_one(self.slots[position].key);
            if let Some(p) = self.index.find_mut(moved, |&p| p as usize == last) {
                *p = position as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests;
