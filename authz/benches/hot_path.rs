//! Micro-benchmarks of the per-request hot path, so a regression shows per commit:
//! `cargo bench -p authz --bench hot_path`.
//!
//! - `extract`: find and classify the bearer token in a header.
//! - `cache_key`: SHA-256 over a Google-sized ID token and the policy fingerprint.
//! - `check_warm`: a whole `Check` call for a token whose verdict is cached (parse, hash, cache
//!   hit, expiry re-check, response build, audit event with logging off), in-process.
//! - `verify_id_token`: what a cache miss adds for an ID token: header parse, key lookup,
//!   RS256 signature and claim checks (JWKS warm), without the cache.
#![allow(clippy::unwrap_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use authz::{
    authorizer::Authorizer, cache, check::CheckService, config::Config, credentials,
    credentials::Credential, google::Google, principal::unix_now,
};
use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::ext_authz::v3::pb::Authorization;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context,
};
use serde_json::json;

const CLIENT: &str = "bench.apps.googleusercontent.com";

fn request(token: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: "1".into(),
                    method: "POST".into(),
                    path: "/mcp".into(),
                    headers: [
                        ("authorization".to_string(), format!("Bearer {token}")),
                        (
                            "x-request-id".to_string(),
                            "5f0c2f7e-0b7e-4a8e-9d3a-3c1b2d4e5f60".to_string(),
                        ),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (standin, google, service) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let standin = standin::StandIn::start(listener, standin::Options::default())
            .await
            .unwrap();
        let issuer = standin.issuer().to_string();
        let env = [
            ("AUTHZ_GOOGLE__CLIENT_IDS", CLIENT.to_string()),
            ("AUTHZ_GOOGLE__ISSUER", issuer.clone()),
            ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo")),
            ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
            ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
        ];
        let config = Config::load(None, env.map(|(k, v)| (k.to_string(), v))).unwrap();
        let google = Google::new(&config).unwrap();
        tokio::spawn(google.clone().run(Default::default()));
        while !google.is_ready() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let service = CheckService::new(
            &config,
            Arc::new(Authorizer::new(&config, google.clone(), None)),
        );
        (standin, google, service)
    });
    let mint = |sub: String| {
        let now = unix_now();
        standin.mint_id_token(&json!({
            "iss": standin.issuer(), "aud": CLIENT, "azp": CLIENT, "sub": sub,
            "email": "ada@example.com", "email_verified": true, "hd": "example.com",
            "iat": now, "exp": now + 3600,
        }))
    };
    let token = mint("warm".into());
    let header = format!("Bearer {token}");

    c.bench_function("extract", |b| {
        b.iter(|| credentials::extract(Some(std::hint::black_box(header.as_bytes())), "/mcp"))
    });
    c.bench_function("cache_key", |b| {
        b.iter(|| cache::key(std::hint::black_box(&token), &[&[7u8; 32]]))
    });
    let warm = request(&token);
    runtime
        .block_on(service.check(tonic::Request::new(warm.clone())))
        .unwrap();
    c.bench_function("check_warm", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = service
                .check(tonic::Request::new(warm.clone()))
                .await
                .unwrap();
            assert_eq!(response.get_ref().status.as_ref().unwrap().code, 0);
        })
    });
    c.bench_function("verify_id_token", |b| {
        b.to_async(&runtime).iter(|| async {
            google.verify(Credential::Jwt(&token)).await.unwrap();
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
