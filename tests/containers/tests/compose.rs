//! compose.yaml with the docker-compose this machine has: it validates, the dev profile comes up
//! from the local images and serves an authorized MCP request through Envoy, and the production
//! authz refuses to start without real settings.

use std::{
    net::TcpListener,
    process::Command,
    time::{Duration, Instant},
};

use container_tests::{require_images, root, sh, unique};
use serde_json::{Value, json};

/// The client id in docker/dev/authz.toml.
const DEV_CLIENT_ID: &str = "dev-client.apps.googleusercontent.com";

#[test]
fn compose_file_validates() {
    sh(
        "docker-compose",
        &["-f", "compose.yaml", "config", "--quiet"],
    );
}

#[test]
fn the_prod_profile_has_no_stand_in() {
    require_images();
    let tls = std::env::temp_dir().join(unique("authz-ct-tls"));
    std::fs::create_dir_all(&tls).expect("temp dir");
    let project = Project {
        name: unique("authzct").replace('-', ""),
        env: vec![
            ("AUTHZ_HTTPS_PORT", free_port().to_string()),
            ("AUTHZ_TLS_DIR", tls.display().to_string()),
        ],
    };
    project.must(&["--profile", "prod", "up", "--no-start"]);
    let mut services: Vec<String> = sh(
        "docker",
        &[
            "ps",
            "--all",
            "--filter",
            &format!("label=com.docker.compose.project={}", project.name),
            "--format",
            "{{.Label \"com.docker.compose.service\"}}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect();
    services.sort();
    assert_eq!(services, ["authz", "envoy", "help", "mcp"]);
    drop(project);
    let _ = std::fs::remove_dir_all(&tls);
}

/// `docker-compose down` for a project, whatever happens to the test.
struct Project {
    name: String,
    env: Vec<(&'static str, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker-compose")
            .args(["-f", "compose.yaml", "-p", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(root())
            .output()
            .expect("running docker-compose")
    }

    fn must(&self, args: &[&str]) -> String {
        let output = self.compose(args);
        assert!(
            output.status.success(),
            "docker-compose {} failed:\n{}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(
                &self
                    .compose(&["--profile", "dev", "logs", "--no-color"])
                    .stdout
            )
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&[
            "--profile",
            "dev",
            "--profile",
            "prod",
            "down",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "5",
        ]);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn compose_dev_profile_serves_an_authorized_mcp_request() {
    require_images();
    let (https, standin) = (free_port(), free_port());
    let project = Project {
        name: unique("authzct").replace('-', ""),
        env: vec![
            ("AUTHZ_HTTPS_PORT", https.to_string()),
            ("AUTHZ_STANDIN_PORT", standin.to_string()),
        ],
    };

    // Production: no client ids, no domains, no resource URL -> authz refuses to start (exit 2).
    let prod = project.compose(&["--profile", "prod", "run", "--rm", "--no-deps", "authz"]);
    assert_eq!(
        prod.status.code(),
        Some(2),
        "prod authz without settings: {}{}",
        String::from_utf8_lossy(&prod.stdout),
        String::from_utf8_lossy(&prod.stderr)
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&prod.stdout),
        String::from_utf8_lossy(&prod.stderr)
    );
    assert!(said.contains("config: "), "{said}");

    project.must(&["--profile", "dev", "up", "-d"]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let url = format!("https://localhost:{https}/mcp");
        let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "compose-test", "version": "0"}}});
        let post = |token: Option<String>| {
            let mut request = client
                .post(&url)
                .header("accept", "application/json, text/event-stream")
                .json(&initialize);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };

        let started = Instant::now();
        loop {
            match post(None).await {
                Ok(response) if response.status() == 401 => break,
                other if started.elapsed() > Duration::from_secs(60) => {
                    panic!(
                        "the dev stack never refused an anonymous request: {other:?}\n{}",
                        project.must(&["--profile", "dev", "logs", "--no-color"])
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }

        let minted: Value = client
            .post(format!("http://127.0.0.1:{standin}/_standin/access_token"))
            .json(
                &json!({"sub": "110169484474386276334", "email": "ada@example.com",
                          "email_verified": true, "hd": "example.com",
                          "aud": DEV_CLIENT_ID, "expires_in": 3599}),
            )
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("minting an access token at the stand-in")
            .json()
            .await
            .expect("stand-in answer");
        let token = minted["token"].as_str().expect("token").to_string();
        let response = post(Some(token)).await.expect("authorized request");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON-RPC answer");
        assert_eq!(
            body["result"]["serverInfo"]["name"], "demo-dashboards",
            "{body}"
        );
    });
}
