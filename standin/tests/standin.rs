//! End-to-end checks of the stand-in over real HTTP, with the clients the authz crate uses.
//! Each test starts its own stand-in: faults and counters must not leak between tests.

// clippy's allow-unwrap-in-tests covers #[test] fns, not the helpers here; a panic is a failure.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use openidconnect::{IssuerUrl, core::CoreProviderMetadata};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use standin::{AccessTokenSpec, Options, StandIn, Stats};

async fn start() -> StandIn {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    StandIn::start(listener, Options::default()).await.unwrap()
}

fn url(standin: &StandIn, path: &str) -> String {
    format!("{}{path}", standin.issuer())
}

async fn post(client: &Client, url: &str, body: Value) -> (StatusCode, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn get(client: &Client, url: &str) -> (StatusCode, Value) {
    let response = client.get(url).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Verifies `token` against the JWKS the stand-in serves right now.
async fn verify(
    client: &Client,
    standin: &StandIn,
    token: &str,
) -> jsonwebtoken::errors::Result<Value> {
    let jwks: JwkSet = client
        .get(url(standin, "/oauth2/v3/certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(token)?.kid.unwrap();
    let Some(jwk) = jwks.find(&kid) else {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into());
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["client-1"]);
    validation.set_issuer(&[standin.issuer()]);
    Ok(jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &validation)?.claims)
}

fn claims(standin: &StandIn) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"iss": standin.issuer(), "aud": "client-1", "sub": "42", "email": "a@example.com",
           "email_verified": true, "hd": "example.com", "iat": now, "exp": now + 3600})
}

#[tokio::test]
async fn discovery_jwks_and_id_tokens() {
    let standin = start().await;
    let client = Client::new();
    assert_eq!(standin.issuer(), format!("http://{}", standin.addr()));

    // The openidconnect crate's own discovery: fetches the document, checks the issuer and
    // content types, then fetches and parses the JWKS.
    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(standin.issuer().to_owned()).unwrap(),
        &client,
    )
    .await
    .unwrap();
    assert_eq!(metadata.issuer().as_str(), standin.issuer());
    assert_eq!(metadata.jwks().keys().len(), 1);
    assert_eq!(
        metadata.jwks_uri().as_str(),
        format!("{}/oauth2/v3/certs", standin.issuer())
    );

    let response = client
        .get(url(&standin, "/oauth2/v3/certs"))
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=3600, must-revalidate, no-transform"
    );
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/json; charset=UTF-8"
    );
    let jwks: Value = response.json().await.unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["e"], "AQAB");
    assert_eq!(key["kid"], standin.current_kid());
    assert_eq!(standin.current_kid().len(), 40);
    assert!(!key["n"].as_str().unwrap().contains('='));

    // Minted over HTTP and in-process, both verify against the served JWKS.
    let claims = claims(&standin);
    let (status, body) = post(
        &client,
        &url(&standin, "/_standin/id_token"),
        json!({"claims": claims}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = body["token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(verify(&client, &standin, token).await.unwrap(), claims);
    let token = standin.mint_id_token(&claims);
    assert_eq!(verify(&client, &standin, &token).await.unwrap(), claims);

    // An overridden kid is not in the JWKS; other algorithms are for negative tests.
    let (_, body) = post(
        &client,
        &url(&standin, "/_standin/id_token"),
        json!({"claims": claims, "kid": "unknown-kid"}),
    )
    .await;
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(token).unwrap().kid.as_deref(),
        Some("unknown-kid")
    );
    assert!(verify(&client, &standin, token).await.is_err());
    let (_, body) = post(
        &client,
        &url(&standin, "/_standin/id_token"),
        json!({"claims": claims, "alg": "none"}),
    )
    .await;
    assert!(body["token"].as_str().unwrap().ends_with('.'));
    let (status, _) = post(
        &client,
        &url(&standin, "/_standin/id_token"),
        json!({"claims": claims, "alg": "ES256"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(
        &client,
        &url(&standin, "/_standin/id_token"),
        json!({"claims": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn access_tokens_tokeninfo_and_userinfo() {
    let standin = start().await;
    let client = Client::new();
    let (status, body) = post(
        &client,
        &url(&standin, "/_standin/access_token"),
        json!({"sub": "42", "email": "a@example.com", "hd": "example.com", "name": "A",
               "aud": "client-1", "scope": "openid email"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ya29.") && token.len() > 150);
    let exp = body["exp"].as_i64().unwrap();

    // Three ways to ask tokeninfo; every value a string, no hd.
    let tokeninfo = url(&standin, "/tokeninfo");
    let by_query = get(&client, &format!("{tokeninfo}?access_token={token}")).await;
    let by_form = client
        .post(&tokeninfo)
        .form(&[("access_token", &token)])
        .send()
        .await
        .unwrap();
    let by_form = (by_form.status(), by_form.json::<Value>().await.unwrap());
    let by_bearer = client
        .post(&tokeninfo)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let by_bearer = (by_bearer.status(), by_bearer.json::<Value>().await.unwrap());
    for (status, body) in [&by_query, &by_form, &by_bearer] {
        assert_eq!(*status, StatusCode::OK);
        let body = body.as_object().unwrap();
        assert!(body.values().all(Value::is_string), "{body:?}");
        assert_eq!(body["azp"], "client-1");
        assert_eq!(body["aud"], "client-1");
        assert_eq!(body["sub"], "42");
        assert_eq!(body["scope"], "openid email");
        assert_eq!(body["exp"], exp.to_string());
        assert_eq!(body["email"], "a@example.com");
        assert_eq!(body["email_verified"], "true");
        assert_eq!(body["access_type"], "online");
        let expires_in: i64 = body["expires_in"].as_str().unwrap().parse().unwrap();
        assert!((3590..=3599).contains(&expires_in));
        assert!(!body.contains_key("hd"));
    }

    let expired = standin.mint_access_token(AccessTokenSpec {
        sub: "42".into(),
        aud: "client-1".into(),
        expires_in: -10,
        ..Default::default()
    });
    for bad in [expired.as_str(), "ya29.unknown"] {
        let (status, body) = get(&client, &format!("{tokeninfo}?access_token={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "invalid_token", "error_description": "Invalid Value"})
        );
    }

    // userinfo: hd only for a user that has one; email_verified a bool.
    let userinfo = url(&standin, "/v1/userinfo");
    let response = client
        .get(&userinfo)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"sub": "42", "name": "A", "email": "a@example.com", "email_verified": true,
               "hd": "example.com"})
    );
    let gmail = standin.mint_access_token(AccessTokenSpec {
        sub: "43".into(),
        email: Some("b@gmail.com".into()),
        aud: "client-1".into(),
        ..Default::default()
    });
    let body: Value = client
        .get(&userinfo)
        .bearer_auth(&gmail)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"sub": "43", "email": "b@gmail.com", "email_verified": true})
    );
    for bad in [expired.as_str(), "ya29.unknown"] {
        let response = client.get(&userinfo).bearer_auth(bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="invalid_token""#
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "invalid_request", "error_description": "Invalid Credentials"})
        );
    }

    let (status, _) = post(
        &client,
        &url(&standin, "/_standin/access_token"),
        json!({"sub": "42"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "aud is required");
    let (status, _) = post(
        &client,
        &url(&standin, "/_standin/access_token"),
        json!({"sub": "42", "aud": "c", "expiresIn": 5}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
}

#[tokio::test]
async fn rotation() {
    let standin = start().await;
    let client = Client::new();
    let old_kid = standin.current_kid();
    let old_token = standin.mint_id_token(&claims(&standin));

    let (status, body) = post(
        &client,
        &url(&standin, "/_standin/rotate"),
        json!({"keep_old": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let new_kid = body["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    assert_eq!(standin.current_kid(), new_kid);
    let new_token = standin.mint_id_token(&claims(&standin));
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .unwrap(),
        new_kid
    );
    let (_, jwks) = get(&client, &url(&standin, "/oauth2/v3/certs")).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert!(verify(&client, &standin, &old_token).await.is_ok());
    assert!(verify(&client, &standin, &new_token).await.is_ok());

    let newest = tokio::task::spawn_blocking({
        let standin = standin.clone();
        move || standin.rotate(false)
    })
    .await
    .unwrap();
    let (_, jwks) = get(&client, &url(&standin, "/oauth2/v3/certs")).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], newest);
    assert!(verify(&client, &standin, &old_token).await.is_err());
    assert!(verify(&client, &standin, &new_token).await.is_err());
}

#[tokio::test]
async fn faults_and_stats() {
    let standin = start().await;
    let client = Client::new();
    let discovery = url(&standin, "/.well-known/openid-configuration");
    let jwks = url(&standin, "/oauth2/v3/certs");
    let tokeninfo = url(&standin, "/tokeninfo?access_token=x");
    let userinfo = url(&standin, "/v1/userinfo");
    let fault = url(&standin, "/_standin/fault");

    let (status, _) = post(
        &client,
        &fault,
        json!({"mode": "error", "status": 500, "endpoints": ["jwks"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        client.get(&jwks).send().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        client.get(&discovery).send().await.unwrap().status(),
        StatusCode::OK
    );

    post(&client, &fault, json!({"mode": "error"})).await;
    for endpoint in [&discovery, &jwks, &tokeninfo, &userinfo] {
        let response = client.get(endpoint).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.json::<Value>().await.is_ok());
    }
    // Control endpoints are never faulted.
    let (status, _) = get(&client, &url(&standin, "/_standin/stats")).await;
    assert_eq!(status, StatusCode::OK);

    post(
        &client,
        &fault,
        json!({"mode": "garbage", "endpoints": ["discovery"]}),
    )
    .await;
    let response = client.get(&discovery).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.json::<Value>().await.is_err());

    post(
        &client,
        &fault,
        json!({"mode": "hang", "endpoints": ["tokeninfo"]}),
    )
    .await;
    let impatient = Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(
        impatient
            .get(&tokeninfo)
            .send()
            .await
            .unwrap_err()
            .is_timeout()
    );

    let (status, _) = post(&client, &fault, json!({"mode": "error", "status": 1000})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&client, &fault, json!({"mode": "sulk"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    post(&client, &fault, json!({"mode": "ok"})).await;
    for endpoint in [&discovery, &jwks] {
        assert_eq!(
            client.get(endpoint).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        client.get(&tokeninfo).send().await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client.get(&userinfo).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    let expected = Stats {
        discovery: 4,
        jwks: 3,
        tokeninfo: 3,
        userinfo: 2,
        ..Stats::default()
    };
    let (_, body) = get(&client, &url(&standin, "/_standin/stats")).await;
    assert_eq!(serde_json::from_value::<Stats>(body).unwrap(), expected);
    assert_eq!(standin.stats(), expected);
    let (status, body) = post(&client, &url(&standin, "/_standin/stats/reset"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<Stats>(body).unwrap(), expected);
    assert_eq!(standin.stats(), Stats::default());
}
