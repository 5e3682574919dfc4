//! Our own access tokens, the part of the OAuth facade that the Check path needs: the ES256
//! signing keys ([`keys`]), the token's claims, minting and local verification
//! ([`access_token`]), and [`TokenCheck`], what the authorizer holds to accept them. The facade
//! ([`crate::oauth`]) mints and the authorizer verifies, both through this module, so the
//! authorizer does not depend on the facade.

pub mod access_token;
pub mod keys;

use std::sync::Arc;

use crate::{
    config::{Config, OAuthConfig},
    resource::Resources,
    secrets::{Current, Derived, Secrets},
    store::{Store, revocations::Revocations},
};
use access_token::Audience;
use keys::SigningKeys;

/// What the Check path needs to accept our tokens: the keys, who they are for, and the
/// revocations. Built before the authorizer, shared with the facade.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    pub keys: Arc<Current<SigningKeys>>,
    pub audience: Audience,
    pub revocations: Arc<Revocations>,
}

/// Builds the keys and revocation view the Check path needs when `[oauth]` is configured.
pub async fn token_check(
    config: &Config,
    oauth: &OAuthConfig,
    store: Arc<dyn Store>,
    secrets: &Secrets,
) -> anyhow::Result<TokenCheck> {
    let keys = match &oauth.signing_keys {
        None => {
            tracing::warn!(
                "oauth.signing_keys is not set: generated a key; tokens will not survive a restart"
            );
            Current::Generated(Arc::new(SigningKeys::generate()?))
        }
        Some(reference) => {
            let secret = secrets.resolve("oauth.signing_keys", reference).await?;
            Current::FromSecret(Derived::new(secret, |text| {
                Ok(SigningKeys::from_pem_bundle(text)?)
            })?)
        }
    };
    Ok(TokenCheck {
        keys: Arc::new(keys),
        audience: Audience {
            issuer: oauth.issuer.clone(),
            resources: Resources::from_config(config)
                .iter()
                .map(|resource| resource.url.clone())
                .collect(),
            leeway: config.google.clock_skew.as_secs(),
        },
        revocations: Arc::new(Revocations::new(store)),
    })
}
