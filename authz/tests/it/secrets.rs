//! Secrets from AWS Secrets Manager (moto's server standing in): whole values and JSON keys,
//! rotation picked up by the refresher, a failed refresh keeping the last value, start-up
//! errors; and the real binary taking its service-account key from Secrets Manager and using
//! a rotated key for the next Google API token (the Google stand-in issuing tokens).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use authz::{
    config::{AwsSecretRef, SecretRef},
    metrics::Metrics,
    secrets::Problem,
};
use standin::{Options, ServiceAccountSpec, StandIn};
use tokio_util::sync::CancellationToken;

use crate::moto::{self, Moto};

fn aws(secret_id: &str, key: Option<&str>, version_stage: Option<&str>) -> SecretRef {
    SecretRef::Aws(AwsSecretRef {
        secret_id: secret_id.into(),
        key: key.map(Into::into),
        version_stage: version_stage.map(Into::into),
    })
}

/// The value of one sample line (`name{labels}`), 0 when the series does not exist yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

fn refreshes(metrics: &Metrics, key: &str, outcome: &str) -> f64 {
    sample(
        &metrics.encode(),
        &format!("authz_secret_refreshes_total{{secret=\"{key}\",outcome=\"{outcome}\"}}"),
    )
}

/// Polls `condition` every 50 ms for up to `limit`.
async fn eventually(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn whole_values_json_keys_and_stages_resolve_and_missing_ones_fail_clearly() {
    let moto = Moto::start().await;
    let arn = moto
        .create(
            "it/whole",
            r#"{"password":"p4ss","sa":{"type":"service_account"}}"#,
        )
        .await;
    moto.create("it/plain", "just-a-string").await;
    let secrets = moto.secrets(Duration::from_secs(300), Arc::default());

    let cases = [
        (aws("it/plain", None, None), "just-a-string"),
        (aws(&arn, Some("password"), None), "p4ss"),
        (
            aws("it/whole", Some("sa"), None),
            r#"{"type":"service_account"}"#,
        ),
    ];
    for (reference, expected) in &cases {
        let value = secrets.resolve("k", reference).await.unwrap();
        assert_eq!(value.current().expose(), *expected, "{reference}");
    }

    moto.put("it/plain", "second").await;
    let previous = secrets
        .resolve("k", &aws("it/plain", None, Some("AWSPREVIOUS")))
        .await
        .unwrap();
    assert_eq!(previous.current().expose(), "just-a-string");

    let failures = [
        (
            aws("it/none", None, None),
            Problem::NotFound,
            r#"redis.password (aws_secret "it/none"): no such secret"#,
        ),
        (
            aws("it/whole", Some("nope"), None),
            Problem::MissingKey("nope".into()),
            r#"redis.password (aws_secret "it/whole", key "nope"): key "nope" is not in the secret's JSON object"#,
        ),
        (
            aws("it/plain", Some("password"), None),
            Problem::NotJsonObject("password".into()),
            r#"redis.password (aws_secret "it/plain", key "password"): key "password" selects from a JSON object"#,
        ),
        (
            aws("it/plain", None, Some("NOSUCHSTAGE")),
            Problem::NotFound,
            r#"redis.password (aws_secret "it/plain", version_stage "NOSUCHSTAGE"): no such secret"#,
        ),
    ];
    for (reference, problem, message) in failures {
        let error = secrets
            .resolve("redis.password", &reference)
            .await
            .unwrap_err();
        assert_eq!(error.problem, problem, "{reference}");
        assert!(error.to_string().starts_with(message), "{error}");
        assert!(!error.to_string().contains("p4ss"), "{error}");
    }
}

#[tokio::test]
async fn rotation_is_picked_up_and_a_failed_refresh_keeps_the_last_value() {
    let moto = Moto::start().await;
    moto.create("it/rotating", r#"{"key":"one"}"#).await;
    let metrics = Arc::new(Metrics::new());
    let secrets = moto.secrets(Duration::from_millis(200), metrics.clone());
    let value = secrets
        .resolve("oauth.hmac_key", &aws("it/rotating", Some("key"), None))
        .await
        .unwrap();
    assert_eq!(value.current().expose(), "one");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(secrets.clone().run(shutdown.clone()));

    moto.put("it/rotating", r#"{"key":"two"}"#).await;
    eventually(Duration::from_secs(10), "the new value", async || {
        value.current().expose() == "two"
    })
    .await;
    assert!(refreshes(&metrics, "oauth.hmac_key", "ok") >= 1.0);
    assert_eq!(refreshes(&metrics, "oauth.hmac_key", "error"), 0.0);

    moto.delete("it/rotating").await;
    eventually(Duration::from_secs(10), "a counted failure", async || {
        refreshes(&metrics, "oauth.hmac_key", "error") >= 2.0
    })
    .await;
    assert_eq!(value.current().expose(), "two");
}

/// The real binary, configured by environment as on ECS, with moto and the Google stand-in.
struct Authz {
    child: Child,
    log: PathBuf,
    http: String,
}

impl Authz {
    fn start(env: &[(&str, String)]) -> Authz {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log =
            std::env::temp_dir().join(format!("authz-secrets-it-{}-{n}.log", std::process::id()));
        let output = std::fs::File::create(&log).unwrap();
        let http_port = moto::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_authz"))
            // Only what is set here: no AWS profile, no container credentials, no metadata.
            .env_clear()
            .env(
                "AUTHZ_LISTEN__GRPC",
                format!("127.0.0.1:{}", moto::free_port()),
            )
            .env("AUTHZ_LISTEN__HTTP", format!("127.0.0.1:{http_port}"))
            .env(
                "AUTHZ_LISTEN__ADMIN",
                format!("127.0.0.1:{}", moto::free_port()),
            )
            .env("AUTHZ_LOG__FORMAT", "text")
            .env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_ACCESS_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        Authz {
            child,
            log,
            http: format!("http://127.0.0.1:{http_port}"),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.http)).await {
            Ok(response) => (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    async fn metric(&self, series: &str) -> f64 {
        sample(&self.get("/metrics").await.1, series)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Authz {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

const SA: &str = "authz@secrets-it.iam.gserviceaccount.com";
const SERVICE_TOKEN_OK: &str =
    "authz_google_requests_total{endpoint=\"service_token\",outcome=\"ok\"}";
const SERVICE_TOKEN_REJECTED: &str =
    "authz_google_requests_total{endpoint=\"service_token\",outcome=\"rejected\"}";

fn binary_env(standin: &StandIn, moto: &Moto, credentials: &str) -> Vec<(&'static str, String)> {
    let base = standin.issuer().to_string();
    vec![
        ("AUTHZ_GOOGLE__CLIENT_IDS", "it.apps".into()),
        ("AUTHZ_GOOGLE__ISSUER", base.clone()),
        ("AUTHZ_GOOGLE__TOKENINFO_URL", format!("{base}/tokeninfo")),
        ("AUTHZ_ACCESS__DOMAINS", "example.com".into()),
        ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp".into()),
        ("AUTHZ_GROUPS__API", "cloud-identity".into()),
        ("AUTHZ_GROUPS__CLOUD_IDENTITY_URL", base.clone()),
        ("AUTHZ_GROUPS__DIRECTORY_URL", base.clone()),
        ("AUTHZ_GROUPS__IAM_CREDENTIALS_URL", base),
        ("AUTHZ_GROUPS__TOKEN_URL", standin.token_url()),
        ("AUTHZ_GROUPS__REQUEST_TIMEOUT", "10s".into()),
        (
            "AUTHZ_GROUPS__CREDENTIALS__KIND",
            "service-account-key".into(),
        ),
        ("AUTHZ_GROUPS__CREDENTIALS__JSON", credentials.into()),
        ("AUTHZ_SECRETS__REFRESH_INTERVAL", "200ms".into()),
        ("AUTHZ_SECRETS__AWS_REGION", moto::REGION.into()),
        ("AUTHZ_SECRETS__AWS_ENDPOINT_URL", moto.url().into()),
    ]
}

async fn service_account_key(standin: &StandIn) -> serde_json::Value {
    // Creating the account again replaces its key: the old one stops working, as after a
    // rotation that deletes the old key.
    standin
        .create_service_account(&ServiceAccountSpec {
            email: SA.into(),
            delegated_scopes: Vec::new(),
            group_admin: true,
        })
        .await
}

#[tokio::test]
async fn the_binary_uses_a_rotated_service_account_key_from_secrets_manager() {
    let moto = Moto::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    let first_key = service_account_key(&standin).await;
    let arn = moto
        .create(
            "it/authz",
            &serde_json::json!({ "sa": first_key, "other": "x" }).to_string(),
        )
        .await;
    let authz = Authz::start(&binary_env(
        &standin,
        &moto,
        &format!(r#"{{ aws_secret = "{arn}", key = "sa" }}"#),
    ));

    // Ready means discovery, JWKS and a Google API token from the first key.
    eventually(Duration::from_secs(60), "authz ready", async || {
        authz.get("/readyz").await.0 == 200
    })
    .await;
    assert_eq!(authz.metric(SERVICE_TOKEN_OK).await, 1.0);
    assert_eq!(standin.stats().token, 1);

    // Rotate: the first key is dead at "Google" the moment the new one is in the secret.
    let second_key = service_account_key(&standin).await;
    moto.put(
        "it/authz",
        &serde_json::json!({ "sa": second_key, "other": "x" }).to_string(),
    )
    .await;
    // The next token request (readiness asks for one) uses the new key, without a restart.
    eventually(
        Duration::from_secs(15),
        "a token from the new key",
        async || {
            authz.get("/readyz").await;
            authz.metric(SERVICE_TOKEN_OK).await >= 2.0
        },
    )
    .await;
    assert_eq!(authz.metric(SERVICE_TOKEN_REJECTED).await, 0.0);
    assert_eq!(authz.get("/readyz").await.0, 200);

    // The secret disappears: refreshes fail, are counted, and the last key stays in use.
    moto.delete("it/authz").await;
    let errors =
        "authz_secret_refreshes_total{secret=\"groups.credentials.json\",outcome=\"error\"}";
    eventually(Duration::from_secs(10), "a failed refresh", async || {
        authz.metric(errors).await >= 1.0
    })
    .await;
    assert_eq!(authz.get("/readyz").await.0, 200);

    let output = authz.output();
    assert!(
        output.contains("secret changed; using the new value"),
        "{output}"
    );
    assert!(
        output.contains("secret refresh failed; keeping the last good value"),
        "{output}"
    );
    assert!(output.contains("groups.credentials.json"), "{output}");
    // Never the key itself.
    assert!(!output.contains("PRIVATE KEY"), "{output}");
    let private_key = second_key["private_key"].as_str().unwrap();
    let body_line = private_key.lines().nth(1).unwrap();
    assert!(!output.contains(body_line), "{output}");
}

#[tokio::test]
async fn the_binary_refuses_to_start_when_its_secret_is_missing() {
    let moto = Moto::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let standin = StandIn::start(listener, Options::default()).await.unwrap();
    let mut authz = Authz::start(&binary_env(
        &standin,
        &moto,
        r#"{ aws_secret = "it/absent", key = "sa" }"#,
    ));

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = authz.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "authz did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Like a bad config: exit 2, and no port was ever bound.
    assert_eq!(status.code(), Some(2), "{status}");
    let output = authz.output();
    assert!(
        output.contains(
            r#"groups.credentials.json (aws_secret "it/absent", key "sa"): no such secret in Secrets Manager"#
        ),
        "{output}"
    );
    assert!(!output.contains("listening"), "{output}");
    assert_eq!(authz.get("/readyz").await.0, 0, "nothing serves");
}
