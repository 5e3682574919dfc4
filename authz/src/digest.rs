//! How a secret is named when it only needs to be recognised: never by its own bytes.

use sha2::{Digest as _, Sha256};

/// SHA-256 in lower-case hex: how a secret is named when it only needs to be recognised
/// (store keys, browser bindings) and what SigV4 signs.
pub fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
