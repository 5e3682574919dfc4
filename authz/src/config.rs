//! The configuration tree: defaults, then a TOML file, then `AUTHZ_*` environment variables.
//!
//! Every key can be set from the environment because ECS task definitions configure by environment:
//! `AUTHZ_<SECTION>__<KEY>` (double underscore between levels, case-insensitive), e.g.
//! `AUTHZ_GOOGLE__CLIENT_IDS=a.apps.googleusercontent.com,b.apps.googleusercontent.com`.
//! A value is read as TOML when it parses as a TOML value (`10`, `true`, `["a","b"]`) and as a plain
//! string otherwise; list keys also accept a comma-separated string.
//!
//! Loading is a pure function of (file text, environment pairs) so tests never touch process env.

mod client_metadata;
mod env;
mod google;
mod groups;
mod oauth;
pub mod policies;
mod resources;
mod secrets;
mod serving;
mod store;
mod telemetry;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use url::Url;

pub use client_metadata::{AllowHost, ClientIdHost, ClientMetadataConfig};
pub use env::{ENV_CONFIG_PATH, ENV_PREFIX, env_name};
use env::{missing_key, overlay_env};
pub use google::{Access, Cache, Google};
use google::{GOOGLE_ISSUER, check_domain};
pub use groups::{Api, CredentialsConfig, GroupsConfig};
pub(crate) use oauth::NEVER_PRIVATE_USE;
pub use oauth::{OAuthConfig, PrivateUseScheme};
pub use resources::ResourceConfig;
pub use secrets::{AwsSecretRef, SecretRef, SecretsConfig};
pub use serving::{Envoy, Headers, Listen, OutageResponse, Runtime};
pub use store::{RedisConfig, RedisUrl, StoreBackend, StoreConfig};
pub use telemetry::{Log, LogFormat, TracingConfig};

/// The whole configuration, validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    pub google: Google,
    pub access: Access,
    /// Named access policies (`[policies.<name>]`).
    #[serde(default)]
    pub policies: BTreeMap<String, policies::PolicyConfig>,
    /// Path-prefix rules choosing a policy when Envoy's route names none (`[[routes]]`).
    #[serde(default)]
    pub routes: Vec<policies::RouteConfig>,
    /// Google group membership lookups (`[groups]`); required when a policy names groups.
    #[serde(default)]
    pub groups: Option<GroupsConfig>,
    /// How secret references are re-read (`[secrets]`).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The one MCP server protected (`[resource]`), the shorthand for a one-entry `[[resources]]`.
    #[serde(default)]
    pub resource: Option<ResourceConfig>,
    /// The MCP servers protected (`[[resources]]`), each with its own metadata, challenge,
    /// tokens and policy. At least one of `[resource]` and `[[resources]]` is required.
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    /// The OAuth authorization server for MCP clients (`[oauth]`); off when absent.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
    #[serde(default)]
    pub cache: Cache,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub envoy: Envoy,
    #[serde(default)]
    pub log: Log,
    /// OpenTelemetry traces (`[tracing]`); off unless `otlp_endpoint` is set.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// OAuth Client ID Metadata Documents (`[client_metadata]`).
    #[serde(default)]
    pub client_metadata: ClientMetadataConfig,
    /// Where the OAuth facade keeps its shared state (`[store]`). Default: in memory.
    #[serde(default)]
    pub store: StoreConfig,
    /// The async runtime (`[runtime]`), built once at start.
    #[serde(default)]
    pub runtime: Runtime,
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {}: {}", one_line(key), one_line(message))]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

// === impl Config ===

impl Config {
    /// Builds the config from an optional TOML document and environment pairs, then validates it.
    pub fn load(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut tree = match file {
            Some(text) => text.parse::<toml::Table>().map_err(|e| ConfigError {
                key: "(file)".into(),
                message: first_line(e.message()),
            })?,
            None => toml::Table::new(),
        };
        overlay_env(&mut tree, env)?;
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                let path = match e.path().to_string().as_str() {
                    "." => String::new(),
                    path => path.to_string(),
                };
                let message = first_line(&e.into_inner().to_string());
                missing_key(&path, &message).unwrap_or(ConfigError {
                    key: if path.is_empty() {
                        "(root)".to_string()
                    } else {
                        path
                    },
                    message,
                })
            })?;
        config.validate()?;
        let mut config = config;
        let reads_accounts = config.policies.values().any(|p| !p.org_units.is_empty());
        if let Some(groups) = &mut config.groups {
            groups.read_accounts = reads_accounts;
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let section = |checked: Result<(), (&'static str, String)>| {
            checked.map_err(|(key, message)| ConfigError {
                key: key.into(),
                message,
            })
        };
        section(self.listen.validate())?;
        section(self.google.validate())?;
        section(self.access.validate())?;
        self.validate_policies()?;
        self.validate_resources()?;
        section(self.cache.validate())?;
        section(self.runtime.validate())?;
        section(self.headers.validate())?;
        section(self.secrets.validate())?;
        section(self.log.validate())?;
        section(self.tracing.validate())?;
        self.client_metadata
            .validate()
            .map_err(|(key, message)| ConfigError {
                key: format!("client_metadata.{key}"),
                message,
            })?;
        section(self.store.validate())
    }

    fn validate_policies(&self) -> Result<(), ConfigError> {
        let fail = |key: String, message: String| Err(ConfigError { key, message });
        for (name, policy) in &self.policies {
            if let Err(message) = policies::check_name(name) {
                return fail(format!("policies.{name}"), message);
            }
            if let Err((key, message)) = policies::check_policy(policy) {
                return fail(format!("policies.{name}.{key}"), message);
            }
            let names_groups = !policy.groups.is_empty()
                || policy.rules.iter().any(|rule| !rule.groups.is_empty());
            if names_groups && self.groups.is_none() {
                return fail(
                    format!("policies.{name}.groups"),
                    "group membership needs a [groups] section (which Google API, which credentials)".into(),
                );
            }
            if let Some(bad) = policy.org_units.iter().find(|unit| !unit.starts_with('/')) {
                return fail(
                    format!("policies.{name}.org_units"),
                    format!("{bad:?} is not an organizational unit path (they start with /)"),
                );
            }
            let directory = self
                .groups
                .as_ref()
                .is_some_and(|groups| groups.api == Api::Directory);
            if !policy.org_units.is_empty() && !directory {
                return fail(
                    format!("policies.{name}.org_units"),
                    "organizational units come from the Directory API: they need a [groups] \
                     section with api = \"directory\""
                        .into(),
                );
            }
        }
        if let Some(oauth) = &self.oauth {
            if let Err((key, message)) = oauth.validate(&self.google.client_ids) {
                return Err(ConfigError { key, message });
            }
            let shared = self.store.backend == StoreBackend::Redis;
            if shared && (oauth.signing_keys.is_none() || oauth.sealing_keys.is_none()) {
                let key = if oauth.signing_keys.is_none() {
                    "oauth.signing_keys"
                } else {
                    "oauth.sealing_keys"
                };
                return Err(ConfigError {
                    key: key.into(),
                    message: "required with store.backend = \"redis\": every replica must use the same keys".into(),
                });
            }
        }
        if let Some(groups) = &self.groups {
            if let Err(message) = groups.validate() {
                let (key, message) = message
                    .split_once(": ")
                    .map(|(k, m)| (k.to_string(), m.to_string()))
                    .unwrap_or_else(|| ("groups".to_string(), message.clone()));
                return fail(key, message);
            }
        }
        if let Some(name) = &self.access.default_policy {
            if !self.policies.contains_key(name) {
                return fail(
                    "access.default_policy".into(),
                    format!("no policy named {name:?} is defined"),
                );
            }
        }
        let mut prefixes = std::collections::HashSet::new();
        for (index, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{index}].{field}");
            if !route.prefix.starts_with('/') || route.prefix.contains(['?', '#']) {
                return fail(
                    key("prefix"),
                    format!("{:?} must be a path starting with '/'", route.prefix),
                );
            }
            if !prefixes.insert(route.prefix.as_str()) {
                return fail(key("prefix"), format!("{:?} is listed twice", route.prefix));
            }
            let known =
                self.policies.contains_key(&route.policy) || route.policy == self.default_policy();
            if !known {
                return fail(
                    key("policy"),
                    format!("no policy named {:?} is defined", route.policy),
                );
            }
        }
        Ok(())
    }

    /// The name of the policy that applies when nothing else selects one.
    pub fn default_policy(&self) -> &str {
        self.access
            .default_policy
            .as_deref()
            .unwrap_or(policies::DEFAULT_POLICY)
    }

    /// The issuers an ID token may name: the configured one, plus Google's legacy spelling.
    pub fn accepted_issuers(&self) -> Vec<String> {
        let mut issuers = vec![self.google.issuer.clone()];
        if self.google.issuer == GOOGLE_ISSUER {
            issuers.push("accounts.google.com".to_string());
        }
        issuers
    }

    /// A digest of everything the access decision reads from the config, so a verdict cached
    /// under one configuration can never answer under another.
    pub fn policy_fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        let decision_inputs = serde_json::json!({
            "domains": self.access.domains,
            "client_ids": self.google.client_ids,
            "issuer": self.google.issuer,
            "default_policy": self.default_policy(),
            "policies": self.policies,
            "routes": self.routes,
        });
        hash.update(decision_inputs.to_string().as_bytes());
        // The sections without a serialized form, by their Debug text (which never shows a
        // secret's value): how tokens are checked, how groups are looked up, which resource
        // and issuer our own tokens name. A change to any of them must not be answered from
        // verdicts cached under the old ones.
        for section in [
            format!("{:?}", self.google),
            format!("{:?}", self.access),
            format!("{:?}", self.groups),
            format!("{:?}", (&self.resource, &self.resources)),
            format!(
                "{:?}",
                self.oauth
                    .as_ref()
                    .map(|o| (&o.issuer, &o.google_client_id))
            ),
        ] {
            hash.update(b"\0");
            hash.update(section.as_bytes());
        }
        hash.finalize().into()
    }
}

/// Keys and values can come from the environment or quoted TOML keys and may hold control
/// characters; escaping them keeps every error on one line.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Deserializer messages may append a location on a second line; errors stay one line.
fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// An absolute `http` or `https` URL with a host: what every configured endpoint must be.
pub fn is_http_url(url: &Url) -> bool {
    matches!(url.scheme(), "https" | "http") && url.host_str().is_some()
}

/// A list given as a TOML array or as one comma-separated string (convenient in env vars).
pub(crate) fn string_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        Joined(String),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::Many(items) => items,
        OneOrMany::Joined(joined) => joined
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

#[cfg(test)]
mod tests;
