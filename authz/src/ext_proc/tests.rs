use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderMap;

use super::*;
use crate::{
    metrics::Metrics,
    test_support::{ReadyGoogle, config_for, ready_google},
};

const CLIENT: &str = "test-client.apps.googleusercontent.com";

/// `grafana`: ada and grace may use it; only grace may call `delete_*`. `open`: no rules.
const POLICIES: &str = r#"
[policies.grafana]
allow_users = ["ada@example.com", "grace@example.com"]
[[policies.grafana.rules]]
name = "destructive"
methods = ["tools/call"]
tools = ["delete_*"]
allow_users = ["grace@example.com"]
[[policies.grafana.rules]]
name = "no-prompts"
methods = ["prompts/get"]
deny = true

[policies.open]
"#;

async fn authorizer() -> (ReadyGoogle, Authorizer) {
    let ready = ready_google(CLIENT, Arc::new(Metrics::new())).await;
    let config = config_for(ready.standin.issuer(), CLIENT, Some(POLICIES));
    let authorizer = Authorizer::new(&config, ready.google.clone(), None);
    (ready, authorizer)
}

fn user(email: &str) -> Principal {
    Principal::new(Parts {
        sub: "1001",
        email: Some(email),
        email_verified: true,
        hosted_domain: Some("example.com"),
        expires_at: u64::MAX,
        source: TokenSource::GoogleIdToken,
        session: None,
    })
}

fn metadata(method: Option<&str>, decision: Option<(&Principal, &str)>) -> Metadata {
    let mut filter_metadata = HashMap::new();
    if let Some(method) = method {
        let fields = HashMap::from([(
            "method".to_string(),
            Value {
                kind: Some(Kind::StringValue(method.into())),
            },
        )]);
        filter_metadata.insert(MCP_METADATA_NAMESPACE.to_string(), Struct { fields });
    }
    if let Some((principal, policy)) = decision {
        filter_metadata.insert(
            AUTHZ_METADATA_NAMESPACE.to_string(),
            allow_metadata(principal, policy, method.and_then(ListMethod::from_method)),
        );
    }
    Metadata {
        filter_metadata,
        ..Metadata::default()
    }
}

fn response_headers(pairs: &[(&str, &str)]) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: pairs
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..HeaderValue::default()
                })
                .collect(),
        }),
        ..HttpHeaders::default()
    }
}

fn headers_message(metadata: Metadata, headers: HttpHeaders) -> ProcessingRequest {
    ProcessingRequest {
        metadata_context: Some(metadata),
        request: Some(Message::ResponseHeaders(headers)),
        ..ProcessingRequest::default()
    }
}

fn body_message(body: &str) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Message::ResponseBody(HttpBody {
            body: body.as_bytes().to_vec(),
            end_of_stream: true,
            ..HttpBody::default()
        })),
        ..ProcessingRequest::default()
    }
}

const JSON_200: &[(&str, &str)] = &[
    (":status", "200"),
    ("content-type", "application/json"),
    ("content-length", "10"),
];

const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"list_dashboards"},{"name":"delete_dashboard"}],"nextCursor":"c2"}}"#;

#[test]
fn the_identity_travels_through_the_metadata_without_a_token() {
    let ada = user("ada@example.com");
    let metadata = allow_metadata(&ada, "grafana", Some(ListMethod::Tools));
    let keys: std::collections::BTreeSet<&str> =
        metadata.fields.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "email",
            "email_verified",
            "filter_list",
            "hd",
            "policy",
            "sub",
            "token_kind"
        ]
        .into()
    );
    let back = principal(&metadata.fields).unwrap();
    assert_eq!(back.parts(), ada.parts());
}

#[tokio::test]
async fn a_refused_tool_is_removed_with_the_content_length_updated() {
    let (_ready, authorizer) = authorizer().await;
    let ada = user("ada@example.com");
    let mut exchange = Exchange::Start;
    let reply = exchange
        .step(
            &authorizer,
            headers_message(
                metadata(Some("tools/list"), Some((&ada, "grafana"))),
                response_headers(JSON_200),
            ),
        )
        .await;
    let mode = reply.mode_override.expect("asks for the body");
    assert_eq!(mode.response_body_mode, BodySendMode::Buffered as i32);
    let reply = exchange.step(&authorizer, body_message(TOOLS)).await;
    let Some(Reply::ResponseBody(BodyResponse {
        response: Some(common),
    })) = reply.response
    else {
        panic!("{reply:?}");
    };
    let expected = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"list_dashboards"}],"nextCursor":"c2"}}"#;
    assert_eq!(
        common.body_mutation.unwrap().mutation,
        Some(Mutation::Body(expected.as_bytes().to_vec()))
    );
    let length = &common.header_mutation.unwrap().set_headers[0];
    let length = length.header.as_ref().unwrap();
    assert_eq!(length.key, "content-length");
    assert_eq!(length.raw_value, expected.len().to_string().into_bytes());
}

#[tokio::test]
async fn a_user_who_may_call_everything_gets_the_body_unchanged() {
    let (_ready, authorizer) = authorizer().await;
    let grace = user("grace@example.com");
    let mut exchange = Exchange::Start;
    exchange
        .step(
            &authorizer,
            headers_message(
                metadata(Some("tools/list"), Some((&grace, "grafana"))),
                response_headers(JSON_200),
            ),
        )
        .await;
    let reply = exchange.step(&authorizer, body_message(TOOLS)).await;
    assert_eq!(
        reply.response,
        Some(Reply::ResponseBody(BodyResponse {
            response: Some(CommonResponse::default())
        }))
    );
}

#[tokio::test]
async fn prompts_follow_the_rule_on_prompts_get_for_every_prompt() {
    let (_ready, authorizer) = authorizer().await;
    let ada = user("ada@example.com");
    assert_eq!(
        authorizer
            .permitted(&ada, "grafana", "prompts/get", &["a", "b"])
            .await
            .unwrap(),
        Some(vec![false, false])
    );
    assert_eq!(
        authorizer
            .permitted(&ada, "grafana", "tools/call", &["delete_x", "x"])
            .await
            .unwrap(),
        Some(vec![false, true])
    );
    assert_eq!(
        authorizer.has_rules_for("grafana", "resources/read"),
        Some(false)
    );
    assert_eq!(authorizer.has_rules_for("open", "tools/call"), Some(false));
    assert_eq!(authorizer.has_rules_for("gone", "tools/call"), None);
}

/// What the headers reply is, given the metadata and the response headers.
async fn plan(metadata: Metadata, headers: &[(&str, &str)]) -> ProcessingResponse {
    let (_ready, authorizer) = authorizer().await;
    Exchange::Start
        .step(
            &authorizer,
            headers_message(metadata, response_headers(headers)),
        )
        .await
}

fn passes(reply: &ProcessingResponse) -> bool {
    reply.mode_override.is_none()
        && reply.response == Some(Reply::ResponseHeaders(HeadersResponse::default()))
}

fn refused_with(reply: &ProcessingResponse) -> Option<i32> {
    match &reply.response {
        Some(Reply::ImmediateResponse(immediate)) => immediate.status.as_ref().map(|s| s.code),
        _ => None,
    }
}

#[tokio::test]
async fn what_passes_without_its_body() {
    let ada = user("ada@example.com");
    let decided = |policy| Some((&ada, policy));
    // Not a list method; no Check (ext_authz off); a policy without rules; not a 200.
    assert!(passes(
        &plan(metadata(Some("tools/call"), decided("grafana")), JSON_200).await
    ));
    assert!(passes(
        &plan(metadata(Some("tools/list"), None), JSON_200).await
    ));
    assert!(passes(
        &plan(metadata(Some("tools/list"), decided("open")), JSON_200).await
    ));
    assert!(passes(
        &plan(
            metadata(Some("resources/list"), decided("grafana")),
            JSON_200
        )
        .await
    ));
    let not_found = [(":status", "404"), ("content-type", "text/html")];
    assert!(passes(
        &plan(metadata(Some("tools/list"), decided("grafana")), &not_found).await
    ));
}

#[tokio::test]
async fn what_is_refused_where_rules_apply() {
    let ada = user("ada@example.com");
    let listing = || metadata(Some("tools/list"), Some((&ada, "grafana")));
    let html = [(":status", "200"), ("content-type", "text/html")];
    assert_eq!(refused_with(&plan(listing(), &html).await), Some(502));
    let gzip = [
        (":status", "200"),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    assert_eq!(refused_with(&plan(listing(), &gzip).await), Some(502));
    let gone = metadata(Some("tools/list"), Some((&ada, "gone")));
    assert_eq!(refused_with(&plan(gone, JSON_200).await), Some(502));

    let (_ready, authorizer) = authorizer().await;
    let mut exchange = Exchange::Start;
    exchange
        .step(
            &authorizer,
            headers_message(listing(), response_headers(JSON_200)),
        )
        .await;
    let reply = exchange
        .step(&authorizer, body_message("{\"jsonrpc\":"))
        .await;
    assert_eq!(refused_with(&reply), Some(502));
    let Some(Reply::ImmediateResponse(immediate)) = reply.response else {
        unreachable!()
    };
    let body: serde_json::Value = serde_json::from_slice(&immediate.body).unwrap();
    assert_eq!(body["error"]["code"], -32603);
    assert!(authorizer.metrics().encode().contains(
        r#"authz_list_filtering_total{method="tools/list",outcome="refused_unparseable"} 1"#
    ));
}
