//! One authorization, from the request's facts to a verdict: find the credential, choose the
//! policy, consult the verdict cache, and on a miss establish the identity (identity cache, then
//! Google) and apply the policy (group lookups as it asks for them).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use arc_swap::ArcSwap;
use tracing::Instrument;

use crate::{
    cache::{self, CacheKey, Identity, IdentityCache, Stats, VerdictCache},
    config::Config,
    credentials::{self, Credential},
    errors::{BackendError, TokenError, VerifyError},
    facade_token::{TokenCheck, access_token},
    google::{Google, Seen},
    groups::{GroupAnswer, MembershipLookup},
    metrics::{CacheName, CacheResult, Metrics},
    policy::{
        self, Forbidden, McpCall, Memberships, Policy, PolicySet, Refusal, Step, UnknownPolicy,
    },
    principal::{Principal, unix_now},
    resource::{McpResource, Resources},
    telemetry,
    verdict::{Outcomes, Unauthenticated, Verdict},
};

/// The facts of an HTTP request that a decision may read. Built by the Check module from
/// Envoy's CheckRequest; nothing else about the request is looked at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The raw `Authorization` header value, if any (may be non-UTF-8 junk).
    pub authorization: Option<&'a [u8]>,
    /// `:path`, including the query string.
    pub path: &'a str,
    /// `:authority` (`Host`): chooses between resources that share a path.
    pub host: &'a str,
    /// `:method`.
    pub http_method: &'a str,
    /// The policy named by the route's `context_extensions`, if any.
    pub policy: Option<&'a str>,
    /// The JSON-RPC method and tool, from Envoy's MCP filter.
    pub mcp: McpCall<'a>,
}

/// A verdict and whether the verdict cache supplied it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub cache: CacheUse,
    /// The protected resource the request is for: a challenge names its metadata.
    pub resource: Arc<McpResource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    /// No token worth caching (missing or malformed), or an answer that must not be cached
    /// (it rests on a stale group membership): decided without storing it.
    Bypass,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        CacheResult::from(self).as_str()
    }
}

impl From<CacheUse> for CacheResult {
    fn from(cache: CacheUse) -> CacheResult {
        match cache {
            CacheUse::Hit => CacheResult::Hit,
            CacheUse::Miss => CacheResult::Miss,
            CacheUse::Bypass => CacheResult::Bypass,
        }
    }
}

/// Why a verdict-cache fill produced nothing to store.
#[derive(Debug, Clone)]
enum Unstored {
    /// Could not decide: a 503.
    Backend(BackendError),
    /// Decided, but on a stale answer: use it, do not cache it.
    Uncacheable(Verdict),
}

#[derive(Debug)]
pub struct Authorizer {
    google: Arc<Google>,
    identities: IdentityCache,
    verdicts: VerdictCache,
    /// What a config reload replaces, swapped whole: a request loads it once and decides with
    /// one policy set, one fingerprint and one membership lookup throughout. The caches stay:
    /// their keys include the fingerprint, so a verdict or identity cached under the old
    /// policies can never answer under the new ones.
    rules: ArcSwap<Rules>,
    /// The Google client's, so one registry sees the whole authorization.
    metrics: Arc<Metrics>,
    /// Our OAuth facade's tokens, accepted beside Google's when the facade is on.
    facade: Option<TokenCheck>,
    /// Access tokens that verified (hashed keys, an hour: Google's access tokens live at most
    /// that long). Only valid tokens get here, so a caller without one cannot grow it.
    seen_tokens: moka::future::Cache<CacheKey, ()>,
    /// Bumped by every user invalidation. A verdict whose fill began before a bump is used
    /// but not cached: it may rest on what the invalidation meant to forget.
    invalidations: AtomicU64,
    /// The protected MCP servers (not reloadable: clients hold tokens for them).
    resources: Resources,
}

/// The reloadable part of the authorizer.
#[derive(Debug)]
struct Rules {
    policies: PolicySet,
    /// The grants and refusals the cached verdicts share.
    outcomes: Outcomes,
    groups: Option<Arc<dyn MembershipLookup>>,
    fingerprint: [u8; 32],
}

/// How many cached entries off-boarding removed, per cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invalidated {
    pub verdicts: u64,
    pub identities: u64,
    pub memberships: u64,
}

impl Authorizer {
    pub fn new(
        config: &Config,
        google: Arc<Google>,
        groups: Option<Arc<dyn MembershipLookup>>,
    ) -> Authorizer {
        let lifetimes = cache::Lifetimes {
            allow: config.cache.allow_ttl,
            deny: config.cache.deny_ttl,
        };
        let metrics = google.metrics().clone();
        Authorizer {
            google,
            identities: IdentityCache::new(config.cache.max_entries, lifetimes),
            verdicts: VerdictCache::new(config.cache.max_entries, lifetimes),
            rules: ArcSwap::from_pointee(Rules::new(config, groups)),
            metrics,
            facade: None,
            seen_tokens: moka::future::Cache::builder()
                .max_capacity(config.cache.max_entries)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
            invalidations: AtomicU64::new(0),
            resources: Resources::from_config(config),
        }
    }

    /// Also accepts the access tokens our OAuth facade issues (verified locally, and refused
    /// once their session is revoked).
    pub fn accept_facade_tokens(mut self, tokens: TokenCheck) -> Authorizer {
        self.facade = Some(tokens);
        self
    }

    /// The requirements (domain, users, groups; not the per-tool rules) of `resource`'s policy
    /// for a user signing in to it through the facade or refreshing a token for it: its own
    /// `policy`, else what `[[routes]]` choose for its path, else the default policy. `Err`:
    /// cannot decide now.
    pub async fn admit_sign_in(
        &self,
        principal: &Principal,
        resource: &McpResource,
    ) -> Result<Result<policy::Grant, Refusal>, BackendError> {
        let rules = self.rules.load_full();
        let path = if resource.path.is_empty() {
            "/"
        } else {
            &resource.path
        };
        let selected = rules.policies.select(resource.policy.as_deref(), path);
        let request = policy::Request {
            http_method: "GET",
            mcp: McpCall::default(),
        };
        let principal = Arc::new(principal.clone());
        let verdict = match self.apply(&rules, principal, &selected, request).await {
            Ok(verdict) | Err(Unstored::Uncacheable(verdict)) => verdict,
            Err(Unstored::Backend(error)) => return Err(error),
        };
        match verdict {
            Verdict::Allow(_, grant) => Ok(Ok((*grant).clone())),
            Verdict::Forbidden(_, refusal) => Ok(Err((*refusal).clone())),
            Verdict::Unauthenticated(_) | Verdict::NotServed => {
                unreachable!("apply decides about a verified principal only")
            }
        }
    }

    /// Whether `policy` has rules about `call_method` (see [`Policy::has_rules_for`]); `None`
    /// when no policy has that name (any more: a reload may have removed it).
    pub fn has_rules_for(&self, policy: &str, call_method: &str) -> Option<bool> {
        let rules = self.rules.load();
        let policy = rules.policies.select(Some(policy), "").ok()?;
        Some(policy.has_rules_for(call_method))
    }

    /// For list filtering: which of `names` (tool or prompt names, resource URIs) `principal`
    /// may use with `call_method` (`tools/call`, `prompts/get`, `resources/read`) under
    /// `policy`, decided by the very rules the Check applies to that call, with the group
    /// memberships looked up once for all names (through the membership cache): tool names
    /// against rules' `tools`, prompt names against `prompts`, resource URIs against
    /// `resources`, as the Check matches the calls. `Ok(None)`: no such policy. `Err`: cannot decide now.
    pub async fn permitted(
        &self,
        principal: &Principal,
        policy: &str,
        call_method: &str,
        names: &[&str],
    ) -> Result<Option<Vec<bool>>, BackendError> {
        let rules = self.rules.load_full();
        let Ok(policy) = rules.policies.select(Some(policy), "") else {
            return Ok(None);
        };
        let per_name = matches!(call_method, "tools/call" | "prompts/get" | "resources/read");
        let mut known = Memberships::default();
        let mut answers = Vec::with_capacity(names.len());
        let mut shared = None;
        for name in names {
            if let (false, Some(answer)) = (per_name, shared) {
                answers.push(answer);
                continue;
            }
            let request = policy::Request {
                http_method: "POST",
                mcp: McpCall {
                    method: Some(call_method),
                    tool: per_name.then_some(*name),
                    headers_disagree: false,
                    protocol_too_old: false,
                },
            };
            let allowed = loop {
                match policy::decide(policy, principal, request, &known) {
                    Step::Decided(decided) => break decided.is_ok(),
                    Step::NeedGroup(group) => {
                        let answer = rules
                            .is_member(principal.email().unwrap_or_default(), &group)
                            .instrument(telemetry::group_span())
                            .await?;
                        known.record(group, answer.is_member);
                    }
                }
            };
            shared = Some(allowed);
            answers.push(allowed);
        }
        Ok(Some(answers))
    }

    /// Swaps in the policies and membership lookup of a reloaded config; requests already
    /// deciding finish with the rules they loaded. The caller has validated `config` and
    /// checked that nothing outside the reloadable sections changed.
    pub fn replace_rules(&self, config: &Config, groups: Option<Arc<dyn MembershipLookup>>) {
        self.rules.store(Arc::new(Rules::new(config, groups)));
    }

    /// The fingerprint of the policies deciding now.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.rules.load().fingerprint
    }

    /// Off-boarding: forgets every verdict, identity and membership cached about `email`
    /// (case-insensitive), so the user's next request is decided afresh.
    pub async fn invalidate_user(&self, email: &str) -> Invalidated {
        // Bumped before and after clearing: any fill that overlaps the clearing sees a change
        // and removes what it stored (see `lookup` and `identity`).
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let groups = self.rules.load_full().groups.clone();
        // Memberships first: a verdict fill racing with this then finds no cached "member".
        let memberships = groups.map_or(0, |groups| groups.invalidate_user(email));
        let invalidated = Invalidated {
            verdicts: self.verdicts.invalidate_email(email).await,
            identities: self.identities.invalidate_email(email).await,
            memberships,
        };
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        invalidated
    }

    /// Figures for the verdict, identity and (when configured) membership caches.
    pub async fn cache_stats(&self) -> Vec<(&'static str, Stats)> {
        let mut stats = vec![
            ("verdicts", self.verdicts.stats().await),
            ("identities", self.identities.stats().await),
        ];
        let groups = self.rules.load_full().groups.clone();
        if let Some(groups) = groups {
            if let Some(memberships) = groups.stats().await {
                stats.push(("memberships", memberships));
            }
        }
        stats
    }

    pub fn google(&self) -> &Google {
        &self.google
    }

    pub fn verdicts(&self) -> &VerdictCache {
        &self.verdicts
    }

    pub fn identities(&self) -> &IdentityCache {
        &self.identities
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides one request. `Err` means we could not decide (Google unavailable): the caller
    /// must answer with an outage, never with a denial.
    pub async fn authorize(&self, facts: RequestFacts<'_>) -> Result<Decision, BackendError> {
        let Some(target) = self.resources.for_request(facts.host, facts.path) else {
            return Ok(Decision {
                verdict: Verdict::NotServed,
                cache: CacheUse::Bypass,
                resource: self.resources.default_resource().clone(),
            });
        };
        let resource = target.resource.clone();
        let credential = match credentials::extract(facts.authorization, facts.path) {
            Ok(credential) => credential,
            Err(error) => {
                return Ok(Decision {
                    verdict: Verdict::Unauthenticated(Unauthenticated::Credential(error)),
                    cache: CacheUse::Bypass,
                    resource,
                });
            }
        };
        let rules = self.rules.load_full();
        // Envoy's name first, then the resource's own policy, then `[[routes]]`, then default.
        let resource_policy = target
            .by_path
            .then_some(resource.policy.as_deref())
            .flatten();
        let selected = rules
            .policies
            .select(facts.policy.or(resource_policy), facts.path);
        let request = policy::Request {
            http_method: facts.http_method,
            mcp: facts.mcp,
        };
        let key = self.verdict_key(&rules, credential, &selected, request);
        let mut outcome = self
            .lookup(&rules, key, credential, &selected, request, &resource)
            .await?;
        if outcome.cache == CacheUse::Hit && outlived_its_token(&outcome.verdict) {
            // The cache's lifetime is computed once at insertion; checking `exp` again on every
            // hit makes "a cached verdict never outlives its token" hold to the second. The
            // token is then judged afresh (it may still be inside the clock-skew leeway).
            self.verdicts.invalidate(&key).await;
            outcome = self
                .lookup(&rules, key, credential, &selected, request, &resource)
                .await?;
        }
        // A token of ours is for one resource (RFC 8707): anywhere else it is a 401 whose
        // challenge sends the client to sign in for this one. Checked on every request, cache
        // hits included, since verdicts are not keyed by resource.
        let audience = outcome.verdict.principal().and_then(|p| p.audience());
        if audience.is_some_and(|audience| audience != resource.url) {
            outcome.verdict =
                Verdict::Unauthenticated(Unauthenticated::Token(TokenError::WrongAudience));
        }
        match self.session_state(&outcome.verdict) {
            SessionState::NotOurs | SessionState::Live => {}
            // Checked on every request, cache hits included: revocation is a local lookup.
            SessionState::Revoked => {
                outcome.verdict =
                    Verdict::Unauthenticated(Unauthenticated::Token(TokenError::Revoked));
            }
            // Our view of the revocations is stale: whether this session was revoked
            // elsewhere cannot be known, so no answer is given (a 503, never an allow).
            SessionState::Unknown => {
                return Err(BackendError {
                    endpoint: crate::errors::Endpoint::Revocations,
                    problem: "this replica's copy of the revocations is stale".into(),
                });
            }
        }
        Ok(outcome)
    }

    async fn lookup(
        &self,
        rules: &Rules,
        key: CacheKey,
        credential: Credential<'_>,
        selected: &Result<&Policy, UnknownPolicy>,
        request: policy::Request<'_>,
        resource: &Arc<McpResource>,
    ) -> Result<Decision, BackendError> {
        let fill = || async {
            let epoch = self.invalidations.load(Ordering::SeqCst);
            let decided = self.decide(rules, credential, selected, request).await;
            match decided {
                Ok(verdict) if self.invalidations.load(Ordering::SeqCst) != epoch => {
                    Err(Unstored::Uncacheable(verdict))
                }
                other => other,
            }
        };
        let epoch = self.invalidations.load(Ordering::SeqCst);
        match self.verdicts.get_or_verify(key, fill).await {
            Ok((verdict, hit)) => {
                if !hit && self.invalidations.load(Ordering::SeqCst) != epoch {
                    // Decided while a user was being invalidated: used once, not kept.
                    self.verdicts.invalidate(&key).await;
                }
                Ok(Decision {
                    verdict,
                    cache: if hit { CacheUse::Hit } else { CacheUse::Miss },
                    resource: resource.clone(),
                })
            }
            Err(unstored) => match &*unstored {
                Unstored::Backend(error) => Err(error.clone()),
                Unstored::Uncacheable(verdict) => Ok(Decision {
                    verdict: verdict.clone(),
                    cache: CacheUse::Bypass,
                    resource: resource.clone(),
                }),
            },
        }
    }

    /// The verdict cache key: the token and everything the policy reads.
    fn verdict_key(
        &self,
        rules: &Rules,
        credential: Credential<'_>,
        selected: &Result<&Policy, UnknownPolicy>,
        request: policy::Request<'_>,
    ) -> CacheKey {
        let (known, name) = match selected {
            Ok(policy) => (1, &*policy.name),
            Err(UnknownPolicy(name)) => (0, &**name),
        };
        // Presence flags keep `None` and `Some("")` apart.
        let flags = [
            known,
            u8::from(request.mcp.method.is_some()),
            u8::from(request.mcp.tool.is_some()),
            u8::from(request.mcp.headers_disagree),
            u8::from(request.mcp.protocol_too_old),
        ];
        cache::key(
            credential.token(),
            &[
                b"verdict",
                &rules.fingerprint,
                &self.facade_keys_fingerprint(),
                &flags,
                name.as_bytes(),
                request.http_method.as_bytes(),
                request.mcp.method.unwrap_or_default().as_bytes(),
                request.mcp.tool.unwrap_or_default().as_bytes(),
            ],
        )
    }

    /// A verdict-cache miss: establish the identity, then apply the policy.
    async fn decide(
        &self,
        rules: &Rules,
        credential: Credential<'_>,
        selected: &Result<&Policy, UnknownPolicy>,
        request: policy::Request<'_>,
    ) -> Result<Verdict, Unstored> {
        let identity = self.identity(rules, credential).await;
        let principal = match identity.map_err(Unstored::Backend)? {
            Ok(principal) => principal,
            Err(error) => return Ok(Verdict::Unauthenticated(Unauthenticated::Token(error))),
        };
        let verdict = self
            .apply(rules, principal.clone(), selected, request)
            .await?;
        // One token cannot fill the cache with made-up tool names: past its share, decide
        // without caching.
        if principal.may_cache_a_verdict() {
            Ok(verdict)
        } else {
            Err(Unstored::Uncacheable(verdict))
        }
    }

    /// Applies the selected policy to a verified principal, looking up groups as it asks.
    async fn apply(
        &self,
        rules: &Rules,
        principal: Arc<Principal>,
        selected: &Result<&Policy, UnknownPolicy>,
        request: policy::Request<'_>,
    ) -> Result<Verdict, Unstored> {
        let policy = match selected {
            Ok(policy) => policy,
            Err(UnknownPolicy(name)) => {
                let refusal = Refusal {
                    policy: name.clone(),
                    rule: Arc::from("selection"),
                    why: Forbidden::UnknownPolicy,
                    group: None,
                };
                return Ok(Verdict::Forbidden(
                    principal,
                    rules.outcomes.refusal(refusal),
                ));
            }
        };
        let mut known = Memberships::default();
        let mut stale = false;
        let verdict = loop {
            match policy::decide(policy, &principal, request, &known) {
                Step::Decided(Ok(grant)) => {
                    break Verdict::Allow(principal, rules.outcomes.grant(grant));
                }
                Step::Decided(Err(refusal)) => {
                    break Verdict::Forbidden(principal, rules.outcomes.refusal(refusal));
                }
                Step::NeedGroup(group) => {
                    let answer = rules
                        .is_member(principal.email().unwrap_or_default(), &group)
                        .instrument(telemetry::group_span())
                        .await
                        .map_err(Unstored::Backend)?;
                    stale |= answer.stale;
                    known.record(group, answer.is_member);
                }
            }
        };
        if stale {
            Err(Unstored::Uncacheable(verdict))
        } else {
            Ok(verdict)
        }
    }

    /// What the token proves, from the identity cache or from Google.
    async fn identity(
        &self,
        rules: &Rules,
        credential: Credential<'_>,
    ) -> Result<Identity, BackendError> {
        let key = cache::key(
            credential.token(),
            &[
                b"identity",
                &rules.fingerprint,
                &self.facade_keys_fingerprint(),
            ],
        );
        let epoch = self.invalidations.load(Ordering::SeqCst);
        let lookup = self
            .identities
            .get_or_verify(key, || self.verify(credential));
        let looked_up = lookup.await;
        if matches!(looked_up, Ok((_, false))) && self.invalidations.load(Ordering::SeqCst) != epoch
        {
            // Verified while a user was being invalidated: used once, not kept.
            self.identities.invalidate(&key).await;
        }
        let result = match looked_up {
            Ok((_, true)) => CacheResult::Hit,
            _ => CacheResult::Miss,
        };
        self.metrics.cache(CacheName::Identity, result);
        let (identity, hit) = looked_up.map_err(|shared| (*shared).clone())?;
        if hit && identity.as_ref().is_ok_and(|p| p.expires_at <= unix_now()) {
            // As for verdicts: never trust a cached identity past its token's `exp`.
            self.identities.invalidate(&key).await;
            let again = self
                .identities
                .get_or_verify(key, || self.verify(credential));
            return Ok(again.await.map_err(|shared| (*shared).clone())?.0);
        }
        Ok(identity)
    }

    /// Runs only on an identity-cache miss (the span is created when the future first runs,
    /// so a hit leaves no span behind).
    async fn verify(&self, credential: Credential<'_>) -> Result<Identity, BackendError> {
        let kind = match credential {
            Credential::Jwt(_) => "jwt",
            Credential::Opaque(_) => "opaque",
        };
        self.verify_uninstrumented(credential)
            .instrument(telemetry::verify_span(kind))
            .await
    }

    async fn verify_uninstrumented(
        &self,
        credential: Credential<'_>,
    ) -> Result<Identity, BackendError> {
        if let (Some(facade), Credential::Jwt(token)) = (&self.facade, credential) {
            let keys = facade.keys.get();
            if access_token::is_ours(&keys, token) {
                let verified = access_token::verify(&keys, &facade.audience, token, false);
                return Ok(verified.map(|claims| Arc::new(access_token::principal(claims))));
            }
        }
        // Access tokens verified before skip the bound on never-seen tokens: their cached
        // identity expired (allow_ttl), they are not new, and a junk spray must not shed them.
        let seen_key = cache::key(credential.token(), &[b"seen"]);
        let seen = if self.seen_tokens.contains_key(&seen_key) {
            Seen::Before
        } else {
            Seen::New
        };
        match self.google.verify_seen(credential, seen).await {
            Ok(principal) => {
                if matches!(credential, Credential::Opaque(_)) {
                    self.seen_tokens.insert(seen_key, ()).await;
                }
                Ok(Ok(Arc::new(principal)))
            }
            Err(VerifyError::Token(error)) => Ok(Err(error)),
            Err(VerifyError::Backend(error)) => Err(error),
        }
    }
}

// === impl Rules ===

impl Rules {
    fn new(config: &Config, groups: Option<Arc<dyn MembershipLookup>>) -> Rules {
        Rules {
            policies: PolicySet::from_config(config),
            outcomes: Outcomes::default(),
            groups,
            fingerprint: config.policy_fingerprint(),
        }
    }

    async fn is_member(&self, email: &str, group: &str) -> Result<GroupAnswer, BackendError> {
        match &self.groups {
            Some(groups) => groups.is_member(email, group).await,
            // The config refuses policies with groups when no lookup is configured; should one
            // slip through, not knowing is an outage, never an allow.
            None => Err(BackendError {
                endpoint: crate::errors::Endpoint::Groups,
                problem: "no group membership lookup is configured".into(),
            }),
        }
    }
}

/// Where a verdict's token stands with our revocations.
enum SessionState {
    /// Not one of our tokens (or no token at all).
    NotOurs,
    Live,
    Revoked,
    /// Our view of the revocations is stale or overflowing: cannot tell.
    Unknown,
}

impl Authorizer {
    fn session_state(&self, verdict: &Verdict) -> SessionState {
        let Some(facade) = &self.facade else {
            return SessionState::NotOurs;
        };
        let Some(session) = verdict
            .principal()
            .and_then(|principal| principal.session())
        else {
            return SessionState::NotOurs;
        };
        if facade.revocations.is_revoked(session) {
            SessionState::Revoked
        } else if !facade.revocations.synced_recently() {
            SessionState::Unknown
        } else {
            SessionState::Live
        }
    }

    /// Our signing keys' fingerprint (zeros without the facade): in every cache key, so a key
    /// removed because it leaked stops its tokens at once, cached verdicts included.
    fn facade_keys_fingerprint(&self) -> [u8; 32] {
        self.facade
            .as_ref()
            .map_or([0; 32], |facade| *facade.keys.get().fingerprint())
    }
}

fn outlived_its_token(verdict: &Verdict) -> bool {
    verdict
        .principal()
        .is_some_and(|principal| principal.expires_at <= unix_now())
}

#[cfg(test)]
mod tests;
