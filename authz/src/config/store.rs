//! `[store]`: where the OAuth facade keeps its shared state (memory, or a Redis).

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

use super::SecretRef;

/// The OAuth facade's shared state: pending sign-ins, codes, refresh tokens, revocations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` for a single replica; `redis` when several replicas must share sign-ins, codes,
    /// refresh tokens and revocations. Default `memory`.
    pub backend: StoreBackend,
    /// Memory backend: the most values and set members held at once. Unauthenticated callers
    /// can start sign-ins, so this bounds their memory; when full, new entries are refused
    /// (503) until some expire, never evicted. Default 100000.
    pub max_entries: u64,
    /// How often each replica reads revocations made on other replicas; a revoked token is
    /// refused everywhere within about this long. Default 1s.
    #[serde(with = "humantime_serde")]
    pub revocation_poll: Duration,
    /// The Redis connection (`[store.redis]`); required with `backend = "redis"`, refused
    /// otherwise (a replica that silently kept its state in memory would break single use).
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In this process; lost on restart. One replica only.
    #[default]
    Memory,
    /// A Redis (6.2 or newer) shared by every replica.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS (verified against
    /// the WebPKI roots). Redacted wherever the config is printed.
    pub url: RedisUrl,
    /// The password, when it is not in the URL (one or the other, not both). Default: none.
    /// A secret reference (inline, `{ file }` or `{ aws_secret }`), read once at start-up: a
    /// changed password needs a restart (Redis accepts two passwords during a rotation).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Prepended to every key, so several services can share one Redis. Default `authz:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Deadline of every Redis call, connecting included; past it the call is an outage
    /// (503). Keep it well below Envoy's ext_authz timeout. Default 500ms.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// A Redis URL. Its `Debug` hides the password, and a URL that does not parse is reported
/// without echoing it (it may hold the password).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

// === impl StoreConfig ===

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_entries == 0 {
            return Err(("store.max_entries", "must be greater than zero".into()));
        }
        if self.revocation_poll.is_zero() || self.revocation_poll > Duration::from_secs(60) {
            return Err((
                "store.revocation_poll",
                "must be between 1ms and 60s".into(),
            ));
        }
        match (self.backend, &self.redis) {
            (StoreBackend::Memory, None) => Ok(()),
            (StoreBackend::Memory, Some(_)) => Err((
                "store.backend",
                "is \"memory\" but [store.redis] is set: set backend = \"redis\" (or remove \
                 [store.redis]) so that replicas share their state"
                    .into(),
            )),
            (StoreBackend::Redis, None) => Err((
                "store.redis",
                "backend = \"redis\" needs a [store.redis] section with a url".into(),
            )),
            (StoreBackend::Redis, Some(redis)) => redis.validate(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            max_entries: 100_000,
            revocation_poll: Duration::from_secs(1),
            redis: None,
        }
    }
}

// === impl RedisConfig ===

impl RedisConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = &self.url.0;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none() {
            return Err((
                "store.redis.url",
                "must be redis://host[:port][/db] or rediss://host[:port][/db]".into(),
            ));
        }
        if url.fragment().is_some() {
            return Err((
                "store.redis.url",
                "must not carry a fragment (TLS is always verified)".into(),
            ));
        }
        if url.password().is_some() && self.password.is_some() {
            return Err((
                "store.redis.password",
                "the URL already carries a password: give it in one place".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("store.redis.timeout", "must be greater than zero".into()));
        }
        Ok(())
    }
}

// === impl RedisUrl ===

impl RedisUrl {
    /// The URL itself, password included, for the one place that connects.
    pub fn expose(&self) -> &Url {
        &self.0
    }
}

/// Parses without checking the scheme (that is [`super::Config::load`]'s validation). The error never
/// holds the text.
impl std::str::FromStr for RedisUrl {
    type Err = url::ParseError;
    fn from_str(text: &str) -> Result<RedisUrl, url::ParseError> {
        Url::parse(text).map(RedisUrl)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RedisUrl, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("not a URL ({e})")))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Cannot fail: a URL with a password has a host.
            let _ = shown.set_password(Some("redacted"));
        }
        write!(f, "RedisUrl({shown})")
    }
}

fn default_key_prefix() -> String {
    "authz:".to_string()
}
fn default_store_timeout() -> Duration {
    Duration::from_millis(500)
}
