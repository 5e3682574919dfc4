//! Values we hand out and must recognise later without storing them (registered client ids,
//! consent forms): the payload travels with an HMAC-SHA256 tag. Several keys open, the first
//! seals, so a key can be rotated without invalidating what is in flight.
//!
//! Secrets we keep (the user's Google refresh token) are encrypted instead
//! ([`Sealer::encrypt`]): AES-256-GCM under a key derived from each sealing key, with the
//! purpose as associated data, so what sits in the store is useless without our keys.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use ring::{
    aead,
    rand::{SecureRandom as _, SystemRandom},
};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a sealed value is for; part of the MAC, so one kind can never pass for another.
#[derive(Debug, Clone, Copy)]
pub enum Purpose {
    ClientId,
    ConsentRequest,
    ConsentCsrf,
    /// Google's `state` for a consent form: derived from the form, so it works once.
    ConsentState,
    /// Encrypted, not only tagged: the Google refresh token behind a session.
    GoogleRefreshToken,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ClientId => b"authz client id v1\0",
            Purpose::ConsentRequest => b"authz consent request v1\0",
            Purpose::ConsentCsrf => b"authz consent csrf v1\0",
            Purpose::ConsentState => b"authz consent state v1\0",
            Purpose::GoogleRefreshToken => b"authz google refresh token v1\0",
        }
    }
}

pub struct Sealer {
    keys: Vec<Vec<u8>>,
}

impl Sealer {
    /// `keys` must not be empty (the config guarantees it, or one is generated).
    pub fn new(keys: Vec<Vec<u8>>) -> Sealer {
        assert!(!keys.is_empty(), "a sealer needs a key");
        Sealer { keys }
    }

    /// Keys from one secret: separated by whitespace, each at least 32 characters.
    pub fn from_text(text: &str) -> anyhow::Result<Sealer> {
        let keys: Vec<Vec<u8>> = text
            .split_whitespace()
            .map(|key| key.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            anyhow::bail!("no key");
        }
        if keys.iter().any(|key| key.len() < 32) {
            anyhow::bail!("every key must be at least 32 characters");
        }
        Ok(Sealer { keys })
    }

    /// `base64url(payload) "." base64url(tag)`: URL-safe, so it can be a client id.
    pub fn seal(&self, purpose: Purpose, payload: &[u8]) -> String {
        let body = URL_SAFE_NO_PAD.encode(payload);
        let tag = URL_SAFE_NO_PAD.encode(self.tag(&self.keys[0], purpose, body.as_bytes()));
        format!("{body}.{tag}")
    }

    /// The payload, if `sealed` carries a valid tag under any key (constant-time comparison).
    pub fn open(&self, purpose: Purpose, sealed: &str) -> Option<Vec<u8>> {
        let (body, tag) = sealed.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let valid = self.keys.iter().any(|key| {
            let mut mac = mac(key, purpose);
            mac.update(body.as_bytes());
            mac.verify_slice(&tag).is_ok()
        });
        if !valid {
            return None;
        }
        URL_SAFE_NO_PAD.decode(body).ok()
    }

    /// A tag over `data` alone (for values compared, not opened).
    pub fn tag_text(&self, purpose: Purpose, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(&self.keys[0], purpose, data))
    }

    /// Checks a [`Sealer::tag_text`] under any key, in constant time.
    pub fn verify_tag(&self, purpose: Purpose, data: &[u8], tag: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        self.keys.iter().any(|key| {
            let mut mac = mac(key, purpose);
            mac.update(data);
            mac.verify_slice(&tag).is_ok()
        })
    }

    /// `base64url(nonce || ciphertext || tag)`: AES-256-GCM under the first key's encryption
    /// key, a random 96-bit nonce, the purpose as associated data.
    pub fn encrypt(&self, purpose: Purpose, plaintext: &[u8]) -> String {
        let key = aead_key(&self.keys[0]);
        let mut nonce = [0u8; aead::NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .unwrap_or_else(|_| panic!("the system random number generator failed"));
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(purpose.label()),
            &mut sealed,
        )
        .unwrap_or_else(|_| unreachable!("AES-GCM seals any input this size"));
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The plaintext of an [`Sealer::encrypt`] result, under any key; `None` when no key opens
    /// it (the key was rotated away, or it was tampered with).
    pub fn decrypt(&self, purpose: Purpose, sealed: &str) -> Option<Vec<u8>> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if bytes.len() < aead::NONCE_LEN + aead::AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(aead::NONCE_LEN);
        self.keys.iter().find_map(|key| {
            let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buffer = ciphertext.to_vec();
            let plain = aead_key(key)
                .open_in_place(nonce, aead::Aad::from(purpose.label()), &mut buffer)
                .ok()?;
            Some(plain.to_vec())
        })
    }

    fn tag(&self, key: &[u8], purpose: Purpose, data: &[u8]) -> Vec<u8> {
        let mut mac = mac(key, purpose);
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// The encryption key of a sealing key: HMAC-SHA256 under it of a fixed label, so the bytes
/// that tag client ids are never used directly as a cipher key.
fn aead_key(key: &[u8]) -> aead::LessSafeKey {
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"authz aes-256-gcm key v1\0");
    let derived = mac.finalize().into_bytes();
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, &derived)
        .unwrap_or_else(|_| unreachable!("32 bytes is an AES-256 key"));
    aead::LessSafeKey::new(unbound)
}

fn mac(key: &[u8], purpose: Purpose) -> HmacSha256 {
    // HMAC takes keys of any length; the config requires at least 32 bytes.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(purpose.label());
    mac
}
