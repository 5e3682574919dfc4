use std::{sync::Arc, time::Duration};

use authz::{
    config::Config,
    credentials::Credential,
    errors::{TokenError, VerifyError},
    google::Google,
    principal::{TokenSource, unix_now},
};
use serde_json::{Value, json};
use standin::{AccessTokenSpec, Endpoint, FaultMode, FaultSpec, Options, StandIn};
use tokio_util::sync::CancellationToken;

const CLIENT: &str = "it.apps.googleusercontent.com";

struct Fixture {
    standin: StandIn,
    google: Arc<Google>,
    _stop: tokio_util::sync::DropGuard,
}

async fn fixture() -> Fixture {
    fixture_with_refetch_interval("30s").await
}

async fn fixture_with_refetch_interval(refetch: &str) -> Fixture {
    fixture_with(refetch, Options::default()).await
}

async fn fixture_with(refetch: &str, options: Options) -> Fixture {
    fixture_with_env(refetch, options, &[]).await
}

/// [`fixture_with`], with further `AUTHZ_*` settings.
async fn fixture_with_env(refetch: &str, options: Options, extra: &[(&str, &str)]) -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, options).await.unwrap();
    let issuer = standin.issuer().to_string();
    let env = [
        ("AUTHZ_GOOGLE__CLIENT_IDS", CLIENT.to_string()),
        ("AUTHZ_GOOGLE__ISSUER", issuer.clone()),
        ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo")),
        ("AUTHZ_GOOGLE__JWKS_REFETCH_INTERVAL", refetch.into()),
        ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
        ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
    ]
    .into_iter()
    .chain(extra.iter().map(|&(k, v)| (k, v.to_string())))
    .map(|(k, v)| (k.to_string(), v));
    let config = Config::load(None, env).unwrap();
    let google = Google::new(&config).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(google.clone().run(stop.clone()));
    for _ in 0..200 {
        if google.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(google.is_ready(), "discovery and JWKS did not load");
    Fixture {
        standin,
        google,
        _stop: stop.drop_guard(),
    }
}

/// Makes `endpoint` of the stand-in misbehave (`status` is used by `FaultMode::Error`).
fn fault(standin: &StandIn, mode: FaultMode, status: u16, endpoint: Endpoint) {
    let spec = FaultSpec {
        mode,
        status: Some(status),
        endpoints: Some(vec![endpoint]),
    };
    standin.set_fault(&spec).unwrap();
}

fn claims(standin: &StandIn, overrides: Value) -> Value {
    let now = unix_now();
    let mut claims = json!({
        "iss": standin.issuer(), "aud": CLIENT, "azp": CLIENT, "sub": "42",
        "email": "ada@example.com", "email_verified": true, "hd": "example.com",
        "iat": now, "exp": now + 600,
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

async fn verify_jwt(f: &Fixture, token: &str) -> Result<authz::principal::Principal, VerifyError> {
    f.google.verify(Credential::Jwt(token)).await
}

#[tokio::test]
async fn valid_id_token_yields_the_principal() {
    let f = fixture().await;
    let token = f.standin.mint_id_token(&claims(&f.standin, json!({})));
    let principal = verify_jwt(&f, &token).await.unwrap();
    assert_eq!(principal.sub(), "42");
    assert_eq!(principal.hosted_domain(), Some("example.com"));
    assert!(principal.email_verified);
    assert_eq!(principal.source, TokenSource::GoogleIdToken);
    // Legacy Google spelling of email_verified as a string is accepted too.
    let token = f
        .standin
        .mint_id_token(&claims(&f.standin, json!({"email_verified": "true"})));
    assert!(verify_jwt(&f, &token).await.unwrap().email_verified);
}

#[tokio::test]
async fn id_token_rejections() {
    let f = fixture().await;
    let now = unix_now();
    let skew = 30;
    let cases = [
        (json!({"exp": now - skew - 5}), TokenError::Expired),
        (json!({"iat": now + skew + 60}), TokenError::NotYetValid),
        (json!({"nbf": now + skew + 60}), TokenError::NotYetValid),
        (
            json!({"aud": "other.apps.googleusercontent.com"}),
            TokenError::WrongAudience,
        ),
        (
            json!({"azp": "other.apps.googleusercontent.com"}),
            TokenError::WrongAuthorizedParty,
        ),
        (
            json!({"iss": "https://accounts.google.com.evil"}),
            TokenError::WrongIssuer,
        ),
        (json!({"exp": null}), TokenError::MissingClaim),
        (json!({"iat": null}), TokenError::MissingClaim),
        (json!({"sub": null}), TokenError::MissingClaim),
    ];
    for (overrides, expected) in cases {
        let token = f
            .standin
            .mint_id_token(&claims(&f.standin, overrides.clone()));
        assert_eq!(
            verify_jwt(&f, &token).await,
            Err(VerifyError::Token(expected)),
            "{overrides}"
        );
    }
    // Within the skew, a just-expired token still passes (clock drift between us and Google).
    let token = f
        .standin
        .mint_id_token(&claims(&f.standin, json!({"exp": now - 5})));
    assert!(verify_jwt(&f, &token).await.is_ok());
}

#[tokio::test]
async fn algorithm_key_and_signature_rejections() {
    let f = fixture().await;
    let good = claims(&f.standin, json!({}));
    let mint = |kid: Option<&str>, alg: Option<&str>| {
        f.standin.mint_id_token_with(&good, kid, alg).unwrap()
    };
    let valid = f.standin.mint_id_token(&good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (body, _) = rest.split_once('.').unwrap();
    let tampered_body = {
        let other = f
            .standin
            .mint_id_token(&claims(&f.standin, json!({"sub": "admin"})));
        other.split('.').nth(1).unwrap().to_string()
    };
    let cases = [
        (mint(None, Some("none")), TokenError::UnsupportedAlgorithm),
        // Algorithm confusion: HMAC keyed with the public key.
        (mint(None, Some("HS256")), TokenError::UnsupportedAlgorithm),
        (mint(None, Some("PS256")), TokenError::UnsupportedAlgorithm),
        (mint(Some("no-such-kid"), None), TokenError::UnknownKeyId),
        (
            format!(
                "{head}.{tampered_body}.{}",
                valid.rsplit('.').next().unwrap()
            ),
            TokenError::BadSignature,
        ),
        (format!("{head}.{body}.AAAA"), TokenError::BadSignature),
        ("e30.e30.AAAA".to_string(), TokenError::Malformed),
        ("bm90anNvbg.e30.AAAA".to_string(), TokenError::Malformed),
        (
            format!("eyJhbGciOiJSUzI1NiJ9.{body}.AAAA"),
            TokenError::MissingKeyId,
        ),
    ];
    for (token, expected) in cases {
        assert_eq!(
            verify_jwt(&f, &token).await,
            Err(VerifyError::Token(expected)),
            "{token}"
        );
    }
}

fn access_spec(overrides: impl FnOnce(&mut AccessTokenSpec)) -> AccessTokenSpec {
    let mut spec = AccessTokenSpec {
        sub: "7".into(),
        email: Some("grace@example.com".into()),
        hd: Some("example.com".into()),
        aud: CLIENT.into(),
        ..Default::default()
    };
    overrides(&mut spec);
    spec
}

#[tokio::test]
async fn access_tokens() {
    let f = fixture().await;
    let verify = |token: String| {
        let google = f.google.clone();
        async move { google.verify(Credential::Opaque(&token)).await }
    };
    let principal = verify(f.standin.mint_access_token(access_spec(|_| {})))
        .await
        .unwrap();
    assert_eq!(principal.sub(), "7");
    assert_eq!(principal.hosted_domain(), Some("example.com"));
    assert!(principal.expires_at > unix_now() + 3000);
    assert_eq!(principal.source, TokenSource::GoogleAccessToken);

    // A consumer account: email at the company's domain, but userinfo has no hd.
    let consumer = verify(f.standin.mint_access_token(access_spec(|s| s.hd = None)))
        .await
        .unwrap();
    assert_eq!(consumer.hosted_domain(), None);

    let cases = [
        (
            f.standin
                .mint_access_token(access_spec(|s| s.expires_in = -5)),
            TokenError::Rejected,
        ),
        (
            f.standin
                .mint_access_token(access_spec(|s| s.aud = "x.apps".into())),
            TokenError::WrongAudience,
        ),
        (
            f.standin
                .mint_access_token(access_spec(|s| s.azp = Some("x.apps".into()))),
            TokenError::WrongAuthorizedParty,
        ),
        ("ya29.unknown".to_string(), TokenError::Rejected),
    ];
    for (token, expected) in cases {
        assert_eq!(verify(token).await, Err(VerifyError::Token(expected)));
    }
}

#[tokio::test]
async fn outages_are_backend_errors_never_token_errors() {
    let f = fixture().await;
    let token = f.standin.mint_access_token(access_spec(|_| {}));
    for (mode, endpoint) in [
        (FaultMode::Error, Endpoint::Tokeninfo),
        (FaultMode::Error, Endpoint::Userinfo),
        (FaultMode::Garbage, Endpoint::Tokeninfo),
        (FaultMode::Hang, Endpoint::Userinfo),
    ] {
        fault(&f.standin, mode, 503, endpoint);
        let result = f.google.verify(Credential::Opaque(&token)).await;
        assert!(
            matches!(result, Err(VerifyError::Backend(_))),
            "{mode:?} {endpoint:?}: {result:?}"
        );
        fault(&f.standin, FaultMode::Ok, 0, endpoint);
    }
    // 429 from Google is an outage too (quota), not a bad token.
    fault(&f.standin, FaultMode::Error, 429, Endpoint::Tokeninfo);
    assert!(matches!(
        f.google.verify(Credential::Opaque(&token)).await,
        Err(VerifyError::Backend(_))
    ));
}

#[tokio::test]
async fn unknown_kid_spray_causes_at_most_one_jwks_fetch() {
    let f = fixture().await;
    let before = f.standin.stats().jwks;
    let good = claims(&f.standin, json!({}));
    let tokens: Vec<String> = (0..100)
        .map(|i| {
            f.standin
                .mint_id_token_with(&good, Some(&format!("spray-{i}")), None)
                .unwrap()
        })
        .collect();
    let results = futures::future::join_all(tokens.iter().map(|t| verify_jwt(&f, t))).await;
    assert!(
        results
            .iter()
            .all(|r| *r == Err(VerifyError::Token(TokenError::UnknownKeyId)))
    );
    // The start-up fetch was moments ago, inside the 30 s refetch interval: no fetch at all.
    assert_eq!(f.standin.stats().jwks - before, 0);
}

#[tokio::test]
async fn known_keys_keep_working_while_jwks_is_down() {
    let f = fixture().await;
    fault(&f.standin, FaultMode::Error, 500, Endpoint::Jwks);
    let token = f.standin.mint_id_token(&claims(&f.standin, json!({})));
    assert!(verify_jwt(&f, &token).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_during_a_jwks_outage_is_a_backend_error() {
    let f = fixture_with_refetch_interval("1s").await;
    fault(&f.standin, FaultMode::Error, 500, Endpoint::Jwks);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let good = claims(&f.standin, json!({}));
    let token = f
        .standin
        .mint_id_token_with(&good, Some("rotated-in-during-outage"), None)
        .unwrap();
    // We cannot tell a new key from a forged kid while Google is down: that is a 503, not a 401.
    assert!(matches!(
        verify_jwt(&f, &token).await,
        Err(VerifyError::Backend(_))
    ));
    // And a second request inside the refetch interval does not hammer the JWKS endpoint.
    assert!(matches!(
        verify_jwt(&f, &token).await,
        Err(VerifyError::Backend(_))
    ));
}

#[tokio::test]
async fn jwks_is_refreshed_in_the_background_as_max_age_says() {
    let f = fixture_with(
        "1s",
        Options {
            jwks_max_age: 1,
            ..Options::default()
        },
    )
    .await;
    let standin = f.standin.clone();
    let at_start = f.standin.stats().jwks;
    // Google publishes a new key and retires the old one; nobody presents a token meanwhile.
    tokio::task::spawn_blocking(move || standin.rotate(false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fetches = f.standin.stats().jwks;
    assert!(fetches > at_start, "the background refresh did not run");
    // The new key is already known: verifying with it costs no fetch.
    let token = f.standin.mint_id_token(&claims(&f.standin, json!({})));
    let before = f.standin.stats().jwks;
    assert!(verify_jwt(&f, &token).await.is_ok());
    assert_eq!(f.standin.stats().jwks, before);
}

/// A junk access token costs one tokeninfo call and no userinfo call; a spray of never-seen
/// tokens beyond `google.new_tokens_per_second` is shed as an outage (never a verdict), and a
/// real token is verified again once the second has passed.
#[tokio::test]
async fn never_seen_access_tokens_are_a_bounded_cost() {
    let f = fixture_with_env(
        "30s",
        Options::default(),
        &[("AUTHZ_GOOGLE__NEW_TOKENS_PER_SECOND", "5")],
    )
    .await;
    let (standin, google) = (&f.standin, &f.google);
    standin.reset_stats();
    let junk = google.verify(Credential::Opaque("ya29.junk-0")).await;
    assert!(matches!(junk, Err(VerifyError::Token(_))), "{junk:?}");
    let stats = standin.stats();
    assert_eq!((stats.tokeninfo, stats.userinfo), (1, 0));

    let mut shed = 0;
    for i in 1..30 {
        match google
            .verify(Credential::Opaque(&format!("ya29.junk-{i}")))
            .await
        {
            Err(VerifyError::Backend(error)) => {
                assert!(error.problem.starts_with("shed"), "{error}");
                shed += 1;
            }
            Err(VerifyError::Token(_)) => {}
            Ok(principal) => panic!("junk accepted: {principal:?}"),
        }
    }
    assert!(shed >= 24, "only {shed} of 29 shed at 5 per second");
    assert!(standin.stats().tokeninfo <= 6, "{:?}", standin.stats());
    let real = standin.mint_access_token(AccessTokenSpec {
        sub: "42".into(),
        email: Some("ada@example.com".into()),
        hd: Some("example.com".into()),
        aud: CLIENT.into(),
        ..Default::default()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let principal = google.verify(Credential::Opaque(&real)).await.unwrap();
    assert_eq!(principal.email(), Some("ada@example.com"));
}
