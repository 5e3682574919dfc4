#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{
    clients::{ClientError, Clients, RegistrationRequest},
    redirect,
    seal::{Purpose, Sealer},
};
use crate::{
    errors::TokenError,
    facade_token::{
        access_token::{self, Audience, User},
        keys::{SigningKeys, generate_pkcs8},
    },
};

fn pem() -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", generate_pkcs8().unwrap()))
}

const RESOURCE: &str = "https://mcp.example.com/mcp";

fn grant(user: &User) -> access_token::Grant<'_> {
    access_token::Grant {
        resource: RESOURCE,
        user,
        client_id: "c",
        client_name: None,
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
        assert!(
            redirect::check_registrable(ok, &Default::default()).is_ok(),
            "{ok}"
        );
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
        assert!(
            redirect::check_registrable(bad, &Default::default()).is_err(),
            "{bad}"
        );
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

// === client registration as real MCP clients do it ===

fn cursor_allowed() -> super::clients::ClientRules {
    super::clients::ClientRules {
        redirects: redirect::RedirectPolicy::new(vec![
            crate::config::PrivateUseScheme::parse("cursor://anysphere.cursor-mcp").unwrap(),
        ]),
        metadata_hosts: Vec::new(),
    }
}

/// The sealed registration inside a client id, as JSON.
fn sealed_payload(client_id: &str) -> serde_json::Value {
    let body = client_id.split_once('.').unwrap().0;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap()
}

#[tokio::test]
async fn application_type_is_echoed_and_kept_in_the_client_id() {
    use super::clients::ApplicationType;
    let clients = clients(3600);
    // VS Code's registration (its DCR body, with the grant types our metadata advertises).
    let vscode = clients
        .register(registration(serde_json::json!({
            "client_name": "Visual Studio Code",
            "client_uri": "https://code.visualstudio.com",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [
                "https://insiders.vscode.dev/redirect",
                "https://vscode.dev/redirect",
                "http://127.0.0.1/",
                "http://127.0.0.1:33418/",
            ],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        })))
        .unwrap();
    assert_eq!(vscode["application_type"], "native");
    let client_id = vscode["client_id"].as_str().unwrap();
    assert_eq!(sealed_payload(client_id)["a"], "native");
    let client = clients.resolve(client_id).await.unwrap();
    assert_eq!(client.application_type, Some(ApplicationType::Native));
    // VS Code falls back to a random port when 33418 is taken (microsoft/vscode#278512).
    assert!(redirect::matches(
        &client.redirect_uris,
        "http://127.0.0.1:59656/"
    ));
    assert!(redirect::matches(
        &client.redirect_uris,
        "https://vscode.dev/redirect"
    ));

    // Not given: `web`, the OIDC default, answered but not sealed (ids stay short), and
    // loopback redirects still work for it.
    for body in [
        serde_json::json!({"redirect_uris": ["http://localhost:6274/oauth/callback"]}),
        serde_json::json!({"redirect_uris": ["http://localhost:6274/oauth/callback"], "application_type": "web"}),
    ] {
        let answer = clients.register(registration(body)).unwrap();
        assert_eq!(answer["application_type"], "web");
        let client_id = answer["client_id"].as_str().unwrap();
        assert!(sealed_payload(client_id).get("a").is_none());
        let client = clients.resolve(client_id).await.unwrap();
        assert_eq!(client.application_type, Some(ApplicationType::Web));
    }

    // Ids sealed before the field existed open as `web`.
    let old = Sealer::new(vec![vec![7u8; 32]]).seal(
        Purpose::ClientId,
        br#"{"r":["http://127.0.0.1/cb"],"t":0,"e":99999999999}"#,
    );
    assert_eq!(
        clients.resolve(&old).await.unwrap().application_type,
        Some(ApplicationType::Web)
    );

    for unknown in ["desktop", "Native", ""] {
        let refused = clients.register(registration(serde_json::json!({
            "redirect_uris": ["http://127.0.0.1/cb"],
            "application_type": unknown,
        })));
        match refused {
            Err(super::clients::RegistrationError::Metadata(why)) => {
                assert!(why.contains("application_type"), "{why}")
            }
            other => panic!("{unknown:?}: expected invalid_client_metadata, got {other:?}"),
        }
    }
}

#[test]
fn private_use_redirects_need_the_operators_scheme_and_host() {
    use redirect::{RedirectError, RedirectPolicy, check_registrable};
    let cursor = cursor_allowed().redirects;
    let none = RedirectPolicy::default();
    for ok in [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "cursor://anysphere.cursor-mcp/other/path?x=1",
        // RFC 3986: scheme and host compare without case.
        "CURSOR://AnySphere.Cursor-MCP/oauth/callback",
        "Cursor://anysphere.cursor-mcp",
    ] {
        assert_eq!(check_registrable(ok, &cursor), Ok(()), "{ok}");
        assert_eq!(
            check_registrable(ok, &none),
            Err(RedirectError::PrivateUseNotAllowed),
            "{ok}"
        );
    }
    for (refused, why) in [
        (
            "cursor://anysphere.cursor-mcp:8080/oauth/callback",
            RedirectError::PrivateUseNotAllowed,
        ),
        (
            "cursor://anysphere.cursor-mcp.evil.example/oauth/callback",
            RedirectError::PrivateUseNotAllowed,
        ),
        (
            "cursor://evil.example/oauth/callback",
            RedirectError::PrivateUseNotAllowed,
        ),
        (
            "vscode://anysphere.cursor-mcp/oauth/callback",
            RedirectError::PrivateUseNotAllowed,
        ),
        (
            "cursor://x@anysphere.cursor-mcp/oauth/callback",
            RedirectError::Credentials,
        ),
        (
            "cursor://anysphere.cursor-mcp/oauth/callback#x",
            RedirectError::Fragment,
        ),
        ("cursor:/oauth/callback", RedirectError::Insecure),
        ("cursor:anysphere.cursor-mcp", RedirectError::Insecure),
        (
            "javascript://anysphere.cursor-mcp/%0aalert(1)",
            RedirectError::Insecure,
        ),
        ("data://anysphere.cursor-mcp/x", RedirectError::Insecure),
        (
            "file://anysphere.cursor-mcp/etc/passwd",
            RedirectError::Insecure,
        ),
        ("http://anysphere.cursor-mcp/cb", RedirectError::Insecure),
    ] {
        assert_eq!(check_registrable(refused, &cursor), Err(why), "{refused}");
    }
    // The error a client gets tells its user what to ask the operator for.
    assert!(
        RedirectError::PrivateUseNotAllowed
            .to_string()
            .contains("oauth.redirect_schemes")
    );
}

#[test]
fn redirect_scheme_entries_are_scheme_and_host_only() {
    use crate::config::PrivateUseScheme;
    for (entry, shown) in [
        (
            "cursor://anysphere.cursor-mcp",
            "cursor://anysphere.cursor-mcp",
        ),
        (
            "Cursor://AnySphere.Cursor-MCP/",
            "cursor://anysphere.cursor-mcp",
        ),
        ("com.example.app://callback", "com.example.app://callback"),
        ("claude://claude.ai", "claude://claude.ai"),
    ] {
        assert_eq!(
            PrivateUseScheme::parse(entry).unwrap().to_string(),
            shown,
            "{entry}"
        );
    }
    for entry in [
        "https://claude.ai",
        "http://localhost",
        "HTTPS://claude.ai",
        "javascript://x",
        "data://x",
        "file://host",
        "vbscript://x",
        "ws://x",
        "cursor",
        "cursor:",
        "cursor://",
        "cursor:/anysphere.cursor-mcp",
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "cursor://anysphere.cursor-mcp:8080",
        "cursor://user@anysphere.cursor-mcp",
        "cursor://anysphere.cursor-mcp?x=1",
        "cursor://*.cursor-mcp",
        "1cursor://x",
        "cur sor://x",
    ] {
        assert!(PrivateUseScheme::parse(entry).is_err(), "{entry}");
    }
}

#[tokio::test]
async fn a_custom_scheme_registration_is_refused_by_default_and_accepted_when_listed() {
    // Cursor's registration: its custom-scheme callback (RFC 8252 s7.1).
    let body = || {
        registration(serde_json::json!({
            "client_name": "Cursor",
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }))
    };
    match clients(3600).register(body()) {
        Err(super::clients::RegistrationError::RedirectUri(why)) => {
            assert!(why.contains("oauth.redirect_schemes"), "{why}");
            assert!(
                why.contains("cursor://anysphere.cursor-mcp/oauth/callback"),
                "{why}"
            );
        }
        other => panic!("expected invalid_redirect_uri, got {other:?}"),
    }
    let clients = clients(3600).with_rules(cursor_allowed());
    let answer = clients.register(body()).unwrap();
    let client = clients
        .resolve(answer["client_id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(redirect::matches(
        &client.redirect_uris,
        "cursor://anysphere.cursor-mcp/oauth/callback"
    ));
    assert!(!redirect::matches(
        &client.redirect_uris,
        "cursor://anysphere.cursor-mcp/oauth/other"
    ));
}

#[test]
fn claude_and_chatgpt_callbacks_register_and_match_exactly() {
    let clients = clients(3600);
    for callback in [
        "https://claude.ai/api/mcp/auth_callback",
        "https://claude.com/api/mcp/auth_callback",
        "https://chatgpt.com/connector_platform_oauth_redirect",
        "https://chatgpt.com/connector/oauth/6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b",
    ] {
        assert_eq!(
            redirect::check_registrable(callback, &Default::default()),
            Ok(()),
            "{callback}"
        );
        let answer = clients
            .register(registration(serde_json::json!({
                "redirect_uris": [callback],
                "token_endpoint_auth_method": "none",
            })))
            .unwrap();
        assert_eq!(answer["redirect_uris"], serde_json::json!([callback]));
        let registered = vec![callback.to_string()];
        assert!(redirect::matches(&registered, callback));
        assert!(!redirect::matches(&registered, &format!("{callback}/")));
        assert!(!redirect::matches(
            &registered,
            &callback.replace("https://", "http://")
        ));
    }
}

#[tokio::test]
async fn a_metadata_client_id_on_an_unlisted_host_is_refused_before_any_fetch() {
    use crate::{
        client_metadata::ClientMetadataFetcher, config::ClientIdHost, config::ClientMetadataConfig,
        metrics::Metrics,
    };
    let metrics = Arc::new(Metrics::new());
    let fetcher =
        ClientMetadataFetcher::new(&ClientMetadataConfig::default(), metrics.clone()).unwrap();
    let fetches = || {
        metrics
            .encode()
            .lines()
            .filter(|line| line.starts_with("authz_client_metadata_fetches_total{"))
            .count()
    };
    let sealer = Arc::new(super::Current::Generated(Arc::new(Sealer::new(vec![
        vec![7u8; 32],
    ]))));
    let hosts = ["claude.ai", "vscode.dev", "*.example.com", "127.0.0.1"]
        .iter()
        .map(|entry| ClientIdHost::parse(entry).unwrap())
        .collect();
    let clients =
        Clients::new(sealer, 3600, Some(fetcher)).with_rules(super::clients::ClientRules {
            redirects: Default::default(),
            metadata_hosts: hosts,
        });
    for refused in [
        "https://evil.example.net/client.json",
        "https://claude.ai.evil.example/oauth/claude-code-client-metadata",
        "https://example.com/client.json",
        "https://chatgpt.com/oauth/client.json",
    ] {
        assert!(
            matches!(
                clients.resolve(refused).await,
                Err(ClientError::MetadataHostNotAllowed)
            ),
            "{refused}"
        );
    }
    assert_eq!(fetches(), 0, "a fetch was attempted");
    // A listed host goes on to the fetch (here refused by the address rules: loopback).
    assert!(matches!(
        clients.resolve("https://127.0.0.1/client.json").await,
        Err(ClientError::Metadata(_))
    ));
    assert_eq!(fetches(), 1);
    assert!(
        ClientError::MetadataHostNotAllowed
            .to_string()
            .contains("not accepted here")
    );
}
