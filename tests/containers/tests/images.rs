//! The locally built images (scripts/build-images), wired together on a private network with
//! testcontainers: Envoy (TLS) -> authz -> the demo MCP server, with the Google stand-in. A real
//! MCP exchange goes through Envoy with a minted ID token, and is refused without one.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use container_tests::{process_uid, require_images, root, run, sh, unique};
use serde_json::{Value, json};
use testcontainers::{
    ContainerAsync, GenericImage, ImageExt,
    core::{IntoContainerPort, WaitFor},
    runners::AsyncRunner,
};

const CLIENT_ID: &str = "container-test.apps.googleusercontent.com";
const PROTOCOL: &str = "2025-06-18";

#[test]
fn images_run_as_non_root_users() {
    require_images();
    for image in container_tests::IMAGES {
        let user = sh(
            "docker",
            &["image", "inspect", "--format", "{{.Config.User}}", image],
        );
        assert_eq!(user.trim(), "65532:65532", "{image} runs as {user:?}");
    }
}

#[test]
fn mcp_through_envoy_and_authz_containers() {
    run("mcp_through_envoy_and_authz_containers", stack);
}

async fn stack() {
    require_images();
    let network = unique("authz-ct");
    let name = |service: &str| format!("{network}-{service}");
    let issuer = format!("http://{}:8080", name("standin"));

    // The three backends start together: authz retries discovery until the stand-in is up.
    let standin = GenericImage::new("authz-standin", "local")
        .with_exposed_port(8080.tcp())
        .with_wait_for(WaitFor::message_on_stdout("standin listening"))
        .with_network(&network)
        .with_container_name(name("standin"))
        .with_cmd(["--listen", "0.0.0.0:8080", "--issuer", &issuer])
        .start();
    let mcp = GenericImage::new("authz-demo-mcp", "local")
        .with_wait_for(WaitFor::healthcheck())
        .with_network(&network)
        .with_container_name(name("mcp"))
        .with_startup_timeout(Duration::from_secs(60))
        .start();
    // The image's HEALTHCHECK is `authz healthcheck`: waiting for healthy proves it works.
    let authz = GenericImage::new("authz", "local")
        .with_wait_for(WaitFor::healthcheck())
        .with_network(&network)
        .with_container_name(name("authz"))
        .with_env_var("AUTHZ_GOOGLE__CLIENT_IDS", CLIENT_ID)
        .with_env_var("AUTHZ_GOOGLE__ISSUER", &issuer)
        .with_env_var("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{issuer}/tokeninfo"))
        .with_env_var("AUTHZ_ACCESS__DOMAINS", "example.com")
        .with_env_var("AUTHZ_RESOURCE__URL", "https://localhost/mcp")
        .with_readonly_rootfs(true)
        .with_startup_timeout(Duration::from_secs(60))
        .start();
    let (standin, mcp, authz) = tokio::join!(standin, mcp, authz);
    let standin = standin.expect("starting the stand-in");
    let mcp = mcp.expect("starting the demo MCP server");
    let authz = authz.expect("starting authz");

    let (cert, key) = self_signed_cert();
    let envoy = GenericImage::new("authz-envoy", "local")
        .with_exposed_port(8443.tcp())
        .with_network(&network)
        .with_container_name(name("envoy"))
        .with_copy_to("/etc/envoy/envoy.yaml", envoy_config(&name).into_bytes())
        .with_copy_to("/etc/envoy/tls/tls.crt", cert)
        .with_copy_to("/etc/envoy/tls/tls.key", key)
        .start()
        .await
        .expect("starting Envoy");

    let url = format!(
        "https://localhost:{}/mcp",
        envoy.get_host_port_ipv4(8443).await.expect("Envoy's port")
    );
    let standin_url = format!(
        "http://127.0.0.1:{}",
        standin
            .get_host_port_ipv4(8080)
            .await
            .expect("stand-in port")
    );
    let client = reqwest::Client::builder()
        // The dev certificate is self-signed.
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");

    // Envoy admits checks once its health check has seen authz ready.
    let started = Instant::now();
    let refused = loop {
        let response = mcp_post(&client, &url, None, &initialize()).await;
        match response {
            Ok(response) if response.status() == 401 => break response,
            _ if started.elapsed() > Duration::from_secs(30) => {
                dump_logs(&[&envoy, &authz]).await;
                panic!("Envoy never answered 401 without a token: {response:?}");
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let challenge = refused
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        challenge.starts_with("Bearer resource_metadata="),
        "{challenge}"
    );

    let token = id_token(&client, &standin_url, &issuer).await;
    let initialized = mcp_call(&client, &url, &token, &initialize()).await;
    assert_eq!(
        initialized["result"]["serverInfo"]["name"], "demo-dashboards",
        "{initialized}"
    );
    let tools = mcp_call(
        &client,
        &url,
        &token,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {tools}"))
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(
        names.contains(&"list_dashboards") && names.contains(&"whoami"),
        "{names:?}"
    );
    let whoami = mcp_call(
        &client,
        &url,
        &token,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": "whoami", "arguments": {}}}),
    )
    .await;
    let seen: Value = serde_json::from_str(
        whoami["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("whoami: {whoami}")),
    )
    .expect("whoami returns JSON");
    assert_eq!(seen["x-auth-request-email"], "ada@example.com", "{seen}");
    assert_eq!(
        seen["authorization"],
        Value::Null,
        "the token reached the upstream"
    );

    let with_bad_token = mcp_post(&client, &url, Some("not-a-token"), &initialize())
        .await
        .expect("request with a bad token");
    assert_eq!(with_bad_token.status(), 401);

    for container in [standin.id(), mcp.id(), authz.id(), envoy.id()] {
        assert_eq!(process_uid(container), 65532, "container {container}");
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "container-tests", "version": "0"}}})
}

async fn mcp_post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await
}

async fn mcp_call(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    let response = mcp_post(client, url, Some(token), body)
        .await
        .expect("MCP request");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{} -> {status}: {text}", body["method"]);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} -> not JSON ({e}): {text}", body["method"]))
}

async fn id_token(client: &reqwest::Client, standin: &str, issuer: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "iss": issuer, "aud": CLIENT_ID, "azp": CLIENT_ID, "sub": "110169484474386276334",
        "email": "ada@example.com", "email_verified": true, "hd": "example.com",
        "iat": now, "exp": now + 3600,
    });
    let minted: Value = client
        .post(format!("{standin}/_standin/id_token"))
        .json(&json!({ "claims": claims }))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("minting an ID token")
        .json()
        .await
        .expect("stand-in answer");
    minted["token"].as_str().expect("token").to_string()
}

/// envoy/local.yaml (the config the end-to-end tests prove) with this network's names.
fn envoy_config(name: &dyn Fn(&str) -> String) -> String {
    let template = std::fs::read_to_string(root().join("envoy/local.yaml")).expect("local.yaml");
    let values: HashMap<&str, String> = HashMap::from([
        ("ADMIN_PORT", "9901".into()),
        ("LISTEN_ADDRESS", "0.0.0.0".into()),
        ("LISTEN_PORT", "8443".into()),
        ("TLS_CERT", "/etc/envoy/tls/tls.crt".into()),
        ("TLS_KEY", "/etc/envoy/tls/tls.key".into()),
        ("AUTHZ_HOST", name("authz")),
        ("AUTHZ_GRPC_PORT", "9191".into()),
        ("AUTHZ_HTTP_PORT", "9192".into()),
        ("UPSTREAM_HOST", name("mcp")),
        ("UPSTREAM_PORT", "8000".into()),
    ]);
    let mut config = template;
    for (key, value) in values {
        config = config.replace(&format!("${{{key}}}"), &value);
    }
    assert!(!config.contains("${"), "unfilled placeholder in local.yaml");
    config
}

/// A throwaway certificate for localhost, made with openssl (which the suite already needs).
fn self_signed_cert() -> (Vec<u8>, Vec<u8>) {
    let dir = std::env::temp_dir().join(unique("authz-ct-tls"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    sh(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            cert.to_str().expect("utf-8 path"),
        ],
    );
    let pair = (
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    );
    let _ = std::fs::remove_dir_all(&dir);
    pair
}

async fn dump_logs(containers: &[&ContainerAsync<GenericImage>]) {
    for container in containers {
        let out = container.stdout_to_vec().await.unwrap_or_default();
        let err = container.stderr_to_vec().await.unwrap_or_default();
        eprintln!(
            "--- {} ---\n{}{}",
            container.id(),
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        );
    }
}
