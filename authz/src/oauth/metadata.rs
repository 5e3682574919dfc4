//! Discovery documents: protected resource metadata (RFC 9728) at the path-aware and the root
//! URL, authorization server metadata (RFC 8414, also at the OpenID path clients probe), and
//! our JWKS. `issuer` is the configured string byte for byte everywhere: clients compare it
//! with `authorization_servers[0]` and with the `iss` of the authorization response.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::Response, routing::get};
use serde_json::{Value, json};

use super::{Facade, page};
use crate::config::Config;

/// `GET /.well-known/oauth-protected-resource[/<resource path>]`, served whether or not the
/// facade is on (without it, Google is the authorization server).
pub fn resource_router(config: &Config) -> Router {
    let document = Arc::new(resource_metadata(config));
    let root = document.clone();
    let mut router = Router::new().route(
        "/.well-known/oauth-protected-resource",
        get(move || {
            let document = root.clone();
            async move { page::json(StatusCode::OK, &document) }
        }),
    );
    let path = config.resource.url.path().trim_end_matches('/');
    if !path.is_empty() {
        router = router.route(
            &format!("/.well-known/oauth-protected-resource{path}"),
            get(move || {
                let document = document.clone();
                async move { page::json(StatusCode::OK, &document) }
            }),
        );
    }
    router.layer(axum::middleware::from_fn(page::cors))
}

fn resource_metadata(config: &Config) -> Value {
    let (server, scopes, name) = match &config.oauth {
        Some(oauth) => (
            oauth.issuer.clone(),
            oauth.scopes.clone(),
            oauth.resource_name.clone(),
        ),
        None => (
            config.google.issuer.clone(),
            vec!["openid".into(), "email".into()],
            "MCP servers".to_string(),
        ),
    };
    json!({
        "resource": config.resource.url.as_str(),
        "authorization_servers": [server],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": name,
    })
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub async fn authorization_server(State(facade): State<Arc<Facade>>) -> Response {
    let issuer = facade.issuer();
    let body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "registration_endpoint": format!("{issuer}/oauth/register"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "jwks_uri": format!("{issuer}/oauth/jwks"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": facade.settings.scopes,
        "client_id_metadata_document_supported": facade.clients.accepts_metadata_documents(),
        "authorization_response_iss_parameter_supported": true,
    });
    page::json(StatusCode::OK, &body)
}

/// `GET /oauth/jwks`: the public halves of our signing keys.
pub async fn jwks(State(facade): State<Arc<Facade>>) -> Response {
    let mut response = page::json(StatusCode::OK, &facade.tokens.keys.get().jwks());
    // Public and stable; verifiers may cache it briefly.
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    response
}
