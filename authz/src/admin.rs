//! The admin API (`authz.admin.v1.Admin`, defined in `proto/authz/admin/v1/admin.proto`):
//! off-boarding a user at once, cache figures, and the loaded config's version. Served on
//! `listen.admin`, which the config requires to be a loopback address, to callers that present
//! `listen.admin_token` ([`authenticate`]); `cli` is its client (`authz admin ...`).
//!
//! The generated protobuf types stay in this module and `cli`; the service speaks to the rest
//! through [`Authorizer`] and [`Reloader`].

pub mod cli;

use std::sync::Arc;

use sha2::Digest as _;
use subtle::ConstantTimeEq as _;
use tonic::{Request, Response, Status};

use crate::{authorizer::Authorizer, oauth::Facade, reload::Reloader, secrets::SecretValue};

/// The code generated from the .proto at build time (see `build.rs`).
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("authz.admin.v1");
}

pub use pb::admin_server::AdminServer;

/// Revokes a user's refresh-token families (the OAuth facade's sign-in sessions). Without
/// the facade nothing implements this and off-boarding reports 0.
pub trait RefreshTokens: Send + Sync + std::fmt::Debug {
    /// Revokes every refresh-token family issued to `email`; returns how many. `Err`: the
    /// shared store could not be reached.
    fn revoke_user<'a>(
        &'a self,
        email: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send + 'a>>;
}

/// The facade's sign-in sessions, revoked in the shared store.
impl RefreshTokens for Facade {
    fn revoke_user<'a>(
        &'a self,
        email: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send + 'a>> {
        Box::pin(async move {
            Facade::revoke_user(self, email)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Checks every admin call's `authorization: Bearer <token>` against `token` (constant time;
/// the secret's current value, so it rotates without a restart). `None`: calls are not
/// authenticated (the start-up log warns).
pub fn authenticate(
    token: Option<SecretValue>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let Some(token) = &token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        let expected = token.current();
        // A token file usually ends with a newline; it is not part of the token.
        let expected = expected.expose().trim();
        // Digests compared, so that neither the bytes nor the length of the token leak
        // through timing.
        let digest = |text: &str| sha2::Sha256::digest(text.as_bytes());
        if !expected.is_empty() && bool::from(digest(presented).ct_eq(&digest(expected))) {
            Ok(request)
        } else {
            tracing::warn!(
                event = "admin_refused",
                "admin call without the right token"
            );
            Err(Status::unauthenticated(
                "the admin API needs the token of listen.admin_token (authz admin --token-file)",
            ))
        }
    }
}

/// The `Admin` gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminService {
    authorizer: Arc<Authorizer>,
    reloader: Arc<Reloader>,
    refresh_tokens: Option<Arc<dyn RefreshTokens>>,
}

// === impl AdminService ===

impl AdminService {
    pub fn new(
        authorizer: Arc<Authorizer>,
        reloader: Arc<Reloader>,
        refresh_tokens: Option<Arc<dyn RefreshTokens>>,
    ) -> AdminService {
        AdminService {
            authorizer,
            reloader,
            refresh_tokens,
        }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn invalidate_user(
        &self,
        request: Request<pb::InvalidateUserRequest>,
    ) -> Result<Response<pb::InvalidateUserResponse>, Status> {
        let email = request.into_inner().email;
        let email = email.trim();
        if email.is_empty() || !email.contains('@') {
            return Err(Status::invalid_argument(
                "email must be a user's email address",
            ));
        }
        let removed = self.authorizer.invalidate_user(email).await;
        let families = match &self.refresh_tokens {
            Some(tokens) => tokens.revoke_user(email).await.map_err(|problem| {
                Status::unavailable(format!("revoking refresh tokens: {problem}"))
            })?,
            None => 0,
        };
        tracing::info!(
            email,
            verdicts = removed.verdicts,
            identities = removed.identities,
            memberships = removed.memberships,
            refresh_token_families = families,
            "admin: user invalidated"
        );
        Ok(Response::new(pb::InvalidateUserResponse {
            verdicts: removed.verdicts,
            identities: removed.identities,
            memberships: removed.memberships,
            refresh_token_families: families,
        }))
    }

    async fn cache_stats(
        &self,
        _: Request<pb::CacheStatsRequest>,
    ) -> Result<Response<pb::CacheStatsResponse>, Status> {
        let caches = self
            .authorizer
            .cache_stats()
            .await
            .into_iter()
            .map(|(name, stats)| pb::CacheStats {
                name: name.to_string(),
                entries: stats.entries,
                hits: stats.hits,
                misses: stats.misses,
            })
            .collect();
        Ok(Response::new(pb::CacheStatsResponse { caches }))
    }

    async fn config_version(
        &self,
        _: Request<pb::ConfigVersionRequest>,
    ) -> Result<Response<pb::ConfigVersionResponse>, Status> {
        let version = self.reloader.version();
        Ok(Response::new(pb::ConfigVersionResponse {
            version: version.label(),
            fingerprint: version.fingerprint_hex(),
            loaded_at: version.loaded_at_unix(),
            source: version.source.clone(),
            reloads: version.reloads,
            last_reload_error: version.last_error.clone().unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests;
