//! Google's sign-in over real HTTP, as a relying party and a browser see it: the authorization
//! endpoint and its account chooser, the redirect with the code, and the code's exchange at
//! `/token` for tokens that verify against the JWKS and work at tokeninfo and userinfo. Each
//! test starts its own stand-in.

// clippy's allow-unwrap-in-tests covers #[test] fns, not the helpers here; a panic is a failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use reqwest::{Client, Response, StatusCode, header, redirect};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use standin::{OAuthClientSpec, Options, StandIn, Stats, UserSpec};
use url::Url;

const CLIENT_ID: &str = "web-1.apps.googleusercontent.com";
/// Characters that must be form-encoded in HTTP Basic.
const SECRET: &str = "GOCSPX-s3cr+t/=%";
const REDIRECT_URI: &str = "https://facade.example/oauth/google/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const EMAIL_SCOPE: &str = "https://www.googleapis.com/auth/userinfo.email";
const PROFILE_SCOPE: &str = "https://www.googleapis.com/auth/userinfo.profile";

/// A stand-in with the client registered (over the control API) and a browser that, like a
/// test's, follows no redirects.
async fn start() -> (StandIn, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    let client = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let (status, _) = control(
        &client,
        &standin,
        "oauth_client",
        json!({"client_id": CLIENT_ID, "client_secret": SECRET,
               "redirect_uris": ["http://127.0.0.1:1/cb", REDIRECT_URI]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    (standin, client)
}

async fn control(
    client: &Client,
    standin: &StandIn,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = format!("{}/_standin/{path}", standin.issuer());
    let response = client.post(url).json(&body).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Google's parameters for a sign-in with PKCE S256, plus `extra` (which may override them).
fn params<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("response_type", "code"),
        ("scope", "openid email profile"),
        ("state", "st/ate+1&x=y"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    params
}

async fn authorize(client: &Client, standin: &StandIn, params: &[(&str, &str)]) -> Response {
    let url = Url::parse_with_params(&standin.authorize_url(), params).unwrap();
    client.get(url).send().await.unwrap()
}

/// The form's action and its hidden `request`, read from the page as a browser would.
fn form_of(page: &str) -> (String, String) {
    let attribute = |tag: &str, name: &str| {
        let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        tag[start..start + tag[start..].find('"').unwrap()].to_owned()
    };
    let form = &page[page.find("<form").unwrap()..];
    assert_eq!(attribute(form, "method"), "post");
    let hidden = &form[form.find("name=\"request\"").unwrap()..];
    (attribute(form, "action"), attribute(hidden, "value"))
}

/// Posts the chooser's form with `email`.
async fn choose(client: &Client, standin: &StandIn, request: &str, email: &str) -> Response {
    client
        .post(standin.authorize_url())
        .form(&[("request", request), ("email", email)])
        .send()
        .await
        .unwrap()
}

/// The redirect's target without its query, and its query.
fn location(response: &Response) -> (String, HashMap<String, String>) {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[header::LOCATION].to_str().unwrap();
    let url = Url::parse(location).unwrap();
    let query = url.query_pairs().into_owned().collect();
    let mut base = url.clone();
    base.set_query(None);
    (base.to_string(), query)
}

/// Authorization request, chooser, account: the query the browser brings back.
async fn sign_in(
    client: &Client,
    standin: &StandIn,
    extra: &[(&str, &str)],
    email: &str,
) -> HashMap<String, String> {
    let page = authorize(client, standin, &params(extra)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let (_, request) = form_of(&page.text().await.unwrap());
    let (base, query) = location(&choose(client, standin, &request, email).await);
    assert_eq!(base, REDIRECT_URI);
    query
}

async fn exchange(
    client: &Client,
    standin: &StandIn,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (StatusCode, HeaderMapAndBody) {
    let mut request = client.post(standin.token_url()).form(form);
    if let Some((id, secret)) = basic {
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = STANDARD.encode(format!("{}:{}", encode(id), encode(secret)));
        request = request.header(header::AUTHORIZATION, format!("Basic {credentials}"));
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, (headers, response.json().await.unwrap()))
}

type HeaderMapAndBody = (header::HeaderMap, Value);

/// The form of an exchange with `client_secret_post`.
fn post_form<'a>(code: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("code_verifier", VERIFIER),
    ];
    for (name, value) in extra {
        form.retain(|(n, _)| n != name);
        if !value.is_empty() {
            form.push((name, value));
        }
    }
    form
}

/// The ID token's claims, verified against the JWKS served now, for our client and issuer.
async fn verify(client: &Client, standin: &StandIn, id_token: &str) -> Value {
    let jwks: JwkSet = client
        .get(format!("{}/oauth2/v3/certs", standin.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.unwrap();
    assert_eq!(kid, standin.current_kid());
    let key = DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[standin.issuer()]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap()
        .claims
}

fn error(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}

#[tokio::test]
async fn workspace_account_signs_in() {
    let (standin, client) = start().await;
    let (status, body) = control(
        &client,
        &standin,
        "user",
        json!({"email": "Ada@example.com", "hd": "example.com", "name": "Ada Lovelace"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let sub = body["sub"].as_str().unwrap().to_owned();
    assert_eq!(sub.len(), 21);

    // The chooser: a small page with one form, the login hint prefilled.
    let page = authorize(
        &client,
        &standin,
        &params(&[
            ("hd", "example.com"),
            ("login_hint", "ada@example.com"),
            ("access_type", "offline"),
            ("prompt", "consent select_account"),
            ("include_granted_scopes", "true"),
        ]),
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert!(
        page.headers()[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let page = page.text().await.unwrap();
    assert!(page.contains("Sign in with Google"), "{page}");
    assert!(
        page.contains(r#"name="email" value="ada@example.com""#),
        "{page}"
    );
    let (action, request) = form_of(&page);
    assert_eq!(action, "/o/oauth2/v2/auth");
    assert!(request.len() >= 32);

    // The account (its email in another case): back to the client as Google sends it.
    let response = choose(&client, &standin, &request, "ada@EXAMPLE.com").await;
    let raw = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let (base, query) = location(&response);
    assert_eq!(base, REDIRECT_URI);
    assert!(raw.contains("code=4%2F0A"), "{raw}");
    let code = query["code"].clone();
    assert!(code.starts_with("4/0A") && code.len() > 60, "{code}");
    assert_eq!(query["state"], "st/ate+1&x=y");
    assert_eq!(
        query["scope"],
        format!("email profile {EMAIL_SCOPE} {PROFILE_SCOPE} openid")
    );
    assert_eq!(query["authuser"], "0");
    assert_eq!(query["hd"], "example.com");
    assert_eq!(query["prompt"], "consent");
    let names: Vec<String> = Url::parse(&raw)
        .unwrap()
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    assert_eq!(
        names,
        ["state", "code", "scope", "authuser", "hd", "prompt"]
    );
    // The request is spent.
    assert_eq!(
        choose(&client, &standin, &request, "ada@example.com")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );

    let (status, (headers, body)) = exchange(&client, &standin, None, &post_form(&code, &[])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    let access_token = body["access_token"].as_str().unwrap();
    assert!(access_token.starts_with("ya29."));
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["scope"],
        format!("openid {EMAIL_SCOPE} {PROFILE_SCOPE}")
    );
    assert!(body["refresh_token"].as_str().unwrap().starts_with("1//"));

    let claims = verify(&client, &standin, body["id_token"].as_str().unwrap()).await;
    let at_hash = URL_SAFE_NO_PAD.encode(&Sha256::digest(access_token.as_bytes())[..16]);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
    assert_eq!(
        claims,
        json!({"iss": standin.issuer(), "azp": CLIENT_ID, "aud": CLIENT_ID, "sub": sub,
               "hd": "example.com", "email": "Ada@example.com", "email_verified": true,
               "at_hash": at_hash, "nonce": "n-0S6_WzA2Mj", "name": "Ada Lovelace",
               "iat": iat, "exp": exp})
    );

    // The access token is known to tokeninfo and userinfo.
    let info: Value = client
        .post(format!("{}/tokeninfo", standin.issuer()))
        .form(&[("access_token", access_token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["aud"], CLIENT_ID);
    assert_eq!(info["sub"], sub);
    assert_eq!(info["email"], "Ada@example.com");
    assert_eq!(
        info["scope"],
        format!("openid {EMAIL_SCOPE} {PROFILE_SCOPE}")
    );
    let userinfo: Value = client
        .get(format!("{}/v1/userinfo", standin.issuer()))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        userinfo,
        json!({"sub": sub, "email": "Ada@example.com", "email_verified": true,
               "hd": "example.com", "name": "Ada Lovelace"})
    );

    // A code works once.
    let (status, (_, body)) = exchange(&client, &standin, None, &post_form(&code, &[])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body, error("invalid_grant", "Bad Request"));

    assert_eq!(
        standin.stats(),
        Stats {
            authorize: 1,
            authorize_sign_in: 2,
            token: 2,
            token_authorization_code: 2,
            jwks: 1,
            tokeninfo: 1,
            userinfo: 1,
            ..Stats::default()
        }
    );
}

#[tokio::test]
async fn consumer_account_with_basic_auth() {
    let (standin, client) = start().await;
    // A consumer account whose email is at the company's domain: no hd, whatever the email.
    let sub = standin
        .add_user(UserSpec {
            email_verified: false,
            name: Some("Eve".into()),
            ..UserSpec::new("eve@example.com", None)
        })
        .unwrap();
    // hd is a hint: Google signs the account in anyway, and the ID token tells the truth.
    // Without PKCE, nonce or the profile scope.
    let query = sign_in(
        &client,
        &standin,
        &[
            ("hd", "example.com"),
            ("scope", "openid email"),
            ("nonce", ""),
            ("code_challenge", ""),
            ("code_challenge_method", ""),
        ],
        "eve@example.com",
    )
    .await;
    assert!(!query.contains_key("hd"), "{query:?}");
    assert_eq!(query["scope"], format!("email {EMAIL_SCOPE} openid"));

    let form = [
        ("grant_type", "authorization_code"),
        ("code", query["code"].as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let (status, (_, body)) = exchange(&client, &standin, Some((CLIENT_ID, SECRET)), &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], format!("openid {EMAIL_SCOPE}"));
    assert!(body.get("refresh_token").is_none());
    let claims = verify(&client, &standin, body["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], sub);
    assert_eq!(claims["email"], "eve@example.com");
    assert_eq!(claims["email_verified"], false);
    for absent in ["hd", "nonce", "name"] {
        assert!(claims.get(absent).is_none(), "{absent} in {claims}");
    }

    // Basic credentials must be form-encoded: the raw secret is not the secret.
    let query = sign_in(&client, &standin, &[], "eve@example.com").await;
    let raw = STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"));
    let response = client
        .post(standin.token_url())
        .header(header::AUTHORIZATION, format!("Basic {raw}"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", query["code"].as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // ... and the code is still good for the client that authenticates.
    let (status, (_, body)) = exchange(
        &client,
        &standin,
        Some((CLIENT_ID, SECRET)),
        &post_form(&query["code"], &[("client_id", ""), ("client_secret", "")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Basic with the client id repeated in the form is fine; a secret in both is not.
    let query = sign_in(&client, &standin, &[], "eve@example.com").await;
    let (status, (_, body)) = exchange(
        &client,
        &standin,
        Some((CLIENT_ID, SECRET)),
        &post_form(&query["code"], &[]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn untrusted_client_or_redirect_gets_a_page() {
    let (standin, client) = start().await;
    for (what, extra, code) in [
        (
            "unknown client",
            vec![("client_id", "web-2.apps.googleusercontent.com")],
            "Error 401: invalid_client",
        ),
        (
            "no client",
            vec![("client_id", "")],
            "Error 400: invalid_request",
        ),
        (
            "unregistered redirect",
            vec![("redirect_uri", "https://evil.example/cb")],
            "Error 400: redirect_uri_mismatch",
        ),
        (
            "trailing slash",
            vec![(
                "redirect_uri",
                "https://facade.example/oauth/google/callback/",
            )],
            "Error 400: redirect_uri_mismatch",
        ),
        (
            "no redirect",
            vec![("redirect_uri", "")],
            "Error 400: invalid_request",
        ),
        // Even when the rest is wrong too: nothing goes to an unchecked URL.
        (
            "both wrong",
            vec![
                ("redirect_uri", "https://evil.example/cb"),
                ("response_type", "token"),
            ],
            "Error 400: redirect_uri_mismatch",
        ),
    ] {
        let response = authorize(&client, &standin, &params(&extra)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(response.headers().get(header::LOCATION).is_none(), "{what}");
        let page = response.text().await.unwrap();
        assert!(page.contains(code), "{what}: {page}");
        assert!(!page.contains("<form"), "{what}");
    }
    // A repeated parameter: unreadable, a page.
    let url = format!(
        "{}&client_id=other",
        Url::parse_with_params(&standin.authorize_url(), params(&[])).unwrap()
    );
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(header::LOCATION).is_none());
}

#[tokio::test]
async fn other_authorization_errors_go_back_to_the_client() {
    let (standin, client) = start().await;
    for (extra, expected) in [
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("scope", "email profile")], "invalid_scope"),
        (
            vec![("scope", "openid https://www.googleapis.com/auth/drive")],
            "invalid_scope",
        ),
        (vec![("scope", "")], "invalid_request"),
        (vec![("code_challenge_method", "S512")], "invalid_request"),
        (vec![("code_challenge", "too-short")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("access_type", "forever")], "invalid_request"),
        (vec![("prompt", "none consent")], "invalid_request"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let response = authorize(&client, &standin, &params(&extra)).await;
        let (base, query) = location(&response);
        assert_eq!(base, REDIRECT_URI, "{extra:?}");
        assert_eq!(query["error"], expected, "{extra:?}");
        assert_eq!(query["state"], "st/ate+1&x=y", "{extra:?}");
        assert!(!query.contains_key("code"));
    }
    // Without a state, none comes back; a registered URI's own query is kept.
    let response = authorize(
        &client,
        &standin,
        &params(&[
            ("state", ""),
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("response_type", "token"),
        ]),
    )
    .await;
    let (base, query) = location(&response);
    assert_eq!(base, "http://127.0.0.1:1/cb");
    assert_eq!(
        query,
        HashMap::from([("error".to_owned(), "unsupported_response_type".to_owned())])
    );
    // PKCE plain is allowed, and the default method.
    standin
        .add_user(UserSpec::new("ada@example.com", Some("example.com")))
        .unwrap();
    for method in ["plain", ""] {
        let query = sign_in(
            &client,
            &standin,
            &[
                ("code_challenge", VERIFIER),
                ("code_challenge_method", method),
            ],
            "ada@example.com",
        )
        .await;
        let (status, (_, body)) =
            exchange(&client, &standin, None, &post_form(&query["code"], &[])).await;
        assert_eq!(status, StatusCode::OK, "{method}: {body}");
    }
}

#[tokio::test]
async fn chooser_errors() {
    let (standin, client) = start().await;
    standin
        .add_user(UserSpec::new("ada@example.com", Some("example.com")))
        .unwrap();
    // Whatever is interpolated is escaped.
    let hostile = r#""><script>alert(1)</script>"#;
    let page = authorize(&client, &standin, &params(&[("login_hint", hostile)])).await;
    let page = page.text().await.unwrap();
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&quot;&gt;&lt;script&gt;"), "{page}");
    let (_, request) = form_of(&page);

    // An unknown account: the chooser again, for the same request, which stays pending.
    let response = choose(&client, &standin, &request, "nobody@example.com").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("Couldn&#39;t find your Google Account"),
        "{page}"
    );
    assert_eq!(form_of(&page).1, request);
    let (_, query) = location(&choose(&client, &standin, &request, "ada@example.com").await);
    assert!(query["code"].starts_with("4/0A"));

    // An unknown or missing request.
    for request in ["not-a-request", ""] {
        let response = choose(&client, &standin, request, "ada@example.com").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get(header::LOCATION).is_none());
        assert!(response.text().await.unwrap().contains("expired"));
    }
}

#[tokio::test]
async fn code_exchange_errors() {
    let (standin, client) = start().await;
    standin
        .add_user(UserSpec::new("ada@example.com", Some("example.com")))
        .unwrap();
    standin
        .add_oauth_client(&OAuthClientSpec {
            client_id: "web-2".into(),
            client_secret: "other-secret".into(),
            redirect_uris: vec![REDIRECT_URI.into()],
        })
        .unwrap();
    let bad =
        |error: &str, description: &str| (StatusCode::BAD_REQUEST, self::error(error, description));
    let unauthorized = |description: &str| {
        (
            StatusCode::UNAUTHORIZED,
            error("invalid_client", description),
        )
    };

    // Client authentication fails first, and leaves the code alone.
    let code = sign_in(&client, &standin, &[], "ada@example.com").await["code"].clone();
    for (extra, expected) in [
        (
            vec![("client_secret", "GOCSPX-wrong")],
            unauthorized("Unauthorized"),
        ),
        (
            vec![("client_secret", "")],
            bad("invalid_request", "client_secret is missing."),
        ),
        (
            vec![("client_id", "web-3")],
            unauthorized("The OAuth client was not found."),
        ),
        (
            vec![("client_id", "")],
            bad(
                "invalid_request",
                "Could not determine client ID from request.",
            ),
        ),
        (
            vec![("code", "")],
            bad("invalid_request", "Missing required parameter: code"),
        ),
        (
            vec![("redirect_uri", "")],
            bad(
                "invalid_request",
                "Missing required parameter: redirect_uri",
            ),
        ),
    ] {
        let (status, (_, body)) =
            exchange(&client, &standin, None, &post_form(&code, &extra)).await;
        assert_eq!((status, body), expected, "{extra:?}");
    }
    let (status, _) = exchange(&client, &standin, None, &post_form(&code, &[])).await;
    assert_eq!(status, StatusCode::OK);

    // Then the code is spent by the first exchange naming it, failed or not.
    for (extra, expected) in [
        (
            vec![(
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK",
            )],
            bad("invalid_grant", "Bad Request"),
        ),
        (
            vec![("code_verifier", CHALLENGE)],
            bad("invalid_grant", "Bad Request"),
        ),
        (
            vec![("code_verifier", "")],
            bad("invalid_grant", "Missing code verifier."),
        ),
        (
            vec![("redirect_uri", "http://127.0.0.1:1/cb")],
            bad("redirect_uri_mismatch", "Bad Request"),
        ),
        // Another client's code.
        (
            vec![("client_id", "web-2"), ("client_secret", "other-secret")],
            bad("invalid_grant", "Bad Request"),
        ),
    ] {
        let code = sign_in(&client, &standin, &[], "ada@example.com").await["code"].clone();
        let (status, (_, body)) =
            exchange(&client, &standin, None, &post_form(&code, &extra)).await;
        assert_eq!((status, body), expected, "{extra:?}");
        let (status, (_, body)) = exchange(&client, &standin, None, &post_form(&code, &[])).await;
        assert_eq!(
            (status, body),
            bad("invalid_grant", "Bad Request"),
            "retry after {extra:?}"
        );
    }

    // A verifier for a code issued without a challenge.
    let code = sign_in(
        &client,
        &standin,
        &[("code_challenge", ""), ("code_challenge_method", "")],
        "ada@example.com",
    )
    .await["code"]
        .clone();
    let (status, (_, body)) = exchange(&client, &standin, None, &post_form(&code, &[])).await;
    assert_eq!((status, body), bad("invalid_grant", "Bad Request"));
    // An unknown code, and a repeated form field.
    let (status, (_, body)) = exchange(&client, &standin, None, &post_form("4/0Anope", &[])).await;
    assert_eq!((status, body), bad("invalid_grant", "Bad Request"));
    let mut form = post_form("4/0Anope", &[]);
    form.push(("code", "4/0Aother"));
    let (status, (_, body)) = exchange(&client, &standin, None, &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn faults_and_control_errors() {
    let (standin, client) = start().await;
    let (status, _) = control(
        &client,
        &standin,
        "fault",
        json!({"mode": "error", "endpoints": ["authorize", "token"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let response = authorize(&client, &standin, &params(&[])).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = exchange(&client, &standin, None, &post_form("4/0Ax", &[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let stats = standin.stats();
    assert_eq!(
        (stats.authorize, stats.token, stats.token_authorization_code),
        (1, 1, 1)
    );

    for (path, body) in [
        ("user", json!({"email": "not-an-email"})),
        ("user", json!({"email": "a@example.com", "hd": ""})),
        ("user", json!({"email": "a@example.com", "extra": 1})),
        (
            "oauth_client",
            json!({"client_id": "x", "client_secret": "y", "redirect_uris": []}),
        ),
        (
            "oauth_client",
            json!({"client_id": "x", "client_secret": "y", "redirect_uris": ["/cb"]}),
        ),
        (
            "oauth_client",
            json!({"client_id": "x", "redirect_uris": ["https://x.example/cb"]}),
        ),
    ] {
        let (status, _) = control(&client, &standin, path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
    }
}

/// Offline access: the refresh token is redeemed for tokens describing the account as it is
/// now, until the account is suspended or deleted; then Google's `invalid_grant`, and its
/// access tokens stop working at tokeninfo and userinfo.
#[tokio::test]
async fn refresh_tokens_work_while_the_account_is_active() {
    let (standin, client) = start().await;
    let ada = json!({"email": "ada@example.com", "hd": "example.com"});
    assert_eq!(
        control(&client, &standin, "user", ada.clone()).await.0,
        StatusCode::OK
    );
    let offline = [
        ("access_type", "offline"),
        ("prompt", "consent select_account"),
    ];
    let signed_in = |email: &'static str| {
        let (standin, client) = (&standin, &client);
        async move {
            let query = sign_in(client, standin, &offline, email).await;
            let (status, (_, body)) =
                exchange(client, standin, None, &post_form(&query["code"], &[])).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    let body = signed_in("ada@example.com").await;
    let refresh_token = body["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String, secret: &'static str| {
        let (standin, client) = (&standin, &client);
        async move {
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", CLIENT_ID),
                ("client_secret", secret),
            ];
            exchange(client, standin, None, &form).await
        }
    };

    let (status, (_, renewed)) = refresh(refresh_token.clone(), SECRET).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert!(
        renewed.get("refresh_token").is_none(),
        "Google does not rotate"
    );
    let claims = verify(&client, &standin, renewed["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["hd"], "example.com");
    assert!(claims.get("nonce").is_none());
    let access_token = renewed["access_token"].as_str().unwrap().to_owned();

    // The client must authenticate.
    let (status, (_, body)) = refresh(refresh_token.clone(), "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The account becomes a consumer account: the new ID token has no hd.
    let consumer = json!({"email": "ada@example.com"});
    assert_eq!(
        control(&client, &standin, "user", consumer).await.0,
        StatusCode::OK
    );
    let (status, (_, body)) = refresh(refresh_token.clone(), SECRET).await;
    assert_eq!(status, StatusCode::OK);
    let claims = verify(&client, &standin, body["id_token"].as_str().unwrap()).await;
    assert!(claims.get("hd").is_none(), "{claims}");

    // Suspended: the refresh token, the access token and a new sign-in are refused.
    let suspended = json!({"email": "ada@example.com", "hd": "example.com", "suspended": true});
    assert_eq!(
        control(&client, &standin, "user", suspended).await.0,
        StatusCode::OK
    );
    let (status, (_, body)) = refresh(refresh_token.clone(), SECRET).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        error("invalid_grant", "Token has been expired or revoked.")
    );
    let tokeninfo = client
        .post(format!("{}/tokeninfo", standin.issuer()))
        .form(&[("access_token", access_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(tokeninfo.status(), StatusCode::BAD_REQUEST);
    let userinfo = client
        .get(format!("{}/v1/userinfo", standin.issuer()))
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(userinfo.status(), StatusCode::UNAUTHORIZED);
    let page = authorize(&client, &standin, &params(&offline)).await;
    let (_, request) = form_of(&page.text().await.unwrap());
    let refused = choose(&client, &standin, &request, "ada@example.com").await;
    assert!(refused.status().is_client_error());
    assert!(refused.headers().get(header::LOCATION).is_none());
    assert!(refused.text().await.unwrap().contains("suspended"));

    // Reinstated, then deleted: a new sign-in's refresh token works, then stops.
    assert_eq!(
        control(&client, &standin, "user", ada).await.0,
        StatusCode::OK
    );
    let fresh = signed_in("ada@example.com").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(refresh(fresh.clone(), SECRET).await.0, StatusCode::OK);
    let deleted = client
        .delete(format!("{}/_standin/user", standin.issuer()))
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    let (status, (_, body)) = refresh(fresh, SECRET).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(!standin.remove_user("ada@example.com"));
}
