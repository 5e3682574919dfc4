//! Discovery documents: protected resource metadata (RFC 9728) per protected MCP server at its
//! path-aware URL, and the default server's at the root URL, authorization server metadata (RFC 8414, also at the OpenID path clients probe), and
//! our JWKS. `issuer` is the configured string byte for byte everywhere: clients compare it
//! with `authorization_servers[0]` and with the `iss` of the authorization response.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};

use super::{Facade, page};
use crate::{
    config::Config,
    resource::{McpResource, Resources},
};

/// `GET /.well-known/oauth-protected-resource[/<resource path>]`, one document per protected
/// MCP server (the root one describes the default server), served whether or not the facade
/// is on (without it, Google is the authorization server). Between servers that share a path
/// on different hosts, the `Host` header chooses.
pub fn resource_router(config: &Config) -> Router {
    let resources = Resources::from_config(config);
    let documents: Vec<(Arc<McpResource>, Value)> = resources
        .iter()
        .map(|resource| (resource.clone(), resource_metadata(config, resource)))
        .collect();
    let documents = Arc::new((resources, documents));
    let root = documents.clone();
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(move |headers: HeaderMap| {
                let documents = root.clone();
                async move { document_for(&documents, &headers, "") }
            }),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*path}",
            get(move |headers: HeaderMap, Path(path): Path<String>| {
                let documents = documents.clone();
                async move { document_for(&documents, &headers, &format!("/{path}")) }
            }),
        )
        .layer(axum::middleware::from_fn(page::cors))
}

type Documents = (Resources, Vec<(Arc<McpResource>, Value)>);

fn document_for(documents: &Documents, headers: &HeaderMap, path: &str) -> Response {
    let (resources, documents) = documents;
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    let found = resources.by_metadata_path(host, path).and_then(|resource| {
        documents
            .iter()
            .find(|(r, _)| Arc::ptr_eq(r, resource))
            .map(|(_, document)| document)
    });
    match found {
        Some(document) => page::json(StatusCode::OK, document),
        None => page::oauth_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no protected resource is served at this path",
        ),
    }
}

fn resource_metadata(config: &Config, resource: &McpResource) -> Value {
    let (server, scopes) = match &config.oauth {
        Some(oauth) => (oauth.issuer.clone(), oauth.scopes.clone()),
        None => (
            config.google.issuer.clone(),
            vec!["openid".into(), "email".into()],
        ),
    };
    json!({
        "resource": resource.url,
        "authorization_servers": [server],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": resource.name,
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
