//! Service accounts: their keys, the key file Google hands out, and the switches tests flip on
//! them (domain-wide delegation, the Cloud Identity group-admin role).
//!
//! Each account has two kinds of key, as at Google: the user-managed key of its key file (the
//! `private_key_id` a locally signed assertion names), and a system-managed key that only
//! `signJwt` signs with. The latter is generated on first use, since RSA key generation is slow
//! and most tests never call `signJwt`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rand::{Rng as _, rngs::OsRng};
use rsa::{
    RsaPrivateKey,
    pkcs1::EncodeRsaPrivateKey as _,
    pkcs8::{EncodePrivateKey as _, LineEnding},
    traits::PublicKeyParts as _,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::keys::random_kid;

/// Body of `POST /_standin/service_account`, and the argument of
/// [`StandIn::create_service_account`](crate::StandIn::create_service_account).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceAccountSpec {
    /// e.g. `authz@my-project.iam.gserviceaccount.com`; the part between `@` and
    /// `.iam.gserviceaccount.com` becomes the key file's `project_id`.
    pub email: String,
    /// The scopes a Workspace admin granted the account's client id under domain-wide
    /// delegation: an assertion with `sub` may ask for these only.
    pub delegated_scopes: Vec<String>,
    /// Holds the Group Administrator role, which Cloud Identity's group methods require.
    pub group_admin: bool,
}

/// One RSA key of a service account.
pub(crate) struct AccountKey {
    pub(crate) kid: String,
    encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// PKCS#8 PEM, as in the key file.
    private_pem: String,
}

impl AccountKey {
    /// Generates a 2048-bit key. CPU-heavy: async callers use a blocking thread.
    fn generate() -> anyhow::Result<Self> {
        let private = RsaPrivateKey::new(&mut OsRng, 2048).context("generating an RSA key")?;
        let der = private
            .to_pkcs1_der()
            .context("encoding the RSA key as PKCS#1")?;
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the RSA key as PKCS#8")?
            .to_string();
        let decoding = DecodingKey::from_rsa_components(
            &URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
            &URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
        )
        .context("building the RSA verification key")?;
        Ok(Self {
            kid: random_kid(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding,
            private_pem,
        })
    }

    /// Signs `claims` RS256 with header `{"alg":"RS256","kid":..,"typ":"JWT"}`.
    pub(crate) fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(Algorithm::RS256)
        };
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing a JWT")
    }
}

pub(crate) struct ServiceAccount {
    /// Lowercased.
    pub(crate) email: String,
    pub(crate) delegated_scopes: Vec<String>,
    pub(crate) group_admin: bool,
    project_id: String,
    client_id: String,
    user_key: AccountKey,
    system_key: OnceCell<AccountKey>,
}

impl ServiceAccount {
    /// The key whose id is `kid`: the key file's, or the `signJwt` one once it exists.
    pub(crate) fn key(&self, kid: &str) -> Option<&AccountKey> {
        std::iter::once(&self.user_key)
            .chain(self.system_key.get())
            .find(|k| k.kid == kid)
    }

    /// The system-managed key `signJwt` signs with, generated on first use.
    pub(crate) async fn system_key(&self) -> anyhow::Result<&AccountKey> {
        self.system_key
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(AccountKey::generate)
                    .await
                    .context("the key generation task failed")?
            })
            .await
    }

    /// The key file, field for field as Google issues it, with its URLs under `base`.
    pub(crate) fn key_file(&self, base: &str) -> Value {
        json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.user_key.kid,
            "private_key": self.user_key.private_pem,
            "client_email": self.email,
            "client_id": self.client_id,
            "auth_uri": format!("{base}/o/oauth2/auth"),
            "token_uri": format!("{base}/token"),
            "auth_provider_x509_cert_url": format!("{base}/oauth2/v1/certs"),
            "client_x509_cert_url": format!(
                "{base}/robot/v1/metadata/x509/{}",
                self.email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com"
        })
    }
}

/// The registered service accounts, by lowercased email.
#[derive(Default)]
pub(crate) struct ServiceAccounts(Mutex<HashMap<String, Arc<ServiceAccount>>>);

impl ServiceAccounts {
    /// Creates (or replaces, with a new key) the account `spec` describes. Generates a key:
    /// run it on a blocking thread.
    pub(crate) fn create(&self, spec: &ServiceAccountSpec) -> anyhow::Result<Arc<ServiceAccount>> {
        let email = spec.email.trim().to_lowercase();
        anyhow::ensure!(email.contains('@'), "email must be an email address");
        let project_id = email
            .split_once('@')
            .and_then(|(_, host)| host.strip_suffix(".iam.gserviceaccount.com"))
            .unwrap_or("standin-project")
            .to_owned();
        let account = Arc::new(ServiceAccount {
            delegated_scopes: spec.delegated_scopes.clone(),
            group_admin: spec.group_admin,
            project_id,
            // Google's client ids of service accounts are 21 decimal digits.
            client_id: format!("1{:020}", OsRng.gen_range(0..10u64.pow(19))),
            user_key: AccountKey::generate()?,
            system_key: OnceCell::new(),
            email: email.clone(),
        });
        self.lock().insert(email, account.clone());
        Ok(account)
    }

    pub(crate) fn get(&self, email: &str) -> Option<Arc<ServiceAccount>> {
        self.lock().get(&email.to_lowercase()).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ServiceAccount>>> {
        self.0.lock().expect("service account mutex poisoned")
    }
}
