//! One structured audit event per decision, on the `audit` target.
//!
//! Fields are facts about the decision: who (and, for our own tokens, through which client
//! application), which domain, what (the MCP server, the JSON-RPC method and tool), why, which
//! policy and rule decided and which group admitted or was missing, from the cache or not, how
//! long. Tokens never appear here, not even a prefix: nothing in [`Decision`] or
//! [`RequestFacts`] but the `Authorization` header holds one, and it is never read here.

use std::time::Duration;

use crate::{
    authorizer::{Decision, RequestFacts},
    errors::BackendError,
};

/// Longest method or tool name written: they come from the request body.
const MAX_NAME: usize = 128;

/// Every decision is logged at INFO, allow or deny alike: it is a record, not a warning. An
/// attacker's junk tokens must not be able to raise the log's severity.
pub fn decision(
    request_id: &str,
    facts: &RequestFacts<'_>,
    decision: &Decision,
    latency: Duration,
) {
    let principal = decision.verdict.principal();
    let (policy, rule, group) = match decision.verdict.policy() {
        Some((policy, rule, group)) => (Some(policy), Some(rule), group),
        None => (None, None, None),
    };
    tracing::info!(
        target: "audit",
        request_id,
        subject = principal.map(|p| p.sub()),
        email = principal.and_then(|p| p.email()),
        domain = principal.and_then(|p| p.hosted_domain()),
        token_kind = principal.map(|p| p.source.as_str()),
        client = principal.and_then(|p| p.client()),
        client_name = principal.and_then(|p| p.client_name()),
        resource = decision.resource.url.as_str(),
        mcp_method = facts.mcp.method.map(bounded),
        tool = facts.mcp.tool.map(bounded),
        decision = decision.verdict.decision(),
        reason = decision.verdict.reason(),
        policy,
        rule,
        group,
        cache = decision.cache.as_str(),
        latency_us = latency.as_micros() as u64,
        "decision"
    );
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

/// At most [`MAX_NAME`] bytes, cut at a character boundary.
fn bounded(text: &str) -> &str {
    let mut end = text.len().min(MAX_NAME);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
