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
