#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use super::*;
use crate::{
    errors::Endpoint,
    facade_token::{
        access_token::{Audience, User},
        keys::SigningKeys,
    },
    secrets::Current,
    store::{Store, memory::MemoryStore, revocations::Revocations},
    test_support::{ReadyGoogle, ready_google},
};

const CLIENT: &str = "client-1.apps.googleusercontent.com";

fn audience() -> Audience {
    Audience {
        issuer: "https://authz.example.com".into(),
        resources: vec![
            "https://mcp.example.com/mcp".into(),
            "https://mcp.example.com/sre/mcp".into(),
        ],
        leeway: 30,
    }
}

/// An authorizer accepting our own tokens, signed with `keys`, with revocations in `view`.
fn with_facade(ready: &ReadyGoogle, keys: Arc<SigningKeys>, view: Arc<Revocations>) -> Authorizer {
    Authorizer::new(&ready.config, ready.google.clone(), None).accept_facade_tokens(TokenCheck {
        keys: Arc::new(Current::Generated(keys)),
        audience: audience(),
        revocations: view,
    })
}

fn our_token(keys: &SigningKeys, session: &str) -> String {
    let user = User {
        sub: "1001".into(),
        email: "ada@example.com".into(),
        hd: Some("example.com".into()),
    };
    let grant = access_token::Grant {
        resource: "https://mcp.example.com/mcp",
        user: &user,
        client_id: "client",
        client_name: None,
        scope: "mcp",
        session,
    };
    access_token::issue(keys, &audience(), grant, 600)
        .unwrap()
        .0
}

fn facts(authorization: &str) -> RequestFacts<'_> {
    RequestFacts {
        authorization: Some(authorization.as_bytes()),
        path: "/mcp",
        host: "mcp.example.com",
        http_method: "POST",
        policy: None,
        mcp: McpCall::default(),
    }
}

/// A token of ours is for the MCP server it was issued for: refused (401, so the client signs
/// in for this one) at another, cache hits included; Google's tokens are not bound to one.
#[tokio::test]
async fn our_tokens_are_refused_at_every_resource_but_their_own() {
    let mut ready = ready_google(CLIENT, Arc::new(Metrics::new())).await;
    ready
        .config
        .resources
        .push(crate::test_support::resource_entry(
            "https://mcp.example.com/sre/mcp",
            None,
        ));
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(100));
    let view = Arc::new(Revocations::new(store));
    view.sync().await.unwrap();
    let keys = Arc::new(SigningKeys::generate().unwrap());
    let authorizer = with_facade(&ready, keys.clone(), view);
    let bearer = format!("Bearer {}", our_token(&keys, "session-1"));
    let at = |path: &'static str| RequestFacts {
        path,
        ..facts(&bearer)
    };

    let home = authorizer.authorize(at("/mcp")).await.unwrap();
    assert!(matches!(home.verdict, Verdict::Allow(..)), "{home:?}");
    assert_eq!(home.resource.url, "https://mcp.example.com/mcp");
    for _ in 0..2 {
        let elsewhere = authorizer.authorize(at("/sre/mcp")).await.unwrap();
        assert!(
            matches!(
                elsewhere.verdict,
                Verdict::Unauthenticated(Unauthenticated::Token(TokenError::WrongAudience))
            ),
            "{elsewhere:?}"
        );
        assert_eq!(
            elsewhere.resource.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/sre/mcp"
        );
    }
    // With several resources, a path none of them claims is nobody's: no policy is guessed.
    let other = authorizer.authorize(at("/other")).await.unwrap();
    assert!(matches!(other.verdict, Verdict::NotServed), "{other:?}");

    let google = ready.standin.mint_id_token(&serde_json::json!({
        "iss": ready.standin.issuer(), "aud": CLIENT, "sub": "2002",
        "email": "bob@example.com", "email_verified": true, "hd": "example.com",
        "iat": unix_now(), "exp": unix_now() + 600,
    }));
    let bearer = format!("Bearer {google}");
    let at_sre = RequestFacts {
        path: "/sre/mcp",
        ..facts(&bearer)
    };
    assert!(matches!(
        authorizer.authorize(at_sre).await.unwrap().verdict,
        Verdict::Allow(..)
    ));
}

/// A replica that cannot read the revocations cannot know whether one of our tokens was
/// revoked on another replica: an outage (503), never an allow; current again, it allows;
/// revoked, refused, cache hits included.
#[tokio::test]
async fn our_tokens_are_an_outage_while_the_revocation_view_is_stale_or_overflowing() {
    let ready = ready_google(CLIENT, Arc::new(Metrics::new())).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(100));
    let view = Arc::new(Revocations::with_cap(store.clone(), 1));
    let keys = Arc::new(SigningKeys::generate().unwrap());
    let authorizer = with_facade(&ready, keys.clone(), view.clone());
    let bearer = format!("Bearer {}", our_token(&keys, "session-1"));

    // Never synced.
    let error = authorizer.authorize(facts(&bearer)).await.unwrap_err();
    assert_eq!(error.endpoint, Endpoint::Revocations);

    view.sync().await.unwrap();
    let decision = authorizer.authorize(facts(&bearer)).await.unwrap();
    assert!(
        matches!(decision.verdict, Verdict::Allow(..)),
        "{decision:?}"
    );
    let hit = authorizer.authorize(facts(&bearer)).await.unwrap();
    assert_eq!(hit.cache, CacheUse::Hit);

    // Overflowing (a second revocation does not fit): the cached allow is not used either.
    let minute = Duration::from_secs(60);
    view.revoke("session-2", minute).await.unwrap();
    view.revoke("session-3", minute).await.unwrap();
    assert!(!view.synced_recently());
    let error = authorizer.authorize(facts(&bearer)).await.unwrap_err();
    assert_eq!(error.endpoint, Endpoint::Revocations);

    // Revoked, with a view in sync: refused although an allow is cached.
    let view = Arc::new(Revocations::new(store));
    let authorizer = with_facade(&ready, keys.clone(), view.clone());
    view.sync().await.unwrap();
    assert!(matches!(
        authorizer.authorize(facts(&bearer)).await.unwrap().verdict,
        Verdict::Allow(..)
    ));
    view.revoke("session-1", minute).await.unwrap();
    let refused = authorizer.authorize(facts(&bearer)).await.unwrap();
    assert!(matches!(
        refused.verdict,
        Verdict::Unauthenticated(Unauthenticated::Token(TokenError::Revoked))
    ));

    // Google's tokens never depend on our revocations.
    let stale = Arc::new(Revocations::new(Arc::new(MemoryStore::new(10))));
    let authorizer = with_facade(&ready, keys, stale);
    let google = ready.standin.mint_id_token(&serde_json::json!({
        "iss": ready.standin.issuer(), "aud": CLIENT, "sub": "2002",
        "email": "bob@example.com", "email_verified": true, "hd": "example.com",
        "iat": unix_now(), "exp": unix_now() + 600,
    }));
    let decision = authorizer
        .authorize(facts(&format!("Bearer {google}")))
        .await
        .unwrap();
    assert!(
        matches!(decision.verdict, Verdict::Allow(..)),
        "{decision:?}"
    );
}

/// Every input of a decision feeds the verdict-cache key: leaving one out would let a verdict
/// decided for one request answer another.
#[tokio::test]
async fn the_verdict_key_feeds_every_input() {
    let ready = ready_google(CLIENT, Arc::new(Metrics::new())).await;
    let view = Arc::new(Revocations::new(Arc::new(MemoryStore::new(10))));
    let keys = Arc::new(SigningKeys::generate().unwrap());
    let authorizer = with_facade(&ready, keys, view.clone());
    let other_keys = with_facade(&ready, Arc::new(SigningKeys::generate().unwrap()), view);
    let credential = Credential::Jwt("a.b.c");
    let key = |authorizer: &Authorizer,
               named: Option<&str>,
               http_method: &str,
               method: Option<&str>,
               tool: Option<&str>| {
        let rules = authorizer.rules.load_full();
        let selected = rules.policies.select(named, "/mcp");
        let request = policy::Request {
            http_method,
            mcp: McpCall {
                method,
                tool,
                ..McpCall::default()
            },
        };
        authorizer.verdict_key(&rules, credential, &selected, request)
    };
    let headers = |headers_disagree: bool, protocol_too_old: bool| {
        let rules = authorizer.rules.load_full();
        let selected = rules.policies.select(None, "/mcp");
        let mcp = McpCall {
            method: Some("tools/call"),
            tool: Some("t"),
            headers_disagree,
            protocol_too_old,
        };
        let request = policy::Request {
            http_method: "POST",
            mcp,
        };
        authorizer.verdict_key(&rules, credential, &selected, request)
    };
    let call = Some("tools/call");
    let base = key(&authorizer, None, "POST", call, Some("t"));
    assert_eq!(headers(false, false), base);
    let variations = [
        (
            "the policy",
            key(&authorizer, Some("other"), "POST", call, Some("t")),
        ),
        (
            "the HTTP method",
            key(&authorizer, None, "GET", call, Some("t")),
        ),
        (
            "the MCP method",
            key(&authorizer, None, "POST", Some("tools/list"), Some("t")),
        ),
        (
            "no MCP method",
            key(&authorizer, None, "POST", None, Some("t")),
        ),
        ("the tool", key(&authorizer, None, "POST", call, Some("u"))),
        ("a missing tool", key(&authorizer, None, "POST", call, None)),
        (
            "an empty tool",
            key(&authorizer, None, "POST", call, Some("")),
        ),
        (
            "the signing keys",
            key(&other_keys, None, "POST", call, Some("t")),
        ),
        ("disagreeing MCP headers", headers(true, false)),
        ("an old MCP protocol", headers(false, true)),
    ];
    for (what, varied) in &variations {
        assert_ne!(*varied, base, "{what} does not feed the verdict key");
    }
    assert_eq!(key(&authorizer, None, "POST", call, Some("t")), base);
    // A reloaded config (another fingerprint) gives other keys.
    let mut config = ready.config.clone();
    config.access.domains = vec!["example.org".into()];
    authorizer.replace_rules(&config, None);
    assert_ne!(key(&authorizer, None, "POST", call, Some("t")), base);
}

/// One valid token with endless made-up tool names gets decisions, but caches at most
/// `MAX_VERDICTS_PER_TOKEN` verdicts: it cannot evict other users' allows.
#[tokio::test]
async fn one_token_caches_a_bounded_number_of_verdicts() {
    let ready = ready_google(CLIENT, Arc::new(Metrics::new())).await;
    let authorizer = Authorizer::new(&ready.config, ready.google.clone(), None);
    let token = ready.standin.mint_id_token(&serde_json::json!({
        "iss": ready.standin.issuer(), "aud": CLIENT, "sub": "3003",
        "email": "eve@example.com", "email_verified": true, "hd": "example.com",
        "iat": unix_now(), "exp": unix_now() + 600,
    }));
    let bearer = format!("Bearer {token}");
    let tools: Vec<String> = (0..200).map(|i| format!("made_up_{i}")).collect();
    for tool in &tools {
        let facts = RequestFacts {
            mcp: McpCall {
                method: Some("tools/call"),
                tool: Some(tool),
                ..McpCall::default()
            },
            ..facts(&bearer)
        };
        let decision = authorizer.authorize(facts).await.unwrap();
        assert!(matches!(decision.verdict, Verdict::Allow(..)));
    }
    let cached = authorizer.verdicts().entry_count();
    assert_eq!(
        cached,
        u64::from(crate::principal::MAX_VERDICTS_PER_TOKEN),
        "one token cached {cached} verdicts"
    );
    // Past its share, a repeated request is decided again (not cached), and still right.
    let facts = RequestFacts {
        mcp: McpCall {
            method: Some("tools/call"),
            tool: Some(&tools[199]),
            ..McpCall::default()
        },
        ..facts(&bearer)
    };
    let again = authorizer.authorize(facts).await.unwrap();
    assert_eq!(again.cache, CacheUse::Bypass);
    assert!(matches!(again.verdict, Verdict::Allow(..)));
}
