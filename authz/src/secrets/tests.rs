use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use serde::Deserialize;

use super::*;
use crate::config::Config;

#[derive(Debug, Deserialize)]
struct Field {
    v: SecretRef,
}

fn parse(toml_value: &str) -> Result<SecretRef, String> {
    toml::from_str::<Field>(&format!("v = {toml_value}"))
        .map(|field| field.v)
        .map_err(|e| e.message().to_string())
}

fn aws(secret_id: &str, key: Option<&str>, version_stage: Option<&str>) -> SecretRef {
    SecretRef::Aws(AwsSecretRef {
        secret_id: secret_id.into(),
        key: key.map(Into::into),
        version_stage: version_stage.map(Into::into),
    })
}

/// A file of its own for each test, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("authz-secret-{}-{n}", std::process::id()));
        let file = TempFile(path);
        file.write(contents);
        file
    }

    /// Writes atomically, as secret mounts and rotation tools do.
    fn write(&self, contents: &[u8]) {
        let temporary = self.0.with_extension("tmp");
        std::fs::write(&temporary, contents).unwrap();
        std::fs::rename(&temporary, &self.0).unwrap();
    }

    fn reference(&self) -> SecretRef {
        SecretRef::File(self.0.clone())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn secrets() -> (Arc<Secrets>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        Secrets::new(&SecretsConfig::default(), metrics.clone()),
        metrics,
    )
}

fn refreshes(metrics: &Metrics, key: &str, outcome: &str) -> u64 {
    let series = format!("authz_secret_refreshes_total{{secret=\"{key}\",outcome=\"{outcome}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().unwrap())
}

#[test]
fn the_three_forms_parse() {
    let cases: &[(&str, SecretRef)] = &[
        (
            r#""hunter2""#,
            SecretRef::Inline(SecretString::new("hunter2")),
        ),
        (r#""""#, SecretRef::Inline(SecretString::new(""))),
        (
            r#"{ file = "/run/secrets/k" }"#,
            SecretRef::File("/run/secrets/k".into()),
        ),
        (
            r#"{ aws_secret = "prod/authz" }"#,
            aws("prod/authz", None, None),
        ),
        (
            r#"{ aws_secret = "arn:aws:secretsmanager:eu-west-1:1:secret:x-AbCdEf", key = "k" }"#,
            aws(
                "arn:aws:secretsmanager:eu-west-1:1:secret:x-AbCdEf",
                Some("k"),
                None,
            ),
        ),
        (
            r#"{ aws_secret = "s", key = "k", version_stage = "AWSPREVIOUS" }"#,
            aws("s", Some("k"), Some("AWSPREVIOUS")),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(&parse(text).unwrap(), expected, "{text}");
    }
}

#[test]
fn malformed_references_say_what_to_write() {
    let cases = [
        ("12345", "an inline secret must be a string"),
        ("true", "an inline secret must be a string"),
        ("nan", "an inline secret must be a string"),
        ("1979-05-27", "an inline secret must be a string"),
        (r#"["a"]"#, "an inline secret must be a string"),
        (
            r#"{ path = "x" }"#,
            "unknown field `path` in a secret reference",
        ),
        (
            r#"{ file = "x", aws_secret = "y" }"#,
            "either `file` or `aws_secret`",
        ),
        (
            r#"{ file = "x", key = "k" }"#,
            "belong to `aws_secret` references",
        ),
        (r#"{ file = "" }"#, "`file` must not be empty"),
        (r#"{ aws_secret = " " }"#, "must not be blank"),
        (r#"{ aws_secret = "s", key = "" }"#, "must not be blank"),
        ("{ key = \"k\" }", "needs `file` or `aws_secret`"),
    ];
    for (text, expected) in cases {
        let error = parse(text).unwrap_err();
        assert!(error.contains(expected), "{text}: {error}");
    }
}

#[test]
fn inline_values_never_print() {
    let reference = parse(r#""hunter2""#).unwrap();
    let value = SecretValue::fixed("redis.password", SecretString::new("hunter2"));
    let error = SecretError {
        key: "redis.password".into(),
        reference: reference.to_string(),
        problem: Problem::Unusable("bad".into()),
    };
    for printed in [
        format!("{reference:?}"),
        reference.to_string(),
        format!("{value:?}"),
        format!("{:?}", value.current()),
        error.to_string(),
        format!("{error:?}"),
    ] {
        assert!(!printed.contains("hunter2"), "{printed}");
    }
    assert_eq!(
        error.to_string(),
        "redis.password (inline value): not usable: bad"
    );
}

#[test]
fn comparison_is_by_value() {
    let a = SecretString::new("same");
    assert!(a.ct_eq(&SecretString::new("same")));
    assert!(!a.ct_eq(&SecretString::new("samf")));
    assert!(!a.ct_eq(&SecretString::new("same ")));
}

const GROUPS_ENV: [(&str, &str); 6] = [
    ("AUTHZ_GOOGLE__CLIENT_IDS", "x.apps"),
    ("AUTHZ_ACCESS__DOMAINS", "example.com"),
    ("AUTHZ_RESOURCE__URL", "https://mcp.example.com/mcp"),
    ("AUTHZ_GROUPS__API", "cloud-identity"),
    ("AUTHZ_GROUPS__CREDENTIALS__KIND", "service-account-key"),
    ("AUTHZ_SECRETS__REFRESH_INTERVAL", "30s"),
];

fn load_env(extra: &[(&str, &str)]) -> Result<Config, String> {
    let env = GROUPS_ENV
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()));
    Config::load(None, env).map_err(|e| e.to_string())
}

/// ECS configures by environment: the inline-table form, one variable per field, and a
/// quoted inline value all arrive as the same references as in a file.
#[test]
fn references_come_from_authz_environment_variables() {
    let cases: &[(&[(&str, &str)], SecretRef)] = &[
        (
            &[(
                "AUTHZ_GROUPS__CREDENTIALS__JSON",
                r#"{ aws_secret = "arn:aws:secretsmanager:us-east-1:1:secret:authz-Ab12", key = "google_sa" }"#,
            )],
            aws(
                "arn:aws:secretsmanager:us-east-1:1:secret:authz-Ab12",
                Some("google_sa"),
                None,
            ),
        ),
        (
            &[
                ("AUTHZ_GROUPS__CREDENTIALS__JSON__AWS_SECRET", "prod/authz"),
                ("AUTHZ_GROUPS__CREDENTIALS__JSON__KEY", "google_sa"),
                (
                    "AUTHZ_GROUPS__CREDENTIALS__JSON__VERSION_STAGE",
                    "AWSPENDING",
                ),
            ],
            aws("prod/authz", Some("google_sa"), Some("AWSPENDING")),
        ),
        (
            &[(
                "AUTHZ_GROUPS__CREDENTIALS__JSON",
                r#"{ file = "/run/secrets/sa.json" }"#,
            )],
            SecretRef::File("/run/secrets/sa.json".into()),
        ),
        (
            &[("AUTHZ_GROUPS__CREDENTIALS__JSON", r#""12345""#)],
            SecretRef::Inline(SecretString::new("12345")),
        ),
        (
            &[("AUTHZ_GROUPS__CREDENTIALS__JSON", "not toml {")],
            SecretRef::Inline(SecretString::new("not toml {")),
        ),
    ];
    for (extra, expected) in cases {
        let config = load_env(extra).unwrap();
        let (key, reference) = config.groups.unwrap().credentials.source().unwrap();
        assert_eq!(key, "groups.credentials.json");
        assert_eq!(&reference, expected, "{extra:?}");
        assert_eq!(config.secrets.refresh_interval, Duration::from_secs(30));
    }
    let error = load_env(&[("AUTHZ_GROUPS__CREDENTIALS__JSON", "12345")]).unwrap_err();
    assert!(error.starts_with("config: groups.credentials"), "{error}");
    assert!(error.contains("needs TOML quotes"), "{error}");
    assert!(!error.contains("12345"), "{error}");
}

#[test]
fn config_errors_name_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("AUTHZ_SECRETS__REFRESH_INTERVAL", "0s"),
                ("AUTHZ_GROUPS__CREDENTIALS__FILE", "/sa.json"),
            ],
            "config: secrets.refresh_interval: must be greater than zero",
        ),
        (
            &[
                ("AUTHZ_SECRETS__REQUEST_TIMEOUT", "0s"),
                ("AUTHZ_GROUPS__CREDENTIALS__FILE", "/sa.json"),
            ],
            "config: secrets.request_timeout: must be greater than zero",
        ),
        (
            &[
                ("AUTHZ_SECRETS__AWS_ENDPOINT_URL", "ftp://x"),
                ("AUTHZ_GROUPS__CREDENTIALS__FILE", "/sa.json"),
            ],
            "config: secrets.aws_endpoint_url:",
        ),
        (
            &[],
            "config: groups.credentials: the credential JSON is missing",
        ),
        (
            &[
                ("AUTHZ_GROUPS__CREDENTIALS__FILE", "/a.json"),
                ("AUTHZ_GROUPS__CREDENTIALS__JSON", r#"{ file = "/b.json" }"#),
            ],
            "config: groups.credentials: give either file or json",
        ),
    ];
    for (extra, expected) in cases {
        let error = load_env(extra).unwrap_err();
        assert!(error.starts_with(expected), "{extra:?}: {error}");
    }
}

#[test]
fn a_json_key_selects_a_member() {
    let whole = SecretString::new(r#"{"password":"p4ss","sa":{"type":"service_account"},"n":7}"#);
    let select = |key| aws::select(&whole, key).map(|v| v.expose().to_string());
    assert_eq!(select(None).unwrap(), whole.expose());
    assert_eq!(select(Some("password")).unwrap(), "p4ss");
    assert_eq!(select(Some("sa")).unwrap(), r#"{"type":"service_account"}"#);
    assert_eq!(select(Some("n")).unwrap(), "7");
    assert_eq!(
        select(Some("missing")),
        Err(Problem::MissingKey("missing".into()))
    );
    let plain = SecretString::new("p4ss");
    assert_eq!(
        aws::select(&plain, Some("password")),
        Err(Problem::NotJsonObject("password".into()))
    );
}

#[tokio::test]
async fn inline_and_file_values_resolve() {
    let (secrets, _) = secrets();
    let inline = secrets
        .resolve("redis.password", &parse(r#""hunter2""#).unwrap())
        .await
        .unwrap();
    assert_eq!(inline.current().expose(), "hunter2");
    assert_eq!(inline.key(), "redis.password");

    let file = TempFile::new(b"-----BEGIN PRIVATE KEY-----\n");
    let value = secrets
        .resolve("oauth.signing_keys[0]", &file.reference())
        .await
        .unwrap();
    assert_eq!(value.current().expose(), "-----BEGIN PRIVATE KEY-----\n");
}

#[tokio::test]
async fn unreadable_files_are_start_up_errors_naming_key_and_path() {
    let (secrets, _) = secrets();
    let missing = SecretRef::File("/nonexistent/authz/secret".into());
    let error = secrets
        .resolve("redis.password", &missing)
        .await
        .unwrap_err();
    assert_eq!(error.key, "redis.password");
    let text = error.to_string();
    assert!(
        text.starts_with("redis.password (file /nonexistent/authz/secret): cannot read the file"),
        "{text}"
    );

    let large = TempFile::new(&vec![b'x'; MAX_SECRET_BYTES + 1]);
    let error = secrets.resolve("k", &large.reference()).await.unwrap_err();
    assert_eq!(error.problem, Problem::TooLarge);

    let binary = TempFile::new(&[0xff, 0xfe, 0x00]);
    let error = secrets.resolve("k", &binary.reference()).await.unwrap_err();
    assert_eq!(error.problem, Problem::NotUtf8);
}

#[tokio::test]
async fn a_refresh_picks_up_a_change_and_keeps_the_last_good_value_on_failure() {
    let (secrets, metrics) = secrets();
    let file = TempFile::new(b"one");
    let value = secrets
        .resolve("google.client_secret", &file.reference())
        .await
        .unwrap();
    let first = value.current();

    secrets.refresh().await;
    assert!(Arc::ptr_eq(&first, &value.current()), "unchanged: same Arc");
    assert_eq!(refreshes(&metrics, "google.client_secret", "ok"), 1);

    file.write(b"two");
    secrets.refresh().await;
    assert_eq!(value.current().expose(), "two");
    assert_eq!(refreshes(&metrics, "google.client_secret", "ok"), 2);

    std::fs::remove_file(&file.0).unwrap();
    secrets.refresh().await;
    assert_eq!(value.current().expose(), "two");
    assert_eq!(refreshes(&metrics, "google.client_secret", "error"), 1);

    file.write(b"three");
    secrets.refresh().await;
    assert_eq!(value.current().expose(), "three");
    assert_eq!(refreshes(&metrics, "google.client_secret", "error"), 1);
}

#[tokio::test]
async fn values_nobody_holds_and_inline_values_are_not_re_read() {
    let (secrets, metrics) = secrets();
    let file = TempFile::new(b"one");
    let value = secrets.resolve("dropped", &file.reference()).await.unwrap();
    let inline = secrets
        .resolve("inline", &SecretRef::Inline(SecretString::new("x")))
        .await
        .unwrap();
    drop(value);
    secrets.refresh().await;
    assert_eq!(refreshes(&metrics, "dropped", "ok"), 0);
    assert_eq!(refreshes(&metrics, "inline", "ok"), 0);
    assert_eq!(inline.current().expose(), "x");
}

#[tokio::test]
async fn the_refresher_runs_on_its_interval_and_stops_on_shutdown() {
    let metrics = Arc::new(Metrics::new());
    let config = SecretsConfig {
        refresh_interval: Duration::from_millis(200),
        ..SecretsConfig::default()
    };
    let secrets = Secrets::new(&config, metrics.clone());
    let file = TempFile::new(b"one");
    let value = secrets.resolve("k", &file.reference()).await.unwrap();
    let shutdown = CancellationToken::new();
    let refresher = tokio::spawn(secrets.clone().run(shutdown.clone()));

    file.write(b"two");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while value.current().expose() != "two" {
        assert!(tokio::time::Instant::now() < deadline, "not refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), refresher)
        .await
        .expect("the refresher stops on shutdown")
        .unwrap();
    let after_stop = refreshes(&metrics, "k", "ok");
    file.write(b"three");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(value.current().expose(), "two");
    assert_eq!(refreshes(&metrics, "k", "ok"), after_stop);
}

#[tokio::test]
async fn derived_values_follow_the_secret_and_keep_the_last_usable_one() {
    let (secrets, metrics) = secrets();
    let file = TempFile::new(b"1");
    let value = secrets.resolve("n", &file.reference()).await.unwrap();
    let parses = Arc::new(AtomicUsize::new(0));
    let counted = parses.clone();
    let number = Derived::new(value, move |text| {
        counted.fetch_add(1, Ordering::SeqCst);
        Ok(text.trim().parse::<u32>()?)
    })
    .unwrap();
    assert_eq!(*number.get(), 1);
    assert_eq!(*number.get(), 1);
    assert_eq!(parses.load(Ordering::SeqCst), 1, "parsed once per value");

    file.write(b"2");
    secrets.refresh().await;
    assert_eq!(*number.get(), 2);

    // A value that does not parse is found out when it is read, not when it is next used:
    // counted `unusable` at once (not `ok`), and never swapped in.
    file.write(b"not a number");
    secrets.refresh().await;
    assert_eq!(refreshes(&metrics, "n", "unusable"), 1);
    assert_eq!(
        refreshes(&metrics, "n", "ok"),
        1,
        "only the good re-read is ok"
    );
    assert_eq!(*number.get(), 2);
    assert_eq!(*number.get(), 2);
    secrets.refresh().await;
    assert_eq!(refreshes(&metrics, "n", "unusable"), 2, "once per re-read");
    // Parsed: at start, "2" when read and when used, "not a number" when read (twice).
    assert_eq!(parses.load(Ordering::SeqCst), 5);

    let bad = TempFile::new(b"x");
    let value = secrets.resolve("m", &bad.reference()).await.unwrap();
    let error = Derived::new(value, |text| Ok(text.parse::<u32>()?)).unwrap_err();
    assert!(
        error.to_string().starts_with("m (file ")
            && error.to_string().contains("not usable: invalid digit"),
        "{error}"
    );
}
