//! Secret values in the config: given inline, as a file, or as an AWS Secrets Manager reference,
//! read once at start-up and re-read on an interval so that a rotation needs no restart.
//!
//! # In the config
//! Every secret field is a [`SecretRef`] (defined with the config), written one of three ways:
//!
//! ```toml
//! client_secret = "GOCSPX-..."                                  # inline
//! client_secret = { file = "/run/secrets/google-client-secret" } # a file, byte for byte
//! client_secret = { aws_secret = "prod/authz", key = "google_client_secret" }
//! ```
//!
//! `aws_secret` is a secret's name or ARN. Without `key` the whole `SecretString` is the value;
//! with it the `SecretString` must be a JSON object and the value is that member (a string as
//! is, anything else as its JSON text, so a service-account key can sit in a secret as a nested
//! object). `version_stage` (default `AWSCURRENT`) picks another stage. A file's contents are used
//! byte for byte: a trailing newline is part of the value.
//!
//! From the environment the same forms work, because `AUTHZ_*` values are read as TOML when they
//! parse: `AUTHZ_GROUPS__CREDENTIALS__JSON={ aws_secret = "prod/authz", key = "google_sa" }`, or
//! one variable per field (`..._JSON__AWS_SECRET=prod/authz`, `..._JSON__KEY=google_sa`). An
//! inline value that reads as a TOML number, boolean or date (`12345`, `true`, `nan`) must be
//! quoted (`AUTHZ_..._PASSWORD='"12345"'`); it is refused with that hint rather than mangled.
//!
//! # At run time
//! [`Secrets`] is one per process. [`Secrets::resolve`] reads a reference once (a start-up error
//! names the config key and the reference, never the value) and returns a [`SecretValue`], a
//! cheap clone whose [`SecretValue::current`] is one atomic load. [`Secrets::run`] re-reads
//! every file and Secrets Manager reference still in use every `[secrets] refresh_interval`; a
//! failed read keeps the last good value and is logged (WARN, naming the key) and counted
//! (`authz_secret_refreshes_total{secret, outcome}`). Inline values never change.
//!
//! # Using it for a new secret field
//! ```text
//! #[derive(Deserialize)]
//! struct OAuth { client_secret: SecretRef, signing_keys: Vec<SecretRef> }
//!
//! // Start-up (in `run`, where `secrets: Arc<Secrets>` lives): resolve each one, naming its key.
//! let client_secret = secrets.resolve("oauth.client_secret", &oauth.client_secret).await?;
//! // Per use: the current value; hold the `Arc` for the duration of one use only.
//! form.push(("client_secret", client_secret.current().expose().to_owned()));
//!
//! // Something parsed from a secret (a PEM key): parsed at start-up (an error there is a
//! // start-up error), parsed again when the value changes; a new value that does not parse
//! // is logged and counted, and the previous key stays in use.
//! let key = secrets.resolve("oauth.signing_keys[0]", &oauth.signing_keys[0]).await?;
//! let signing = Derived::new(key, |pem| Ok(EncodingKey::from_ec_pem(pem.as_bytes())?))?;
//! jsonwebtoken::encode(&header, &claims, &signing.get())?;
//! ```
//! Compare secrets with [`SecretString::ct_eq`] (constant time), and never log one: the types
//! here print as `SecretString(..)`.

mod aws;

use std::{
    collections::HashMap,
    io::Read as _,
    path::Path,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{AwsSecretRef, SecretRef, SecretsConfig},
    metrics::{Metrics, SecretOutcome},
    secret_string::SecretString,
};

/// A resolved secret: the current value, swapped in by the refresher. Cheap to clone.
#[derive(Clone)]
pub struct SecretValue(Arc<Handle>);

struct Handle {
    /// The config key, for logs and metrics.
    key: String,
    reference: SecretRef,
    current: ArcSwap<SecretString>,
    metrics: Arc<Metrics>,
    /// The parsers of what is built from the value ([`Derived`]): a re-read value that one of
    /// them refuses is not swapped in.
    checks: Mutex<Vec<Check>>,
}

type Check = Arc<dyn Fn(&str) -> anyhow::Result<()> + Send + Sync>;

/// Something built from a secret (a parsed key), built again when the secret changes.
pub struct Derived<T> {
    secret: SecretValue,
    parse: Parser<T>,
    state: ArcSwap<DerivedState<T>>,
}

type Parser<T> = Arc<dyn Fn(&str) -> anyhow::Result<T> + Send + Sync>;

struct DerivedState<T> {
    /// The secret value `value` was built from, or the newer one that failed to parse.
    seen: Arc<SecretString>,
    value: Arc<T>,
}

/// Resolves references and keeps the values in use fresh. One per process.
pub struct Secrets {
    config: SecretsConfig,
    metrics: Arc<Metrics>,
    aws: aws::SecretsManager,
    /// The values handed out that can change (files, Secrets Manager). Weak: a value nobody
    /// holds any more (a config reload replaced it) is no longer read.
    handles: Mutex<Vec<Weak<Handle>>>,
}

/// A secret that could not be read: the config key, the reference and why (never the value).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{key} ({reference}): {problem}")]
pub struct SecretError {
    pub key: String,
    pub reference: String,
    pub problem: Problem,
}

/// Why a secret could not be read or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the file: {0}")]
    ReadFile(String),
    #[error("the file is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    #[error("not UTF-8 text")]
    NotUtf8,
    #[error("no AWS region: set AWS_REGION or [secrets] aws_region")]
    NoAwsRegion,
    #[error("no such secret in Secrets Manager (or no version in that stage)")]
    NotFound,
    #[error("access denied: the task role needs secretsmanager:GetSecretValue on it ({0})")]
    AccessDenied(String),
    #[error("Secrets Manager did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Secrets Manager: {0}")]
    Aws(String),
    #[error("the secret has no SecretString (binary secrets must be UTF-8 text)")]
    NoSecretString,
    #[error("key {0:?} selects from a JSON object, and the secret is not one")]
    NotJsonObject(String),
    #[error("key {0:?} is not in the secret's JSON object")]
    MissingKey(String),
    #[error("not usable: {0}")]
    Unusable(String),
}

/// Secrets Manager's own limit; a file beyond it is a mistake (or `/dev/zero`).
pub const MAX_SECRET_BYTES: usize = 65_536;

// === impl SecretValue ===

impl SecretValue {
    /// A value that never changes (tests, and values computed rather than configured).
    pub fn fixed(key: impl Into<String>, value: SecretString) -> SecretValue {
        SecretValue(Arc::new(Handle {
            key: key.into(),
            reference: SecretRef::Inline(value.clone()),
            current: ArcSwap::from_pointee(value),
            metrics: Arc::default(),
            checks: Mutex::default(),
        }))
    }

    /// The current value. The `Arc` changes only when the value does, so a consumer that keeps
    /// something built from it can tell with `Arc::ptr_eq` (or use [`Derived`]).
    pub fn current(&self) -> Arc<SecretString> {
        self.0.current.load_full()
    }

    /// The config key it was resolved for.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    pub fn reference(&self) -> &SecretRef {
        &self.0.reference
    }

    fn error(&self, problem: Problem) -> SecretError {
        SecretError {
            key: self.0.key.clone(),
            reference: self.0.reference.to_string(),
            problem,
        }
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("key", &self.0.key)
            .field("reference", &self.0.reference)
            .finish_non_exhaustive()
    }
}

// === impl Handle ===

impl Handle {
    /// Whether every parser of what is built from this secret accepts `value`.
    fn check(&self, value: &SecretString) -> anyhow::Result<()> {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        checks.iter().try_for_each(|check| check(value.expose()))
    }
}

// === impl Derived ===

impl<T: 'static> Derived<T> {
    /// Builds the value from the secret now; a failure is a start-up error naming the key.
    /// From now on the refresher checks each re-read value with `parse` before using it.
    pub fn new(
        secret: SecretValue,
        parse: impl Fn(&str) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> Result<Derived<T>, SecretError> {
        let seen = secret.current();
        let value =
            parse(seen.expose()).map_err(|e| secret.error(Problem::Unusable(format!("{e:#}"))))?;
        let parse: Parser<T> = Arc::new(parse);
        let check = parse.clone();
        secret
            .0
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(move |text: &str| check(text).map(|_| ())));
        Ok(Derived {
            secret,
            parse,
            state: ArcSwap::from_pointee(DerivedState {
                seen,
                value: Arc::new(value),
            }),
        })
    }

    /// The value built from the current secret. When the secret changed and the new value does
    /// not parse, the previous value stays, with one WARN and one `unusable` count per change.
    pub fn get(&self) -> Arc<T> {
        let current = self.secret.current();
        let state = self.state.load();
        if Arc::ptr_eq(&state.seen, &current) {
            return state.value.clone();
        }
        let handle = &self.secret.0;
        let value = match (self.parse)(current.expose()) {
            Ok(value) => Arc::new(value),
            Err(error) => {
                tracing::warn!(
                    secret = %handle.key,
                    reference = %handle.reference,
                    error = format!("{error:#}"),
                    "the secret's new value is not usable; keeping the previous one"
                );
                handle
                    .metrics
                    .secret_refresh(&handle.key, SecretOutcome::Unusable);
                state.value.clone()
            }
        };
        self.state.store(Arc::new(DerivedState {
            seen: current,
            value: value.clone(),
        }));
        value
    }

    pub fn secret(&self) -> &SecretValue {
        &self.secret
    }
}

impl<T> std::fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Derived")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

// === impl Secrets ===

impl Secrets {
    /// AWS credentials come from the SDK's default chain (environment, profile, ECS container
    /// credentials, IMDS). Nothing is read until a reference is resolved.
    pub fn new(config: &SecretsConfig, metrics: Arc<Metrics>) -> Arc<Secrets> {
        Secrets::build(config, metrics, None)
    }

    /// [`Secrets::new`] with fixed AWS credentials instead of the default chain, so that tests
    /// need no process environment (and never reach for instance metadata).
    pub fn with_aws_credentials(
        config: &SecretsConfig,
        metrics: Arc<Metrics>,
        access_key_id: &str,
        secret_access_key: &SecretString,
    ) -> Arc<Secrets> {
        let credentials = aws::StaticCredentials {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.clone(),
        };
        Secrets::build(config, metrics, Some(credentials))
    }

    fn build(
        config: &SecretsConfig,
        metrics: Arc<Metrics>,
        credentials: Option<aws::StaticCredentials>,
    ) -> Arc<Secrets> {
        Arc::new(Secrets {
            config: config.clone(),
            metrics,
            aws: aws::SecretsManager::new(config, credentials),
            handles: Mutex::default(),
        })
    }

    /// Reads `reference` (the value of config key `key`) and keeps it fresh from now on.
    pub async fn resolve(
        &self,
        key: &str,
        reference: &SecretRef,
    ) -> Result<SecretValue, SecretError> {
        let error = |problem| SecretError {
            key: key.to_string(),
            reference: reference.to_string(),
            problem,
        };
        let value = self
            .read(reference, &mut HashMap::new())
            .await
            .map_err(error)?;
        let handle = Arc::new(Handle {
            key: key.to_string(),
            reference: reference.clone(),
            current: ArcSwap::from_pointee(value),
            metrics: self.metrics.clone(),
            checks: Mutex::default(),
        });
        if reference.is_refreshed() {
            let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            handles.retain(|handle| handle.strong_count() > 0);
            handles.push(Arc::downgrade(&handle));
        }
        Ok(SecretValue(handle))
    }

    /// Re-reads every value in use once. A failure keeps the last good value.
    pub async fn refresh(&self) {
        let handles: Vec<Arc<Handle>> = {
            let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
            handles.retain(|handle| handle.strong_count() > 0);
            handles.iter().filter_map(Weak::upgrade).collect()
        };
        // Several keys of one Secrets Manager secret cost one read per round.
        let mut fetched = HashMap::new();
        for handle in handles {
            match self.read(&handle.reference, &mut fetched).await {
                Ok(value) => {
                    if !value.ct_eq(&handle.current.load()) {
                        if let Err(error) = handle.check(&value) {
                            tracing::warn!(
                                secret = %handle.key,
                                reference = %handle.reference,
                                error = format!("{error:#}"),
                                "secret changed, but the new value cannot be used; keeping the \
                                 previous one"
                            );
                            self.metrics
                                .secret_refresh(&handle.key, SecretOutcome::Unusable);
                            continue;
                        }
                        handle.current.store(Arc::new(value));
                        tracing::info!(
                            secret = %handle.key,
                            reference = %handle.reference,
                            "secret changed; using the new value"
                        );
                    }
                    self.metrics.secret_refresh(&handle.key, SecretOutcome::Ok);
                }
                Err(problem) => {
                    tracing::warn!(
                        secret = %handle.key,
                        reference = %handle.reference,
                        error = %problem,
                        "secret refresh failed; keeping the last good value"
                    );
                    self.metrics
                        .secret_refresh(&handle.key, SecretOutcome::Error);
                }
            }
        }
    }

    /// Refreshes every `refresh_interval` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let period = self.config.refresh_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if shutdown.run_until_cancelled(tick.tick()).await.is_none() {
                return;
            }
            if shutdown.run_until_cancelled(self.refresh()).await.is_none() {
                return;
            }
        }
    }

    /// `fetched` remembers whole Secrets Manager values for the length of one round.
    async fn read(
        &self,
        reference: &SecretRef,
        fetched: &mut HashMap<(String, Option<String>), Result<SecretString, Problem>>,
    ) -> Result<SecretString, Problem> {
        match reference {
            SecretRef::Inline(value) => Ok(value.clone()),
            SecretRef::File(path) => read_file(path),
            SecretRef::Aws(reference) => {
                let id = (reference.secret_id.clone(), reference.version_stage.clone());
                let whole = match fetched.get(&id) {
                    Some(whole) => whole.clone(),
                    None => {
                        let whole = self.aws.get(reference).await;
                        fetched.insert(id, whole.clone());
                        whole
                    }
                };
                aws::select(&whole?, reference.key.as_deref())
            }
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Reads a whole file of at most [`MAX_SECRET_BYTES`]. Blocking, but small and local.
fn read_file(path: &Path) -> Result<SecretString, Problem> {
    let file = std::fs::File::open(path).map_err(|e| Problem::ReadFile(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Problem::ReadFile(e.to_string()))?;
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(Problem::TooLarge);
    }
    String::from_utf8(bytes)
        .map(SecretString::new)
        .map_err(|_| Problem::NotUtf8)
}

/// A value built from a secret (rebuilt when the secret rotates), or generated at start.
pub enum Current<T> {
    Generated(Arc<T>),
    FromSecret(Derived<T>),
}

impl<T: 'static> Current<T> {
    /// The value now; hold it for one use only, so a rotation is seen by the next.
    pub fn get(&self) -> Arc<T> {
        match self {
            Current::Generated(value) => value.clone(),
            Current::FromSecret(derived) => derived.get(),
        }
    }
}

impl<T> std::fmt::Debug for Current<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Current::Generated(_) => "Current::Generated",
            Current::FromSecret(_) => "Current::FromSecret",
        })
    }
}

#[cfg(test)]
mod tests;
