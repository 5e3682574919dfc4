//! Graceful shutdown: a check in flight when shutdown starts still gets authz's own answer.

use std::time::Duration;

use authz::{Listeners, config::Config};
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context, authorization_client::AuthorizationClient,
};
use standin::{AccessTokenSpec, Endpoint, FaultMode, FaultSpec, Options, StandIn};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn in_flight_checks_finish_after_shutdown_begins() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    let issuer = standin.issuer().to_string();
    let config = Config::load(
        None,
        [
            ("AUTHZ_LISTEN__GRPC", "127.0.0.1:0".to_string()),
            ("AUTHZ_LISTEN__HTTP", "127.0.0.1:0".to_string()),
            ("AUTHZ_LISTEN__ADMIN", "127.0.0.1:0".to_string()),
            ("AUTHZ_GOOGLE__CLIENT_IDS", "it.apps".into()),
            ("AUTHZ_GOOGLE__ISSUER", issuer.clone()),
            ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo")),
            ("AUTHZ_GOOGLE__REQUEST_TIMEOUT", "700ms".into()),
            ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
            ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    )
    .unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let (grpc, http) = listeners.local_addrs().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(authz::run(config, listeners, shutdown.clone()));
    for _ in 0..200 {
        let ready = reqwest::get(format!("http://{http}/readyz")).await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // tokeninfo hangs, so this check takes the full 700 ms Google timeout.
    standin
        .set_fault(&FaultSpec {
            mode: FaultMode::Hang,
            status: None,
            endpoints: Some(vec![Endpoint::Tokeninfo]),
        })
        .unwrap();
    let token = standin.mint_access_token(AccessTokenSpec {
        sub: "1".into(),
        aud: "it.apps".into(),
        ..Default::default()
    });
    let mut client = AuthorizationClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    path: "/mcp".into(),
                    headers: [("authorization".to_string(), format!("Bearer {token}"))].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let in_flight = tokio::spawn(async move { client.check(request).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.cancel();

    // The answer is authz's own ("cannot decide"), not a connection torn down mid-call.
    let status = in_flight.await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("identity provider unavailable"),
        "{status:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // And nothing listens any more.
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
}
