//! The OAuth 2.1 authorization server MCP clients sign in through ("the facade"). Google has
//! no dynamic client registration and its tokens are not bound to our resource, so we are the
//! authorization server clients see, and Google only signs the user in:
//!
//! ```text
//! client --register--> /oauth/register        (stateless: the client id is the sealed registration)
//! client --browser---> /oauth/authorize       consent page (names the client and its redirect host)
//!        --POST------> /oauth/authorize       -> Google (our state, nonce, PKCE)
//! Google --browser---> /oauth/callback        code exchange, ID token + nonce, domain + groups
//!        <-redirect--- client redirect_uri?code&state&iss
//! client -------------> /oauth/token          code + PKCE -> our ES256 access token + refresh token
//! ```
//!
//! - The `[oauth]` settings: [`crate::config::OAuthConfig`].
//! - [`metadata`]: protected-resource and authorization-server metadata, JWKS.
//! - [`clients`]: registration and client lookup; [`redirect`]: redirect-URI rules.
//! - [`authorize`]: the authorization request and consent page; [`callback`]: Google's return.
//! - [`token`]: the token endpoint; [`revoke`]: RFC 7009 revocation; [`reverify`]: asking
//!   Google again, at refresh, whether the account still may sign in.
//! - Minting and verifying our access tokens, and their ES256 keys: [`crate::facade_token`],
//!   which the Check path uses too.
//! - [`sessions`]: codes, refresh tokens and revocations in the shared store.
//! - [`pending`]: the bound on sign-ins waiting for Google.
//! - [`seal`]: HMAC-sealed and encrypted values; [`page`]: the few HTML pages and the error shapes.

pub mod authorize;
pub mod callback;
pub mod clients;
pub mod metadata;
pub mod page;
pub mod pending;
pub mod redirect;
mod resource_param;
pub mod reverify;
pub mod revoke;
pub mod seal;
pub mod sessions;
pub mod token;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};

use crate::{
    authorizer::Authorizer,
    client_metadata::ClientMetadataFetcher,
    config::{Config, OAuthConfig},
    facade_token::{TokenCheck, access_token},
    google::Google,
    random::{random_bytes, random_token},
    resource::Resources,
    secrets::{Current, Derived, SecretValue, Secrets},
    store::Store,
};
use clients::Clients;
use seal::Sealer;
use sessions::Sessions;

/// Largest request body the facade reads (forms and registration JSON are small).
const MAX_BODY: usize = 16 * 1024;

/// The facade's shared state.
#[derive(Debug)]
pub struct Facade {
    settings: OAuthConfig,
    /// Read at each code exchange, so a rotated secret is used at once.
    google_client_secret: SecretValue,
    tokens: TokenCheck,
    sealer: Arc<Current<Sealer>>,
    clients: Clients,
    sessions: Sessions,
    google: Arc<Google>,
    authorizer: Arc<Authorizer>,
    /// For Google's token endpoint: timeouts, no redirects.
    http: reqwest::Client,
    /// The protected MCP servers: a sign-in is for one of them, and its tokens' `aud` is its URL.
    resources: Resources,
    /// A `hd` hint for Google's account chooser when exactly one domain is allowed.
    domain_hint: Option<String>,
    /// Whose MCP servers these are, for the consent page: the allowed domains.
    organization: String,
    /// The bound on sign-ins waiting for Google's callback.
    pending: pending::PendingBudget,
}

/// The parts of the facade that come from the process: shared with the Check and the secrets.
#[derive(Debug)]
pub struct Parts {
    pub tokens: TokenCheck,
    pub store: Arc<dyn Store>,
    pub google: Arc<Google>,
    pub authorizer: Arc<Authorizer>,
}

impl Facade {
    pub async fn new(
        config: &Config,
        oauth: &OAuthConfig,
        parts: Parts,
        secrets: &Secrets,
    ) -> anyhow::Result<Arc<Facade>> {
        let Parts {
            tokens,
            store,
            google,
            authorizer,
        } = parts;
        let sealer = match &oauth.sealing_keys {
            None => {
                tracing::warn!(
                    "oauth.sealing_keys is not set: generated one; registered clients will not survive a restart"
                );
                Current::Generated(Arc::new(Sealer::new(vec![random_bytes::<32>().to_vec()])))
            }
            Some(reference) => {
                let secret = secrets.resolve("oauth.sealing_keys", reference).await?;
                Current::FromSecret(Derived::new(secret, Sealer::from_text)?)
            }
        };
        let sealer = Arc::new(sealer);
        let google_client_secret = secrets
            .resolve("oauth.google_client_secret", &oauth.google_client_secret)
            .await?;
        let documents = if config.client_metadata.enabled {
            let metrics = google.metrics().clone();
            Some(
                ClientMetadataFetcher::new(&config.client_metadata, metrics)
                    .context("client_metadata")?,
            )
        } else {
            None
        };
        let clients = Clients::new(sealer.clone(), oauth.registration_ttl.as_secs(), documents)
            .with_rules(clients::ClientRules::from_settings(oauth));
        // Pending sign-ins never share the memory store's bound with codes, refresh tokens and
        // revocations: a flood of them must not crowd those out.
        let pending_store: Arc<dyn Store> = match config.store.backend {
            crate::config::StoreBackend::Memory => Arc::new(
                crate::store::memory::MemoryStore::new(oauth.max_pending_sign_ins as u64),
            ),
            crate::config::StoreBackend::Redis => store.clone(),
        };
        let sessions = Sessions::new(
            store,
            pending_store,
            tokens.revocations.clone(),
            oauth.access_token_ttl,
        );
        let domain_hint = match config.access.domains.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
        Ok(Arc::new(Facade {
            settings: oauth.clone(),
            google_client_secret,
            tokens,
            sealer,
            clients,
            sessions,
            google,
            authorizer,
            http: crate::google::http::client(config.google.request_timeout)?,
            resources: Resources::from_config(config),
            domain_hint,
            organization: config.access.domains.join(", "),
            pending: pending::PendingBudget::new(oauth.max_pending_sign_ins),
        }))
    }

    /// The facade's endpoints (the resource metadata is served by [`metadata::resource_router`]
    /// whether or not the facade is on).
    pub fn router(self: &Arc<Self>) -> Router {
        let browser_called = Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(metadata::authorization_server),
            )
            .route(
                "/.well-known/openid-configuration",
                get(metadata::authorization_server),
            )
            .route("/oauth/jwks", get(metadata::jwks))
            .route("/oauth/register", post(register))
            .route("/oauth/token", post(token::token))
            .route("/oauth/revoke", post(revoke::revoke))
            .layer(axum::middleware::from_fn(page::cors));
        Router::new()
            .route(
                "/oauth/authorize",
                get(authorize::show_consent).post(authorize::consent_given),
            )
            .route("/oauth/callback", get(callback::callback))
            .merge(browser_called)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Off-boarding: revokes every session of `email`.
    pub async fn revoke_user(&self, email: &str) -> Result<u64, crate::store::StoreError> {
        self.sessions
            .revoke_user(email, self.settings.session_ttl)
            .await
    }

    /// Keeps the revocation view in sync with the store until `shutdown`.
    pub fn revocation_sync(
        &self,
        poll: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let metrics = self.google.metrics().clone();
        self.tokens.revocations.clone().run(poll, metrics, shutdown)
    }

    /// Whether the shared store answers now (reported by `/readyz`).
    pub async fn store_reachable(&self) -> bool {
        self.sessions.ping().await.is_ok()
    }

    fn issuer(&self) -> &str {
        &self.settings.issuer
    }
}

/// `POST /oauth/register` (RFC 7591).
async fn register(
    axum::extract::State(facade): axum::extract::State<Arc<Facade>>,
    body: Result<axum::Json<clients::RegistrationRequest>, axum::extract::rejection::JsonRejection>,
) -> axum::response::Response {
    let Ok(axum::Json(request)) = body else {
        return page::oauth_error(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            "the body must be a JSON client metadata object",
        );
    };
    match facade.clients.register(request) {
        Ok(body) => page::json(axum::http::StatusCode::CREATED, &body),
        Err(clients::RegistrationError::RedirectUri(why)) => page::oauth_error(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_redirect_uri",
            &why,
        ),
        Err(clients::RegistrationError::Metadata(why)) => page::oauth_error(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_client_metadata",
            &why,
        ),
    }
}

#[cfg(test)]
mod tests;
