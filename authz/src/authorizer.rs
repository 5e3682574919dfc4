//! One authorization, from the request's facts to a verdict: find the credential, consult the
//! cache, verify with Google on a miss, apply the access policy.

use std::sync::Arc;

use crate::{
    cache::{self, CacheKey, VerdictCache},
    config::Config,
    credentials::{self, Credential},
    google::{BackendError, Google, VerifyError},
    policy::AccessPolicy,
    principal::unix_now,
    verdict::{Unauthenticated, Verdict},
};

/// The facts of an HTTP request that a decision may read. Built by the Check module from
/// Envoy's CheckRequest; nothing else about the request is looked at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The raw `Authorization` header value, if any (may be non-UTF-8 junk).
    pub authorization: Option<&'a [u8]>,
    /// `:path`, including the query string.
    pub path: &'a str,
}

/// A verdict and whether the verdict cache supplied it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub cache: CacheUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    /// No token worth caching (missing or malformed): decided without the cache.
    Bypass,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Bypass => "bypass",
        }
    }
}

#[derive(Debug)]
pub struct Authorizer {
    google: Arc<Google>,
    cache: VerdictCache,
    policy: AccessPolicy,
    policy_fingerprint: [u8; 32],
}

impl Authorizer {
    pub fn new(config: &Config, google: Arc<Google>) -> Authorizer {
        Authorizer {
            google,
            cache: VerdictCache::new(
                config.cache.max_entries,
                cache::Lifetimes {
                    allow: config.cache.allow_ttl,
                    deny: config.cache.deny_ttl,
                },
            ),
            policy: AccessPolicy::new(&config.access.domains),
            policy_fingerprint: config.policy_fingerprint(),
        }
    }

    pub fn google(&self) -> &Google {
        &self.google
    }

    pub fn cache(&self) -> &VerdictCache {
        &self.cache
    }

    /// Decides one request. `Err` means we could not decide (Google unavailable): the caller
    /// must answer with an outage, never with a denial.
    pub async fn authorize(&self, facts: RequestFacts<'_>) -> Result<Decision, BackendError> {
        let credential = match credentials::extract(facts.authorization, facts.path) {
            Ok(credential) => credential,
            Err(error) => {
                return Ok(Decision {
                    verdict: Verdict::Unauthenticated(Unauthenticated::Credential(error)),
                    cache: CacheUse::Bypass,
                });
            }
        };
        let key = self.cache_key(credential);
        let lookup = self.cache.get_or_verify(key, self.verify(credential));
        let (mut verdict, mut hit) = lookup.await.map_err(|shared| (*shared).clone())?;
        if hit && outlived_its_token(&verdict) {
            // The cache's lifetime is computed once at insertion; checking `exp` again on every
            // hit makes "a cached identity never outlives its token" hold to the second. The
            // token is then judged afresh (it may still be inside the clock-skew leeway).
            self.cache.invalidate(&key).await;
            let again = self.cache.get_or_verify(key, self.verify(credential));
            (verdict, hit) = again.await.map_err(|shared| (*shared).clone())?;
        }
        Ok(Decision {
            verdict,
            cache: if hit { CacheUse::Hit } else { CacheUse::Miss },
        })
    }

    fn cache_key(&self, credential: Credential<'_>) -> CacheKey {
        let token = match credential {
            Credential::Jwt(token) | Credential::Opaque(token) => token,
        };
        cache::key(token, &[&self.policy_fingerprint])
    }

    async fn verify(&self, credential: Credential<'_>) -> Result<Verdict, BackendError> {
        match self.google.verify(credential).await {
            Ok(principal) => {
                let principal = Arc::new(principal);
                Ok(match self.policy.decide(&principal) {
                    Ok(()) => Verdict::Allow(principal),
                    Err(why) => Verdict::Forbidden(principal, why),
                })
            }
            Err(VerifyError::Token(error)) => {
                Ok(Verdict::Unauthenticated(Unauthenticated::Token(error)))
            }
            Err(VerifyError::Backend(error)) => Err(error),
        }
    }
}

fn outlived_its_token(verdict: &Verdict) -> bool {
    verdict
        .principal()
        .is_some_and(|principal| principal.expires_at <= unix_now())
}
