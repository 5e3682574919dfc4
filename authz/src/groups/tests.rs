use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::{
    cache::{Lookup, MembershipCache, Settings},
    cloud_identity::{encode_query_value, membership_query},
    *,
};
use crate::config::CredentialsConfig;

const SETTINGS: Settings = Settings {
    positive_ttl: Duration::from_secs(300),
    negative_ttl: Duration::from_secs(60),
    refresh_ahead: Duration::from_secs(60),
    stale_bound: Duration::from_secs(600),
    max_entries: 1000,
    backoff_initial: Duration::from_secs(1),
    backoff_max: Duration::from_secs(4),
};

/// A scripted backend: answers what it is told, counts calls, records what it was asked.
#[derive(Debug)]
struct Fake {
    answer: Mutex<Result<bool, GroupsError>>,
    delay: Duration,
    calls: AtomicUsize,
    asked: Mutex<Vec<(String, String)>>,
}

impl Lookup for Arc<Fake> {
    async fn lookup(&self, email: &str, group: &str) -> Result<bool, GroupsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.asked
            .lock()
            .unwrap()
            .push((email.to_string(), group.to_string()));
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.answer.lock().unwrap().clone()
    }
}

impl Fake {
    fn answer(&self, answer: Result<bool, GroupsError>) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn cache_with(
    answer: Result<bool, GroupsError>,
    delay: Duration,
    settings: Settings,
) -> (Arc<MembershipCache<Arc<Fake>>>, Arc<Fake>) {
    let fake = Arc::new(Fake {
        answer: Mutex::new(answer),
        delay,
        calls: AtomicUsize::new(0),
        asked: Mutex::default(),
    });
    (Arc::new(MembershipCache::new(fake.clone(), settings)), fake)
}

fn cache(answer: Result<bool, GroupsError>) -> (Arc<MembershipCache<Arc<Fake>>>, Arc<Fake>) {
    cache_with(answer, Duration::ZERO, SETTINGS)
}

fn outage() -> GroupsError {
    GroupsError::Unavailable {
        api: Api::Directory,
        problem: "HTTP 503".into(),
    }
}

const QUOTA: GroupsError = GroupsError::Quota {
    api: Api::Directory,
};

fn answer(is_member: bool, freshness: Freshness) -> Result<Membership, GroupsError> {
    Ok(Membership {
        is_member,
        freshness,
    })
}

async fn advance(by: Duration) {
    tokio::time::advance(by).await;
}

#[tokio::test(start_paused = true)]
async fn first_answer_is_fresh_then_cached_until_ttl() {
    let (cache, fake) = cache(Ok(true));
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Fresh)
    );
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Cached)
    );
    advance(Duration::from_secs(301)).await;
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Fresh)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn negative_answers_live_the_negative_ttl() {
    let (cache, fake) = cache(Ok(false));
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(false, Freshness::Fresh)
    );
    // Outside the refresh window (capped at half the 60s TTL), so no refresh starts.
    advance(Duration::from_secs(29)).await;
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(false, Freshness::Cached)
    );
    advance(Duration::from_secs(32)).await;
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(false, Freshness::Fresh)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn keys_fold_case_and_backend_sees_lower_case() {
    let (cache, fake) = cache(Ok(true));
    cache
        .is_member("Ada@Example.COM", "SRE@example.com")
        .await
        .unwrap();
    assert_eq!(
        cache.is_member("ada@example.com", "sre@EXAMPLE.com").await,
        answer(true, Freshness::Cached)
    );
    assert_eq!(fake.calls(), 1);
    assert_eq!(
        fake.asked.lock().unwrap().as_slice(),
        [("ada@example.com".to_string(), "sre@example.com".to_string())]
    );
    // Different groups and users are different keys.
    cache
        .is_member("ada@example.com", "ops@example.com")
        .await
        .unwrap();
    cache
        .is_member("bob@example.com", "sre@example.com")
        .await
        .unwrap();
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_hit_near_expiry_starts_exactly_one_background_refresh() {
    let (cache, fake) = cache_with(Ok(true), Duration::from_millis(50), SETTINGS);
    cache.is_member("ada@x", "g@x").await.unwrap();
    advance(Duration::from_secs(250)).await;
    for _ in 0..5 {
        assert_eq!(
            cache.is_member("ada@x", "g@x").await,
            answer(true, Freshness::Cached)
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.calls(), 2, "one refresh for five near-expiry hits");
    // The refreshed answer lives a full TTL from the refresh: past the old expiry it is cached.
    advance(Duration::from_secs(100)).await;
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Cached)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hit_outside_the_refresh_window_does_not_refresh() {
    let (cache, fake) = cache(Ok(true));
    cache.is_member("ada@x", "g@x").await.unwrap();
    advance(Duration::from_secs(239)).await;
    cache.is_member("ada@x", "g@x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn outage_serves_stale_within_the_bound_then_fails() {
    let (cache, fake) = cache(Ok(true));
    cache.is_member("ada@x", "g@x").await.unwrap();
    fake.answer(Err(outage()));
    advance(Duration::from_secs(300 + 599)).await;
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Stale)
    );
    advance(Duration::from_secs(2)).await;
    assert_eq!(cache.is_member("ada@x", "g@x").await, Err(outage()));
    // Google asked each time: an outage is not a quota error, so no backoff.
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn no_stale_answer_when_none_was_known_and_errors_are_not_cached() {
    let (cache, fake) = cache(Err(outage()));
    assert_eq!(cache.is_member("ada@x", "g@x").await, Err(outage()));
    fake.answer(Ok(false));
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(false, Freshness::Fresh)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_lookup() {
    let (cache, fake) = cache_with(Ok(true), Duration::from_millis(100), SETTINGS);
    let answers = futures::future::join_all((0..20).map(|i| {
        let cache = cache.clone();
        async move {
            cache
                .is_member(if i % 2 == 0 { "ADA@x" } else { "ada@x" }, "g@x")
                .await
        }
    }))
    .await;
    assert_eq!(fake.calls(), 1);
    assert!(answers.iter().all(|a| *a == answer(true, Freshness::Fresh)));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_failure() {
    let (cache, fake) = cache_with(Err(outage()), Duration::from_millis(100), SETTINGS);
    let answers = futures::future::join_all((0..5).map(|_| cache.is_member("ada@x", "g@x"))).await;
    assert_eq!(fake.calls(), 1);
    assert!(answers.iter().all(|a| *a == Err(outage())));
}

#[tokio::test(start_paused = true)]
async fn quota_errors_back_off_exponentially_without_calling_google() {
    let (cache, fake) = cache(Err(QUOTA));
    assert_eq!(cache.is_member("ada@x", "g@x").await, Err(QUOTA));
    for _ in 0..10 {
        assert_eq!(
            cache.is_member("bob@x", "g@x").await,
            Err(GroupsError::BackingOff)
        );
    }
    assert_eq!(fake.calls(), 1, "no calls during the first 1s pause");
    advance(Duration::from_millis(1001)).await;
    assert_eq!(cache.is_member("ada@x", "g@x").await, Err(QUOTA));
    assert_eq!(fake.calls(), 2);
    // Now 2s: still paused after 1s.
    advance(Duration::from_millis(1001)).await;
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        Err(GroupsError::BackingOff)
    );
    advance(Duration::from_millis(1000)).await;
    cache.is_member("ada@x", "g@x").await.unwrap_err();
    advance(Duration::from_millis(4001)).await;
    cache.is_member("ada@x", "g@x").await.unwrap_err();
    // Capped at 4s (backoff_max), not 8s.
    advance(Duration::from_millis(4001)).await;
    fake.answer(Ok(true));
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Fresh)
    );
    assert_eq!(fake.calls(), 5);
    // Success resets the pause to backoff_initial.
    fake.answer(Err(QUOTA));
    cache.is_member("bob@x", "g@x").await.unwrap_err();
    advance(Duration::from_millis(1001)).await;
    cache.is_member("bob@x", "g@x").await.unwrap_err();
    assert_eq!(fake.calls(), 7);
}

#[tokio::test(start_paused = true)]
async fn during_backoff_a_known_answer_is_served_stale() {
    let (cache, fake) = cache(Ok(true));
    cache.is_member("ada@x", "g@x").await.unwrap();
    fake.answer(Err(QUOTA));
    advance(Duration::from_secs(301)).await;
    // The quota error itself falls back to the stale answer...
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Stale)
    );
    // ...and during the pause nobody calls Google.
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Stale)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_background_refresh_during_backoff() {
    let (cache, fake) = cache(Ok(true));
    cache.is_member("ada@x", "g@x").await.unwrap();
    fake.answer(Err(QUOTA));
    advance(Duration::from_secs(250)).await;
    // In the refresh window: the refresh runs, meets the quota error, and starts the pause.
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Cached)
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls(), 2);
    // During the pause, hits in the window are answered without starting another refresh.
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Cached)
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls(), 2);
    // After it, the next hit refreshes again.
    advance(Duration::from_secs(1)).await;
    cache.is_member("ada@x", "g@x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn invalidate_user_forgets_only_that_user() {
    let (cache, fake) = cache(Ok(true));
    cache.is_member("ada@x", "a@x").await.unwrap();
    cache.is_member("ada@x", "b@x").await.unwrap();
    cache.is_member("bob@x", "a@x").await.unwrap();
    assert_eq!(cache.invalidate_user("ADA@x"), 2);
    assert_eq!(
        cache.is_member("ada@x", "a@x").await,
        answer(true, Freshness::Fresh)
    );
    assert_eq!(
        cache.is_member("ada@x", "b@x").await,
        answer(true, Freshness::Fresh)
    );
    assert_eq!(
        cache.is_member("bob@x", "a@x").await,
        answer(true, Freshness::Cached)
    );
    assert_eq!(fake.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn an_answer_in_flight_during_invalidation_is_not_stored() {
    let (cache, fake) = cache_with(Ok(true), Duration::from_millis(100), SETTINGS);
    let pending = tokio::spawn({
        let cache = cache.clone();
        async move { cache.is_member("ada@x", "g@x").await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    cache.invalidate_user("ada@x");
    assert_eq!(pending.await.unwrap(), answer(true, Freshness::Fresh));
    assert_eq!(
        cache.is_member("ada@x", "g@x").await,
        answer(true, Freshness::Fresh)
    );
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let settings = Settings {
        max_entries: 10,
        ..SETTINGS
    };
    let (cache, _fake) = cache_with(Ok(true), Duration::ZERO, settings);
    for i in 0..200 {
        cache.is_member(&format!("u{i}@x"), "g@x").await.unwrap();
    }
    assert!(cache.entry_count().await <= 10);
}

#[test]
fn quota_reasons_are_recognised() {
    for (body, quota) in [
        (
            r#"{"error":{"code":403,"errors":[{"domain":"usageLimits","reason":"userRateLimitExceeded"}]}}"#,
            true,
        ),
        (r#"{"error":{"errors":[{"reason":"quotaExceeded"}]}}"#, true),
        (
            r#"{"error":{"errors":[{"reason":"rateLimitExceeded"}]}}"#,
            true,
        ),
        (
            r#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED"}]}}"#,
            true,
        ),
        (r#"{"error":{"status":"RESOURCE_EXHAUSTED"}}"#, true),
        (
            r#"{"error":{"code":403,"errors":[{"reason":"forbidden"}],"status":"PERMISSION_DENIED"}}"#,
            false,
        ),
        ("not json", false),
        ("", false),
    ] {
        assert_eq!(is_quota_body(body), quota, "{body}");
    }
}

#[test]
fn membership_queries_quote_safely() {
    for (email, expected) in [
        (
            "ada@example.com",
            Some("member_key_id == 'ada@example.com'"),
        ),
        (
            "o'brien@example.com",
            Some(r#"member_key_id == "o'brien@example.com""#),
        ),
        (
            r#"a"b@example.com"#,
            Some(r#"member_key_id == 'a"b@example.com'"#),
        ),
        (r#"a'"b@example.com"#, None),
        (r"a\'@example.com", None),
        ("a\n@example.com", None),
        ("", None),
    ] {
        let query = membership_query(email).ok();
        assert_eq!(query.as_deref(), expected, "{email:?}");
    }
    assert_eq!(
        encode_query_value("member_key_id == 'a+b@x.com'"),
        "member_key_id%20%3D%3D%20%27a%2Bb%40x.com%27"
    );
}

fn config(text: &str) -> Result<GroupsConfig, String> {
    let config: GroupsConfig = toml::from_str(text).map_err(|e| e.message().to_string())?;
    config.validate()?;
    Ok(config)
}

#[test]
fn config_defaults() {
    let config = config(
        r#"
        [credentials]
        kind = "service-account-key"
        file = "sa.json"
        subject = "admin@example.com"
        "#,
    )
    .unwrap();
    assert_eq!(config.api, Api::Directory);
    assert_eq!(
        config.directory_url.as_str(),
        "https://admin.googleapis.com/"
    );
    assert_eq!(
        config.cloud_identity_url.as_str(),
        "https://cloudidentity.googleapis.com/"
    );
    assert_eq!(
        config.iam_credentials_url.as_str(),
        "https://iamcredentials.googleapis.com/"
    );
    assert_eq!(
        config.token_url.as_str(),
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(config.positive_ttl, Duration::from_secs(300));
    assert_eq!(config.negative_ttl, Duration::from_secs(60));
    assert_eq!(config.refresh_ahead, Duration::from_secs(60));
    assert_eq!(config.stale_bound, Duration::from_secs(600));
    assert_eq!(config.max_entries, 100_000);
    assert_eq!(config.request_timeout, Duration::from_secs(2));
    assert_eq!(config.backoff_initial, Duration::from_secs(1));
    assert_eq!(config.backoff_max, Duration::from_secs(60));
}

#[test]
fn config_reads_every_key_and_mode() {
    let config = config(
        r#"
        api = "cloud-identity"
        directory_url = "http://127.0.0.1:1"
        cloud_identity_url = "http://127.0.0.1:2"
        iam_credentials_url = "http://127.0.0.1:3"
        token_url = "http://127.0.0.1:4/token"
        positive_ttl = "10m"
        negative_ttl = "30s"
        refresh_ahead = "5s"
        stale_bound = "1h"
        max_entries = 7
        request_timeout = "1500ms"
        backoff_initial = "2s"
        backoff_max = "2m"
        [credentials]
        kind = "external-account"
        file = "wif.json"
        service_account = "groups@p.iam.gserviceaccount.com"
        "#,
    )
    .unwrap();
    assert_eq!(config.api, Api::CloudIdentity);
    assert_eq!(config.request_timeout, Duration::from_millis(1500));
    assert_eq!(config.backoff_max, Duration::from_secs(120));
    assert!(matches!(
        config.credentials,
        CredentialsConfig::ExternalAccount {
            ref service_account,
            subject: None,
            ..
        } if service_account.as_deref() == Some("groups@p.iam.gserviceaccount.com")
    ));
}

#[test]
fn config_errors_name_the_key() {
    let key = r#"
        [credentials]
        kind = "service-account-key"
        file = "sa.json"
    "#;
    for (text, expected) in [
        (key.to_string(), "groups.credentials.subject"),
        (
            format!("api = \"cloud-identity\"\npositive_ttl = \"0s\"\n{key}"),
            "groups.positive_ttl",
        ),
        (
            format!("api = \"cloud-identity\"\nmax_entries = 0\n{key}"),
            "groups.max_entries",
        ),
        (
            format!("api = \"cloud-identity\"\nbackoff_initial = \"2m\"\n{key}"),
            "groups.backoff_max",
        ),
        (format!("api = \"admin\"\n{key}"), "unknown variant"),
        (format!("ttl = \"1m\"\n{key}"), "unknown field"),
        (
            format!("{key}\nsubject = \"a@x\"\ncolour = \"red\""),
            "unknown field",
        ),
        (
            "api = \"cloud-identity\"\n[credentials]\nkind = \"gce\"\nfile = \"x\"".to_string(),
            "unknown variant",
        ),
        ("api = \"cloud-identity\"".to_string(), "credentials"),
    ] {
        let error = config(&text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}
