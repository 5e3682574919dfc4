//! Two decisions that read different inputs never share a cache key.

use proptest::prelude::*;

use super::*;

fn inputs() -> impl Strategy<Value = (String, Vec<Vec<u8>>)> {
    (
        ".{0,40}",
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..4),
    )
}

proptest! {
    #[test]
    fn different_inputs_never_share_a_key(a in inputs(), b in inputs()) {
        let key_of = |(token, parts): &(String, Vec<Vec<u8>>)| {
            let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            key(token, &parts)
        };
        if a != b {
            prop_assert_ne!(key_of(&a), key_of(&b));
        } else {
            prop_assert_eq!(key_of(&a), key_of(&b));
        }
    }

    /// Moving bytes across the boundary between two inputs changes the key: the length
    /// prefixes make the encoding unambiguous.
    #[test]
    fn boundaries_matter(joined in proptest::collection::vec(any::<u8>(), 2..40), cut in 1usize..39) {
        let cut = cut.min(joined.len() - 1);
        let (left, right) = joined.split_at(cut);
        prop_assert_ne!(key("t", &[left, right]), key("t", &[&joined]));
        prop_assert_ne!(key("t", &[left, right]), key("t", &[&joined, &[]]));
    }
}
