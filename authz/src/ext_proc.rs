//! The second Envoy boundary: `envoy.service.ext_proc.v3.ExternalProcessor/Process`, which hides
//! the entries of MCP list results that the user's policy refuses (`list_filter.rs` reads and
//! rewrites the body; the authorizer decides). With `check.rs`, the only module that touches
//! envoy-types.
//!
//! Envoy runs this filter only for list methods (a matcher on the MCP filter's `method`), skips
//! the request, and sends the response headers with the metadata of the request's Check: the
//! policy and the identity the Check verified (see [`allow_metadata`]), so the token is never
//! looked at again. When the policy has rules about the listed entries' method and the answer is
//! a 200 in JSON or SSE, the headers reply asks for the body (`mode_override`: BUFFERED, so the
//! headers wait for it and a refusal is still a clean status); every other answer passes
//! without its body ever reaching us.
//!
//! **Fail closed:** a list result we cannot read, or cannot decide about (groups unavailable,
//! the policy gone after a reload), is refused where rules apply (502, or 503 for an outage),
//! never passed on unfiltered. Filtering is hygiene: `tools/call` stays enforced by the Check.

use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::{
    envoy::{
        config::core::v3::{HeaderValue, HeaderValueOption, Metadata},
        extensions::filters::http::ext_proc::v3::{
            ProcessingMode,
            processing_mode::{BodySendMode, HeaderSendMode},
        },
        service::ext_proc::v3::{
            BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
            HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse,
            TrailersResponse, body_mutation::Mutation,
            external_processor_server::ExternalProcessor, processing_request::Request as Message,
            processing_response::Response as Reply,
        },
        r#type::v3::{HttpStatus, StatusCode},
    },
    google::protobuf::{Struct, Value, value::Kind},
};
use tokio::sync::mpsc;
use tonic::{
    Request, Response, Status, Streaming, codegen::tokio_stream::wrappers::ReceiverStream,
};

use crate::{
    authorizer::Authorizer,
    list_filter::{BodyKind, ListMethod, Listing, Unparseable},
    metrics::ListOutcome,
    policy::MCP_METADATA_NAMESPACE,
    principal::{Parts, Principal, TokenSource},
};

/// The namespace Envoy stores a CheckResponse's `dynamic_metadata` under; the ext_proc filter
/// forwards it to us (`metadata_options.forwarding_namespaces`). Only authz writes it: Envoy
/// takes dynamic metadata from filters, never from clients.
pub const AUTHZ_METADATA_NAMESPACE: &str = "envoy.filters.http.ext_authz";

const POLICY: &str = "policy";
const SUB: &str = "sub";
const EMAIL: &str = "email";
const EMAIL_VERIFIED: &str = "email_verified";
const HOSTED_DOMAIN: &str = "hd";
const TOKEN_KIND: &str = "token_kind";
/// Set (to the list method) only on a list request whose entries the policy has rules about:
/// Envoy's matcher runs the ext_proc filter only when it is present.
pub const FILTER_LIST: &str = "filter_list";

/// What an allow tells the ext_proc filter: the policy that admitted the request, the identity
/// it decided on, and `filter` (a list method the policy has rules about), which makes Envoy
/// run the filter. No token, nothing secret (the same identity goes upstream in our headers).
pub fn allow_metadata(principal: &Principal, policy: &str, filter: Option<ListMethod>) -> Struct {
    let text = |text: &str| Value {
        kind: Some(Kind::StringValue(text.to_owned())),
    };
    let mut fields = HashMap::from([
        (POLICY.to_owned(), text(policy)),
        (SUB.to_owned(), text(principal.sub())),
        (
            EMAIL_VERIFIED.to_owned(),
            Value {
                kind: Some(Kind::BoolValue(principal.email_verified)),
            },
        ),
        (TOKEN_KIND.to_owned(), text(principal.source.as_str())),
    ]);
    if let Some(email) = principal.email() {
        fields.insert(EMAIL.to_owned(), text(email));
    }
    if let Some(hd) = principal.hosted_domain() {
        fields.insert(HOSTED_DOMAIN.to_owned(), text(hd));
    }
    if let Some(list) = filter {
        fields.insert(FILTER_LIST.to_owned(), text(list.as_str()));
    }
    Struct { fields }
}

#[derive(Debug, Clone)]
pub struct ExtProcService {
    authorizer: Arc<Authorizer>,
}

impl ExtProcService {
    pub fn new(authorizer: Arc<Authorizer>) -> ExtProcService {
        ExtProcService { authorizer }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProcService {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        // One reply per message, in order; Envoy sends the next message only after the reply.
        let (replies, stream) = mpsc::channel(2);
        let authorizer = self.authorizer.clone();
        // Lives as long as Envoy's stream: it ends when Envoy closes its side or drops ours.
        tokio::spawn(async move {
            let mut exchange = Exchange::Start;
            while let Ok(Some(message)) = inbound.message().await {
                let reply = exchange.step(&authorizer, message).await;
                if replies.send(Ok(reply)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Where one response's exchange stands.
enum Exchange {
    Start,
    /// The body was asked for; what to filter it with.
    AwaitingBody(Box<Pending>),
    Done,
}

struct Pending {
    method: ListMethod,
    kind: BodyKind,
    policy: String,
    principal: Principal,
    /// The response had a `content-length`, which must then match the new body.
    had_length: bool,
}

/// The metrics' `method` label: the list method, or `other`.
fn method_label(method: Option<ListMethod>) -> &'static str {
    method.map_or("other", ListMethod::as_str)
}

impl Exchange {
    async fn step(
        &mut self,
        authorizer: &Authorizer,
        message: ProcessingRequest,
    ) -> ProcessingResponse {
        let metrics = authorizer.metrics();
        let reply = match (std::mem::replace(self, Exchange::Done), message.request) {
            (Exchange::Start, Some(Message::ResponseHeaders(headers))) => {
                match on_headers(authorizer, message.metadata_context.as_ref(), &headers) {
                    Plan::Pass(method, outcome) => {
                        metrics.list_filtering(method_label(method), outcome);
                        Reply::ResponseHeaders(HeadersResponse::default())
                    }
                    Plan::Refuse(method, refusal) => {
                        metrics.list_filtering(method_label(method), refusal.outcome());
                        refusal.log(method);
                        Reply::ImmediateResponse(refusal.response())
                    }
                    Plan::Filter(pending) => {
                        *self = Exchange::AwaitingBody(pending);
                        return ProcessingResponse {
                            response: Some(Reply::ResponseHeaders(HeadersResponse::default())),
                            mode_override: Some(ProcessingMode {
                                response_header_mode: HeaderSendMode::Send as i32,
                                response_body_mode: BodySendMode::Buffered as i32,
                                ..ProcessingMode::default()
                            }),
                            ..ProcessingResponse::default()
                        };
                    }
                }
            }
            (Exchange::AwaitingBody(pending), Some(Message::ResponseBody(body))) => {
                match on_body(authorizer, &pending, &body).await {
                    Ok((mutation, hidden)) => {
                        let outcome = if hidden > 0 {
                            ListOutcome::Filtered
                        } else {
                            ListOutcome::Unchanged
                        };
                        metrics.list_filtering(pending.method.as_str(), outcome);
                        metrics.list_entries_hidden(pending.method.as_str(), hidden);
                        Reply::ResponseBody(BodyResponse {
                            response: Some(mutation),
                        })
                    }
                    Err(refusal) => {
                        metrics.list_filtering(pending.method.as_str(), refusal.outcome());
                        refusal.log(Some(pending.method));
                        Reply::ImmediateResponse(refusal.response())
                    }
                }
            }
            // Not asked for by the shipped configs; answered so that a config sending them
            // still works (request processing is left unchanged).
            (state, Some(Message::RequestHeaders(_))) => {
                *self = state;
                Reply::RequestHeaders(HeadersResponse::default())
            }
            (state, Some(Message::RequestBody(_))) => {
                *self = state;
                Reply::RequestBody(BodyResponse::default())
            }
            (state, Some(Message::RequestTrailers(_))) => {
                *self = state;
                Reply::RequestTrailers(TrailersResponse::default())
            }
            (_, Some(Message::ResponseTrailers(_))) => {
                Reply::ResponseTrailers(TrailersResponse::default())
            }
            // A body we did not ask for, a second headers message, or nothing: out of order.
            // Refused rather than guessed at.
            (_, _) => {
                metrics.list_filtering(method_label(None), ListOutcome::RefusedUnparseable);
                Reply::ImmediateResponse(Refusal::OutOfOrder.response())
            }
        };
        ProcessingResponse {
            response: Some(reply),
            ..ProcessingResponse::default()
        }
    }
}

enum Plan {
    /// Pass the response as it is, without its body.
    Pass(Option<ListMethod>, ListOutcome),
    Refuse(Option<ListMethod>, Refusal),
    Filter(Box<Pending>),
}

/// What to do about a response, from its headers and the request's metadata.
fn on_headers(authorizer: &Authorizer, metadata: Option<&Metadata>, headers: &HttpHeaders) -> Plan {
    let mcp = namespace(metadata, MCP_METADATA_NAMESPACE);
    let Some(method) = mcp
        .and_then(|fields| text(fields, "method"))
        .and_then(ListMethod::from_method)
    else {
        return Plan::Pass(None, ListOutcome::NotAList);
    };
    // No Check allowed this request (a route with ext_authz off): no policy to apply.
    let Some(decision) = namespace(metadata, AUTHZ_METADATA_NAMESPACE) else {
        return Plan::Pass(Some(method), ListOutcome::NoDecision);
    };
    let (Some(policy), Some(principal)) = (text(decision, POLICY), principal(decision)) else {
        return Plan::Refuse(Some(method), Refusal::Unreadable(Unparseable::NotAResponse));
    };
    match authorizer.has_rules_for(policy, method.call_method()) {
        None => return Plan::Refuse(Some(method), Refusal::UnknownPolicy),
        Some(false) => return Plan::Pass(Some(method), ListOutcome::NoRules),
        Some(true) => {}
    }
    let header = |name: &str| header(headers, name);
    // Errors and redirects carry no list.
    if header(":status") != Some("200") {
        return Plan::Pass(Some(method), ListOutcome::NotOk);
    }
    if header("content-encoding").is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Plan::Refuse(Some(method), Refusal::ContentType);
    }
    let Some(kind) = header("content-type").and_then(BodyKind::from_content_type) else {
        return Plan::Refuse(Some(method), Refusal::ContentType);
    };
    Plan::Filter(Box::new(Pending {
        method,
        kind,
        policy: policy.to_owned(),
        principal,
        had_length: header("content-length").is_some(),
    }))
}

/// The body reply: the filtered body (with its new length), or a plain continue; and how many
/// entries were hidden.
async fn on_body(
    authorizer: &Authorizer,
    pending: &Pending,
    body: &HttpBody,
) -> Result<(CommonResponse, usize), Refusal> {
    // BUFFERED sends the whole body at once; anything else is not what we asked for.
    if !body.end_of_stream {
        return Err(Refusal::OutOfOrder);
    }
    let listing =
        Listing::parse(pending.method, pending.kind, &body.body).map_err(Refusal::Unreadable)?;
    let names: Vec<&str> = listing.names().collect();
    let keep = authorizer
        .permitted(
            &pending.principal,
            &pending.policy,
            pending.method.call_method(),
            &names,
        )
        .await
        .map_err(|_| Refusal::Unavailable)?
        .ok_or(Refusal::UnknownPolicy)?;
    let hidden = keep.iter().filter(|&&k| !k).count();
    let Some(filtered) = listing.render(&keep) else {
        return Ok((CommonResponse::default(), 0));
    };
    let header_mutation = pending.had_length.then(|| HeaderMutation {
        set_headers: vec![header_option("content-length", &filtered.len().to_string())],
        ..HeaderMutation::default()
    });
    Ok((
        CommonResponse {
            header_mutation,
            body_mutation: Some(BodyMutation {
                mutation: Some(Mutation::Body(filtered.into_bytes())),
            }),
            ..CommonResponse::default()
        },
        hidden,
    ))
}

/// Why a list result is not passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unreadable(Unparseable),
    /// Neither JSON nor SSE, or compressed.
    ContentType,
    /// The policy that admitted the request is gone (a reload).
    UnknownPolicy,
    /// Group memberships could not be looked up.
    Unavailable,
    /// Envoy sent what we did not ask for.
    OutOfOrder,
}

impl Refusal {
    fn outcome(self) -> ListOutcome {
        match self {
            Refusal::Unreadable(_) | Refusal::OutOfOrder => ListOutcome::RefusedUnparseable,
            Refusal::ContentType => ListOutcome::RefusedContentType,
            Refusal::UnknownPolicy => ListOutcome::RefusedUnknownPolicy,
            Refusal::Unavailable => ListOutcome::Unavailable,
        }
    }

    fn log(self, method: Option<ListMethod>) {
        let method = method.map_or("", ListMethod::as_str);
        match self {
            Refusal::Unreadable(why) => tracing::warn!(
                method,
                reason = why.reason(),
                "refused a list result authz could not read"
            ),
            other => tracing::warn!(method, ?other, "refused a list result"),
        }
    }

    /// A JSON-RPC error (`id` null: the request's id is not ours to read) with 502, or 503 for
    /// an outage, which clients retry.
    fn response(self) -> ImmediateResponse {
        let (status, message, details) = match self {
            Refusal::Unavailable => (
                StatusCode::ServiceUnavailable,
                "authz cannot decide which entries this user may see; retry shortly",
                "authz_list_unavailable",
            ),
            Refusal::UnknownPolicy => (
                StatusCode::BadGateway,
                "the policy that admitted this request is no longer configured",
                "authz_list_unknown_policy",
            ),
            Refusal::ContentType | Refusal::Unreadable(_) | Refusal::OutOfOrder => (
                StatusCode::BadGateway,
                "authz could not read the MCP server's list result, so it is not passed on",
                "authz_list_unreadable",
            ),
        };
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32603, "message": message },
        });
        ImmediateResponse {
            status: Some(HttpStatus {
                code: status as i32,
            }),
            headers: Some(HeaderMutation {
                set_headers: vec![
                    header_option("content-type", "application/json"),
                    header_option("cache-control", "no-store"),
                ],
                ..HeaderMutation::default()
            }),
            body: body.to_string().into_bytes(),
            details: details.to_owned(),
            ..ImmediateResponse::default()
        }
    }
}

fn header_option(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            raw_value: value.as_bytes().to_vec(),
            ..HeaderValue::default()
        }),
        ..HeaderValueOption::default()
    }
}

/// A response header as text (Envoy sends `raw_value`; older versions `value`).
fn header<'a>(headers: &'a HttpHeaders, name: &str) -> Option<&'a str> {
    let header = headers
        .headers
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))?;
    if header.raw_value.is_empty() {
        Some(&header.value)
    } else {
        std::str::from_utf8(&header.raw_value).ok()
    }
}

fn namespace<'a>(metadata: Option<&'a Metadata>, name: &str) -> Option<&'a HashMap<String, Value>> {
    metadata?.filter_metadata.get(name).map(|s| &s.fields)
}

fn text<'a>(fields: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    match fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(text) => Some(text),
        _ => None,
    }
}

/// The identity the Check decided on, back from [`allow_metadata`].
fn principal(fields: &HashMap<String, Value>) -> Option<Principal> {
    let email_verified = matches!(
        fields.get(EMAIL_VERIFIED).and_then(|v| v.kind.as_ref()),
        Some(Kind::BoolValue(true))
    );
    let source = match text(fields, TOKEN_KIND)? {
        "google_id_token" => TokenSource::GoogleIdToken,
        "google_access_token" => TokenSource::GoogleAccessToken,
        "facade" => TokenSource::Facade,
        _ => return None,
    };
    Some(Principal::new(Parts {
        sub: text(fields, SUB)?,
        email: text(fields, EMAIL),
        email_verified,
        hosted_domain: text(fields, HOSTED_DOMAIN),
        // Not read by the policy; the Check already held the token to its expiry.
        expires_at: u64::MAX,
        source,
        session: None,
    }))
}

#[cfg(test)]
mod tests;
