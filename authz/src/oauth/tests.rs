#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{
    access_token::{self, Audience, User},
    clients::{ClientError, Clients, RegistrationRequest},
    keys::{SigningKeys, generate_pkcs8},
    redirect,
    seal::{Purpose, Sealer},
};
use crate::google::TokenError;

fn pem() -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", generate_pkcs8().unwrap()))
}

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn grant(user: &User) -> access_token::Grant<'_> {
    access_token::Grant {
        resource: RESOURCE,
        user,
        client_id: "c",
        scope: "mcp",
        session: "s1",
    }
}

fn audience() -> Audience {
    Audience {
        issuer: "https://mcp.example.com".into(),
        resources: vec!["https://mcp.example.com/mcp".into()],
        leeway: 0,
    }
}

fn user() -> User {
    User {
        sub: "1".into(),
        email: "ada@example.com".into(),
        hd: Some("example.com".into()),
    }
}

#[test]
fn redirect_uris_match_exactly_except_the_loopback_port() {
    let registered = vec![
        "http://127.0.0.1/callback".to_string(),
        "https://app.example/cb".to_string(),
    ];
    assert!(redirect::matches(&registered, "https://app.example/cb"));
    assert!(redirect::matches(
        &registered,
        "http://127.0.0.1:33418/callback"
    ));
    assert!(redirect::matches(&registered, "http://127.0.0.1/callback"));
    for refused in [
        "https://app.example/cb/",
        "https://app.example/cb?x=1",
        "https://app.example:8443/cb",
        "https://APP.example/cb",
        "http://localhost:33418/callback",
        "http://127.0.0.1:33418/callback/x",
        "http://127.0.0.1.evil.example/callback",
        "https://127.0.0.1:33418/callback",
        "http://user@127.0.0.1:1/callback",
    ] {
        assert!(!redirect::matches(&registered, refused), "{refused}");
    }
}

#[test]
fn only_https_or_loopback_http_redirect_uris_can_be_registered() {
    for ok in [
        "https://app.example/cb",
        "http://localhost/callback",
        "http://127.0.0.1:1/",
        "http://[::1]/cb",
    ] {
        assert!(redirect::check_registrable(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://app.example/cb",
        "javascript:alert(1)",
        "data:text/html,x",
        "cursor://x/cb",
        "https://app.example/cb#frag",
        "https://u:p@app.example/cb",
        "/relative",
    ] {
        assert!(redirect::check_registrable(bad).is_err(), "{bad}");
    }
}

#[test]
fn sealed_values_open_only_with_a_key_and_purpose_that_sealed_them() {
    let old = Sealer::new(vec![b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1".to_vec()]);
    let rotated = Sealer::new(vec![
        b"k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2".to_vec(),
        b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1".to_vec(),
    ]);
    let sealed = old.seal(Purpose::ClientId, b"payload");
    assert_eq!(
        rotated.open(Purpose::ClientId, &sealed).unwrap(),
        b"payload"
    );
    assert!(rotated.open(Purpose::ConsentRequest, &sealed).is_none());
    let fresh = rotated.seal(Purpose::ClientId, b"payload");
    assert!(old.open(Purpose::ClientId, &fresh).is_none());
    let (body, tag) = sealed.split_once('.').unwrap();
    let mut flipped = body.to_string();
    flipped.replace_range(0..1, if &body[..1] == "A" { "B" } else { "A" });
    assert!(
        old.open(Purpose::ClientId, &format!("{flipped}.{tag}"))
            .is_none()
    );
    assert!(old.open(Purpose::ClientId, body).is_none());
}

#[test]
fn encrypted_values_open_only_with_a_key_and_purpose_that_encrypted_them() {
    let old = Sealer::new(vec![b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1".to_vec()]);
    let rotated = Sealer::new(vec![
        b"k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2k2".to_vec(),
        b"k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1k1".to_vec(),
    ]);
    let secret = b"1//0google-refresh-token";
    let sealed = old.encrypt(Purpose::GoogleRefreshToken, secret);
    // The value is not in what is stored, and two encryptions differ (random nonce).
    assert!(!sealed.contains("google"));
    assert_ne!(sealed, old.encrypt(Purpose::GoogleRefreshToken, secret));
    assert_eq!(
        rotated
            .decrypt(Purpose::GoogleRefreshToken, &sealed)
            .unwrap(),
        secret
    );
    assert!(rotated.decrypt(Purpose::ClientId, &sealed).is_none());
    let fresh = rotated.encrypt(Purpose::GoogleRefreshToken, secret);
    assert!(old.decrypt(Purpose::GoogleRefreshToken, &fresh).is_none());
    let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = URL_SAFE_NO_PAD.encode(bytes);
    assert!(
        old.decrypt(Purpose::GoogleRefreshToken, &tampered)
            .is_none()
    );
    assert!(old.decrypt(Purpose::GoogleRefreshToken, "").is_none());
    assert!(old.decrypt(Purpose::GoogleRefreshToken, "!!").is_none());
}

#[test]
fn access_tokens_verify_with_any_configured_key_and_only_for_our_audience() {
    let (first, second) = (pem(), pem());
    let old = SigningKeys::from_pem(&[&first]).unwrap();
    let rotated = SigningKeys::from_pem(&[&second, &first]).unwrap();
    let (token, _) = access_token::issue(&old, &audience(), grant(&user()), 600).unwrap();
    assert!(access_token::is_ours(&rotated, &token));
    let claims = access_token::verify(&rotated, &audience(), &token, false).unwrap();
    assert_eq!(
        (claims.email.as_str(), claims.sid.as_str()),
        ("ada@example.com", "s1")
    );
    let principal = access_token::principal(claims);
    assert_eq!(principal.session(), Some("s1"));
    assert_eq!(principal.audience(), Some(RESOURCE));

    let other = SigningKeys::from_pem(&[&pem()]).unwrap();
    assert!(!access_token::is_ours(&other, &token));
    assert_eq!(
        access_token::verify(&other, &audience(), &token, false).unwrap_err(),
        TokenError::UnknownKeyId
    );
    let elsewhere = Audience {
        resources: vec!["https://other.example.com/mcp".into()],
        ..audience()
    };
    assert_eq!(
        access_token::verify(&old, &elsewhere, &token, false).unwrap_err(),
        TokenError::WrongAudience
    );
    let (expired, _) = access_token::issue(&old, &audience(), grant(&user()), 0).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        access_token::verify(&old, &audience(), &expired, false).unwrap_err(),
        TokenError::Expired
    );
    assert!(access_token::verify(&old, &audience(), &expired, true).is_ok());
}

#[test]
fn a_pem_bundle_holds_the_rotation_in_order_and_sealing_keys_need_32_characters() {
    let (first, second) = (pem(), pem());
    let bundle = SigningKeys::from_pem_bundle(&format!("{first}\n{second}")).unwrap();
    let only_first = SigningKeys::from_pem(&[&first]).unwrap();
    assert_eq!(bundle.signer().0, only_first.signer().0);
    assert!(bundle.is_ours(SigningKeys::from_pem(&[&second]).unwrap().signer().0));
    assert!(SigningKeys::from_pem_bundle("").is_err());
    assert!(Sealer::from_text("short").is_err());
    assert!(Sealer::from_text(&format!("{} {}", "a".repeat(32), "b".repeat(40))).is_ok());
}

#[test]
fn key_ids_are_thumbprints_so_replicas_agree() {
    let text = pem();
    let a = SigningKeys::from_pem(&[&text]).unwrap();
    let b = SigningKeys::from_pem(&[&text]).unwrap();
    assert_eq!(a.signer().0, b.signer().0);
    assert_eq!(a.jwks()["keys"][0]["kid"], a.signer().0);
    assert!(SigningKeys::from_pem(&["not a pem"]).is_err());
}

fn clients(ttl: u64) -> Clients {
    let sealer = Arc::new(super::Current::Generated(Arc::new(Sealer::new(vec![
        vec![7u8; 32],
    ]))));
    Clients::new(sealer, ttl, None)
}

fn registration(body: serde_json::Value) -> RegistrationRequest {
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn registration_is_stateless_and_the_client_id_carries_it() {
    let clients = clients(3600);
    let body = clients
        .register(registration(serde_json::json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "client_name": "Inspector\u{0007}",
            "token_endpoint_auth_method": "client_secret_post",
        })))
        .unwrap();
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert!(body.get("client_secret").is_none());
    let client = clients
        .resolve(body["client_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        client.redirect_uris,
        vec!["http://127.0.0.1/cb".to_string()]
    );
    assert_eq!(client.name.as_deref(), Some("Inspector"));
    assert!(matches!(
        clients.resolve("made-up").await,
        Err(ClientError::Unknown)
    ));
    let again = clients
        .register(registration(
            serde_json::json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
        ))
        .unwrap();
    let twin = clients
        .register(registration(
            serde_json::json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
        ))
        .unwrap();
    assert_ne!(again["client_id"], twin["client_id"]);
}

#[tokio::test]
async fn an_expired_registration_is_refused() {
    let clients = clients(0);
    let body = clients
        .register(registration(
            serde_json::json!({"redirect_uris": ["https://a.example/cb"]}),
        ))
        .unwrap();
    assert!(matches!(
        clients.resolve(body["client_id"].as_str().unwrap()).await,
        Err(ClientError::Expired)
    ));
}

#[test]
fn registrations_that_break_the_rules_are_refused() {
    let clients = clients(3600);
    for body in [
        serde_json::json!({}),
        serde_json::json!({"redirect_uris": ["http://evil.example/cb"]}),
        serde_json::json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}),
        serde_json::json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}),
        serde_json::json!({"redirect_uris": vec!["https://a.example/cb"; 9]}),
    ] {
        assert!(
            clients.register(registration(body.clone())).is_err(),
            "{body}"
        );
    }
}
