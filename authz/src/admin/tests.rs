use tonic::Code;

use super::{
    cli::{AdminArgs, AdminCommand, CliError},
    pb::{ConfigVersionRequest, InvalidateUserRequest, admin_server::Admin},
    *,
};
use crate::{config::Config, google::Google, reload::Source};

fn service() -> AdminService {
    let config = Config::load(
        Some(
            r#"
[google]
client_ids = ["test.apps.googleusercontent.com"]
[access]
domains = ["example.com"]
[resource]
url = "https://mcp.example.com/mcp"
"#,
        ),
        [],
    )
    .unwrap();
    let google = Google::new(&config).unwrap();
    let authorizer = Arc::new(Authorizer::new(&config, google, None));
    let source = Source {
        path: None,
        env: Vec::new(),
    };
    let secrets = crate::secrets::Secrets::new(&config.secrets, Arc::default());
    let reloader = Arc::new(Reloader::new(
        source,
        config,
        None,
        authorizer.clone(),
        secrets,
    ));
    AdminService::new(authorizer, reloader, None)
}

#[tokio::test]
async fn invalidate_user_wants_an_email() {
    let service = service();
    for email in ["", "  ", "not-an-email"] {
        let request = Request::new(InvalidateUserRequest {
            email: email.into(),
        });
        let status = service.invalidate_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?}");
    }
    let request = Request::new(InvalidateUserRequest {
        email: "ada@example.com".into(),
    });
    let removed = service.invalidate_user(request).await.unwrap().into_inner();
    assert_eq!(removed, pb::InvalidateUserResponse::default());
}

#[tokio::test]
async fn config_version_reports_the_fingerprint_and_source() {
    let service = service();
    let request = Request::new(ConfigVersionRequest {});
    let version = service.config_version(request).await.unwrap().into_inner();
    assert_eq!(version.fingerprint.len(), 64);
    assert!(version.version.starts_with(&version.fingerprint[..12]));
    assert_eq!(version.source, "(environment only)");
    assert_eq!(version.reloads, 0);
    assert_eq!(version.last_reload_error, "");
}

#[tokio::test]
async fn the_cli_says_when_the_admin_api_is_unreachable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = AdminArgs {
        addr: format!("127.0.0.1:{port}"),
        token_file: None,
        command: AdminCommand::Stats,
    };
    let error = cli::run(&args).await.unwrap_err();
    assert!(matches!(error, CliError::Unreachable { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot reach the admin API at 127.0.0.1:{port}")),
        "{error}"
    );
}

/// With listen.admin_token set, only a caller presenting it is served: no token and a wrong
/// one are refused before the service runs; the CLI sends the token from its file.
#[tokio::test]
async fn the_admin_api_serves_only_callers_with_its_token() {
    use crate::{secret_string::SecretString, secrets::SecretValue};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = SecretValue::fixed(
        "listen.admin_token",
        SecretString::new("s3cret-admin-token"),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AdminServer::with_interceptor(
                service(),
                authenticate(Some(token)),
            ))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.cancelled_owned(),
            ),
    );
    let dir = std::env::temp_dir().join(format!("authz-admin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |token_file: Option<std::path::PathBuf>| {
        let args = AdminArgs {
            addr: addr.to_string(),
            token_file,
            command: AdminCommand::InvalidateUser {
                email: "ada@example.com".into(),
            },
        };
        async move { cli::run(&args).await }
    };
    let refused = run(None).await.unwrap_err();
    assert!(matches!(refused, CliError::Refused(_)), "{refused:?}");
    assert!(
        refused.to_string().contains("listen.admin_token"),
        "{refused}"
    );
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "s3cret-admin-tokem\n").unwrap();
    assert!(matches!(run(Some(wrong)).await, Err(CliError::Refused(_))));
    let right = dir.join("right");
    std::fs::write(&right, "s3cret-admin-token\n").unwrap();
    let done = run(Some(right)).await.unwrap();
    assert!(done.starts_with("invalidated ada@example.com"), "{done}");
    let missing = run(Some(dir.join("missing"))).await.unwrap_err();
    assert!(matches!(missing, CliError::Token { .. }), "{missing:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
