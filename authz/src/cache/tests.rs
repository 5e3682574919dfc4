use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::{
    credentials::CredentialError,
    policy::Grant,
    principal::{Principal, TokenSource},
    verdict::Unauthenticated,
};

const LIFETIMES: Lifetimes = Lifetimes {
    allow: Duration::from_secs(300),
    deny: Duration::from_secs(10),
};

fn allow(expires_at: u64) -> Verdict {
    let grant = Grant {
        policy: Arc::from("default"),
        rule: Arc::from("policy"),
        group: None,
    };
    Verdict::Allow(
        Arc::new(Principal {
            sub: "1".into(),
            email: None,
            email_verified: true,
            hosted_domain: Some("example.com".into()),
            expires_at,
            source: TokenSource::GoogleIdToken,
            session: None,
        }),
        Arc::new(grant),
    )
}

#[test]
fn lifetimes_follow_the_token() {
    let now = 1_000_000;
    assert_eq!(
        lifetime(&allow(now + 3600), LIFETIMES, now),
        Duration::from_secs(300)
    );
    assert_eq!(
        lifetime(&allow(now + 42), LIFETIMES, now),
        Duration::from_secs(42)
    );
    assert_eq!(lifetime(&allow(now - 5), LIFETIMES, now), Duration::ZERO);
    let invalid = Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::TooLong));
    assert_eq!(lifetime(&invalid, LIFETIMES, now), Duration::from_secs(10));
}

#[test]
fn keys_separate_tokens_and_inputs() {
    let a = key("token", &[b"policy-a"]);
    assert_eq!(a, key("token", &[b"policy-a"]));
    assert_ne!(a, key("token", &[b"policy-b"]));
    assert_ne!(a, key("token2", &[b"policy-a"]));
    // Length prefixes: moving bytes between parts changes the key.
    assert_ne!(key("ab", &[b"c"]), key("a", &[b"bc"]));
    // The key is a hash: the token does not appear in it.
    assert!(!a.windows(5).any(|w| w == b"token"));
}

#[tokio::test]
async fn concurrent_misses_share_one_verification() {
    let cache = VerdictCache::new(100, LIFETIMES);
    let calls = AtomicUsize::new(0);
    let k = key("t", &[]);
    let verify = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, String>(allow(unix_now() + 3600))
    };
    let results =
        futures::future::join_all((0..50).map(|_| cache.get_or_verify(k, verify()))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let fresh = results.iter().filter(|r| !r.as_ref().unwrap().1).count();
    assert_eq!(fresh, 1, "exactly one caller ran the verification");
}

#[tokio::test]
async fn errors_are_not_cached() {
    let cache = VerdictCache::new(100, LIFETIMES);
    let k = key("t", &[]);
    let failed = cache
        .get_or_verify(k, async { Err::<Verdict, _>("google down") })
        .await;
    assert!(failed.is_err());
    let (verdict, hit) = cache
        .get_or_verify(k, async { Ok::<_, &str>(allow(unix_now() + 3600)) })
        .await
        .unwrap();
    assert!(!hit);
    assert!(matches!(verdict, Verdict::Allow(..)));
    let (_, hit) = cache
        .get_or_verify(k, async { Err("unused") })
        .await
        .unwrap();
    assert!(hit);
}

#[tokio::test]
async fn capacity_is_bounded() {
    let cache = VerdictCache::new(100, LIFETIMES);
    for i in 0..5_000 {
        let junk = Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::TooLong));
        let _ = cache
            .get_or_verify(key(&format!("junk{i}"), &[]), async { Ok::<_, ()>(junk) })
            .await;
    }
    cache.flush().await;
    assert!(
        cache.entry_count() <= 100,
        "{} entries",
        cache.entry_count()
    );
}

#[tokio::test]
async fn entries_expire_with_their_token() {
    let cache = VerdictCache::new(100, LIFETIMES);
    let k = key("short", &[]);
    let _ = cache
        .get_or_verify(k, async { Ok::<_, ()>(allow(unix_now() + 1)) })
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, hit) = cache
        .get_or_verify(k, async { Ok::<_, ()>(allow(unix_now() + 3600)) })
        .await
        .unwrap();
    assert!(!hit, "an allow must not outlive its token");
}

fn allow_for(email: &str) -> Verdict {
    match allow(unix_now() + 3600) {
        Verdict::Allow(principal, grant) => Verdict::Allow(
            Arc::new(Principal {
                email: Some(email.into()),
                ..(*principal).clone()
            }),
            grant,
        ),
        _ => unreachable!("allow() builds an Allow"),
    }
}

#[tokio::test]
async fn invalidating_an_email_removes_only_that_users_entries_and_counts_them() {
    let cache = VerdictCache::new(100, LIFETIMES);
    for (token, email) in [
        ("t1", "ada@example.com"),
        ("t2", "Ada@Example.com"),
        ("t3", "bob@example.com"),
    ] {
        let verdict = allow_for(email);
        cache
            .get_or_verify::<(), _>(key(token, &[]), async { Ok(verdict) })
            .await
            .unwrap();
    }
    let invalid = Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::TooLong));
    cache
        .get_or_verify::<(), _>(key("junk", &[]), async { Ok(invalid) })
        .await
        .unwrap();

    assert_eq!(cache.invalidate_email("ADA@example.com").await, 2);
    let stats = cache.stats().await;
    assert_eq!(stats.entries, 2);
    let (_, hit) = cache
        .get_or_verify::<(), _>(key("t1", &[]), async { Ok(allow_for("ada@example.com")) })
        .await
        .unwrap();
    assert!(!hit, "ada's verdict must be decided afresh");
    let (_, hit) = cache
        .get_or_verify::<(), _>(key("t3", &[]), async { Ok(allow_for("bob@example.com")) })
        .await
        .unwrap();
    assert!(hit, "bob's verdict stays cached");
    let stats = cache.stats().await;
    assert_eq!((stats.hits, stats.misses), (1, 5));
}
