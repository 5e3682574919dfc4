//! One structured audit event per decision, on the `audit` target.
//!
//! Fields are facts about the decision (who, which domain, what, why, from the cache or not,
//! how long). Tokens never appear here, not even a prefix: nothing in [`Decision`] holds one.

use std::time::Duration;

use crate::{authorizer::Decision, google::BackendError, verdict::Verdict};

pub fn decision(request_id: &str, decision: &Decision, latency: Duration) {
    let principal = decision.verdict.principal();
    let level_is_allow = matches!(decision.verdict, Verdict::Allow(_));
    let subject = principal.map(|p| p.sub.as_str());
    let email = principal.and_then(|p| p.email.as_deref());
    let domain = principal.and_then(|p| p.hosted_domain.as_deref());
    let token_kind = principal.map(|p| p.source.as_str());
    let latency_us = latency.as_micros() as u64;
    if level_is_allow {
        tracing::info!(
            target: "audit",
            request_id,
            subject,
            email,
            domain,
            token_kind,
            decision = decision.verdict.decision(),
            reason = decision.verdict.reason(),
            cache = decision.cache.as_str(),
            latency_us,
            "decision"
        );
    } else {
        tracing::warn!(
            target: "audit",
            request_id,
            subject,
            email,
            domain,
            token_kind,
            decision = decision.verdict.decision(),
            reason = decision.verdict.reason(),
            cache = decision.cache.as_str(),
            latency_us,
            "decision"
        );
    }
}

pub fn outage(request_id: &str, error: &BackendError, latency: Duration) {
    tracing::error!(
        target: "audit",
        request_id,
        decision = "unavailable",
        reason = "backend_unavailable",
        endpoint = error.endpoint.as_str(),
        problem = %error.problem,
        latency_us = latency.as_micros() as u64,
        "decision"
    );
}
