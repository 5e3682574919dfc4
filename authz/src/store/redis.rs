//! The store shared by several replicas: Redis (6.2 or newer: `GETDEL`, `ZADD GT`).
//!
//! Layout under the configured prefix `P` (default `authz:`):
//! - `P<key>`: a value (string, `SET NX PX`) or a set ([`ADD_TO_SET`]), as the caller chose;
//! - `P!uses:<key>`: how often `P<key>` was claimed, expiring with it (see [`CLAIM`]);
//! - `P!revoked:at` / `P!revoked:until`: sorted sets of revoked ids scored by recording time
//!   and by expiry (see [`REVOKE`]).
//!
//! Every key carries an expiry, so nothing outlives its purpose even if no replica is left to
//! clean up. Everything that must be atomic across replicas is one command, a `MULTI`, or a Lua
//! script (Redis runs each alone). Every call is bounded by `store.redis.timeout`: an unreachable
//! or stalled Redis is a [`StoreError`] after at most that long, never a hang.

use std::{fmt, future::Future, time::Duration};

use ::redis::{
    Client, IntoConnectionInfo, RedisResult, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use anyhow::{anyhow, bail};

use super::{Claimed, Revocation, Store, StoreError, StoreFuture, check_id, check_key, ttl_ms};
use crate::config::{RedisConfig, SecretRef};

const BACKEND: &str = "redis";

/// Counts one use of a value and returns it with the count before. The counter lives beside
/// the value (not in it) so that insert, get and take stay single plain commands; it is given
/// the value's remaining TTL on every claim, so both expire at the same millisecond (Redis
/// freezes time while a script runs). Returns nil, creating nothing, when the value is absent.
const CLAIM: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return false end
local uses = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {value, uses - 1}
";

/// Adds a member and renews the set's expiry. A script rather than `MULTI`: if the key holds a
/// value, `SADD` fails and stops the script before `PEXPIRE` could change the value's TTL.
const ADD_TO_SET: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Shared by [`REVOKE`] and [`SINCE`]: the time by Redis's clock, so that every replica reads
/// recording times from one clock; and pruning of expired revocations (a bounded batch per
/// call, so a script never runs long).
const PRELUDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
";

/// ARGV: id, ttl (ms). Records the revocation at Redis's now, keeps the later of the old and
/// new expiry, and lets both sorted sets expire with their last member.
const REVOKE: &str = r"
local expires = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', expires, ARGV[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] then
  local at = string.format('%d', tonumber(last[2]))
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[2], at)
end
return now
";

/// ARGV: since (ms). Returns a flat array: id, recorded, expires, ... for the revocations
/// recorded at or after `since` and still in force, oldest first.
const SINCE: &str = r"
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #found, 2 do
  local expires = redis.call('ZSCORE', KEYS[2], found[i])
  if expires and tonumber(expires) > now then
    out[#out + 1] = found[i]
    out[#out + 1] = found[i + 1]
    out[#out + 1] = expires
  end
end
return out
";

/// The Redis store.
pub struct RedisStore {
    /// Reconnects by itself after a dropped connection; cloned per call (an `Arc` inside).
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    claim: Script,
    add_to_set: Script,
    revoke: Script,
    since: Script,
}

// === impl RedisStore ===

impl RedisStore {
    /// Prepares a store for `config` without connecting: the first call connects, and a Redis
    /// that is down is then a [`StoreError`] like any later outage. Needs a Tokio runtime.
    pub fn open(config: &RedisConfig) -> anyhow::Result<RedisStore> {
        // The connection manager spawns its reconnection task at once (and would panic outside
        // a runtime).
        tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow!("store.redis: the store must be opened inside a Tokio runtime"))?;
        let unusable =
            |e: ::redis::RedisError| anyhow!("store.redis.url: cannot use this URL: {e}");
        let mut info = config
            .url
            .expose()
            .clone()
            .into_connection_info()
            .map_err(unusable)?;
        match &config.password {
            None => {}
            Some(SecretRef::Inline(password)) => {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_password(password.expose());
                info = info.set_redis_settings(settings);
            }
            // `run` resolves file and Secrets Manager references before opening the store.
            Some(_) => bail!("store.redis.password: the secret reference was not resolved"),
        }
        let client = Client::open(info).map_err(unusable)?;
        // Reconnection inside the manager is kept short: each call has its own deadline anyway,
        // and a call that finds the connection down fails fast and tries again next time.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(config.timeout);
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| anyhow!("store.redis: cannot set up the connection: {e}"))?;
        Ok(RedisStore {
            connection,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            claim: Script::new(CLAIM),
            add_to_set: Script::new(ADD_TO_SET),
            revoke: Script::new(&format!("{PRELUDE}{REVOKE}")),
            since: Script::new(&format!("{PRELUDE}{SINCE}")),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn uses_key(&self, key: &str) -> String {
        format!("{}!uses:{key}", self.prefix)
    }

    fn revoked_keys(&self) -> (String, String) {
        (
            format!("{}!revoked:at", self.prefix),
            format!("{}!revoked:until", self.prefix),
        )
    }

    /// Runs one Redis call under the store's deadline.
    fn call<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: impl Future<Output = RedisResult<T>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(StoreError::new(BACKEND, format!("{operation}: {e}"))),
                Err(_) => Err(StoreError::new(
                    BACKEND,
                    format!("{operation}: no answer within {timeout:?}"),
                )),
            }
        })
    }

    /// A call on one caller key, refused before any IO when the key is not valid.
    fn call_key<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        key: &str,
        call: impl Future<Output = RedisResult<T>> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        match check_key(BACKEND, key) {
            Ok(()) => self.call(operation, call),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl Store for RedisStore {
    fn insert(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<'_, bool> {
        let (mut connection, full_key) = (self.connection.clone(), self.key(key));
        self.call_key("insert", key, async move {
            let set: Option<String> = ::redis::cmd("SET")
                .arg(full_key)
                .arg(value)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async(&mut connection)
                .await?;
            Ok(set.is_some())
        })
    }

    fn get(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let (mut connection, full_key) = (self.connection.clone(), self.key(key));
        self.call_key("get", key, async move {
            ::redis::cmd("GET")
                .arg(full_key)
                .query_async(&mut connection)
                .await
        })
    }

    fn take(&self, key: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        let (full_key, uses) = (self.key(key), self.uses_key(key));
        self.call_key("take", key, async move {
            let (value,): (Option<Vec<u8>>,) = ::redis::pipe()
                .atomic()
                .cmd("GETDEL")
                .arg(full_key)
                .cmd("DEL")
                .arg(uses)
                .ignore()
                .query_async(&mut connection)
                .await?;
            Ok(value)
        })
    }

    fn claim(&self, key: &str) -> StoreFuture<'_, Option<Claimed>> {
        let mut connection = self.connection.clone();
        let (full_key, uses) = (self.key(key), self.uses_key(key));
        self.call_key("claim", key, async move {
            let claimed: Option<(Vec<u8>, u64)> = self
                .claim
                .key(full_key)
                .key(uses)
                .invoke_async(&mut connection)
                .await?;
            Ok(claimed.map(|(value, earlier_uses)| Claimed {
                value,
                earlier_uses,
            }))
        })
    }

    fn remove(&self, key: &str) -> StoreFuture<'_, bool> {
        let mut connection = self.connection.clone();
        let (full_key, uses) = (self.key(key), self.uses_key(key));
        self.call_key("remove", key, async move {
            let (removed,): (u64,) = ::redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(full_key)
                .cmd("DEL")
                .arg(uses)
                .ignore()
                .query_async(&mut connection)
                .await?;
            Ok(removed > 0)
        })
    }

    fn add_to_set(&self, key: &str, member: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        let (mut connection, full_key) = (self.connection.clone(), self.key(key));
        let member = member.to_string();
        self.call_key("add_to_set", key, async move {
            let _added: u64 = self
                .add_to_set
                .key(full_key)
                .arg(member)
                .arg(ttl_ms(ttl))
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
    }

    fn set_members(&self, key: &str) -> StoreFuture<'_, Vec<String>> {
        let (mut connection, full_key) = (self.connection.clone(), self.key(key));
        self.call_key("set_members", key, async move {
            ::redis::cmd("SMEMBERS")
                .arg(full_key)
                .query_async(&mut connection)
                .await
        })
    }

    fn revoke(&self, id: &str, ttl: Duration) -> StoreFuture<'_, ()> {
        if let Err(e) = check_id(BACKEND, id) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let mut connection = self.connection.clone();
        let (at, until) = self.revoked_keys();
        let id = id.to_string();
        self.call("revoke", async move {
            let _recorded: u64 = self
                .revoke
                .key(at)
                .key(until)
                .arg(id)
                .arg(ttl_ms(ttl))
                .invoke_async(&mut connection)
                .await?;
            Ok(())
        })
    }

    fn revocations_since(&self, since_ms: u64) -> StoreFuture<'_, Vec<Revocation>> {
        let mut connection = self.connection.clone();
        let (at, until) = self.revoked_keys();
        let read = self.call("revocations_since", async move {
            let flat: Vec<String> = self
                .since
                .key(at)
                .key(until)
                .arg(since_ms)
                .invoke_async(&mut connection)
                .await?;
            Ok(flat)
        });
        Box::pin(async move { parse_revocations(&read.await?) })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        let mut connection = self.connection.clone();
        self.call("ping", async move {
            let _pong: String = ::redis::cmd("PING").query_async(&mut connection).await?;
            Ok(())
        })
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// From `INFO memory` (managed Redis services that refuse `CONFIG GET` still answer it).
    fn eviction_policy(&self) -> StoreFuture<'_, Option<String>> {
        let mut connection = self.connection.clone();
        self.call("info", async move {
            let info: String = ::redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut connection)
                .await?;
            Ok(info
                .lines()
                .find_map(|line| line.strip_prefix("maxmemory_policy:"))
                .map(|policy| policy.trim().to_string()))
        })
    }
}

/// The connection holds the password; show only where the keys go.
impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Reads [`SINCE`]'s flat `id, recorded, expires` triples. Scores come back as decimal strings.
fn parse_revocations(flat: &[String]) -> Result<Vec<Revocation>, StoreError> {
    let nonsense = || StoreError::new(BACKEND, "revocations_since: malformed answer");
    let ms = |score: &str| -> Result<u64, StoreError> {
        let value: f64 = score.parse().map_err(|_| nonsense())?;
        if !value.is_finite() || value < 0.0 {
            return Err(nonsense());
        }
        // Scores are whole milliseconds well below 2^53, so the conversion is exact.
        Ok(value as u64)
    };
    if flat.len() % 3 != 0 {
        return Err(nonsense());
    }
    flat.chunks_exact(3)
        .map(|triple| {
            Ok(Revocation {
                id: triple[0].clone(),
                recorded_ms: ms(&triple[1])?,
                expires_ms: ms(&triple[2])?,
            })
        })
        .collect()
}
