//! Liveness and readiness over HTTP (`/healthz`, `/readyz`) for ECS, compose and Envoy.

use std::sync::Arc;

use axum::{Json, Router, http::StatusCode, routing::get};

use crate::{google::Google, groups::Groups, oauth::Facade};

/// `/healthz` answers while the process runs; `/readyz` only once tokens can be verified
/// (discovery done, JWKS loaded) and, when group policies are configured, a Google API access
/// token can be obtained (a cached one counts, so this is cheap). The config is valid by
/// construction: we do not start otherwise.
///
/// With the OAuth facade, `store` says whether the shared store answers. It is reported but
/// does not gate readiness: the Check never touches the store (revocations are mirrored in
/// memory), so a Redis outage must not take authorization down; sign-ins answer 503 meanwhile.
pub fn router(
    google: Arc<Google>,
    groups: Option<Arc<Groups>>,
    facade: Option<Arc<Facade>>,
) -> Router {
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
                let store = match &facade {
                    Some(facade) => Some(facade.store_reachable().await),
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
                    "store": store,
                });
                (status, Json(body))
            }),
        )
}
