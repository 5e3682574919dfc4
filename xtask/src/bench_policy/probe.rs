//! The requests and their answers: CheckRequests shaped like Envoy's for an MCP request (route,
//! `context_extensions`, the MCP filter's metadata), encoded once; and a sender for the shared
//! load engine (`crate::bench::client`) that checks every answer against the expected decision.
//!
//! The engine counts [`Outcome::Allowed`] as success. Here a check is a success when authz
//! decided as expected, allowed **or** forbidden; a wrong decision or any other status is
//! [`Outcome::NotOk`], a failed RPC (an outage's UNAVAILABLE included) [`Outcome::Error`].
//! The allowed and forbidden counts are kept apart, in [`Tally`].

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use anyhow::Context as _;
use envoy_types::pb::{
    envoy::{
        config::core::v3::Metadata,
        service::auth::v3::{
            AttributeContext, CheckRequest,
            attribute_context::{HttpRequest, Request as HttpAttributes},
        },
    },
    google::protobuf::{Struct, Value, value::Kind},
};
use prost::{Message as _, bytes::Bytes};
use tonic::{
    client::Grpc,
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};

use super::mix::Request;
use crate::bench::client::{BoxedOutcome, Outcome, PreEncoded, RPC_TIMEOUT};

const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// The namespace of Envoy's MCP filter metadata, as authz reads it.
const MCP_NAMESPACE: &str = "envoy.filters.http.mcp";
/// gRPC PERMISSION_DENIED: authz's status for a policy refusal (HTTP 403).
const PERMISSION_DENIED: i32 = 7;

/// One encoded CheckRequest: `POST <route path>` with `token`, the policy Envoy names (if it
/// does) and the MCP method and tool.
pub fn check_body(token: &str, request: Request, id: usize) -> Bytes {
    let (path, named_policy) = request.policy.route();
    // An MCP 2026-07-28 client: the method and tool repeated in headers (authz compares them
    // with the body, and requires this revision where tool rules apply).
    let mut headers = vec![
        (":authority", "mcp.example.com".to_string()),
        (":method", "POST".to_string()),
        (":path", path.to_string()),
        (":scheme", "https".to_string()),
        ("accept", "application/json, text/event-stream".to_string()),
        ("authorization", format!("Bearer {token}")),
        ("content-length", "120".to_string()),
        ("content-type", "application/json".to_string()),
        ("mcp-protocol-version", "2026-07-28".to_string()),
        ("mcp-method", request.call.method().to_string()),
        ("user-agent", "bench-mcp-client/1.0".to_string()),
        ("x-forwarded-proto", "https".to_string()),
        ("x-request-id", format!("bench-{id:08}")),
    ];
    if let Some(tool) = request.call.tool() {
        headers.push(("mcp-name", tool.to_string()));
    }
    let string = |text: &str| Value {
        kind: Some(Kind::StringValue(text.to_string())),
    };
    let mut mcp = Struct::default();
    mcp.fields.insert("jsonrpc".into(), string("2.0"));
    mcp.fields.insert(
        "id".into(),
        Value {
            kind: Some(Kind::NumberValue(1.0)),
        },
    );
    mcp.fields.insert(
        "is_mcp_request".into(),
        Value {
            kind: Some(Kind::BoolValue(true)),
        },
    );
    mcp.fields
        .insert("method".into(), string(request.call.method()));
    if let Some(tool) = request.call.tool() {
        let mut params = Struct::default();
        params.fields.insert("name".into(), string(tool));
        mcp.fields.insert(
            "params".into(),
            Value {
                kind: Some(Kind::StructValue(params)),
            },
        );
    }
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(HttpAttributes {
                http: Some(HttpRequest {
                    id: format!("{id}"),
                    method: "POST".into(),
                    path: path.into(),
                    host: "mcp.example.com".into(),
                    scheme: "https".into(),
                    protocol: "HTTP/1.1".into(),
                    size: 120,
                    headers: headers
                        .into_iter()
                        .map(|(name, value)| (name.to_string(), value))
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: named_policy
                .map(|name| [("policy".to_string(), name.to_string())].into())
                .unwrap_or_default(),
            metadata_context: Some(Metadata {
                filter_metadata: [(MCP_NAMESPACE.to_string(), mcp)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    Bytes::from(check.encode_to_vec())
}

/// Decisions of one phase, by kind.
#[derive(Debug, Default)]
pub struct Tally {
    pub allowed: AtomicU64,
    pub forbidden: AtomicU64,
    /// Answers that differ from the model's decision (or are neither OK nor PERMISSION_DENIED).
    pub wrong: AtomicU64,
}

/// What a phase sends: request `i` of a phase is `bodies[order[i % order.len()]]`.
#[derive(Debug, Clone)]
pub struct Workload {
    pub bodies: Arc<[Bytes]>,
    /// Per distinct request: the decision authz must make.
    pub expected: Arc<[bool]>,
    /// Per distinct request: a description for error messages.
    pub labels: Arc<[String]>,
}

/// HTTP/2 connections to authz, used round-robin.
#[derive(Debug, Clone)]
pub struct Clients(Arc<[Grpc<Channel>]>);

impl Clients {
    pub async fn connect(addr: SocketAddr, connections: usize) -> anyhow::Result<Self> {
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .context("the authz gRPC address")?
                .tcp_nodelay(true)
                .timeout(RPC_TIMEOUT)
                .connect()
                .await
                .with_context(|| format!("connecting to authz at {addr}"))?;
            clients.push(Grpc::new(channel));
        }
        Ok(Self(clients.into()))
    }

    /// The engine's `send(i)` for a phase sending `order` (cycled) out of `workload`.
    pub fn sender(
        &self,
        workload: &Workload,
        order: Arc<[u32]>,
        tally: Arc<Tally>,
    ) -> impl Fn(usize) -> BoxedOutcome + Clone + Send + Sync + 'static {
        let (clients, workload) = (self.0.clone(), workload.clone());
        move |i| {
            let mut client = clients[i % clients.len()].clone();
            let index = order[i % order.len()] as usize;
            let body = workload.bodies[index].clone();
            let expected = workload.expected[index];
            let (workload, tally) = (workload.clone(), tally.clone());
            Box::pin(async move {
                let answer = check(&mut client, body).await;
                let allowed = match answer {
                    Ok(0) => true,
                    Ok(PERMISSION_DENIED) => false,
                    Ok(code) => {
                        tally.wrong.fetch_add(1, Relaxed);
                        return Outcome::NotOk(format!(
                            "{}: CheckResponse status code {code}",
                            workload.labels[index]
                        ));
                    }
                    Err(problem) => return Outcome::Error(problem),
                };
                let counter = if allowed {
                    &tally.allowed
                } else {
                    &tally.forbidden
                };
                counter.fetch_add(1, Relaxed);
                if allowed == expected {
                    Outcome::Allowed
                } else {
                    tally.wrong.fetch_add(1, Relaxed);
                    Outcome::NotOk(format!(
                        "{}: expected {}, got {}",
                        workload.labels[index],
                        verdict(expected),
                        verdict(allowed)
                    ))
                }
            })
        }
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "forbidden" }
}

/// The CheckResponse's status code, or the RPC's failure.
async fn check(client: &mut Grpc<Channel>, body: Bytes) -> Result<i32, String> {
    client
        .ready()
        .await
        .map_err(|e| format!("channel not ready: {e}"))?;
    let path = PathAndQuery::from_static(CHECK_PATH);
    match client
        .unary(tonic::Request::new(body), path, PreEncoded)
        .await
    {
        Ok(response) => match response.get_ref().status.as_ref() {
            Some(status) => Ok(status.code),
            None => Ok(-1),
        },
        Err(status) => Err(format!("gRPC {:?}: {}", status.code(), status.message())),
    }
}
