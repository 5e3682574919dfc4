//! Prometheus metrics, served as OpenMetrics text on the HTTP listener (`GET /metrics`).
//!
//! One [`Metrics`] per process, shared as `Arc<Metrics>`; each component that records holds a
//! clone of the `Arc`, and tests build their own. Every label value is a `&'static str` from a
//! fixed set (decision, reason, cache, endpoint, outcome), or a config key naming a configured
//! secret: never an email, a group, a token or a policy name, so the number of series is bounded
//! whatever requests arrive. Recording is a few
//! atomic operations behind a read lock; a label set is copied only the first time it is seen.

use std::{future::Future, sync::Arc, time::Duration, time::Instant};

use axum::{
    Router,
    http::{StatusCode, header::CONTENT_TYPE},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::{Registry, Unit},
};

use crate::errors::BackendError;

/// The content type of `GET /metrics`.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Check latency, from 50 µs (a verdict-cache hit) to 2 s (Envoy's ext_authz timeout).
const CHECK_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.0,
];
/// Google round trips: a few milliseconds on a warm connection, up to the request timeout.
const GOOGLE_BUCKETS: [f64; 12] = [
    0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and every metric family in it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    check_duration: Histogram,
    cache_requests: Family<CacheLabels, Counter>,
    cache_entries: Family<CacheNameLabel, Gauge>,
    google_requests: Family<GoogleLabels, Counter>,
    google_duration: HistogramFamily<EndpointLabel>,
    jwks_refreshes: Family<JwksLabels, Counter>,
    outages: Family<EndpointLabel, Counter>,
    client_metadata_fetches: Family<ResultLabel, Counter>,
    store_errors: Family<StoreLabels, Counter>,
    secret_refreshes: Family<SecretLabels, Counter>,
    revocations_in_sync: Gauge,
    verifications_shed: Family<ReasonLabel, Counter>,
    list_filtering: Family<ListLabels, Counter>,
    list_entries_hidden: Family<MethodLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// How the ext_proc filter handled one list response, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOutcome {
    /// Read, and entries the user may not use were removed.
    Filtered,
    /// Read; the user may use every entry, so the body passed byte for byte.
    Unchanged,
    /// The policy has no rules about the listed entries: passed without reading the body.
    NoRules,
    /// Not a 200: passed without reading the body.
    NotOk,
    /// Not a list method (the matcher in Envoy's config should not send these).
    NotAList,
    /// No Check decided about the request (a route with ext_authz off): passed.
    NoDecision,
    /// Refused (502): the body could not be read as a list result.
    RefusedUnparseable,
    /// Refused (502): neither JSON nor SSE, or compressed.
    RefusedContentType,
    /// Refused (502): the policy that admitted the request is gone (a reload).
    RefusedUnknownPolicy,
    /// Refused (503): group memberships could not be looked up.
    Unavailable,
}

impl ListOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ListOutcome::Filtered => "filtered",
            ListOutcome::Unchanged => "unchanged",
            ListOutcome::NoRules => "no_rules",
            ListOutcome::NotOk => "not_ok",
            ListOutcome::NotAList => "not_a_list",
            ListOutcome::NoDecision => "no_decision",
            ListOutcome::RefusedUnparseable => "refused_unparseable",
            ListOutcome::RefusedContentType => "refused_content_type",
            ListOutcome::RefusedUnknownPolicy => "refused_unknown_policy",
            ListOutcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheNameLabel {
    cache: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GoogleLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    backend: &'static str,
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    /// The config key (`groups.credentials.json`): the config bounds the set.
    secret: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabels {
    trigger: &'static str,
    outcome: &'static str,
}

/// The caches whose use is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheName {
    Verdict,
    Identity,
    Membership,
}

/// How a cache answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    /// Not answered from the cache (computed, fetched, or failed).
    Miss,
    /// Answered from an expired entry because Google could not be asked (memberships only).
    Stale,
    /// Not looked up: no token worth caching, or an answer that must not be cached.
    Bypass,
}

/// The Google APIs we call, as the `endpoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleEndpoint {
    Discovery,
    Jwks,
    Tokeninfo,
    Userinfo,
    Directory,
    CloudIdentity,
    /// Our own Google API access token: the whole credential flow (a `jwt-bearer` exchange, or
    /// STS plus IAM Credentials), timed as one.
    ServiceToken,
}

/// How one call to Google ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// A 4xx other than 429: Google answered no (an invalid token, an unknown group, refused
    /// credentials). Often a normal answer, not a fault.
    Rejected,
    /// 429: over quota.
    Quota,
    /// 5xx, or any other status.
    ServerError,
    /// No answer within the request timeout.
    Timeout,
    /// No usable answer: connection failure, unreadable body.
    Error,
}

/// What started a JWKS fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksTrigger {
    /// The first load and the refreshes `Cache-Control: max-age` schedules.
    Scheduled,
    /// A token named a key we did not know (rate-limited).
    UnknownKid,
}

/// How one re-read of a secret ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOutcome {
    /// Read (changed or not).
    Ok,
    /// Not read (file gone, secret missing, access denied, timeout): the last good value stays.
    Error,
    /// Read, but its consumer could not use it (a key that does not parse): the previous value
    /// stays in use.
    Unusable,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("authz");
        let decisions = Family::default();
        registry.register(
            "decisions",
            "Authorization decisions by result, reason and verdict-cache use",
            decisions.clone(),
        );
        let check_duration = Histogram::new(CHECK_BUCKETS);
        registry.register_with_unit(
            "check_duration",
            "Time to answer one Check, from receipt to verdict",
            Unit::Seconds,
            check_duration.clone(),
        );
        let cache_requests = Family::default();
        registry.register(
            "cache_requests",
            "Cache lookups by cache and result",
            cache_requests.clone(),
        );
        let cache_entries = Family::default();
        registry.register(
            "cache_entries",
            "Entries in each cache (approximate), read at scrape time",
            cache_entries.clone(),
        );
        let google_requests = Family::default();
        registry.register(
            "google_requests",
            "Calls to Google APIs by endpoint and outcome",
            google_requests.clone(),
        );
        let google_duration: HistogramFamily<EndpointLabel> =
            Family::new_with_constructor(|| Histogram::new(GOOGLE_BUCKETS));
        registry.register_with_unit(
            "google_request_duration",
            "Duration of calls to Google APIs, until the response headers arrive",
            Unit::Seconds,
            google_duration.clone(),
        );
        let jwks_refreshes = Family::default();
        registry.register(
            "jwks_refreshes",
            "Fetches of Google's signing keys by trigger and outcome",
            jwks_refreshes.clone(),
        );
        let outages = Family::default();
        registry.register(
            "outages",
            "Checks answered 503 because a backend could not be asked, by failing endpoint",
            outages.clone(),
        );
        let client_metadata_fetches = Family::default();
        registry.register(
            "client_metadata_fetches",
            "Fetches of OAuth client metadata documents (cache misses) by result",
            client_metadata_fetches.clone(),
        );
        let store_errors = Family::default();
        registry.register(
            "store_errors",
            "Shared-state store calls that failed (unreachable, timed out, full), by operation",
            store_errors.clone(),
        );
        let secret_refreshes = Family::default();
        registry.register(
            "secret_refreshes",
            "Re-reads of secrets from files and Secrets Manager by config key and outcome",
            secret_refreshes.clone(),
        );
        let verifications_shed = Family::default();
        registry.register(
            "verifications_shed",
            "Never-seen access tokens not verified (answered 503) because too many were being \
             verified at once (concurrency) or per second (rate)",
            verifications_shed.clone(),
        );
        let list_filtering = Family::default();
        registry.register(
            "list_filtering",
            "MCP list responses seen by the ext_proc filter, by list method and outcome",
            list_filtering.clone(),
        );
        let list_entries_hidden = Family::default();
        registry.register(
            "list_entries_hidden",
            "Entries removed from MCP list results because the user's policy refuses them",
            list_entries_hidden.clone(),
        );
        let revocations_in_sync = Gauge::default();
        registry.register(
            "revocations_in_sync",
            "1 while this replica's copy of the revocations is current; 0 while it is stale or \
             overflowing, when tokens of our own are refused with a 503",
            revocations_in_sync.clone(),
        );
        registry.register(
            "build",
            "The running version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            decisions,
            check_duration,
            cache_requests,
            cache_entries,
            google_requests,
            google_duration,
            jwks_refreshes,
            outages,
            client_metadata_fetches,
            store_errors,
            secret_refreshes,
            revocations_in_sync,
            verifications_shed,
            list_filtering,
            list_entries_hidden,
        }
    }

    /// One response seen by the ext_proc filter: `method` is the list method (`tools/list`,
    /// ...), or `other`.
    pub fn list_filtering(&self, method: &'static str, outcome: ListOutcome) {
        self.list_filtering
            .get_or_create(&ListLabels {
                method,
                outcome: outcome.as_str(),
            })
            .inc();
    }

    pub fn list_entries_hidden(&self, method: &'static str, hidden: usize) {
        if hidden > 0 {
            self.list_entries_hidden
                .get_or_create(&MethodLabel { method })
                .inc_by(hidden as u64);
        }
    }

    /// One decided Check (`decision` and `reason` as the verdict names them): the decision
    /// counter, the verdict cache and the latency histogram.
    pub fn decision(
        &self,
        decision: &'static str,
        reason: &'static str,
        cache: CacheResult,
        latency: Duration,
    ) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision,
                reason,
                cache: cache.as_str(),
            })
            .inc();
        self.cache(CacheName::Verdict, cache);
        self.check_duration.observe(latency.as_secs_f64());
    }

    /// One Check that could not be decided (answered 503).
    pub fn outage(&self, error: &BackendError, latency: Duration) {
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: "unavailable",
                reason: "backend_unavailable",
                cache: CacheResult::Miss.as_str(),
            })
            .inc();
        self.outages
            .get_or_create(&EndpointLabel {
                endpoint: error.endpoint.as_str(),
            })
            .inc();
        self.cache(CacheName::Verdict, CacheResult::Miss);
        self.check_duration.observe(latency.as_secs_f64());
    }

    pub fn cache(&self, cache: CacheName, result: CacheResult) {
        self.cache_requests
            .get_or_create(&CacheLabels {
                cache: cache.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    pub fn google(&self, endpoint: GoogleEndpoint, outcome: Outcome, latency: Duration) {
        let endpoint = endpoint.as_str();
        self.google_requests
            .get_or_create(&GoogleLabels {
                endpoint,
                outcome: outcome.as_str(),
            })
            .inc();
        self.google_duration
            .get_or_create(&EndpointLabel { endpoint })
            .observe(latency.as_secs_f64());
    }

    /// Sends one HTTP request to Google and records its outcome and duration.
    pub async fn google_http(
        &self,
        endpoint: GoogleEndpoint,
        send: impl Future<Output = Result<reqwest::Response, reqwest::Error>>,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let started = Instant::now();
        let result = match send.await {
            // Google's APIs answer some quota errors with 403 (`rateLimitExceeded`): only the
            // body tells them from a refusal, so it is read here and handed on unchanged.
            Ok(response) if response.status() == reqwest::StatusCode::FORBIDDEN => {
                let status = response.status();
                let headers = response.headers().clone();
                // Google's error bodies are small; read at most 64 KiB of one.
                let mut response = response;
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    body.extend_from_slice(&chunk[..chunk.len().min(64 * 1024 - body.len())]);
                    if body.len() >= 64 * 1024 {
                        break;
                    }
                }
                let body = axum::body::Bytes::from(body);
                let quota = is_quota_body(&String::from_utf8_lossy(&body));
                let mut rebuilt = axum::http::Response::new(body);
                *rebuilt.status_mut() = status;
                *rebuilt.headers_mut() = headers;
                let outcome = if quota {
                    Outcome::Quota
                } else {
                    Outcome::Rejected
                };
                self.google(endpoint, outcome, started.elapsed());
                return Ok(reqwest::Response::from(rebuilt));
            }
            result => result,
        };
        let outcome = match &result {
            Ok(response) => Outcome::of_status(response.status()),
            Err(error) if error.is_timeout() => Outcome::Timeout,
            Err(_) => Outcome::Error,
        };
        self.google(endpoint, outcome, started.elapsed());
        result
    }

    pub fn jwks_refresh(&self, trigger: JwksTrigger, ok: bool) {
        self.jwks_refreshes
            .get_or_create(&JwksLabels {
                trigger: trigger.as_str(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// One fetch of a client metadata document: `ok`, or the error's reason (a fixed string).
    pub fn client_metadata_fetch(&self, result: &'static str) {
        self.client_metadata_fetches
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// One failed call to the shared-state store (`backend`: `memory` or `redis`; `operation`:
    /// the [`crate::store::Store`] method).
    pub fn store_error(&self, backend: &'static str, operation: &'static str) {
        self.store_errors
            .get_or_create(&StoreLabels { backend, operation })
            .inc();
    }

    pub fn secret_refresh(&self, secret: &str, outcome: SecretOutcome) {
        self.secret_refreshes
            .get_or_create(&SecretLabels {
                secret: secret.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A never-seen access token not verified: `concurrency` or `rate`.
    pub fn verification_shed(&self, reason: &'static str) {
        self.verifications_shed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn set_revocations_in_sync(&self, in_sync: bool) {
        self.revocations_in_sync.set(i64::from(in_sync));
    }

    pub fn set_cache_entries(&self, cache: CacheName, entries: u64) {
        self.cache_entries
            .get_or_create(&CacheNameLabel {
                cache: cache.as_str(),
            })
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

// === impl CacheName, CacheResult, GoogleEndpoint, Outcome, JwksTrigger, SecretOutcome ===

impl CacheName {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheName::Verdict => "verdict",
            CacheName::Identity => "identity",
            CacheName::Membership => "membership",
        }
    }
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
            CacheResult::Bypass => "bypass",
        }
    }
}

impl GoogleEndpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            GoogleEndpoint::Discovery => "discovery",
            GoogleEndpoint::Jwks => "jwks",
            GoogleEndpoint::Tokeninfo => "tokeninfo",
            GoogleEndpoint::Userinfo => "userinfo",
            GoogleEndpoint::Directory => "directory",
            GoogleEndpoint::CloudIdentity => "cloudidentity",
            GoogleEndpoint::ServiceToken => "service_token",
        }
    }
}

impl Outcome {
    pub fn of_status(status: reqwest::StatusCode) -> Outcome {
        match status.as_u16() {
            200..=299 => Outcome::Ok,
            429 => Outcome::Quota,
            400..=499 => Outcome::Rejected,
            _ => Outcome::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Quota => "quota",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

impl JwksTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            JwksTrigger::Scheduled => "scheduled",
            JwksTrigger::UnknownKid => "unknown_kid",
        }
    }
}

impl SecretOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SecretOutcome::Ok => "ok",
            SecretOutcome::Error => "error",
            SecretOutcome::Unusable => "unusable",
        }
    }
}

/// Google's error body: `{"error":{"errors":[{"reason":"userRateLimitExceeded"}],
/// "details":[{"reason":"RATE_LIMIT_EXCEEDED"}],"status":"RESOURCE_EXHAUSTED"}}`.
pub fn is_quota_body(body: &str) -> bool {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let error = &value["error"];
    let reasons = ["errors", "details"]
        .iter()
        .filter_map(|list| error[list].as_array())
        .flatten()
        .filter_map(|item| item["reason"].as_str())
        .chain(error["status"].as_str());
    reasons.into_iter().any(|reason| {
        let reason = reason.to_ascii_lowercase().replace('_', "");
        matches!(
            reason.as_str(),
            "ratelimitexceeded"
                | "userratelimitexceeded"
                | "quotaexceeded"
                | "dailylimitexceeded"
                | "resourceexhausted"
        )
    })
}

/// `GET /metrics`. Cache sizes are read at scrape time (`read_cache_sizes` sets them on the
/// registry); everything else is counted as it happens. Serve it on the internal HTTP listener
/// only (Envoy's public listener does not route here).
pub fn router(
    metrics: Arc<Metrics>,
    read_cache_sizes: impl Fn(&Metrics) + Clone + Send + Sync + 'static,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || async move {
            read_cache_sizes(&metrics);
            (
                StatusCode::OK,
                [(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)],
                metrics.encode(),
            )
        }),
    )
}

#[cfg(test)]
mod tests;
