//! Memory per cached token, in-process: fills the identity and verdict caches the way
//! `Authorizer` does on a miss (one identity entry and one verdict entry per token, sharing the
//! token's `Principal`; the verdict's `Grant` shared through `Outcomes`) and prints the RSS
//! growth per token.
//!
//! Then it floods both caches with JUNK invalid tokens (what a caller without a token can send:
//! one identity and one verdict entry each, as for a forged signature) and prints the RSS again
//! and how many of the valid tokens' verdicts are still cached.
//!
//! `cargo run --release -p authz --example cache_memory -- [TOKENS] [USERS] [JUNK]`
//!
//! Defaults: 1,000,000 tokens, one user per token (the worst case, as in `bench-check`), and
//! 2,000,000 junk tokens. With
//! USERS smaller, tokens cycle through the users; each token still carries its own principal
//! (its own `exp`), as it does in the service. The tokens themselves are never stored, only
//! their SHA-256 keys, so they are not built here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{sync::Arc, time::Duration};

use authz::{
    cache::{self, Identity, IdentityCache, Lifetimes, VerdictCache},
    errors::TokenError,
    policy::Grant,
    principal::{Parts, Principal, TokenSource, unix_now},
    verdict::{Outcomes, Unauthenticated, Verdict},
};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tokens: u64 = args.next().map_or(1_000_000, |a| a.parse().unwrap());
    let users: u64 = args.next().map_or(tokens, |a| a.parse().unwrap());
    let junk: u64 = args.next().map_or(2_000_000, |a| a.parse().unwrap());
    let lifetimes = Lifetimes {
        allow: Duration::from_secs(300),
        deny: Duration::from_secs(10),
    };
    let identities = IdentityCache::new(tokens, lifetimes);
    let verdicts = VerdictCache::new(tokens, lifetimes);
    // What a policy's `Grant` points at lives in the policy set, once.
    let (policy, rule): (Arc<str>, Arc<str>) = (Arc::from("default"), Arc::from("policy"));
    let outcomes = Outcomes::default();
    let fingerprint = [7u8; 32];
    let exp = unix_now() + 3600;

    let before = rss_kib();
    for i in 0..tokens {
        let user = i % users;
        // Stands in for the token: only its hash is ever computed from it.
        let token = format!("token-{i}");
        let (sub, email) = (
            format!("{}", 100_000_000_000_000_000_000u128 + u128::from(user)),
            format!("user{user}@example.com"),
        );
        let principal = Arc::new(Principal::new(Parts {
            sub: &sub,
            email: Some(&email),
            email_verified: true,
            hosted_domain: Some("example.com"),
            expires_at: exp,
            source: TokenSource::GoogleIdToken,
            session: None,
        }));
        let identity_key = cache::key(&token, &[b"identity", &fingerprint]);
        let identity: Identity = Ok(principal);
        let (identity, _) = identities
            .get_or_verify::<(), _, _>(identity_key, || async { Ok(identity) })
            .await
            .unwrap();
        let grant = Grant {
            policy: policy.clone(),
            rule: rule.clone(),
            group: None,
        };
        let verdict = Verdict::Allow(identity.unwrap(), outcomes.grant(grant));
        let verdict_key = cache::key(&token, &[b"verdict", &fingerprint, b"POST"]);
        verdicts
            .get_or_verify::<(), _, _>(verdict_key, || async { Ok(verdict) })
            .await
            .unwrap();
    }
    identities.flush().await;
    verdicts.flush().await;
    let after = rss_kib();
    let (v, id) = (verdicts.entry_count(), identities.entry_count());
    println!(
        "tokens={tokens} users={users}: {v} cached verdicts, {id} identities; \
         VmRSS {:.1} MiB before, {:.1} MiB after: {:.1} MiB for the caches, ~{} bytes per cached verdict",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) * 1024 / v.max(1),
    );

    for i in 0..junk {
        let token = format!("junk-{i}");
        let identity_key = cache::key(&token, &[b"identity", &fingerprint]);
        let _refused = identities
            .get_or_verify::<(), _, _>(identity_key, || async { Ok(Err(TokenError::BadSignature)) })
            .await
            .unwrap();
        let verdict_key = cache::key(&token, &[b"verdict", &fingerprint, b"POST"]);
        let refused = Verdict::Unauthenticated(Unauthenticated::Token(TokenError::BadSignature));
        verdicts
            .get_or_verify::<(), _, _>(verdict_key, || async { Ok(refused) })
            .await
            .unwrap();
    }
    let mut still_cached = 0u64;
    for i in 0..tokens {
        let verdict_key = cache::key(&format!("token-{i}"), &[b"verdict", &fingerprint, b"POST"]);
        let (_, hit) = verdicts
            .get_or_verify::<(), _, _>(verdict_key, || async {
                Ok(Verdict::Unauthenticated(Unauthenticated::Token(
                    TokenError::Expired,
                )))
            })
            .await
            .unwrap();
        if hit {
            still_cached += 1;
        } else {
            // Not a valid token's answer: take the placeholder out again.
            verdicts.invalidate(&verdict_key).await;
        }
    }
    println!(
        "after {junk} junk tokens: VmRSS {:.1} MiB ({:+.1} MiB); {} entries in the verdict cache; \
         {still_cached} of the {v} valid tokens' verdicts still cached",
        rss_kib() as f64 / 1024.0,
        (rss_kib() as f64 - after as f64) / 1024.0,
        verdicts.entry_count(),
    );
}
