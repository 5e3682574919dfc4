//! The Envoy boundary: `envoy.service.auth.v3.Authorization/Check`. The only module that touches
//! envoy-types; it turns a CheckRequest into [`RequestFacts`] and a [`Decision`] back into a
//! CheckResponse.
//!
//! **Invariant:** a denial is a successful RPC (`Ok` with a non-OK status and a denied response).
//! Only "could not decide" (Google unavailable) is reported as an error, so Envoy's
//! `status_on_error: 503` applies and an outage is never mistaken for a bad token.

use std::{borrow::Cow, sync::Arc, time::Instant};

use base64::Engine as _;
use envoy_types::{
    ext_authz::v3::{
        CheckResponseExt, DeniedHttpResponseBuilder, OkHttpResponseBuilder,
        pb::{
            Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HttpResponse,
            HttpStatusCode,
        },
    },
    pb::{
        envoy::{
            config::core::v3::HeaderValue,
            service::auth::v3::{AttributeContext, attribute_context::HttpRequest},
        },
        google::protobuf::{Value, value::Kind},
    },
};
use opentelemetry::propagation::Extractor;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::{
    audit,
    authorizer::{Authorizer, Decision, RequestFacts},
    config::{Config, OutageResponse},
    credentials::CredentialError,
    errors::BackendError,
    list_filter::ListMethod,
    policy::{CONTEXT_KEY, CURRENT_PROTOCOL, Forbidden, MCP_METADATA_NAMESPACE, McpCall},
    telemetry,
    verdict::{Unauthenticated, Verdict},
};

/// Responses whose text depends only on the config, rendered once.
#[derive(Debug)]
struct Responses {
    email_header: String,
    user_header: String,
    outage: OutageResponse,
}

#[derive(Debug, Clone)]
pub struct CheckService {
    authorizer: Arc<Authorizer>,
    responses: Arc<Responses>,
}

impl CheckService {
    pub fn new(config: &Config, authorizer: Arc<Authorizer>) -> CheckService {
        CheckService {
            authorizer,
            responses: Arc::new(Responses {
                email_header: config.headers.email.clone(),
                user_header: config.headers.user.clone(),
                outage: config.envoy.outage_response,
            }),
        }
    }
}

#[tonic::async_trait]
impl Authorization for CheckService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let attributes = request.attributes.as_ref();
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        // Envoy's `id` is its internal stream id; `x-request-id` is what users and access logs see.
        // A client may send its own x-request-id; bound what reaches every audit line.
        let request_id = http
            .and_then(|h| h.headers.get("x-request-id").or(Some(&h.id)))
            .map(|id| prefix(id, MAX_REQUEST_ID))
            .unwrap_or_default();
        // Disabled, and the headers left alone, unless tracing is on.
        let trace_headers = http.map(TraceHeaders);
        let span = telemetry::check_span(
            request_id,
            trace_headers.as_ref().map(|h| h as &dyn Extractor),
        );
        let path = http.map(|h| h.path.as_str()).unwrap_or_default();
        let authorization = http.and_then(authorization_header);
        let facts = RequestFacts {
            authorization: authorization.as_deref(),
            path,
            host: http.map(|h| h.host.as_str()).unwrap_or_default(),
            http_method: http.map(|h| h.method.as_str()).unwrap_or_default(),
            policy: attributes
                .and_then(|a| a.context_extensions.get(CONTEXT_KEY))
                .map(String::as_str),
            // No attributes at all (not Envoy): nothing to check the headers against.
            mcp: attributes
                .map(|attributes| mcp_call(attributes, http))
                .unwrap_or(McpCall {
                    protocol_too_old: true,
                    ..McpCall::default()
                }),
        };
        match self
            .authorizer
            .authorize(facts)
            .instrument(span.clone())
            .await
        {
            Ok(decision) => {
                let latency = started.elapsed();
                telemetry::record_decision(
                    &span,
                    decision.verdict.decision(),
                    decision.verdict.reason(),
                    decision.cache.as_str(),
                    decision
                        .verdict
                        .policy()
                        .map(|(policy, rule, _group)| (policy, rule)),
                );
                audit::decision(request_id, &facts, &decision, latency);
                self.authorizer.metrics().decision(
                    decision.verdict.decision(),
                    decision.verdict.reason(),
                    decision.cache.into(),
                    latency,
                );
                let protocol = http.and_then(|http| header_text(http, "mcp-protocol-version"));
                let mut response = self.responses.render(&decision, protocol);
                if let Verdict::Allow(principal, grant) = &decision.verdict {
                    // For the ext_proc filter, which Envoy runs only on a list whose entries
                    // the policy has rules about: the policy and identity decided here, so it
                    // never looks at the token again. Other allows carry nothing (no
                    // allocation on the common path).
                    let filter =
                        facts
                            .mcp
                            .method
                            .and_then(ListMethod::from_method)
                            .filter(|list| {
                                self.authorizer
                                    .has_rules_for(&grant.policy, list.call_method())
                                    .unwrap_or(true)
                            });
                    if filter.is_some() {
                        response.set_dynamic_metadata(Some(crate::ext_proc::allow_metadata(
                            principal,
                            &grant.policy,
                            filter,
                        )));
                    }
                }
                Ok(Response::new(response))
            }
            Err(error) => {
                let latency = started.elapsed();
                telemetry::record_outage(&span, error.endpoint.as_str());
                audit::outage(request_id, &error, latency);
                self.authorizer.metrics().outage(&error, latency);
                self.responses.outage(&error).map(Response::new)
            }
        }
    }
}

const MAX_REQUEST_ID: usize = 128;

/// The JSON-RPC method and tool name as Envoy's MCP filter exported them from the body, e.g.
/// `{"method":"tools/call","params":{"name":"delete_dashboard"},"status":"mcp_ok",...}`, and how
/// the request's `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` headers compare with them.
/// Anything missing or of the wrong type reads as absent, which the policy treats fail-closed;
/// a body the filter could not read whole and well-formed (too large, duplicate keys, not
/// JSON-RPC) reads as unclassified, since its metadata may not be what the upstream executes.
fn mcp_call<'a>(attributes: &'a AttributeContext, http: Option<&'a HttpRequest>) -> McpCall<'a> {
    let header = |name: &str| http.and_then(|http| header_text(http, name));
    let protocol_too_old = header("mcp-protocol-version") != Some(CURRENT_PROTOCOL);
    let Some(fields) = attributes
        .metadata_context
        .as_ref()
        .and_then(|m| m.filter_metadata.get(MCP_METADATA_NAMESPACE))
        .map(|s| &s.fields)
    else {
        return McpCall {
            protocol_too_old,
            ..McpCall::default()
        };
    };
    fn string(value: Option<&Value>) -> Option<&str> {
        match value.and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(text)) => Some(text.as_str()),
            _ => None,
        }
    }
    let whole = string(fields.get("status")).is_none_or(|status| status == "mcp_ok")
        && !matches!(
            fields
                .get("is_exceeding_limit")
                .and_then(|v| v.kind.as_ref()),
            Some(Kind::BoolValue(true))
        );
    if !whole {
        return McpCall {
            protocol_too_old,
            ..McpCall::default()
        };
    }
    let params = match fields.get("params").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(params)) => Some(&params.fields),
        _ => None,
    };
    let method = string(fields.get("method"));
    // What `Mcp-Name` must repeat: the tool or prompt name, or the resource URI.
    let subject = params.and_then(|p| string(p.get("name")).or_else(|| string(p.get("uri"))));
    let headers_disagree = method.is_some_and(|method| {
        let current = !protocol_too_old;
        let method_header = header("mcp-method");
        let name_header = header("mcp-name").map(decode_header_name);
        let method_wrong = match method_header {
            Some(value) => value != method,
            None => current,
        };
        let name_wrong = match (name_header, subject) {
            (Some(value), Some(subject)) => value.as_deref() != Some(subject),
            (Some(_), None) => false,
            // Required for the calls that name what they act on.
            (None, _) => {
                current && matches!(method, "tools/call" | "prompts/get" | "resources/read")
            }
        };
        method_wrong || name_wrong
    });
    McpCall {
        method,
        tool: match method {
            Some("tools/call" | "prompts/get") => string(params.and_then(|p| p.get("name"))),
            Some("resources/read") => string(params.and_then(|p| p.get("uri"))),
            _ => None,
        },
        headers_disagree,
        protocol_too_old,
    }
}

/// An `Mcp-Name` value: as sent, or `=?base64?...?=` (names that are not plain header text).
/// `None` when the encoding is broken.
fn decode_header_name(value: &str) -> Option<Cow<'_, str>> {
    let Some(encoded) = value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Some(Cow::Borrowed(value));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// A request header as text, from `headers` or from `header_map` (raw headers); repeated
/// headers arrive comma-joined in `headers`, which then never equals a single value.
fn header_text<'a>(http: &'a HttpRequest, name: &str) -> Option<&'a str> {
    if let Some(value) = http.headers.get(name) {
        return Some(value);
    }
    let map = http.header_map.as_ref()?;
    let mut found = map
        .headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case(name));
    let first = found.next()?;
    if found.next().is_some() {
        // Repeated: not one value (the caller compares it with one).
        return Some("");
    }
    std::str::from_utf8(value_bytes(first)).ok()
}

/// A raw header's value: `raw_value` when Envoy sets it (newer versions), else `value`.
fn value_bytes(header: &HeaderValue) -> &[u8] {
    if header.raw_value.is_empty() {
        header.value.as_bytes()
    } else {
        &header.raw_value
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The `Authorization` header, from `headers` or, when Envoy sends raw headers
/// (`encode_raw_headers: true`), from `header_map`. Repeated headers are comma-joined as Envoy
/// does for `headers`, which the credential parser then refuses.
fn authorization_header(
    http: &envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
) -> Option<Cow<'_, [u8]>> {
    if let Some(value) = http.headers.get("authorization") {
        return Some(Cow::Borrowed(value.as_bytes()));
    }
    let map = http.header_map.as_ref()?;
    let mut values = map
        .headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case("authorization"))
        .map(value_bytes);
    let first = values.next()?;
    Some(values.fold(Cow::Borrowed(first), |mut joined, next| {
        let joined_mut = joined.to_mut();
        joined_mut.push(b',');
        joined_mut.extend_from_slice(next);
        joined
    }))
}

/// The request's headers as the W3C trace-context propagator reads them (`traceparent`,
/// `tracestate`): from `headers`, or from `header_map` when Envoy sends raw headers. A value
/// that is not UTF-8 reads as absent, and so starts a new trace.
struct TraceHeaders<'a>(
    &'a envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest,
);

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(value) = self.0.headers.get(key) {
            return Some(value);
        }
        let header = self
            .0
            .header_map
            .as_ref()?
            .headers
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))?;
        std::str::from_utf8(value_bytes(header)).ok()
    }

    fn keys(&self) -> Vec<&str> {
        let raw = self.0.header_map.iter().flat_map(|m| &m.headers);
        self.0
            .headers
            .keys()
            .map(String::as_str)
            .chain(raw.map(|h| h.key.as_str()))
            .collect()
    }
}

impl Responses {
    /// `protocol`: the request's `MCP-Protocol-Version`, named back in a -32022 error.
    fn render(&self, decision: &Decision, protocol: Option<&str>) -> CheckResponse {
        match &decision.verdict {
            Verdict::Allow(principal, _) => {
                let mut ok = OkHttpResponseBuilder::new();
                // OVERWRITE, not the default APPEND: a client-supplied copy is replaced, never
                // extended. Headers we do not set this time are removed outright.
                let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
                ok.add_header(&self.user_header, principal.sub(), overwrite, false);
                match principal.email() {
                    Some(email) => {
                        ok.add_header(&self.email_header, email, overwrite, false);
                    }
                    None => {
                        ok.remove_header(&self.email_header);
                    }
                }
                // The client's token is for us, never for the upstream MCP server.
                ok.remove_header("authorization");
                let mut response = CheckResponse::with_status(Status::ok(""));
                response.set_http_response(ok);
                response
            }
            // The body names the policy so a user can ask for the right access; never the
            // groups, which would tell an outsider whom to phish. No `insufficient_scope`
            // challenge: MCP clients answer it with a new sign-in, and no consent can grant a
            // domain, a group or a tool rule (MCP 2026-07-28, scope challenge handling), so it
            // would only send the user round the browser for nothing.
            // The request's MCP form, not the user, is refused: a JSON-RPC error MCP clients
            // read (the official SDKs pass it to the caller; on -32022 a client that speaks
            // the supported revision retries with it).
            Verdict::Forbidden(_, refusal) if refusal.why.is_bad_request() => {
                self.bad_mcp_request(refusal.why, protocol)
            }
            Verdict::Forbidden(_, refusal) => self.denied(
                HttpStatusCode::Forbidden,
                Status::permission_denied(refusal.why.reason()),
                None,
                ErrorBody {
                    error: "access_denied",
                    description: &refusal.why.to_string(),
                    policy: Some(&refusal.policy),
                },
            ),
            Verdict::NotServed => self.denied(
                HttpStatusCode::NotFound,
                Status::not_found("no_mcp_server"),
                None,
                ErrorBody::new("not_found", "no MCP server is served at this path"),
            ),
            Verdict::Unauthenticated(Unauthenticated::Credential(
                error @ (CredentialError::InQueryString | CredentialError::PathNotNormal),
            )) => self.denied(
                HttpStatusCode::BadRequest,
                Status::invalid_argument(error.reason()),
                Some(format!(
                    r#"Bearer resource_metadata="{}", error="invalid_request""#,
                    decision.resource.metadata_url
                )),
                ErrorBody::new("invalid_request", &error.to_string()),
            ),
            Verdict::Unauthenticated(why) => {
                let (presented, description) = match why {
                    Unauthenticated::Credential(e) => (e.token_presented(), e.to_string()),
                    Unauthenticated::Token(e) => (true, e.to_string()),
                };
                // RFC 6750 s3.1: no error code when the request carried no credential at all.
                // The metadata is the requested resource's: a client signs in for that one.
                let metadata = &decision.resource.metadata_url;
                let challenge = if presented {
                    format!(r#"Bearer resource_metadata="{metadata}", error="invalid_token""#)
                } else {
                    format!(r#"Bearer resource_metadata="{metadata}""#)
                };
                let error = if presented {
                    "invalid_token"
                } else {
                    "unauthorized"
                };
                self.denied(
                    HttpStatusCode::Unauthorized,
                    Status::unauthenticated(decision.verdict.reason()),
                    Some(challenge),
                    ErrorBody::new(error, &description),
                )
            }
        }
    }

    fn denied(
        &self,
        http_status: HttpStatusCode,
        grpc_status: Status,
        challenge: Option<String>,
        body: ErrorBody<'_>,
    ) -> CheckResponse {
        let mut denied = DeniedHttpResponseBuilder::new();
        let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
        denied.set_http_status(http_status);
        if let Some(challenge) = challenge {
            denied.add_header("www-authenticate", challenge, overwrite, false);
        }
        denied
            .add_header("content-type", "application/json", overwrite, false)
            .add_header("cache-control", "no-store", overwrite, false)
            .set_body(body.render());
        let mut response = CheckResponse::with_status(grpc_status);
        response.set_http_response(denied);
        response
    }

    /// A 400 with a JSON-RPC error body, as Envoy's MCP filter and MCP servers answer one
    /// (`id` null: the body's id is not ours to read).
    fn bad_mcp_request(&self, why: Forbidden, protocol: Option<&str>) -> CheckResponse {
        let error = match why {
            Forbidden::McpProtocolTooOld => {
                // Echo the requested version only when it looks like one.
                let requested = protocol
                    .filter(|v| v.len() == 10 && v.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
                    .unwrap_or_default();
                serde_json::json!({
                    "code": -32022,
                    "message": why.to_string(),
                    "data": { "supported": [CURRENT_PROTOCOL], "requested": requested },
                })
            }
            _ => serde_json::json!({ "code": -32020, "message": why.to_string() }),
        };
        let body = serde_json::json!({ "jsonrpc": "2.0", "id": null, "error": error });
        let mut denied = DeniedHttpResponseBuilder::new();
        let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
        denied
            .set_http_status(HttpStatusCode::BadRequest)
            .add_header("content-type", "application/json", overwrite, false)
            .add_header("cache-control", "no-store", overwrite, false)
            .set_body(body.to_string());
        let mut response = CheckResponse::with_status(Status::invalid_argument(why.reason()));
        response.set_http_response(denied);
        response
    }

    /// "Could not decide": a 503 through Envoy's error path, never a denial.
    fn outage(&self, error: &BackendError) -> Result<CheckResponse, Status> {
        match self.outage {
            OutageResponse::GrpcUnavailable => Err(Status::unavailable(format!(
                "identity provider unavailable ({})",
                error.endpoint
            ))),
            OutageResponse::ErrorResponse => {
                let mut body = DeniedHttpResponseBuilder::new();
                let overwrite = Some(HeaderAppendAction::OverwriteIfExistsOrAdd);
                body.set_http_status(HttpStatusCode::ServiceUnavailable)
                    .add_header("content-type", "application/json", overwrite, false)
                    .add_header("retry-after", "5", overwrite, false)
                    .add_header("cache-control", "no-store", overwrite, false)
                    .set_body(
                        ErrorBody::new(
                            "temporarily_unavailable",
                            "the identity provider is unavailable; retry shortly",
                        )
                        .render(),
                    );
                let mut response =
                    CheckResponse::with_status(Status::unavailable(error.endpoint.as_str()));
                response.set_http_response(HttpResponse::ErrorResponse(body.build()));
                Ok(response)
            }
        }
    }
}

/// `{"error": ..., "error_description": ..., "policy": ...}`. Descriptions are our own fixed
/// texts and the policy name comes from our config; nothing from the request (and so no token)
/// is ever echoed back.
struct ErrorBody<'a> {
    error: &'a str,
    description: &'a str,
    policy: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    fn new(error: &'a str, description: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            error,
            description,
            policy: None,
        }
    }

    fn render(&self) -> String {
        let mut body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        if let Some(policy) = self.policy {
            body["policy"] = policy.into();
        }
        body.to_string()
    }
}

#[cfg(test)]
mod tests;
