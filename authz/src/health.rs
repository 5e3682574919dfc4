//! Liveness and readiness over HTTP (`/healthz`, `/readyz`) for ECS, compose and Envoy.

use std::sync::Arc;

use axum::{Json, Router, http::StatusCode, routing::get};

use crate::google::Google;

/// `/healthz` answers while the process runs; `/readyz` only once tokens can be verified
/// (discovery done, JWKS loaded). The config is valid by construction: we do not start otherwise.
pub fn router(google: Arc<Google>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                let ready = google.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (
                    status,
                    Json(serde_json::json!({ "ready": ready, "config": "valid", "jwks": ready })),
                )
            }),
        )
}
