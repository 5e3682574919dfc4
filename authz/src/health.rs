//! Liveness and readiness over HTTP (`/healthz`, `/readyz`) for ECS, compose and Envoy.

use std::sync::Arc;

use axum::{Json, Router, http::StatusCode, routing::get};

use crate::{google::Google, groups::Groups};

/// `/healthz` answers while the process runs; `/readyz` only once tokens can be verified
/// (discovery done, JWKS loaded) and, when group policies are configured, a Google API access
/// token can be obtained (a cached one counts, so this is cheap). The config is valid by
/// construction: we do not start otherwise.
pub fn router(google: Arc<Google>, groups: Option<Arc<Groups>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                let jwks = google.is_ready();
                let credentials = match &groups {
                    Some(groups) => Some(groups.ready().await),
                    None => None,
                };
                let ready = jwks && credentials != Some(false);
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = serde_json::json!({
                    "ready": ready,
                    "config": "valid",
                    "jwks": jwks,
                    "group_credentials": credentials,
                });
                (status, Json(body))
            }),
        )
}
