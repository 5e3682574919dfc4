//! AWS Secrets Manager: `GetSecretValue` through the AWS SDK, and picking a key out of a JSON
//! secret.
//!
//! The client is built on first use, so a config without `aws_secret` references never loads
//! AWS settings. It takes the SDK's standard chains: credentials from the environment, the
//! profile files, the ECS container credentials endpoint (the task role) or instance metadata;
//! the region from `AWS_REGION`, the profile or instance metadata; the endpoint from
//! `AWS_ENDPOINT_URL_SECRETS_MANAGER` or `AWS_ENDPOINT_URL`. `[secrets] aws_region` and
//! `aws_endpoint_url` override the last two. Every read is bounded by `[secrets]
//! request_timeout`, credential lookup and retries included.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_sdk_secretsmanager::{
    Client,
    config::Credentials,
    error::{DisplayErrorContext, ProvideErrorMetadata as _, SdkError},
    operation::get_secret_value::GetSecretValueError,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::OnceCell;

use super::{AwsSecretRef, Problem, SecretString, SecretsConfig};

/// Credentials given instead of the SDK's chain.
#[derive(Debug, Clone)]
pub(super) struct StaticCredentials {
    pub(super) access_key_id: String,
    pub(super) secret_access_key: SecretString,
}

pub(super) struct SecretsManager {
    config: SecretsConfig,
    credentials: Option<StaticCredentials>,
    client: OnceCell<Client>,
}

// === impl SecretsManager ===

impl SecretsManager {
    pub(super) fn new(
        config: &SecretsConfig,
        credentials: Option<StaticCredentials>,
    ) -> SecretsManager {
        SecretsManager {
            config: config.clone(),
            credentials,
            client: OnceCell::new(),
        }
    }

    /// The whole `SecretString` (or a UTF-8 `SecretBinary`) of the referenced version.
    pub(super) async fn get(&self, reference: &AwsSecretRef) -> Result<SecretString, Problem> {
        let timeout = self.config.request_timeout;
        let read = async {
            let client = self.client().await?;
            let output = client
                .get_secret_value()
                .secret_id(&reference.secret_id)
                .set_version_stage(reference.version_stage.clone())
                .send()
                .await
                .map_err(|error| problem(error, timeout))?;
            if let Some(text) = output.secret_string() {
                return Ok(SecretString::new(text));
            }
            output
                .secret_binary()
                .and_then(|blob| std::str::from_utf8(blob.as_ref()).ok())
                .map(SecretString::new)
                .ok_or(Problem::NoSecretString)
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(Problem::Timeout(timeout)))
    }

    async fn client(&self) -> Result<&Client, Problem> {
        self.client
            .get_or_try_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                    .build_https();
                let timeouts = TimeoutConfig::builder()
                    .operation_timeout(self.config.request_timeout)
                    .connect_timeout(self.config.request_timeout.min(Duration::from_secs(2)))
                    .build();
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http)
                    .timeout_config(timeouts);
                if let Some(region) = &self.config.aws_region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some(url) = &self.config.aws_endpoint_url {
                    loader = loader.endpoint_url(url.as_str());
                }
                if let Some(credentials) = &self.credentials {
                    loader = loader.credentials_provider(Credentials::new(
                        &credentials.access_key_id,
                        credentials.secret_access_key.expose(),
                        None,
                        None,
                        "authz-config",
                    ));
                }
                let sdk = loader.load().await;
                if sdk.region().is_none() {
                    return Err(Problem::NoAwsRegion);
                }
                Ok(Client::new(&sdk))
            })
            .await
    }
}

/// What went wrong, in words that say what to do. SDK errors name the operation and AWS's
/// message; they never carry the secret value (a failed call has none).
fn problem<R>(error: SdkError<GetSecretValueError, R>, timeout: Duration) -> Problem
where
    R: std::fmt::Debug,
{
    match &error {
        SdkError::TimeoutError(_) => Problem::Timeout(timeout),
        SdkError::ServiceError(service) => {
            let error = service.err();
            if error.is_resource_not_found_exception() {
                Problem::NotFound
            } else if error.code() == Some("AccessDeniedException") {
                Problem::AccessDenied(error.message().unwrap_or_default().to_string())
            } else {
                Problem::Aws(DisplayErrorContext(error).to_string())
            }
        }
        _ => Problem::Aws(DisplayErrorContext(&error).to_string()),
    }
}

/// The value a reference names in a whole secret: all of it without `key`, else the member of
/// its JSON object (a string as is, anything else as JSON text).
pub(super) fn select(whole: &SecretString, key: Option<&str>) -> Result<SecretString, Problem> {
    let Some(key) = key else {
        return Ok(whole.clone());
    };
    // serde_json's errors name a position, never the text.
    let Ok(serde_json::Value::Object(mut object)) =
        serde_json::from_str::<serde_json::Value>(whole.expose())
    else {
        return Err(Problem::NotJsonObject(key.to_string()));
    };
    match object.remove(key) {
        Some(serde_json::Value::String(text)) => Ok(SecretString::new(text)),
        Some(other) => Ok(SecretString::new(other.to_string())),
        None => Err(Problem::MissingKey(key.to_string())),
    }
}
