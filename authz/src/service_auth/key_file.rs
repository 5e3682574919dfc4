//! Service-account key files: the JSON Google hands out, and signing an assertion with it.

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

use super::{AssertionClaims, AuthError, SecretString, Step};

/// The fields of a key file we use. The key stays inside `EncodingKey`, which does not print it.
pub(crate) struct ServiceAccountKey {
    pub(crate) client_email: String,
    private_key_id: String,
    key: EncodingKey,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    client_email: String,
    private_key_id: String,
    private_key: String,
}

impl ServiceAccountKey {
    pub(crate) fn parse(text: &str) -> anyhow::Result<ServiceAccountKey> {
        let file: KeyFile = serde_json::from_str(text).context("not a service-account key JSON")?;
        anyhow::ensure!(
            file.kind == "service_account",
            "type is {:?}, expected \"service_account\" (use kind = \"external-account\" for Workload Identity Federation files)",
            file.kind
        );
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .context("private_key is not an RSA private key in PEM")?;
        Ok(ServiceAccountKey {
            client_email: file.client_email,
            private_key_id: file.private_key_id,
            key,
        })
    }

    /// Signs the assertion locally: RS256, `kid` = the key's id so Google finds the public half.
    pub(crate) fn sign(&self, claims: &AssertionClaims) -> Result<SecretString, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map(SecretString::new)
            .map_err(|e| AuthError {
                step: Step::SignJwtLocally,
                problem: e.to_string(),
                rejected: true,
            })
    }
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}
