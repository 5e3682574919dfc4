use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::{
    credentials::CredentialError,
    policy::Grant,
    principal::{Parts, Principal, TokenSource},
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
        Arc::new(Principal::new(Parts {
            sub: "1",
            email: None,
            email_verified: true,
            hosted_domain: Some("example.com"),
            expires_at,
            source: TokenSource::GoogleIdToken,
            session: None,
        })),
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
    let results = futures::future::join_all((0..50).map(|_| cache.get_or_verify(k, verify))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let fresh = results.iter().filter(|r| !r.as_ref().unwrap().1).count();
    assert_eq!(fresh, 1, "exactly one caller ran the verification");
}

#[tokio::test]
async fn errors_are_not_cached() {
    let cache = VerdictCache::new(100, LIFETIMES);
    let k = key("t", &[]);
    let failed = cache
        .get_or_verify(k, || async { Err::<Verdict, _>("google down") })
        .await;
    assert!(failed.is_err());
    let (verdict, hit) = cache
        .get_or_verify(k, || async { Ok::<_, &str>(allow(unix_now() + 3600)) })
        .await
        .unwrap();
    assert!(!hit);
    assert!(matches!(verdict, Verdict::Allow(..)));
    let (_, hit) = cache
        .get_or_verify(k, || async { Err("unused") })
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
            .get_or_verify(key(&format!("junk{i}"), &[]), || async {
                Ok::<_, ()>(junk)
            })
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
        .get_or_verify(k, || async { Ok::<_, ()>(allow(unix_now() + 1)) })
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, hit) = cache
        .get_or_verify(k, || async { Ok::<_, ()>(allow(unix_now() + 3600)) })
        .await
        .unwrap();
    assert!(!hit, "an allow must not outlive its token");
}

fn allow_for(email: &str) -> Verdict {
    match allow(unix_now() + 3600) {
        Verdict::Allow(principal, grant) => Verdict::Allow(
            Arc::new(Principal::new(Parts {
                email: Some(email),
                ..principal.parts()
            })),
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
            .get_or_verify::<(), _, _>(key(token, &[]), || async { Ok(verdict) })
            .await
            .unwrap();
    }
    let invalid = Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::TooLong));
    cache
        .get_or_verify::<(), _, _>(key("junk", &[]), || async { Ok(invalid) })
        .await
        .unwrap();

    assert_eq!(cache.invalidate_email("ADA@example.com").await, 2);
    let stats = cache.stats().await;
    assert_eq!(stats.entries, 2);
    let (_, hit) = cache
        .get_or_verify::<(), _, _>(key("t1", &[]), || async {
            Ok(allow_for("ada@example.com"))
        })
        .await
        .unwrap();
    assert!(!hit, "ada's verdict must be decided afresh");
    let (_, hit) = cache
        .get_or_verify::<(), _, _>(key("t3", &[]), || async {
            Ok(allow_for("bob@example.com"))
        })
        .await
        .unwrap();
    assert!(hit, "bob's verdict stays cached");
    let stats = cache.stats().await;
    assert_eq!((stats.hits, stats.misses), (1, 5));
}

#[tokio::test]
async fn a_junk_token_flood_never_evicts_an_answer_about_a_valid_token() {
    let cache = VerdictCache::new(1_000, LIFETIMES);
    for i in 0..1_000 {
        cache
            .get_or_verify::<(), _, _>(key(&format!("valid{i}"), &[]), || async {
                Ok(allow(unix_now() + 3600))
            })
            .await
            .unwrap();
    }
    for i in 0..100_000 {
        let junk = Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::TooLong));
        cache
            .get_or_verify::<(), _, _>(key(&format!("junk{i}"), &[]), || async { Ok(junk) })
            .await
            .unwrap();
    }
    assert!(cache.entry_count() <= 1_000 + 1_000 / 8);
    for i in 0..1_000 {
        let (_, hit) = cache
            .get_or_verify::<(), _, _>(key(&format!("valid{i}"), &[]), || async {
                Ok(allow(unix_now() + 3600))
            })
            .await
            .unwrap();
        assert!(hit, "valid{i} was evicted by junk");
    }
}

#[tokio::test]
async fn when_full_entries_in_use_outlive_one_off_entries() {
    // One shard of 1,000: the eviction order is the clock's alone.
    let cache = VerdictCache::new(1_000, LIFETIMES);
    let fill = |name: String| {
        let cache = &cache;
        async move {
            cache
                .get_or_verify::<(), _, _>(key(&name, &[]), || async {
                    Ok(allow(unix_now() + 3600))
                })
                .await
                .unwrap()
                .1
        }
    };
    for i in 0..100 {
        fill(format!("hot{i}")).await;
    }
    for round in 0..20 {
        // The hot entries are read between every wave of 300 one-off tokens.
        for i in 0..100 {
            assert!(
                fill(format!("hot{i}")).await,
                "hot{i} evicted in round {round}"
            );
        }
        for i in 0..300 {
            fill(format!("cold{round}-{i}")).await;
        }
    }
    assert_eq!(cache.entry_count(), 1_000);
}

#[tokio::test]
async fn a_waiter_finishes_the_verification_of_a_cancelled_caller_and_nothing_is_left_behind() {
    let cache = VerdictCache::new(100, LIFETIMES);
    let k = key("t", &[]);
    let first = cache.get_or_verify(k, || async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, ()>(allow(unix_now() + 3600))
    });
    // The first caller is cancelled (Envoy gave up) before its verification ends.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), first)
            .await
            .is_err()
    );
    assert_eq!(cache.flights.len(), 0, "a cancelled flight must not stay");

    let slow = cache.get_or_verify(k, || async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, ()>(allow(unix_now() + 3600))
    });
    let waiter = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        cache
            .get_or_verify(k, || async { Ok::<_, ()>(allow(unix_now() + 3600)) })
            .await
    };
    let (slow, waiter) = tokio::join!(
        tokio::time::timeout(Duration::from_millis(20), slow),
        waiter
    );
    assert!(slow.is_err(), "the slow caller was cancelled");
    assert!(waiter.is_ok());
    assert_eq!(cache.flights.len(), 0);
    let (_, hit) = cache
        .get_or_verify(k, || async { Err::<Verdict, _>(()) })
        .await
        .unwrap();
    assert!(hit);
}

#[tokio::test]
async fn an_error_reaches_every_waiter_and_the_next_caller_verifies_again() {
    let cache = VerdictCache::new(100, LIFETIMES);
    let calls = AtomicUsize::new(0);
    let k = key("t", &[]);
    let failing = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        Err::<Verdict, _>("google down".to_string())
    };
    let results = futures::future::join_all((0..20).map(|_| cache.get_or_verify(k, failing))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| **e == "google down"))
    );
    assert_eq!(cache.flights.len(), 0);
    let _ = cache.get_or_verify(k, failing).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
