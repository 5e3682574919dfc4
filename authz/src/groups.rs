//! Google group membership for policy decisions, answered from a cache so that Google is not on
//! the hot path.
//!
//! [`Groups::is_member`] answers "is this user in that group" through the membership cache
//! (`cache`), which asks one of two Google APIs on a miss: the Admin SDK Directory API
//! (`directory`; needs domain-wide delegation) or the Cloud Identity Groups API
//! (`cloud_identity`; a service account with the Group Administrator role is enough). Both call
//! with an access token from [`crate::service_auth`].
//!
//! `Ok` is always a decision; `Err` always means "cannot decide" and the caller answers 503.
//! Unknown groups are "not a member" (fail closed) with a WARN, since they are a config mistake
//! and not an outage.

mod cache;
mod cloud_identity;
mod directory;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::{
    cache::Stats,
    config::{Api, GroupsConfig},
    errors::{BackendError, Endpoint},
    metrics::{CacheName, CacheResult, Metrics},
    secrets::Secrets,
    service_auth::{AuthError, AwsEnv, Endpoints, ServiceAuth},
};

use cache::{Lookup, MembershipCache, Settings};

/// Answers "is this user in this group?" for the policy. Implemented by [`Groups`]; a trait so
/// the decision logic can be tested without Google.
pub trait MembershipLookup: Send + Sync + std::fmt::Debug {
    fn is_member<'a>(
        &'a self,
        email: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<GroupAnswer, BackendError>> + Send + 'a>>;

    /// Off-boarding: forgets cached answers about `email`; returns how many. A lookup without
    /// a cache has nothing to forget.
    fn invalidate_user(&self, _email: &str) -> u64 {
        0
    }

    /// The lookup's cache figures, when it has a cache.
    fn stats(&self) -> Pin<Box<dyn Future<Output = Option<Stats>> + Send + '_>> {
        Box::pin(async { None })
    }
}

/// One membership answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupAnswer {
    pub is_member: bool,
    /// Served past its TTL because Google could not be asked (within the stale bound). A
    /// verdict resting on it is used once and not cached, so it cannot outlive the bound.
    pub stale: bool,
}

/// Group membership answers. Cheap to clone; clones share one cache and one token.
#[derive(Debug, Clone)]
pub struct Groups {
    cache: Arc<MembershipCache<Backend>>,
    auth: Arc<ServiceAuth>,
    metrics: Arc<Metrics>,
    /// Answers from the cache (fresh or stale) and from Google, for the admin API.
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

/// A decision about one (user, group) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub is_member: bool,
    pub freshness: Freshness,
}

/// Where an answer came from, for audit logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Fetched from Google for this request (or for a concurrent one it waited on).
    Fresh,
    /// From the cache, within its TTL.
    Cached,
    /// From the cache past its TTL (within `stale_bound`), because Google could not be asked.
    Stale,
}

/// Why membership could not be decided. Every variant means "cannot decide": answer 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupsError {
    #[error("no Google API access token: {0}")]
    Credentials(AuthError),
    #[error(
        "{api} refused our credentials (HTTP {status}): check the service account's role or delegation"
    )]
    Forbidden { api: Api, status: u16 },
    #[error("{api} quota exceeded")]
    Quota { api: Api },
    #[error("backing off after a Google quota error")]
    BackingOff,
    #[error("{api} unavailable: {problem}")]
    Unavailable { api: Api, problem: String },
    #[error("the email cannot be put in a membership query")]
    UnsupportedEmail,
}

/// The configured Google API.
#[derive(Debug)]
enum Backend {
    Directory(directory::Directory),
    CloudIdentity(cloud_identity::CloudIdentity),
}

/// The membership cache's settings, from `[groups]`.
fn cache_settings(config: &GroupsConfig) -> Settings {
    Settings {
        positive_ttl: config.positive_ttl,
        negative_ttl: config.negative_ttl,
        refresh_ahead: config.refresh_ahead,
        stale_bound: config.stale_bound,
        max_entries: config.max_entries,
        backoff_initial: config.backoff_initial,
        backoff_max: config.backoff_max,
    }
}

// === impl Groups ===

impl Groups {
    /// Start-up: validates, reads the credential JSON through `secrets` (which keeps it
    /// fresh), reads the AWS environment variables, builds the clients. No Google calls.
    pub async fn new(
        config: &GroupsConfig,
        secrets: &Secrets,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Groups> {
        Groups::build(config, secrets, AwsEnv::from_process(), metrics).await
    }

    /// [`Groups::new`] with the AWS variables given rather than read from the process, and
    /// metrics of its own.
    pub async fn with_aws_env(
        config: &GroupsConfig,
        secrets: &Secrets,
        aws_env: AwsEnv,
    ) -> anyhow::Result<Groups> {
        Groups::build(config, secrets, aws_env, Arc::default()).await
    }

    async fn build(
        config: &GroupsConfig,
        secrets: &Secrets,
        aws_env: AwsEnv,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Groups> {
        config.validate().map_err(anyhow::Error::msg)?;
        let http = crate::google::http::client(config.request_timeout)?;
        let scope = match config.api {
            Api::Directory if config.read_accounts => directory::SCOPES_WITH_USERS,
            Api::Directory => directory::SCOPE,
            Api::CloudIdentity => cloud_identity::SCOPE,
        };
        let endpoints = Endpoints {
            token_url: config.token_url.clone(),
            iam_credentials_url: config.iam_credentials_url.clone(),
        };
        let (key, reference) = config.credentials.source().map_err(anyhow::Error::msg)?;
        let credential = secrets.resolve(key, &reference).await?;
        let auth = Arc::new(ServiceAuth::new(
            &config.credentials,
            credential,
            endpoints,
            scope,
            aws_env,
            http.clone(),
            metrics.clone(),
        )?);
        let backend = match config.api {
            Api::Directory => Backend::Directory(directory::Directory::new(
                http,
                config.directory_url.clone(),
                auth.clone(),
                metrics.clone(),
            )),
            Api::CloudIdentity => Backend::CloudIdentity(cloud_identity::CloudIdentity::new(
                http,
                config.cloud_identity_url.clone(),
                auth.clone(),
                metrics.clone(),
            )),
        };
        Ok(Groups {
            cache: Arc::new(MembershipCache::new(backend, cache_settings(config))),
            auth,
            metrics,
            hits: Arc::default(),
            misses: Arc::default(),
        })
    }

    /// Is `email` a member of `group` (a group email), directly or through nested groups?
    /// Case-insensitive in both. `Err` means no decision could be made (answer 503).
    pub async fn is_member(&self, email: &str, group: &str) -> Result<Membership, GroupsError> {
        let answer = self.cache.is_member(email, group).await;
        let result = match &answer {
            Ok(Membership {
                freshness: Freshness::Cached,
                ..
            }) => CacheResult::Hit,
            Ok(Membership {
                freshness: Freshness::Stale,
                ..
            }) => CacheResult::Stale,
            Ok(_) | Err(_) => CacheResult::Miss,
        };
        self.metrics.cache(CacheName::Membership, result);
        let count = match &answer {
            Ok(Membership {
                freshness: Freshness::Fresh,
                ..
            })
            | Err(_) => &self.misses,
            Ok(_) => &self.hits,
        };
        count.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// Cached membership answers (approximate), for metrics.
    pub fn cached_entries(&self) -> u64 {
        self.cache.cached_entries()
    }

    /// Cached answers, hits and misses since start-up.
    pub async fn stats(&self) -> Stats {
        Stats {
            entries: self.cache.entry_count().await,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// For `/readyz`: can we get a Google API access token right now? A cached one counts.
    pub async fn ready(&self) -> bool {
        self.auth.token().await.is_ok()
    }

    /// Off-boarding: forgets every cached answer about `email`, including one being fetched,
    /// and returns how many there were.
    pub fn invalidate_user(&self, email: &str) -> u64 {
        self.cache.invalidate_user(email)
    }
}

impl Lookup for Backend {
    async fn lookup(&self, email: &str, group: &str) -> Result<bool, GroupsError> {
        // An organizational-unit requirement travels as a pseudo-group, so it is cached,
        // refreshed, served stale and backed off exactly like a membership.
        if let Some(unit) = group.strip_prefix(crate::policy::ORG_UNIT_PREFIX) {
            return match self {
                Backend::Directory(directory) => directory.active_in_org_unit(email, unit).await,
                Backend::CloudIdentity(_) => Err(GroupsError::Unavailable {
                    api: Api::CloudIdentity,
                    problem: "organizational units need the Directory API".into(),
                }),
            };
        }
        match self {
            Backend::Directory(directory) => directory.is_member(email, group).await,
            Backend::CloudIdentity(cloud_identity) => cloud_identity.is_member(email, group).await,
        }
    }
}

// === impl Freshness, Api, GroupsError ===

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Cached => "cached",
            Freshness::Stale => "stale",
        }
    }
}

impl GroupsError {
    /// A short stable name for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GroupsError::Credentials(_) => "groups_credentials",
            GroupsError::Forbidden { .. } => "groups_forbidden",
            GroupsError::Quota { .. } => "groups_quota",
            GroupsError::BackingOff => "groups_backing_off",
            GroupsError::Unavailable { .. } => "groups_unavailable",
            GroupsError::UnsupportedEmail => "groups_unsupported_email",
        }
    }

    /// Google said "slow down": back off before asking again.
    pub fn is_quota(&self) -> bool {
        matches!(self, GroupsError::Quota { .. })
    }
}

/// Maps a Google API error response to a [`GroupsError`]: 429, or 403 whose reason is a rate
/// or quota limit, is a quota error; other 401/403 are a credential problem; the rest is an
/// outage. The body is read for reasons only and never logged (it may echo the request).
pub(crate) async fn classify(api: Api, response: reqwest::Response) -> GroupsError {
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return GroupsError::Quota { api };
    }
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let body = response.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::FORBIDDEN && is_quota_body(&body) {
            return GroupsError::Quota { api };
        }
        return GroupsError::Forbidden {
            api,
            status: status.as_u16(),
        };
    }
    GroupsError::Unavailable {
        api,
        problem: format!("HTTP {status}"),
    }
}

pub(crate) use crate::metrics::is_quota_body;

/// The request failed before an answer: an outage.
pub(crate) fn unreachable(api: Api, error: &reqwest::Error) -> GroupsError {
    GroupsError::Unavailable {
        api,
        problem: if error.is_timeout() {
            "timed out".into()
        } else {
            format!(
                "request failed: {}",
                crate::service_auth::error_chain(error)
            )
        },
    }
}

/// A 200 whose body we cannot read is an outage, not an answer.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    api: Api,
    response: reqwest::Response,
) -> Result<T, GroupsError> {
    response.json().await.map_err(|e| GroupsError::Unavailable {
        api,
        problem: format!(
            "unreadable response: {}",
            crate::service_auth::error_chain(&e)
        ),
    })
}

#[cfg(test)]
mod tests;

/// The policy's view of group membership: every error is "cannot decide" (a 503).
impl MembershipLookup for Groups {
    fn is_member<'a>(
        &'a self,
        email: &'a str,
        group: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<GroupAnswer, BackendError>> + Send + 'a>> {
        Box::pin(async move {
            match Groups::is_member(self, email, group).await {
                Ok(membership) => Ok(GroupAnswer {
                    is_member: membership.is_member,
                    stale: membership.freshness == Freshness::Stale,
                }),
                Err(error) => Err(BackendError {
                    endpoint: Endpoint::Groups,
                    problem: error.to_string(),
                }),
            }
        })
    }
    fn invalidate_user(&self, email: &str) -> u64 {
        Groups::invalidate_user(self, email)
    }

    fn stats(&self) -> Pin<Box<dyn Future<Output = Option<Stats>> + Send + '_>> {
        Box::pin(async move { Some(Groups::stats(self).await) })
    }
}
