//! RSA signing keys, the JWKS that publishes them, and ID-token signing.
//!
//! Google signs ID tokens with RS256 keys it rotates every few days, keeping the previous key
//! in the JWKS for a while; the key ring models exactly that: one current key that signs, and a
//! published set that verifiers fetch.

use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::{RngCore as _, rngs::OsRng};
use rsa::{
    RsaPrivateKey,
    pkcs1::EncodeRsaPrivateKey as _,
    pkcs8::{EncodePublicKey as _, LineEnding},
    traits::PublicKeyParts as _,
};
use serde::Serialize;

/// Google's keys are 2048-bit RSA.
const KEY_BITS: usize = 2048;

/// One generated key pair: what signs, and what the JWKS publishes.
pub(crate) struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    /// The SPKI PEM of the public key. It is the HMAC secret for `alg: HS*` tokens, which
    /// reproduces the classic algorithm-confusion attack a verifier must refuse.
    public_pem: String,
    jwk: PublicJwk,
}

/// One entry of the JWKS, in the field order and form Google serves.
#[derive(Debug, Clone, Serialize)]
struct PublicJwk {
    kty: &'static str,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
    kid: String,
    n: String,
    e: String,
}

impl SigningKey {
    /// Generates a fresh key. CPU-heavy (up to about a second in a release build, several
    /// seconds in a debug one), so async callers run it on a blocking thread.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let private = RsaPrivateKey::new(&mut OsRng, KEY_BITS).context("generating an RSA key")?;
        let der = private
            .to_pkcs1_der()
            .context("encoding the RSA key as PKCS#1")?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the RSA public key as PEM")?;
        let kid = random_kid();
        let jwk = PublicJwk {
            kty: "RSA",
            alg: "RS256",
            use_: "sig",
            kid: kid.clone(),
            // Base64url of the unsigned big-endian integers, without padding (RFC 7518 §6.3.1).
            n: URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            e: URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        };
        Ok(Self {
            kid,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            public_pem,
            jwk,
        })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as they are. `kid` overrides the header's key id (the signature is still
    /// made with this key); `alg` picks the algorithm: the RS*/PS* family signs with this key,
    /// HS* uses the public key PEM as the HMAC secret, and `none` leaves the token unsigned.
    pub(crate) fn sign(
        &self,
        claims: &serde_json::Value,
        kid: Option<&str>,
        alg: Option<&str>,
    ) -> anyhow::Result<String> {
        let kid = kid.unwrap_or(&self.kid).to_owned();
        let alg = alg.unwrap_or("RS256");
        if alg == "none" {
            return unsigned(claims, &kid);
        }
        let algorithm: Algorithm = alg
            .parse()
            .with_context(|| format!("unknown JWS algorithm {alg:?}"))?;
        let hmac_key;
        let key = match algorithm {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => &self.encoding,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                hmac_key = EncodingKey::from_secret(self.public_pem.as_bytes());
                &hmac_key
            }
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => {
                bail!("the stand-in has no key for {alg}")
            }
        };
        let header = Header {
            kid: Some(kid),
            ..Header::new(algorithm)
        };
        jsonwebtoken::encode(&header, claims, key).context("signing the token")
    }
}

/// An `alg: none` token: header and claims, empty signature.
fn unsigned(claims: &serde_json::Value, kid: &str) -> anyhow::Result<String> {
    let header = serde_json::json!({"alg": "none", "kid": kid, "typ": "JWT"});
    Ok(format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
    ))
}

/// 40 lowercase hex characters, the shape of Google's key ids.
pub(crate) fn random_kid() -> String {
    let mut bytes = [0u8; 20];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current signing key and the keys the JWKS publishes.
pub(crate) struct KeyRing {
    inner: Mutex<Ring>,
}

struct Ring {
    current: Arc<SigningKey>,
    /// Newest first, as the current key is always published.
    published: Vec<Arc<SigningKey>>,
}

impl KeyRing {
    pub(crate) fn new(key: SigningKey) -> Self {
        let key = Arc::new(key);
        Self {
            inner: Mutex::new(Ring {
                current: key.clone(),
                published: vec![key],
            }),
        }
    }

    /// The key that signs now. Cloning the `Arc` keeps the lock out of the signing itself.
    pub(crate) fn current(&self) -> Arc<SigningKey> {
        self.lock().current.clone()
    }

    /// Publishes `key` (first in the JWKS) and, when `activate`, makes it the signing key; the
    /// keys published so far stay in the JWKS only when `keep_old`. Google publishes a key well
    /// before it signs with it: `activate: false` followed later by [`KeyRing::activate_newest`]
    /// plays that.
    pub(crate) fn install(&self, key: SigningKey, keep_old: bool, activate: bool) -> String {
        let kid = key.kid.clone();
        let key = Arc::new(key);
        let mut ring = self.lock();
        if !keep_old {
            // Dropping the old keys never drops the one still signing.
            let signing = ring.current.clone();
            ring.published
                .retain(|k| !activate && Arc::ptr_eq(k, &signing));
        }
        ring.published.insert(0, key.clone());
        if activate {
            ring.current = key;
        }
        kid
    }

    /// Starts signing with the most recently published key.
    pub(crate) fn activate_newest(&self) -> String {
        let mut ring = self.lock();
        if let Some(newest) = ring.published.first().cloned() {
            ring.current = newest;
        }
        ring.current.kid.clone()
    }

    /// The JWKS document: `{"keys": [...]}`.
    pub(crate) fn jwks(&self) -> serde_json::Value {
        let ring = self.lock();
        let keys: Vec<&PublicJwk> = ring.published.iter().map(|k| &k.jwk).collect();
        serde_json::json!({ "keys": keys })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().expect("key ring mutex poisoned")
    }
}
