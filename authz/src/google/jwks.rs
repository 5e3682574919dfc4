//! Google's signing keys: fetched from the discovered `jwks_uri`, refreshed in the background as
//! `Cache-Control: max-age` says, and refetched when a token names a key we do not know.
//!
//! The unknown-`kid` refetch is the one place an unauthenticated caller can make us call Google
//! with a JWT, so it is guarded twice: concurrent refetches share one fetch (they queue on
//! `fetch_gate`), and fetches start at most once per `refetch_interval`.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{DecodingKey, jwk::Jwk};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{BackendError, Backoff, Endpoint};
use crate::metrics::{GoogleEndpoint, JwksTrigger, Metrics};

/// Never refresh more often than this, whatever `max-age` says (and never more often than the
/// unknown-`kid` refetch interval either).
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Never keep a key set longer than this without asking again.
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct Jwks {
    http: reqwest::Client,
    url: Url,
    refetch_interval: Duration,
    default_refresh: Duration,
    metrics: Arc<Metrics>,
    /// A std lock: held only to clone an `Arc`, never across an await.
    current: RwLock<Arc<KeySet>>,
    /// Serializes fetches and remembers the last attempt (when, and whether it worked).
    fetch_gate: tokio::sync::Mutex<Option<Attempt>>,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    at: Instant,
    ok: bool,
}

#[derive(Default)]
struct KeySet {
    /// Bumped on every successful fetch, so a waiter can tell someone else already refetched.
    generation: u64,
    keys: HashMap<String, Arc<DecodingKey>>,
    refresh_after: Duration,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("generation", &self.generation)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Jwks {
    pub fn new(
        http: reqwest::Client,
        url: Url,
        refetch_interval: Duration,
        default_refresh: Duration,
        metrics: Arc<Metrics>,
    ) -> Jwks {
        Jwks {
            http,
            url,
            refetch_interval,
            default_refresh,
            metrics,
            current: RwLock::new(Arc::new(KeySet::default())),
            fetch_gate: tokio::sync::Mutex::new(None),
        }
    }

    pub fn has_keys(&self) -> bool {
        !self.snapshot().keys.is_empty()
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The key for `kid`. `Ok(None)` means the key is unknown even after a permitted refetch;
    /// `Err` means we could not learn the keys at all (an outage, not a bad token).
    pub async fn key(&self, kid: &str) -> Result<Option<Arc<DecodingKey>>, BackendError> {
        let seen = self.snapshot();
        if let Some(key) = seen.keys.get(kid) {
            return Ok(Some(key.clone()));
        }
        let mut last = self.fetch_gate.lock().await;
        let now = self.snapshot();
        if now.generation != seen.generation {
            // Someone refetched while we queued; their answer is ours.
            return Ok(now.keys.get(kid).cloned());
        }
        match *last {
            Some(attempt) if attempt.at.elapsed() < self.refetch_interval => {
                if attempt.ok && now.generation > 0 {
                    Ok(None)
                } else {
                    Err(self.error("JWKS unavailable (last fetch failed)".into()))
                }
            }
            _ => {
                self.fetch(&mut last, JwksTrigger::UnknownKid).await?;
                Ok(self.snapshot().keys.get(kid).cloned())
            }
        }
    }

    /// Keeps the key set fresh until cancelled: first load, then refresh on `max-age`.
    pub async fn keep_fresh(&self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let result = {
                let mut last = self.fetch_gate.lock().await;
                self.fetch(&mut last, JwksTrigger::Scheduled).await
            };
            let pause = match result {
                Ok(refresh_after) => {
                    backoff.reset();
                    tokio::time::sleep(refresh_after)
                }
                Err(error) => {
                    // The last good keys stay in use: Google overlaps its keys by days.
                    tracing::warn!(%error, "JWKS refresh failed; keeping the previous keys");
                    if shutdown.run_until_cancelled(backoff.wait()).await.is_none() {
                        return;
                    }
                    continue;
                }
            };
            if shutdown.run_until_cancelled(pause).await.is_none() {
                return;
            }
        }
    }

    /// Fetches and installs the key set. The caller holds `fetch_gate`.
    async fn fetch(
        &self,
        last: &mut Option<Attempt>,
        trigger: JwksTrigger,
    ) -> Result<Duration, BackendError> {
        let result = self.download().await;
        self.metrics.jwks_refresh(trigger, result.is_ok());
        *last = Some(Attempt {
            at: Instant::now(),
            ok: result.is_ok(),
        });
        let (keys, max_age) = result?;
        let refresh_after = max_age
            .unwrap_or(self.default_refresh)
            .clamp(self.refetch_interval.max(MIN_REFRESH), MAX_REFRESH);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let generation = current.generation + 1;
        tracing::info!(keys = keys.len(), generation, refresh_in = ?refresh_after, "JWKS loaded");
        *current = Arc::new(KeySet {
            generation,
            keys,
            refresh_after,
        });
        Ok(current.refresh_after)
    }

    async fn download(
        &self,
    ) -> Result<(HashMap<String, Arc<DecodingKey>>, Option<Duration>), BackendError> {
        let send = self.http.get(self.url.clone()).send();
        let response = (self.metrics)
            .google_http(GoogleEndpoint::Jwks, send)
            .await
            .map_err(|e| self.error(format!("request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(self.error(format!("HTTP {}", response.status())));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| self.error(format!("body is not JSON: {e}")))?;
        let keys = usable_keys(&body);
        if keys.is_empty() {
            return Err(self.error("no usable RS256 signing keys".into()));
        }
        Ok((keys, max_age))
    }

    fn error(&self, problem: String) -> BackendError {
        BackendError {
            endpoint: Endpoint::Jwks,
            problem,
        }
    }
}

/// RSA signature keys with a `kid`, meant for RS256. Keys we cannot use are skipped one by one
/// rather than failing the whole set, so a new key type published by Google cannot lock us out.
fn usable_keys(body: &serde_json::Value) -> HashMap<String, Arc<DecodingKey>> {
    let Some(keys) = body.get("keys").and_then(|k| k.as_array()) else {
        return HashMap::new();
    };
    keys.iter()
        .filter(|k| k.get("kty").and_then(|v| v.as_str()) == Some("RSA"))
        .filter(|k| matches!(k.get("alg").and_then(|v| v.as_str()), None | Some("RS256")))
        .filter(|k| matches!(k.get("use").and_then(|v| v.as_str()), None | Some("sig")))
        .filter_map(|k| {
            let kid = k.get("kid")?.as_str()?.to_string();
            let jwk: Jwk = serde_json::from_value(k.clone()).ok()?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some((kid, Arc::new(key)))
        })
        .collect()
}

/// `max-age=N` from a Cache-Control value; `no-cache`/`no-store` mean "refresh soon".
fn parse_max_age(value: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            max_age = seconds
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs);
        }
    }
    max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        let cases = [
            (
                "public, max-age=22014, must-revalidate, no-transform",
                Some(22014),
            ),
            ("max-age=0", Some(0)),
            ("MAX-AGE=\"60\"", Some(60)),
            ("no-store", Some(0)),
            ("public", None),
            ("max-age=soon", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                parse_max_age(header),
                expected.map(Duration::from_secs),
                "{header}"
            );
        }
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let body = serde_json::json!({"keys": [
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "good", "alg": "RS256", "use": "sig", "n": "AQAB", "e": "AQAB"},
        ]});
        let keys = usable_keys(&body);
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["good"]);
        assert!(usable_keys(&serde_json::json!({"nokeys": []})).is_empty());
    }
}
