//! `[groups]`: which Google API answers group membership, with which credentials, and how
//! long answers are cached.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use url::Url;

use super::{SecretRef, is_http_url};

/// The `[groups]` config section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// Which Google API answers membership questions. Default `directory`.
    #[serde(default)]
    pub api: Api,
    /// Admin SDK base. Default `https://admin.googleapis.com`.
    #[serde(default = "default_directory_url")]
    pub directory_url: Url,
    /// Cloud Identity base. Default `https://cloudidentity.googleapis.com`.
    #[serde(default = "default_cloud_identity_url")]
    pub cloud_identity_url: Url,
    /// IAM Credentials base (`generateAccessToken`, `signJwt`).
    /// Default `https://iamcredentials.googleapis.com`.
    #[serde(default = "default_iam_credentials_url")]
    pub iam_credentials_url: Url,
    /// OAuth token endpoint for the `jwt-bearer` exchange, and the assertions' audience.
    /// Default `https://oauth2.googleapis.com/token`.
    #[serde(default = "default_token_url")]
    pub token_url: Url,
    /// Where our service-account identity comes from.
    pub credentials: CredentialsConfig,
    /// How long a "member" answer is served from cache. Default 5m.
    #[serde(default = "default_positive_ttl", with = "humantime_serde")]
    pub positive_ttl: Duration,
    /// How long a "not a member" answer is served from cache. Default 1m.
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// A hit this close to expiry is answered from cache and starts one background refresh.
    /// Capped at half the entry's TTL. Default 1m.
    #[serde(default = "default_refresh_ahead", with = "humantime_serde")]
    pub refresh_ahead: Duration,
    /// While Google is down or over quota, an expired answer is still served (as stale) for at
    /// most this long past its TTL; after that the caller gets an error (503). Default 10m.
    #[serde(default = "default_stale_bound", with = "humantime_serde")]
    pub stale_bound: Duration,
    /// Upper bound on cached answers. Default 100000.
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Timeout of every call to Google for groups and credentials. Keep it below Envoy's
    /// ext_authz timeout so a slow Google is our 503, not Envoy's. Default 2s.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Set from the policies, not the file: some policy names `org_units`, so our token also
    /// needs the Directory's user-reading scope.
    #[serde(skip)]
    pub read_accounts: bool,
    /// First pause after a quota error; doubles on each further one. Default 1s.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest pause after quota errors. Default 60s.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
}

/// Which Google API answers membership questions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// Admin SDK Directory `members.hasMember` (nested groups within the domain), falling back
    /// to `members.get` for members outside the domain. Needs `credentials.subject`.
    #[default]
    Directory,
    /// Cloud Identity `checkTransitiveMembership` (nesting across domains). Needs a Premium or
    /// Enterprise edition; no delegation.
    CloudIdentity,
}

/// `[groups.credentials]`: where our service-account identity comes from. The JSON is given as
/// `file = "path"`, or as `json = <secret reference>` (inline, `{ file }`, `{ aws_secret }`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CredentialsConfig {
    /// A Google service-account key JSON (`"type": "service_account"`).
    ServiceAccountKey {
        file: Option<PathBuf>,
        json: Option<SecretRef>,
        /// Workspace user to impersonate (domain-wide delegation); required by the Directory API.
        subject: Option<String>,
    },
    /// A Workload Identity Federation JSON (`"type": "external_account"`, AWS source).
    ExternalAccount {
        file: Option<PathBuf>,
        json: Option<SecretRef>,
        /// The service account to impersonate. Defaults to the one the file's
        /// `service_account_impersonation_url` names.
        service_account: Option<String>,
        /// Workspace user to impersonate (domain-wide delegation, through IAM `signJwt`).
        subject: Option<String>,
    },
}

// === impl GroupsConfig ===

impl GroupsConfig {
    /// Checks what serde cannot; the error is one line naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.credentials.source()?;
        if self.api == Api::Directory && self.credentials.subject().is_none() {
            return Err("groups.credentials.subject: api = \"directory\" needs a Workspace admin to impersonate (domain-wide delegation); set subject, or use api = \"cloud-identity\"".into());
        }
        for (key, value) in [
            ("groups.positive_ttl", self.positive_ttl),
            ("groups.negative_ttl", self.negative_ttl),
            ("groups.request_timeout", self.request_timeout),
            ("groups.backoff_initial", self.backoff_initial),
        ] {
            if value.is_zero() {
                return Err(format!("{key}: must be greater than zero"));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(
                "groups.backoff_max: must not be shorter than groups.backoff_initial".into(),
            );
        }
        if self.max_entries == 0 {
            return Err("groups.max_entries: must be greater than zero".into());
        }
        for (key, url) in [
            ("groups.directory_url", &self.directory_url),
            ("groups.cloud_identity_url", &self.cloud_identity_url),
            ("groups.iam_credentials_url", &self.iam_credentials_url),
            ("groups.token_url", &self.token_url),
        ] {
            if !is_http_url(url) {
                return Err(format!("{key}: must be an absolute http(s) URL"));
            }
        }
        Ok(())
    }
}

// === impl Api, CredentialsConfig ===

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Directory => "directory",
            Api::CloudIdentity => "cloud-identity",
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CredentialsConfig {
    /// The credential JSON's reference and the config key it was given under.
    pub fn source(&self) -> Result<(&'static str, SecretRef), String> {
        let (file, json) = match self {
            CredentialsConfig::ServiceAccountKey { file, json, .. }
            | CredentialsConfig::ExternalAccount { file, json, .. } => (file, json),
        };
        match (file, json) {
            (Some(path), None) => Ok(("groups.credentials.file", SecretRef::File(path.clone()))),
            (None, Some(reference)) => Ok(("groups.credentials.json", reference.clone())),
            (Some(_), Some(_)) => Err("groups.credentials: give either file or json, not both".into()),
            (None, None) => Err(
                "groups.credentials: the credential JSON is missing: set file = \"path\" or json = { aws_secret = \"...\" }".into(),
            ),
        }
    }

    /// The Workspace user to impersonate, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            CredentialsConfig::ServiceAccountKey { subject, .. }
            | CredentialsConfig::ExternalAccount { subject, .. } => subject.as_deref(),
        }
    }
}

fn default_directory_url() -> Url {
    Url::parse("https://admin.googleapis.com").expect("constant URL parses")
}
fn default_cloud_identity_url() -> Url {
    Url::parse("https://cloudidentity.googleapis.com").expect("constant URL parses")
}
fn default_iam_credentials_url() -> Url {
    Url::parse("https://iamcredentials.googleapis.com").expect("constant URL parses")
}
fn default_token_url() -> Url {
    Url::parse("https://oauth2.googleapis.com/token").expect("constant URL parses")
}
fn default_positive_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_refresh_ahead() -> Duration {
    Duration::from_secs(60)
}
fn default_stale_bound() -> Duration {
    Duration::from_secs(600)
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_backoff_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
