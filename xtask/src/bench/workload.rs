//! What is sent: Google-shaped ID tokens from the stand-in, wrapped in CheckRequests shaped like
//! the ones Envoy sends for an MCP request, encoded once before any measurement.

use std::{
    ops::Range,
    time::{SystemTime, UNIX_EPOCH},
};

use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest,
    attribute_context::{HttpRequest, Request},
};
use prost::{Message as _, bytes::Bytes};
use serde_json::json;
use standin::StandIn;

/// Signs one ID token per index in `range` (RS256, ~1 ms each), on every core. Token `i` is for
/// user `i`, so all tokens differ and each is its own cache entry.
pub fn mint_tokens(
    standin: &StandIn,
    client_id: &str,
    domain: &str,
    range: Range<usize>,
) -> Vec<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = range.len().div_ceil(threads).max(1);
    let indices: Vec<usize> = range.collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = indices
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&i| {
                            standin.mint_id_token(&json!({
                                "iss": standin.issuer(),
                                "aud": client_id,
                                "azp": client_id,
                                "sub": format!("{}", 100_000_000_000_000_000_000u128 + i as u128),
                                "email": format!("user{i}@{domain}"),
                                "email_verified": true,
                                "hd": domain,
                                "name": format!("Bench User {i}"),
                                "iat": now,
                                "exp": now + 3600,
                            }))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a minting thread panicked"))
            .collect()
    })
}

/// One encoded CheckRequest per token: a `POST /mcp` with the headers an MCP client sends, as
/// Envoy's ext_authz filter reports them (pseudo-headers included).
pub fn check_bodies(tokens: &[String]) -> Vec<Bytes> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let headers = [
                (":authority", "mcp.example.com".to_string()),
                (":method", "POST".to_string()),
                (":path", "/mcp".to_string()),
                (":scheme", "https".to_string()),
                ("accept", "application/json, text/event-stream".to_string()),
                ("authorization", format!("Bearer {token}")),
                ("content-length", "120".to_string()),
                ("content-type", "application/json".to_string()),
                ("mcp-protocol-version", "2025-06-18".to_string()),
                ("user-agent", "bench-mcp-client/1.0".to_string()),
                ("x-forwarded-proto", "https".to_string()),
                ("x-request-id", format!("bench-{i:08}")),
            ];
            let request = CheckRequest {
                attributes: Some(AttributeContext {
                    request: Some(Request {
                        http: Some(HttpRequest {
                            id: format!("{i}"),
                            method: "POST".into(),
                            path: "/mcp".into(),
                            host: "mcp.example.com".into(),
                            scheme: "https".into(),
                            protocol: "HTTP/1.1".into(),
                            size: 120,
                            headers: headers
                                .into_iter()
                                .map(|(name, value)| (name.to_string(), value))
                                .collect(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            };
            Bytes::from(request.encode_to_vec())
        })
        .collect()
}
