//! The pool against a plain map: whatever the sequence of operations, it answers like the model
//! for every entry it still holds, and never holds more than its capacity.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u32),
    Get(u8),
    Remove(u8),
    RemoveOdd,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        3 => any::<u8>().prop_map(Op::Get),
        1 => any::<u8>().prop_map(Op::Remove),
        1 => Just(Op::RemoveOdd),
    ]
}

fn key(k: u8) -> CacheKey {
    let mut key = CacheKey::default();
    key[0] = k;
    key
}

proptest! {
    #[test]
    fn agrees_with_a_map_and_stays_bounded(
        capacity in 1u64..40,
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        let pool = Pool::new(capacity);
        let mut model: HashMap<u8, u32> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    pool.insert(key(k), v, Duration::from_secs(60));
                    model.insert(k, v);
                }
                Op::Get(k) => {
                    // The pool may have evicted it; it must never answer wrongly.
                    match pool.get(&key(k)) {
                        Some(v) => prop_assert_eq!(Some(&v), model.get(&k)),
                        None => { model.remove(&k); }
                    }
                }
                Op::Remove(k) => {
                    pool.remove(&key(k));
                    model.remove(&k);
                    prop_assert_eq!(pool.get(&key(k)), None);
                }
                Op::RemoveOdd => {
                    pool.remove_where(|v| v % 2 == 1);
                    model.retain(|_, v| *v % 2 == 0);
                }
            }
            prop_assert!(pool.len() <= capacity);
        }
        for (k, v) in &model {
            if let Some(found) = pool.get(&key(*k)) {
                prop_assert_eq!(found, *v);
            }
        }
        let held: u64 = pool.values().len() as u64;
        prop_assert_eq!(held, pool.len());
    }
}

#[test]
fn the_bound_is_exact_across_shards() {
    for capacity in [1, 7, 1_023, 1_024, 5_000, 70_001] {
        let pool = Pool::new(capacity);
        for i in 0..capacity * 2 {
            let mut k = CacheKey::default();
            k[..8].copy_from_slice(&i.to_le_bytes());
            pool.insert(k, i, Duration::from_secs(60));
        }
        let held = pool.len();
        // Shards fill unevenly, so a full pool may hold a little less, never more.
        assert!(held <= capacity, "{held} > {capacity}");
        assert!(held * 10 >= capacity * 9, "{held} of {capacity}");
    }
}

#[test]
fn expired_entries_are_not_answered_and_are_purged() {
    let pool = Pool::new(10);
    pool.insert(key(1), 1, Duration::ZERO);
    pool.insert(key(2), 2, Duration::from_secs(60));
    assert_eq!(pool.get(&key(1)), None);
    pool.insert(key(3), 3, Duration::ZERO);
    pool.purge_expired();
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.get(&key(2)), Some(2));
}

#[test]
fn a_bound_far_above_what_is_cached_reserves_nothing() {
    // Would abort at start if shards were allocated at their capacity.
    let pool = Pool::new(u64::MAX);
    pool.insert(key(1), 1, Duration::from_secs(60));
    assert_eq!(pool.get(&key(1)), Some(1));
    assert_eq!(pool.len(), 1);
}
