//! The authorizer with policies and a scripted membership lookup: what is looked up, what is
//! cached under which key, and how lookup failures surface.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use authz::{
    authorizer::{Authorizer, CacheUse, RequestFacts},
    config::Config,
    errors::{BackendError, Endpoint},
    google::Google,
    groups::{GroupAnswer, MembershipLookup},
    policy::McpCall,
    principal::unix_now,
    verdict::Verdict,
};
use serde_json::json;
use standin::{AccessTokenSpec, Options, StandIn};
use tokio_util::sync::CancellationToken;

const CLIENT: &str = "it.apps.googleusercontent.com";

/// Membership answers from a table; counts lookups; can be made to fail or go stale.
#[derive(Debug, Default)]
struct Scripted {
    members: Mutex<Vec<(String, String)>>,
    lookups: Mutex<Vec<(String, String)>>,
    failing: Mutex<bool>,
    stale: Mutex<bool>,
}

impl MembershipLookup for Scripted {
    fn is_member<'a>(
        &'a self,
        email: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<GroupAnswer, BackendError>> + Send + 'a>> {
        Box::pin(async move {
            self.lookups
                .lock()
                .unwrap()
                .push((email.to_string(), group.to_string()));
            if *self.failing.lock().unwrap() {
                return Err(BackendError {
                    endpoint: Endpoint::Groups,
                    problem: "directory unavailable".into(),
                });
            }
            let is_member = self
                .members
                .lock()
                .unwrap()
                .iter()
                .any(|(e, g)| e == email && g == group);
            Ok(GroupAnswer {
                is_member,
                stale: *self.stale.lock().unwrap(),
            })
        })
    }
}

struct Fixture {
    standin: StandIn,
    authorizer: Authorizer,
    groups: Arc<Scripted>,
    _stop: tokio_util::sync::DropGuard,
}

const POLICIES: &str = r#"
[groups]
[groups.credentials]
kind = "service-account-key"
file = "unused-by-this-test.json"
subject = "admin@example.com"

[policies.grafana]
groups = ["platform@example.com"]
[[policies.grafana.rules]]
name = "destructive"
methods = ["tools/call"]
tools = ["delete_*"]
groups = ["sre@example.com"]

[[routes]]
prefix = "/grafana"
policy = "grafana"
"#;

async fn fixture() -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    let issuer = standin.issuer().to_string();
    let config = Config::load(
        Some(POLICIES),
        [
            ("AUTHZ_GOOGLE__CLIENT_IDS", CLIENT.to_string()),
            ("AUTHZ_GOOGLE__ISSUER", issuer.clone()),
            ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo")),
            ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
            ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let google = Google::new(&config).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(google.clone().run(stop.clone()));
    for _ in 0..200 {
        if google.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let groups = Arc::new(Scripted::default());
    groups.members.lock().unwrap().extend([
        ("ada@example.com".into(), "platform@example.com".into()),
        ("grace@example.com".into(), "platform@example.com".into()),
        ("grace@example.com".into(), "sre@example.com".into()),
    ]);
    let authorizer = Authorizer::new(&config, google, Some(groups.clone()));
    Fixture {
        standin,
        authorizer,
        groups,
        _stop: stop.drop_guard(),
    }
}

impl Fixture {
    fn token(&self, email: &str) -> String {
        let now = unix_now();
        self.standin.mint_id_token(&json!({
            "iss": self.standin.issuer(), "aud": CLIENT, "sub": format!("sub-{email}"),
            "email": email, "email_verified": true, "hd": "example.com",
            "iat": now, "exp": now + 3600,
        }))
    }

    async fn decide(
        &self,
        token: &str,
        path: &str,
        policy: Option<&str>,
        tool: Option<&str>,
    ) -> Result<(Verdict, CacheUse), BackendError> {
        let header = format!("Bearer {token}");
        let facts = RequestFacts {
            authorization: Some(header.as_bytes()),
            path,
            host: "mcp.example.com",
            http_method: "POST",
            policy,
            mcp: McpCall {
                method: Some(if tool.is_some() {
                    "tools/call"
                } else {
                    "tools/list"
                }),
                tool,
                ..McpCall::default()
            },
        };
        let decision = self.authorizer.authorize(facts).await?;
        Ok((decision.verdict, decision.cache))
    }

    fn lookups(&self) -> usize {
        self.groups.lookups.lock().unwrap().len()
    }
}

fn reason(result: &Result<(Verdict, CacheUse), BackendError>) -> &'static str {
    match result {
        Ok((verdict, _)) => verdict.reason(),
        Err(_) => "unavailable",
    }
}

#[tokio::test]
async fn an_unknown_policy_from_envoy_is_refused_never_allowed() {
    let f = fixture().await;
    let token = f.token("grace@example.com");
    let result = f
        .decide(&token, "/grafana/mcp", Some("retired"), None)
        .await;
    let (verdict, _) = result.as_ref().unwrap();
    assert_eq!(verdict.reason(), "unknown_policy");
    assert_eq!(verdict.policy().map(|p| p.0), Some("retired"));
    // Nothing was looked up for a policy that does not exist.
    assert_eq!(f.lookups(), 0);
}

#[tokio::test]
async fn each_tool_and_route_gets_its_own_verdict() {
    let f = fixture().await;
    let ada = f.token("ada@example.com");
    let first = f
        .decide(&ada, "/grafana/mcp", None, Some("list_dashboards"))
        .await;
    assert_eq!(reason(&first), "allowed");
    assert_eq!(first.unwrap().1, CacheUse::Miss);
    let again = f
        .decide(&ada, "/grafana/mcp", None, Some("list_dashboards"))
        .await;
    assert_eq!(again.unwrap().1, CacheUse::Hit);
    let lookups = f.lookups();
    // Same token and route, another tool: a miss, decided by the rule, not the cached allow.
    let delete = f
        .decide(&ada, "/grafana/mcp", None, Some("delete_dashboard"))
        .await;
    assert_eq!(reason(&delete), "not_in_groups");
    assert_eq!(delete.unwrap().1, CacheUse::Miss);
    assert!(f.lookups() > lookups, "the rule's group was looked up");
    // Another route (the default policy: domain only) with the same token: its own verdict.
    let other = f.decide(&ada, "/mcp", None, Some("delete_dashboard")).await;
    assert_eq!(reason(&other), "allowed");
    assert_eq!(other.unwrap().1, CacheUse::Miss);
    // Envoy naming the policy for the default path: grafana's rule applies again.
    let named = f
        .decide(&ada, "/mcp", Some("grafana"), Some("delete_dashboard"))
        .await;
    assert_eq!(reason(&named), "not_in_groups");
}

#[tokio::test]
async fn a_lookup_failure_is_an_outage_and_is_not_cached() {
    let f = fixture().await;
    let grace = f.token("grace@example.com");
    *f.groups.failing.lock().unwrap() = true;
    let result = f.decide(&grace, "/grafana/mcp", None, None).await;
    assert_eq!(result.unwrap_err().endpoint, Endpoint::Groups);
    *f.groups.failing.lock().unwrap() = false;
    let result = f.decide(&grace, "/grafana/mcp", None, None).await;
    assert_eq!(reason(&result), "allowed");
    assert_eq!(result.unwrap().1, CacheUse::Miss);
}

#[tokio::test]
async fn a_verdict_resting_on_a_stale_membership_is_used_once_not_cached() {
    let f = fixture().await;
    let grace = f.token("grace@example.com");
    *f.groups.stale.lock().unwrap() = true;
    for _ in 0..3 {
        let result = f.decide(&grace, "/grafana/mcp", None, None).await;
        assert_eq!(reason(&result), "allowed");
        assert_eq!(result.unwrap().1, CacheUse::Bypass);
    }
    assert_eq!(
        f.lookups(),
        3,
        "every request asks the membership cache again"
    );
    *f.groups.stale.lock().unwrap() = false;
    let fresh = f.decide(&grace, "/grafana/mcp", None, None).await;
    assert_eq!(fresh.unwrap().1, CacheUse::Miss);
    let cached = f.decide(&grace, "/grafana/mcp", None, None).await;
    assert_eq!(cached.unwrap().1, CacheUse::Hit);
}

#[tokio::test]
async fn one_google_verification_per_token_across_routes_and_tools() {
    let f = fixture().await;
    let opaque = f.standin.mint_access_token(AccessTokenSpec {
        sub: "42".into(),
        email: Some("ada@example.com".into()),
        hd: Some("example.com".into()),
        aud: CLIENT.into(),
        ..Default::default()
    });
    f.standin.reset_stats();
    let mut verdicts = 0;
    for tool in ["a", "b", "c", "delete_x"] {
        for path in ["/grafana/mcp", "/mcp"] {
            assert!(f.decide(&opaque, path, None, Some(tool)).await.is_ok());
            verdicts += 1;
        }
    }
    // Eight distinct verdicts, one token: Google was asked once (tokeninfo + userinfo).
    let stats = f.standin.stats();
    assert_eq!((stats.tokeninfo, stats.userinfo), (1, 1), "{stats:?}");
    f.authorizer.verdicts().flush().await;
    f.authorizer.identities().flush().await;
    assert_eq!(f.authorizer.verdicts().entry_count(), verdicts);
    assert_eq!(f.authorizer.identities().entry_count(), 1);
}
