use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, attribute_context};

use super::*;
use crate::{
    authorizer::CacheUse,
    errors::{Endpoint, TokenError},
    policy::{Forbidden, Grant, Refusal},
    principal::{Parts, Principal, TokenSource},
    test_support,
};

const CONFIG: &str = r#"
[google]
client_ids = ["a.apps.googleusercontent.com"]
issuer = "http://127.0.0.1:9"
[access]
domains = ["example.com"]
[resource]
url = "https://mcp.example.com/mcp"
"#;

fn config(env: &[(&str, &str)]) -> Config {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load(Some(CONFIG), env).unwrap()
}

fn responses(config: &Config) -> Responses {
    Responses {
        email_header: config.headers.email.clone(),
        user_header: config.headers.user.clone(),
        outage: config.envoy.outage_response,
    }
}

fn principal(email: Option<&str>) -> Arc<Principal> {
    Arc::new(Principal::new(Parts {
        sub: "1234",
        email,
        email_verified: true,
        hosted_domain: Some("example.com"),
        expires_at: u64::MAX,
        source: TokenSource::GoogleIdToken,
        session: None,
    }))
}

fn grant() -> Arc<Grant> {
    Arc::new(Grant {
        policy: Arc::from("default"),
        rule: Arc::from("policy"),
        group: None,
    })
}

fn refusal(why: Forbidden) -> Arc<Refusal> {
    Arc::new(Refusal {
        policy: Arc::from("grafana"),
        rule: Arc::from("destructive"),
        why,
        group: Some(Arc::from("sre@example.com")),
    })
}

fn render(verdict: Verdict) -> CheckResponse {
    let config = config(&[]);
    responses(&config).render(
        &Decision {
            verdict,
            cache: CacheUse::Miss,
            resource: crate::resource::Resources::from_config(&config)
                .default_resource()
                .clone(),
        },
        None,
    )
}

fn denied(response: &CheckResponse) -> (i32, HashMap<String, String>, serde_json::Value) {
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("not a denied response: {response:?}");
    };
    let headers = denied
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| (h.key.clone(), h.value.clone()))
        .collect();
    let body = serde_json::from_str(&denied.body).unwrap();
    (denied.status.as_ref().unwrap().code, headers, body)
}

const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

#[test]
fn allow_sets_identity_with_overwrite_and_strips_authorization() {
    let response = render(Verdict::Allow(principal(Some("ada@example.com")), grant()));
    assert_eq!(response.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not ok: {response:?}");
    };
    let set: HashMap<_, _> = ok
        .headers
        .iter()
        .map(|h| {
            let header = h.header.as_ref().unwrap();
            assert_eq!(
                h.append_action,
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32
            );
            (header.key.as_str(), header.value.as_str())
        })
        .collect();
    assert_eq!(set["x-auth-request-email"], "ada@example.com");
    assert_eq!(set["x-auth-request-user"], "1234");
    assert_eq!(ok.headers_to_remove, ["authorization"]);
}

#[test]
fn allow_without_email_removes_any_client_copy() {
    let response = render(Verdict::Allow(principal(None), grant()));
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("not ok");
    };
    assert!(
        ok.headers_to_remove
            .contains(&"x-auth-request-email".to_string())
    );
    assert!(ok.headers_to_remove.contains(&"authorization".to_string()));
}

#[test]
fn missing_token_is_401_without_error_code() {
    let response = render(Verdict::Unauthenticated(Unauthenticated::Credential(
        CredentialError::Missing,
    )));
    let (status, headers, body) = denied(&response);
    assert_eq!(status, 401);
    assert_eq!(
        response.status.unwrap().code,
        tonic::Code::Unauthenticated as i32
    );
    assert_eq!(
        headers["www-authenticate"],
        format!(r#"Bearer resource_metadata="{METADATA}""#)
    );
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(headers["cache-control"], "no-store");
}

#[test]
fn invalid_tokens_are_401_invalid_token() {
    let verdicts = [
        Verdict::Unauthenticated(Unauthenticated::Token(TokenError::Expired)),
        Verdict::Unauthenticated(Unauthenticated::Token(TokenError::BadSignature)),
        Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::TooLong)),
        Verdict::Unauthenticated(Unauthenticated::Credential(CredentialError::NotBearer)),
    ];
    for verdict in verdicts {
        let (status, headers, body) = denied(&render(verdict.clone()));
        assert_eq!(status, 401, "{verdict:?}");
        assert_eq!(
            headers["www-authenticate"],
            format!(r#"Bearer resource_metadata="{METADATA}", error="invalid_token""#)
        );
        assert_eq!(body["error"], "invalid_token");
        assert!(body["error_description"].as_str().unwrap().len() > 5);
    }
}

#[test]
fn token_in_query_is_400_invalid_request() {
    let response = render(Verdict::Unauthenticated(Unauthenticated::Credential(
        CredentialError::InQueryString,
    )));
    let (status, headers, body) = denied(&response);
    assert_eq!(status, 400);
    assert!(headers["www-authenticate"].contains(r#"error="invalid_request""#));
    assert_eq!(body["error"], "invalid_request");
}

#[test]
fn forbidden_is_a_plain_403_naming_the_policy_not_the_groups() {
    let response = render(Verdict::Forbidden(
        principal(Some("a@example.com")),
        refusal(Forbidden::NotInGroups),
    ));
    assert_eq!(
        response.status.as_ref().unwrap().code,
        tonic::Code::PermissionDenied as i32
    );
    let (status, headers, body) = denied(&response);
    assert_eq!(status, 403);
    // No challenge: an MCP client would answer insufficient_scope with a futile new sign-in.
    assert!(!headers.contains_key("www-authenticate"), "{headers:?}");
    assert_eq!(body["error"], "access_denied");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("group")
    );
    assert_eq!(body["policy"], "grafana");
    assert!(!body.to_string().contains("sre@"), "{body}");
}

#[test]
fn outage_is_an_error_never_a_denial() {
    let error = BackendError {
        endpoint: Endpoint::Tokeninfo,
        problem: "HTTP 503".into(),
    };
    let status = responses(&config(&[])).outage(&error).unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);

    let response = responses(&config(&[(
        "AUTHZ_ENVOY__OUTAGE_RESPONSE",
        "error-response",
    )]))
    .outage(&error)
    .unwrap();
    let Some(HttpResponse::ErrorResponse(error_response)) = &response.http_response else {
        panic!("not an error response: {response:?}");
    };
    assert_eq!(error_response.status.as_ref().unwrap().code, 503);
    assert_ne!(response.status.unwrap().code, 0);
}

fn check_request(headers: &[(&str, &str)], path: &str) -> CheckRequest {
    test_support::check_request(attribute_context::HttpRequest {
        id: "req-1".into(),
        path: path.into(),
        headers: test_support::headers(headers),
        ..Default::default()
    })
}

/// Through the real service: decisions that need no network, and an outage while discovery
/// has not completed (the configured issuer is unreachable).
#[tokio::test]
async fn service_decides_without_google_and_reports_outage_when_needed() {
    let config = config(&[]);
    let google = crate::google::Google::new(&config).unwrap();
    let service = CheckService::new(&config, Arc::new(Authorizer::new(&config, google, None)));

    let response = service
        .check(Request::new(check_request(&[], "/mcp")))
        .await
        .unwrap();
    assert_eq!(denied(response.get_ref()).0, 401);

    let response = service
        .check(Request::new(check_request(
            &[("authorization", "Bearer x")],
            "/mcp?access_token=x",
        )))
        .await
        .unwrap();
    assert_eq!(denied(response.get_ref()).0, 400);

    // A mesh that does not normalize paths: a path the upstream reads as another one is a
    // 400 before any token is looked at, so it can never be judged under the wrong policy.
    for confused in [
        "/%74ools/mcp",
        "//tools/mcp",
        "/x/../tools/mcp",
        "/tools%2Fmcp",
    ] {
        let response = service
            .check(Request::new(check_request(
                &[("authorization", "Bearer x")],
                confused,
            )))
            .await
            .unwrap();
        let (status, _, body) = denied(response.get_ref());
        assert_eq!(status, 400, "{confused}");
        assert_eq!(body["error"], "invalid_request");
    }

    let junk = format!("Bearer {}", "a".repeat(64 * 1024));
    let response = service
        .check(Request::new(check_request(
            &[("authorization", &junk)],
            "/mcp",
        )))
        .await
        .unwrap();
    assert_eq!(denied(response.get_ref()).0, 401);

    let outage = service
        .check(Request::new(check_request(
            &[("authorization", "Bearer ya29.abc")],
            "/mcp",
        )))
        .await
        .unwrap_err();
    assert_eq!(outage.code(), tonic::Code::Unavailable);
}

#[test]
fn raw_header_map_is_read_and_duplicates_are_joined() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let http = attribute_context::HttpRequest {
        header_map: Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "Authorization".into(),
                    value: String::new(),
                    raw_value: b"Bearer a".to_vec(),
                },
                HeaderValue {
                    key: "authorization".into(),
                    value: "Bearer b".into(),
                    raw_value: vec![],
                },
            ],
        }),
        ..Default::default()
    };
    assert_eq!(&*authorization_header(&http).unwrap(), b"Bearer a,Bearer b");
}

#[test]
fn request_ids_are_bounded_at_a_character_boundary() {
    assert_eq!(prefix("abc", 128), "abc");
    assert_eq!(prefix(&"x".repeat(500), 128).len(), 128);
    let accented = "é".repeat(100); // two bytes each
    assert_eq!(prefix(&accented, 127).len(), 126);
}

fn mcp_metadata(fields: serde_json::Value) -> AttributeContext {
    use envoy_types::pb::{
        envoy::config::core::v3::Metadata,
        google::protobuf::{ListValue, Struct},
    };
    fn value(json: &serde_json::Value) -> Value {
        Value {
            kind: Some(match json {
                serde_json::Value::Null => Kind::NullValue(0),
                serde_json::Value::Bool(b) => Kind::BoolValue(*b),
                serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
                serde_json::Value::String(s) => Kind::StringValue(s.clone()),
                serde_json::Value::Array(items) => Kind::ListValue(ListValue {
                    values: items.iter().map(value).collect(),
                }),
                serde_json::Value::Object(map) => Kind::StructValue(Struct {
                    fields: map.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
                }),
            }),
        }
    }
    let Kind::StructValue(namespace) = value(&fields).kind.unwrap() else {
        panic!("metadata must be an object");
    };
    AttributeContext {
        metadata_context: Some(Metadata {
            filter_metadata: [(MCP_METADATA_NAMESPACE.to_string(), namespace)].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn http(headers: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

#[test]
fn mcp_method_and_tool_come_from_the_mcp_filter_metadata() {
    use serde_json::json;
    let current = http(&[
        ("mcp-protocol-version", CURRENT_PROTOCOL),
        ("mcp-method", "tools/call"),
        ("mcp-name", "delete_dashboard"),
    ]);
    // The layout Envoy 1.40's MCP filter emits for a tools/call.
    let call = mcp_metadata(json!({
        "id": 1, "is_mcp_request": true, "jsonrpc": "2.0", "method": "tools/call",
        "params": {"name": "delete_dashboard"}, "status": "mcp_ok",
    }));
    assert_eq!(
        mcp_call(&call, Some(&current)),
        McpCall {
            method: Some("tools/call"),
            tool: Some("delete_dashboard"),
            headers_disagree: false,
            protocol_too_old: false,
        }
    );
    // Without the version header: an older revision, whose headers nothing verifies.
    let old = mcp_call(&call, None);
    assert!(old.protocol_too_old && !old.headers_disagree);
    assert_eq!(old.tool, Some("delete_dashboard"));
    // What a prompts/get or resources/read names is read too (rules can be about it); a
    // name on another method is not.
    let prompt = mcp_metadata(json!({"method": "prompts/get", "params": {"name": "x"}}));
    assert_eq!(mcp_call(&prompt, None).tool, Some("x"));
    let resource =
        mcp_metadata(json!({"method": "resources/read", "params": {"uri": "file:///a"}}));
    assert_eq!(mcp_call(&resource, None).tool, Some("file:///a"));
    let other = mcp_metadata(json!({"method": "tools/list", "params": {"name": "x"}}));
    assert_eq!(mcp_call(&other, None).tool, None);
    // Wrong types read as absent (and the policy fails closed on absent).
    let absent = McpCall {
        protocol_too_old: true,
        ..McpCall::default()
    };
    let odd = mcp_metadata(json!({"method": 7, "params": {"name": ["a"]}}));
    assert_eq!(mcp_call(&odd, None), absent);
    let odd_tool = mcp_metadata(json!({"method": "tools/call", "params": "delete_x"}));
    assert_eq!(mcp_call(&odd_tool, None).tool, None);
    assert_eq!(mcp_call(&AttributeContext::default(), None), absent);
}

/// A body the filter could not read whole or well-formed is unclassified: its metadata may name
/// `read_x` while the upstream reads a later `"name":"delete_x"` past the filter's limit.
#[test]
fn a_truncated_or_malformed_body_is_unclassified() {
    use serde_json::json;
    for metadata in [
        json!({"method": "tools/call", "params": {"name": "read_x"}, "status": "mcp_ok",
               "is_exceeding_limit": true}),
        json!({"method": "tools/call", "params": {"name": "read_x"},
               "status": "mcp_duplicate_keys"}),
        json!({"method": "tools/call", "params": {"name": "read_x"},
               "status": "mcp_body_too_large"}),
    ] {
        let attributes = mcp_metadata(metadata.clone());
        let call = mcp_call(&attributes, None);
        assert_eq!((call.method, call.tool), (None, None), "{metadata}");
    }
}

#[test]
fn mcp_headers_must_repeat_the_body() {
    use serde_json::json;
    let call_delete = mcp_metadata(json!({
        "method": "tools/call", "params": {"name": "delete_x"}, "status": "mcp_ok",
    }));
    let list = mcp_metadata(json!({"method": "tools/list", "status": "mcp_ok"}));
    let v = ("mcp-protocol-version", CURRENT_PROTOCOL);
    let disagree = |metadata: &AttributeContext, headers: &[(&str, &str)]| {
        mcp_call(metadata, Some(&http(headers))).headers_disagree
    };
    // Both directions: the header names a harmless method or tool, the body the other.
    assert!(disagree(&call_delete, &[v, ("mcp-method", "tools/list")]));
    assert!(disagree(
        &list,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "delete_x")]
    ));
    assert!(disagree(
        &call_delete,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "read_x")]
    ));
    // Repeated headers arrive comma-joined: never one value.
    assert!(disagree(
        &call_delete,
        &[
            v,
            ("mcp-method", "tools/call"),
            ("mcp-name", "read_x,delete_x")
        ]
    ));
    // Case matters in MCP names and methods.
    assert!(disagree(
        &call_delete,
        &[v, ("mcp-method", "TOOLS/CALL"), ("mcp-name", "delete_x")]
    ));
    // Required by the current revision.
    assert!(disagree(&call_delete, &[v, ("mcp-name", "delete_x")]));
    assert!(disagree(&call_delete, &[v, ("mcp-method", "tools/call")]));
    // Base64 names decode before comparing; broken base64 never matches.
    let b64 = |name: &str| {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(name)
        )
    };
    assert!(!disagree(
        &call_delete,
        &[
            v,
            ("mcp-method", "tools/call"),
            ("mcp-name", &b64("delete_x"))
        ]
    ));
    assert!(disagree(
        &call_delete,
        &[
            v,
            ("mcp-method", "tools/call"),
            ("mcp-name", &b64("read_x"))
        ]
    ));
    assert!(disagree(
        &call_delete,
        &[
            v,
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?%%?=")
        ]
    ));
    // Agreeing headers; a name header on a method without one is ignored.
    assert!(!disagree(
        &call_delete,
        &[v, ("mcp-method", "tools/call"), ("mcp-name", "delete_x")]
    ));
    assert!(!disagree(
        &list,
        &[v, ("mcp-method", "tools/list"), ("mcp-name", "x")]
    ));
    // An older revision need not send them, but what it sends must agree.
    assert!(!disagree(&call_delete, &[]));
    assert!(disagree(
        &call_delete,
        &[
            ("mcp-protocol-version", "2025-11-25"),
            ("mcp-name", "read_x")
        ]
    ));
}

#[test]
fn a_bad_mcp_request_is_a_json_rpc_400_without_a_challenge() {
    let config = config(&[]);
    let render = |why: Forbidden, protocol: Option<&str>| {
        let refusal = Refusal {
            policy: Arc::from("grafana"),
            rule: Arc::from("policy"),
            why,
            group: None,
        };
        responses(&config).render(
            &Decision {
                verdict: Verdict::Forbidden(principal(Some("ada@example.com")), Arc::new(refusal)),
                cache: CacheUse::Miss,
                resource: crate::resource::Resources::from_config(&config)
                    .default_resource()
                    .clone(),
            },
            protocol,
        )
    };
    let (status, headers, body) = denied(&render(Forbidden::McpProtocolTooOld, Some("2025-11-25")));
    assert_eq!(status, 400);
    assert!(!headers.contains_key("www-authenticate"));
    assert_eq!(body["error"]["code"], -32022);
    assert_eq!(body["error"]["data"]["supported"][0], CURRENT_PROTOCOL);
    assert_eq!(body["error"]["data"]["requested"], "2025-11-25");
    // Nothing but a version-shaped value is echoed.
    let (_, _, body) = denied(&render(
        Forbidden::McpProtocolTooOld,
        Some("<script>x</script>"),
    ));
    assert_eq!(body["error"]["data"]["requested"], "");
    let (status, _, body) = denied(&render(Forbidden::McpHeadersMismatch, None));
    assert_eq!(
        (status, body["error"]["code"].as_i64()),
        (400, Some(-32020))
    );
}
