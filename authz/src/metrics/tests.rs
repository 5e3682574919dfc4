use envoy_types::{
    ext_authz::v3::pb::{Authorization, CheckRequest},
    pb::envoy::service::auth::v3::attribute_context,
};
use standin::AccessTokenSpec;

use super::*;
use crate::{authorizer::Authorizer, check::CheckService, principal::unix_now, test_support};

const CLIENT: &str = "metrics.apps.googleusercontent.com";

fn check_request(token: Option<&str>) -> tonic::Request<CheckRequest> {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let pairs: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    tonic::Request::new(test_support::check_request(
        attribute_context::HttpRequest {
            method: "GET".into(),
            path: "/mcp".into(),
            headers: test_support::headers(&pairs),
            ..Default::default()
        },
    ))
}

/// The sample line for `name{labels}`, if present: its value.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

/// Decisions driven through the real Check service against the Google stand-in, then scraped
/// through the real `/metrics` route.
#[tokio::test]
async fn decisions_cache_use_and_google_calls_are_counted_without_identities() {
    let metrics = Arc::new(Metrics::new());
    let ready = test_support::ready_google(CLIENT, metrics.clone()).await;
    let (standin, config, google) = (&ready.standin, &ready.config, ready.google.clone());
    let issuer = standin.issuer().to_string();
    let authorizer = Arc::new(Authorizer::new(config, google, None));
    let service = CheckService::new(config, authorizer.clone());

    let now = unix_now();
    let id_token = standin.mint_id_token(&serde_json::json!({
        "iss": issuer, "aud": CLIENT, "azp": CLIENT, "sub": "42",
        "email": "ada@example.com", "email_verified": true, "hd": "example.com",
        "iat": now, "exp": now + 600,
    }));
    let outsider = standin.mint_access_token(AccessTokenSpec {
        sub: "7".into(),
        email: Some("eve@elsewhere.test".into()),
        hd: Some("elsewhere.test".into()),
        aud: CLIENT.into(),
        ..Default::default()
    });
    for token in [Some(&*id_token), Some(&*id_token), Some(&*outsider), None] {
        service.check(check_request(token)).await.unwrap();
    }

    let scrape = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = scrape.local_addr().unwrap();
    authorizer.verdicts().flush().await;
    authorizer.identities().flush().await;
    tokio::spawn(
        axum::serve(scrape, crate::scrape_router(metrics, authorizer, None)).into_future(),
    );
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], CONTENT_TYPE_OPENMETRICS);
    let text = response.text().await.unwrap();

    let expected = [
        (
            r#"authz_decisions_total{decision="allow",reason="allowed",cache="miss"}"#,
            1.0,
        ),
        (
            r#"authz_decisions_total{decision="allow",reason="allowed",cache="hit"}"#,
            1.0,
        ),
        (
            r#"authz_decisions_total{decision="forbidden",reason="domain_not_allowed",cache="miss"}"#,
            1.0,
        ),
        (
            r#"authz_decisions_total{decision="unauthenticated",reason="missing_token",cache="bypass"}"#,
            1.0,
        ),
        (
            r#"authz_cache_requests_total{cache="verdict",result="hit"}"#,
            1.0,
        ),
        (
            r#"authz_cache_requests_total{cache="verdict",result="miss"}"#,
            2.0,
        ),
        (
            r#"authz_cache_requests_total{cache="verdict",result="bypass"}"#,
            1.0,
        ),
        (
            r#"authz_cache_requests_total{cache="identity",result="miss"}"#,
            2.0,
        ),
        (r#"authz_cache_entries{cache="verdict"}"#, 2.0),
        (r#"authz_cache_entries{cache="identity"}"#, 2.0),
        ("authz_check_duration_seconds_count", 4.0),
        (
            r#"authz_google_requests_total{endpoint="discovery",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"authz_google_requests_total{endpoint="jwks",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"authz_google_requests_total{endpoint="tokeninfo",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"authz_google_requests_total{endpoint="userinfo",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"authz_google_request_duration_seconds_count{endpoint="tokeninfo"}"#,
            1.0,
        ),
        (
            r#"authz_jwks_refreshes_total{trigger="scheduled",outcome="ok"}"#,
            1.0,
        ),
        (r#"authz_build_info{version=""#, 1.0),
    ];
    for (series, value) in expected {
        if series.ends_with('"') {
            assert!(text.contains(series), "{series} missing from:\n{text}");
            continue;
        }
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics:\n{text}");
    for secret in [
        &*id_token,
        &*outsider,
        "ada@example.com",
        "eve@elsewhere.test",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
    }
}

/// An outage counts as an undecided Check and names the failing endpoint.
#[test]
fn outages_count_by_endpoint() {
    let metrics = Metrics::new();
    let error = BackendError {
        endpoint: crate::errors::Endpoint::Tokeninfo,
        problem: "HTTP 503".into(),
    };
    metrics.outage(&error, Duration::from_millis(3));
    metrics.outage(&error, Duration::from_millis(3));
    let text = metrics.encode();
    assert_eq!(
        sample(&text, r#"authz_outages_total{endpoint="tokeninfo"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"authz_decisions_total{decision="unavailable",reason="backend_unavailable",cache="miss"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"authz_check_duration_seconds_bucket{le="0.005"}"#),
        Some(2.0)
    );
}

#[test]
fn http_statuses_map_to_outcomes() {
    let cases = [
        (200, Outcome::Ok),
        (204, Outcome::Ok),
        (400, Outcome::Rejected),
        (401, Outcome::Rejected),
        (404, Outcome::Rejected),
        (429, Outcome::Quota),
        (500, Outcome::ServerError),
        (503, Outcome::ServerError),
        (302, Outcome::ServerError),
    ];
    for (status, expected) in cases {
        let status = reqwest::StatusCode::from_u16(status).unwrap();
        assert_eq!(Outcome::of_status(status), expected, "{status}");
    }
}

/// Google's 403 `userRateLimitExceeded` is a quota error, not a refusal: counted as `quota`,
/// and the caller still reads the whole answer.
#[tokio::test]
async fn a_directory_rate_limit_answered_with_403_counts_as_quota() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = standin::StandIn::start(listener, standin::Options::default())
        .await
        .unwrap();
    standin
        .set_fault(&standin::FaultSpec {
            mode: standin::FaultMode::Quota,
            status: None,
            endpoints: Some(vec![standin::Endpoint::Directory]),
        })
        .unwrap();
    let metrics = Metrics::new();
    let url = format!(
        "{}/admin/directory/v1/groups/g@example.com/hasMember/a@example.com",
        standin.issuer()
    );
    let http = reqwest::Client::new();
    let response = metrics
        .google_http(GoogleEndpoint::Directory, http.get(&url).send())
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
    assert!(is_quota_body(&response.text().await.unwrap()));
    // A 403 that is a refusal stays `rejected`.
    standin
        .set_fault(&standin::FaultSpec {
            mode: standin::FaultMode::Error,
            status: Some(403),
            endpoints: Some(vec![standin::Endpoint::Directory]),
        })
        .unwrap();
    let refused = metrics
        .google_http(GoogleEndpoint::Directory, http.get(&url).send())
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    let text = metrics.encode();
    let count = |outcome: &str| {
        sample(
            &text,
            &format!("authz_google_requests_total{{endpoint=\"directory\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(count("quota"), Some(1.0), "{text}");
    assert_eq!(count("rejected"), Some(1.0), "{text}");
}
