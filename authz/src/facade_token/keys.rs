//! Our token-signing keys (ES256, P-256): the first signs, every key verifies, and all are
//! published as a JWKS so anyone can check our tokens. `kid` is the RFC 7638 thumbprint, so
//! replicas configured with the same PEM agree on it without coordination.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The signing key set.
pub struct SigningKeys {
    keys: Vec<Key>,
    /// SHA-256 over the key ids in order: part of every verdict-cache key, so removing a key
    /// (it leaked) or adding one stops every verdict cached under the old set at once.
    fingerprint: [u8; 32],
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Base64url affine coordinates, for the JWKS.
    x: String,
    y: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {index} is not PEM: {problem}")]
    NotPem { index: usize, problem: String },
    #[error("key {index} is not a PKCS#8 P-256 private key")]
    NotP256 { index: usize },
    #[error("key generation failed")]
    Generation,
}

impl SigningKeys {
    fn new(keys: Vec<Key>) -> SigningKeys {
        let mut hash = Sha256::new();
        for key in &keys {
            hash.update(key.kid.as_bytes());
            hash.update(b"\0");
        }
        SigningKeys {
            keys,
            fingerprint: hash.finalize().into(),
        }
    }

    /// Changes whenever a key is added, removed or reordered.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// Parses PKCS#8 PEM P-256 keys (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    pub fn from_pem(pems: &[&str]) -> Result<SigningKeys, KeyError> {
        let keys = pems
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let block = pem::parse(text.trim()).map_err(|e| KeyError::NotPem {
                    index,
                    problem: e.to_string(),
                })?;
                Key::from_pkcs8(block.contents()).ok_or(KeyError::NotP256 { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SigningKeys::new(keys))
    }

    /// One or more PEM blocks in one text (one secret), in order: the first signs.
    pub fn from_pem_bundle(text: &str) -> Result<SigningKeys, KeyError> {
        let blocks = pem::parse_many(text).map_err(|e| KeyError::NotPem {
            index: 0,
            problem: e.to_string(),
        })?;
        if blocks.is_empty() {
            return Err(KeyError::NotPem {
                index: 0,
                problem: "no PEM block".into(),
            });
        }
        let keys = blocks
            .iter()
            .enumerate()
            .map(|(index, block)| {
                Key::from_pkcs8(block.contents()).ok_or(KeyError::NotP256 { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SigningKeys::new(keys))
    }

    /// One fresh key, for a single replica with nothing configured.
    pub fn generate() -> Result<SigningKeys, KeyError> {
        let pkcs8 = generate_pkcs8()?;
        let key = Key::from_pkcs8(&pkcs8).ok_or(KeyError::Generation)?;
        Ok(SigningKeys::new(vec![key]))
    }

    /// The key that signs, and its id.
    pub fn signer(&self) -> (&str, &EncodingKey) {
        let key = &self.keys[0];
        (&key.kid, &key.encoding)
    }

    /// The verification key named `kid`, if it is ours.
    pub fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys
            .iter()
            .find(|key| key.kid == kid)
            .map(|key| &key.decoding)
    }

    pub fn is_ours(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid == kid)
    }

    /// The public JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|key| {
                json!({
                    "kty": "EC", "crv": "P-256", "x": key.x, "y": key.y,
                    "kid": key.kid, "use": "sig", "alg": "ES256",
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|key| key.kid.as_str()).collect();
        f.debug_struct("SigningKeys").field("kids", &kids).finish()
    }
}

/// A new PKCS#8 P-256 private key (DER).
pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    let document =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::Generation)?;
    Ok(document.as_ref().to_vec())
}

// === impl Key ===

impl Key {
    fn from_pkcs8(der: &[u8]) -> Option<Key> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                .ok()?;
        // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return None;
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..]);
        let decoding = DecodingKey::from_ec_components(&x, &y).ok()?;
        Some(Key {
            kid: thumbprint(&x, &y),
            encoding: EncodingKey::from_ec_der(der),
            decoding,
            x,
            y,
        })
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
