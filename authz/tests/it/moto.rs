//! A local AWS Secrets Manager: moto's server from the project's `.venv`, on a free loopback
//! port, killed on drop. Secrets are created and changed through its API as plain JSON requests.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use authz::{
    config::SecretsConfig, metrics::Metrics, secret_string::SecretString, secrets::Secrets,
};

pub const REGION: &str = "us-east-1";
/// Any keys do: moto does not check signatures. The SDK needs some to sign with.
pub const ACCESS_KEY_ID: &str = "AKIAMOTOTEST";
pub const SECRET_ACCESS_KEY: &str = "moto-test-secret";

pub struct Moto {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Moto {
    pub async fn start() -> Moto {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the authz crate sits in the workspace")
            .to_path_buf();
        let server = root.join(".venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run scripts/python-env from the workspace root (it installs moto[server] from tests/requirements.txt)",
            server.display()
        );
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
        let mut moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        moto.wait_until_up().await;
        moto
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    async fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto_server exited at start-up: {status}");
            }
            let probe = self
                .http
                .get(format!("{}/moto-api/", self.url))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "moto_server did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One Secrets Manager action; the `Authorization` header only tells moto which service
    /// and region are meant (it checks no signature).
    pub async fn call(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .http
            .post(&self.url)
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header(
                "Authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/{REGION}/secretsmanager/aws4_request, SignedHeaders=host, Signature=0"
                ),
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "{action}: {status} {answer}");
        answer
    }

    /// Creates a secret and returns its ARN.
    pub async fn create(&self, name: &str, value: &str) -> String {
        let answer = self
            .call(
                "CreateSecret",
                serde_json::json!({ "Name": name, "SecretString": value }),
            )
            .await;
        answer["ARN"].as_str().unwrap().to_string()
    }

    /// A new AWSCURRENT version (the old one becomes AWSPREVIOUS), as a rotation does.
    pub async fn put(&self, name: &str, value: &str) {
        self.call(
            "PutSecretValue",
            serde_json::json!({ "SecretId": name, "SecretString": value }),
        )
        .await;
    }

    pub async fn delete(&self, name: &str) {
        self.call(
            "DeleteSecret",
            serde_json::json!({ "SecretId": name, "ForceDeleteWithoutRecovery": true }),
        )
        .await;
    }

    /// `[secrets]` pointing at this server.
    pub fn config(&self, refresh_interval: Duration) -> SecretsConfig {
        SecretsConfig {
            refresh_interval,
            aws_region: Some(REGION.into()),
            aws_endpoint_url: Some(self.url.parse().unwrap()),
            ..SecretsConfig::default()
        }
    }

    /// A resolver for this server with fixed credentials (no process environment, never
    /// instance metadata).
    pub fn secrets(&self, refresh_interval: Duration, metrics: Arc<Metrics>) -> Arc<Secrets> {
        Secrets::with_aws_credentials(
            &self.config(refresh_interval),
            metrics,
            ACCESS_KEY_ID,
            &SecretString::new(SECRET_ACCESS_KEY),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
