//! The configuration tree: defaults, then a TOML file, then `AUTHZ_*` environment variables.
//!
//! Every key can be set from the environment because ECS task definitions configure by environment:
//! `AUTHZ_<SECTION>__<KEY>` (double underscore between levels, case-insensitive), e.g.
//! `AUTHZ_GOOGLE__CLIENT_IDS=a.apps.googleusercontent.com,b.apps.googleusercontent.com`.
//! A value is read as TOML when it parses as a TOML value (`10`, `true`, `["a","b"]`) and as a plain
//! string otherwise; list keys also accept a comma-separated string.
//!
//! Loading is a pure function of (file text, environment pairs) so tests never touch process env.

pub mod policies;
mod secrets;

pub use secrets::{AwsSecretRef, SecretRef, SecretsConfig};

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use url::Url;

/// The environment variable prefix for overrides.
pub const ENV_PREFIX: &str = "AUTHZ_";
/// Read by the CLI for the config path; not a config key.
pub const ENV_CONFIG_PATH: &str = "AUTHZ_CONFIG";
/// Variables with our prefix that are the CLI's, not config keys (`authz admin` reads the
/// admin token from them; an ECS task may set them in the authz container).
const NOT_CONFIG_KEYS: [&str; 3] = [
    ENV_CONFIG_PATH,
    "AUTHZ_ADMIN_TOKEN",
    "AUTHZ_ADMIN_TOKEN_FILE",
];
/// The top-level sections, to tell `AUTHZ_GOOGLE_CLIENT_IDS` what it meant.
const SECTIONS: [&str; 18] = [
    "listen",
    "google",
    "access",
    "policies",
    "routes",
    "groups",
    "secrets",
    "resource",
    "resources",
    "oauth",
    "cache",
    "headers",
    "envoy",
    "log",
    "tracing",
    "client_metadata",
    "store",
    "runtime",
];

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
    pub groups: Option<crate::groups::GroupsConfig>,
    /// How secret references are re-read (`[secrets]`).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// The one MCP server protected (`[resource]`), the shorthand for a one-entry `[[resources]]`.
    #[serde(default)]
    pub resource: Option<crate::resource::ResourceConfig>,
    /// The MCP servers protected (`[[resources]]`), each with its own metadata, challenge,
    /// tokens and policy. At least one of `[resource]` and `[[resources]]` is required.
    #[serde(default)]
    pub resources: Vec<crate::resource::ResourceConfig>,
    /// The OAuth authorization server for MCP clients (`[oauth]`); off when absent.
    #[serde(default)]
    pub oauth: Option<crate::oauth::OAuthConfig>,
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
    pub tracing: crate::telemetry::TracingConfig,
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

/// The threads that serve requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Worker threads; unset: one per core. A sidecar sharing one or two
    /// cores with Envoy answers cached checks faster with 1 (no wake-ups of a second worker to
    /// steal work), at the price of verifying new tokens on one core (see BENCHMARKS.md).
    pub worker_threads: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// ext_authz `Check` and `grpc.health.v1`.
    pub grpc: SocketAddr,
    /// `/healthz` and `/readyz`.
    pub http: SocketAddr,
    /// The admin gRPC API (`authz.admin.v1.Admin`). Loopback only: it can flush caches.
    pub admin: SocketAddr,
    /// The bearer token every admin call must carry (a secret reference). Loopback is not a
    /// boundary where containers share a network namespace (an ECS task with awsvpc): without
    /// it, any process there could off-board anyone, so authz warns at start.
    pub admin_token: Option<SecretRef>,
    /// How long in-flight checks may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Google {
    /// OAuth client ids whose tokens we accept (`aud`, and `azp` when present).
    #[serde(deserialize_with = "string_list")]
    pub client_ids: Vec<String>,
    /// OIDC discovery base; `{issuer}/.well-known/openid-configuration` is fetched at start-up.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_tokeninfo_url")]
    pub tokeninfo_url: Url,
    /// Timeout of every call to Google (discovery, JWKS, tokeninfo, userinfo). Keep it below
    /// Envoy's ext_authz timeout so a slow Google is our 503, not Envoy's.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Leeway for `exp` and `iat` against clock skew between us and the token issuer.
    #[serde(default = "default_clock_skew", with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Minimum time between two JWKS fetches caused by an unknown `kid` (fetch-storm guard).
    #[serde(default = "default_jwks_refetch_interval", with = "humantime_serde")]
    pub jwks_refetch_interval: Duration,
    /// Refresh period when the JWKS response carries no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_default_refresh: Duration,
    /// At most this many never-seen access tokens are verified at once; more are a 503.
    #[serde(default = "default_max_concurrent_new_tokens")]
    pub max_concurrent_new_tokens: usize,
    /// At most this many never-seen access tokens start verification per second (burst: as
    /// many); more are a 503.
    #[serde(default = "default_new_tokens_per_second")]
    pub new_tokens_per_second: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Allowed Google Workspace domains, matched against the `hd` claim only.
    #[serde(deserialize_with = "string_list")]
    pub domains: Vec<String>,
    /// The policy for requests that neither Envoy nor `[[routes]]` assign one. Default
    /// `default`: `[policies.default]` if defined, else the domain check alone.
    #[serde(default)]
    pub default_policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Upper bound on cached verdicts; unauthenticated callers cannot grow memory past it.
    pub max_entries: u64,
    /// Longest life of a cached allow (also capped by the token's own expiry).
    #[serde(with = "humantime_serde")]
    pub allow_ttl: Duration,
    /// Life of a cached denial for an invalid token.
    #[serde(with = "humantime_serde")]
    pub deny_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Headers {
    /// Upstream header carrying the verified email.
    pub email: String,
    /// Upstream header carrying the Google subject (`sub`), the stable user id.
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Envoy {
    /// How "could not decide" (Google down) reaches Envoy.
    pub outage_response: OutageResponse,
}

/// How an outage is reported to Envoy. Both end in a 503 for the client when the filter has
/// `status_on_error: 503`; neither is ever a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutageResponse {
    /// A failed RPC (gRPC UNAVAILABLE). Works with every Envoy version.
    GrpcUnavailable,
    /// `CheckResponse.error_response` with a 503, a JSON body and `Retry-After`: needs an Envoy that knows the field (late 2025 on; tested with 1.40).
    ErrorResponse,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing `EnvFilter` directive, e.g. `info` or `authz=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// The `[client_metadata]` section: accepting OAuth clients whose `client_id` is the https URL of
/// a Client ID Metadata Document, fetched by us. Anyone can name such a URL in an authorization
/// request, so every fetch is bounded in time, size and destination, and cached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientMetadataConfig {
    /// Accept client ids that are metadata document URLs. Default true.
    pub enabled: bool,
    /// Total time for one fetch: resolving, connecting, TLS, headers and body. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest document accepted, in bytes; reading stops as soon as a response passes it.
    /// Default 16384.
    pub max_bytes: u64,
    /// Upper bound on cached documents (and cached failures); unauthenticated callers cannot
    /// grow memory past it. Default 1000.
    pub max_entries: u64,
    /// Shortest life of a cached document, whatever `Cache-Control: max-age` says, so that a
    /// document cannot make us refetch it on every request. Default 1m.
    #[serde(with = "humantime_serde")]
    pub min_ttl: Duration,
    /// Longest life of a cached document, whatever `Cache-Control: max-age` says. Default 24h.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Life of a cached document whose response carries no `Cache-Control` lifetime (within
    /// `min_ttl`..`max_ttl`). Default 10m.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Life of a cached failure (unreachable host, error status, invalid document), so that a
    /// bad URL named in many requests costs one fetch per period. Default 30s.
    #[serde(with = "humantime_serde")]
    pub failure_ttl: Duration,
    /// Hosts (`host`, any port) or host and port (`host:port`, `[v6]:port`) fetched from even
    /// though they resolve to private, loopback or otherwise non-public addresses: for a
    /// company whose own MCP clients publish their metadata on internal hosts. Listing a host
    /// here is an operator's decision to let unauthenticated callers make us fetch from it.
    /// Default: none.
    #[serde(deserialize_with = "string_list")]
    pub allow_hosts: Vec<String>,
    /// A PEM file of root CA certificates trusted in addition to the built-in roots, for
    /// internal hosts. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Fetches running at once, whatever the URLs; past it a request is refused (not cached).
    /// Default 8.
    pub max_concurrent_fetches: usize,
    /// Fetches per host and minute (each `?1`, `?2`, ... of one host counts); past it a
    /// request is refused (not cached), so nobody can make us hammer a host. Default 10.
    pub fetches_per_host_per_minute: u32,
}

/// The OAuth facade's shared state: pending sign-ins, codes, refresh tokens, revocations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` for a single replica; `redis` when several replicas must share sign-ins, codes,
    /// refresh tokens and revocations. Default `memory`.
    pub backend: StoreBackend,
    /// Memory backend: the most values and set members held at once. Unauthenticated callers
    /// can start sign-ins, so this bounds their memory; when full, new entries are refused
    /// (503) until some expire, never evicted. Default 100000.
    pub max_entries: u64,
    /// How often each replica reads revocations made on other replicas; a revoked token is
    /// refused everywhere within about this long. Default 1s.
    #[serde(with = "humantime_serde")]
    pub revocation_poll: Duration,
    /// The Redis connection (`[store.redis]`); required with `backend = "redis"`, refused
    /// otherwise (a replica that silently kept its state in memory would break single use).
    pub redis: Option<RedisConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// In this process; lost on restart. One replica only.
    #[default]
    Memory,
    /// A Redis (6.2 or newer) shared by every replica.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS (verified against
    /// the WebPKI roots). Redacted wherever the config is printed.
    pub url: RedisUrl,
    /// The password, when it is not in the URL (one or the other, not both). Default: none.
    /// A secret reference (inline, `{ file }` or `{ aws_secret }`), read once at start-up: a
    /// changed password needs a restart (Redis accepts two passwords during a rotation).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Prepended to every key, so several services can share one Redis. Default `authz:`.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Deadline of every Redis call, connecting included; past it the call is an outage
    /// (503). Keep it well below Envoy's ext_authz timeout. Default 500ms.
    #[serde(default = "default_store_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// A Redis URL. Its `Debug` hides the password, and a URL that does not parse is reported
/// without echoing it (it may hold the password).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

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
        let fail = |key: &str, message: &str| {
            Err(ConfigError {
                key: key.into(),
                message: message.into(),
            })
        };
        if !self.listen.admin.ip().is_loopback() {
            return fail(
                "listen.admin",
                "must be a loopback address (127.0.0.1 or ::1): the admin API is not for the network",
            );
        }
        if self.google.client_ids.is_empty() {
            return fail("google.client_ids", "at least one client id is required");
        }
        if self.google.client_ids.iter().any(|id| id.trim().is_empty()) {
            return fail("google.client_ids", "client ids must not be blank");
        }
        let issuer = Url::parse(&self.google.issuer);
        if !matches!(issuer, Ok(ref u) if u.scheme() == "https" || u.scheme() == "http") {
            return fail("google.issuer", "must be an http(s) URL");
        }
        if self.google.request_timeout.is_zero() {
            return fail("google.request_timeout", "must be greater than zero");
        }
        let refetch = self.google.jwks_refetch_interval;
        if refetch < Duration::from_secs(1) || refetch > Duration::from_secs(3600) {
            return fail("google.jwks_refetch_interval", "must be between 1s and 1h");
        }
        if self.google.jwks_default_refresh < refetch {
            return fail(
                "google.jwks_default_refresh",
                "must not be shorter than google.jwks_refetch_interval",
            );
        }
        if self.access.domains.is_empty() {
            return fail(
                "access.domains",
                "at least one Workspace domain is required",
            );
        }
        for domain in &self.access.domains {
            if let Err(message) = check_domain(domain) {
                return fail("access.domains", &message);
            }
        }
        self.validate_policies()?;
        self.validate_resources()?;
        if self.cache.max_entries == 0 {
            return fail("cache.max_entries", "must be greater than zero");
        }
        if self.runtime.worker_threads == Some(0) {
            return fail("runtime.worker_threads", "must be greater than zero");
        }
        for (key, name) in [
            ("headers.email", &self.headers.email),
            ("headers.user", &self.headers.user),
        ] {
            if let Err(message) = check_identity_header(name) {
                return fail(key, &message);
            }
        }
        if self.headers.email == self.headers.user {
            return fail("headers.user", "must differ from headers.email");
        }
        if let Err((key, message)) = self.secrets.validate() {
            return fail(key, &message);
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return fail("log.level", &e.to_string());
        }
        if let Err((key, message)) = self.tracing.validate() {
            return fail(key, &message);
        }
        if let Err((key, message)) = self.client_metadata.validate() {
            return fail(&format!("client_metadata.{key}"), &message);
        }
        if let Err((key, message)) = self.store.validate() {
            return fail(key, &message);
        }
        Ok(())
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
                .is_some_and(|groups| groups.api == crate::groups::Api::Directory);
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

    fn validate_resources(&self) -> Result<(), ConfigError> {
        let entries = self.resource_entries();
        if entries.is_empty() {
            return Err(ConfigError {
                key: "resource.url".into(),
                message: "the MCP server's URL is required (or list several in [[resources]]); \
                          from the environment: AUTHZ_RESOURCE__URL"
                    .into(),
            });
        }
        let keyed: Vec<(String, &crate::resource::ResourceConfig)> = entries
            .iter()
            .map(|(key, entry)| (key.clone(), *entry))
            .collect();
        if let Err((key, message)) = crate::resource::check(&keyed) {
            return Err(ConfigError { key, message });
        }
        for (key, entry) in &entries {
            if let Some(policy) = &entry.policy {
                if !self.policies.contains_key(policy) && policy != self.default_policy() {
                    return Err(ConfigError {
                        key: format!("{key}.policy"),
                        message: format!("no policy named {policy:?} is defined"),
                    });
                }
            }
        }
        Ok(())
    }

    /// `[resource]` then `[[resources]]`, with their keys for errors.
    fn resource_entries(&self) -> Vec<(String, &crate::resource::ResourceConfig)> {
        self.resource
            .iter()
            .map(|entry| ("resource".to_string(), entry))
            .chain(
                self.resources
                    .iter()
                    .enumerate()
                    .map(|(index, entry)| (format!("resources[{index}]"), entry)),
            )
            .collect()
    }

    /// The protected MCP servers, the default first. Only for a validated config.
    pub fn protected_resources(&self) -> crate::resource::Resources {
        let shorthand_name = self
            .oauth
            .as_ref()
            .map(|oauth| oauth.resource_name.as_str());
        let entries: Vec<(&crate::resource::ResourceConfig, Option<&str>)> = self
            .resource
            .iter()
            .map(|entry| (entry, shorthand_name))
            .chain(self.resources.iter().map(|entry| (entry, None)))
            .collect();
        crate::resource::Resources::new(&entries)
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

// === impl StoreConfig ===

impl StoreConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_entries == 0 {
            return Err(("store.max_entries", "must be greater than zero".into()));
        }
        if self.revocation_poll.is_zero() || self.revocation_poll > Duration::from_secs(60) {
            return Err((
                "store.revocation_poll",
                "must be between 1ms and 60s".into(),
            ));
        }
        match (self.backend, &self.redis) {
            (StoreBackend::Memory, None) => Ok(()),
            (StoreBackend::Memory, Some(_)) => Err((
                "store.backend",
                "is \"memory\" but [store.redis] is set: set backend = \"redis\" (or remove \
                 [store.redis]) so that replicas share their state"
                    .into(),
            )),
            (StoreBackend::Redis, None) => Err((
                "store.redis",
                "backend = \"redis\" needs a [store.redis] section with a url".into(),
            )),
            (StoreBackend::Redis, Some(redis)) => redis.validate(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            max_entries: 100_000,
            revocation_poll: Duration::from_secs(1),
            redis: None,
        }
    }
}

// === impl RedisConfig ===

impl RedisConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = &self.url.0;
        if !matches!(url.scheme(), "redis" | "rediss") || url.host_str().is_none() {
            return Err((
                "store.redis.url",
                "must be redis://host[:port][/db] or rediss://host[:port][/db]".into(),
            ));
        }
        if url.fragment().is_some() {
            return Err((
                "store.redis.url",
                "must not carry a fragment (TLS is always verified)".into(),
            ));
        }
        if url.password().is_some() && self.password.is_some() {
            return Err((
                "store.redis.password",
                "the URL already carries a password: give it in one place".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("store.redis.timeout", "must be greater than zero".into()));
        }
        Ok(())
    }
}

// === impl RedisUrl ===

impl RedisUrl {
    /// The URL itself, password included, for the one place that connects.
    pub fn expose(&self) -> &Url {
        &self.0
    }
}

/// Parses without checking the scheme (that is [`Config::load`]'s validation). The error never
/// holds the text.
impl std::str::FromStr for RedisUrl {
    type Err = url::ParseError;
    fn from_str(text: &str) -> Result<RedisUrl, url::ParseError> {
        Url::parse(text).map(RedisUrl)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RedisUrl, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("not a URL ({e})")))
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            // Cannot fail: a URL with a password has a host.
            let _ = shown.set_password(Some("redacted"));
        }
        write!(f, "RedisUrl({shown})")
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

const GOOGLE_ISSUER: &str = "https://accounts.google.com";

fn check_domain(domain: &str) -> Result<(), String> {
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !domain.starts_with('.')
        && !domain.ends_with('.');
    if valid {
        Ok(())
    } else {
        Err(format!("{domain:?} is not a domain name"))
    }
}

/// An absolute `http` or `https` URL with a host: what every configured endpoint must be.
pub fn is_http_url(url: &Url) -> bool {
    matches!(url.scheme(), "https" | "http") && url.host_str().is_some()
}

fn check_identity_header(name: &str) -> Result<(), String> {
    let token_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if name.is_empty() || !name.chars().all(token_char) {
        return Err(format!("{name:?} must be a lower-case header name"));
    }
    if matches!(name, "authorization" | "host" | "cookie" | "content-length") {
        return Err(format!("{name:?} cannot carry identity"));
    }
    Ok(())
}

/// serde's "missing field `x`" at `path`, said as the key to set and its variable. A missing
/// section is said as the key it requires.
fn missing_key(path: &str, message: &str) -> Option<ConfigError> {
    let field = message.strip_prefix("missing field `")?.split('`').next()?;
    let key = match (path, field) {
        ("", "google") => "google.client_ids".to_string(),
        ("", "access") => "access.domains".to_string(),
        ("", field) => field.to_string(),
        (path, field) => format!("{path}.{field}"),
    };
    let plain = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    let message = if plain {
        format!("required (in the file, or as {})", env_name(&key))
    } else {
        "required".to_string()
    };
    Some(ConfigError { key, message })
}

/// The variable that sets `key` (`google.client_ids` -> `AUTHZ_GOOGLE__CLIENT_IDS`).
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// Applies `AUTHZ_A__B=value` pairs onto the TOML tree as `a.b = value`.
fn overlay_env(
    tree: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    // Sorted so that a clash (`AUTHZ_GOOGLE=x` and `AUTHZ_GOOGLE__ISSUER=y`) fails the same way
    // on every start.
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with(ENV_PREFIX) && !NOT_CONFIG_KEYS.contains(&name.as_str())
        })
        .collect();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let key = path.join(".");
        // `AUTHZ_GOOGLE_CLIENT_IDS`: a level joined with one underscore.
        if !SECTIONS.contains(&path[0].as_str()) {
            if let Some(section) = SECTIONS
                .iter()
                .find(|section| path[0].starts_with(&format!("{section}_")))
            {
                let meant = format!("{section}.{}", &key[section.len() + 1..]);
                return Err(ConfigError {
                    key: name,
                    message: format!(
                        "levels are separated by two underscores: {} sets {meant}",
                        env_name(&meant)
                    ),
                });
            }
        }
        if path.iter().any(String::is_empty) {
            return Err(ConfigError {
                key: name,
                message: "malformed variable name".into(),
            });
        }
        let (leaf, parents) = path.split_last().expect("split yields at least one part");
        let mut table = &mut *tree;
        for part in parents {
            let entry = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| ConfigError {
                key: key.clone(),
                message: format!("{part} is not a section"),
            })?;
        }
        table.insert(leaf.clone(), env_value(&raw));
    }
    Ok(())
}

/// `10` -> integer, `["a"]` -> array, `example.com` -> string.
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
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

fn default_issuer() -> String {
    GOOGLE_ISSUER.to_string()
}
fn default_tokeninfo_url() -> Url {
    Url::parse("https://oauth2.googleapis.com/tokeninfo").expect("constant URL parses")
}
fn default_request_timeout() -> Duration {
    Duration::from_millis(800)
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_refetch_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_concurrent_new_tokens() -> usize {
    32
}
fn default_new_tokens_per_second() -> u32 {
    50
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(3600)
}
fn default_key_prefix() -> String {
    "authz:".to_string()
}
fn default_store_timeout() -> Duration {
    Duration::from_millis(500)
}

// === impl ClientMetadataConfig ===

impl ClientMetadataConfig {
    /// Largest `max_bytes`: a metadata document is a few hundred bytes.
    const MAX_BYTES_LIMIT: u64 = 1024 * 1024;
    /// Longest `timeout`: an authorization request waits on the fetch.
    const TIMEOUT_LIMIT: Duration = Duration::from_secs(60);

    /// Checks what serde cannot; the error names the key within the section.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.timeout.is_zero() || self.timeout > Self::TIMEOUT_LIMIT {
            return Err((
                "timeout",
                "must be greater than zero and at most 60s".into(),
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > Self::MAX_BYTES_LIMIT {
            return Err(("max_bytes", "must be between 1 and 1048576 (1 MiB)".into()));
        }
        if self.max_entries == 0 {
            return Err(("max_entries", "must be greater than zero".into()));
        }
        if self.max_ttl < self.min_ttl {
            return Err(("max_ttl", "must not be shorter than min_ttl".into()));
        }
        if self.failure_ttl.is_zero() {
            return Err((
                "failure_ttl",
                "must be greater than zero: failures are cached so a bad URL cannot make us hammer a host".into(),
            ));
        }
        for entry in &self.allow_hosts {
            crate::client_metadata::AllowHost::parse(entry).map_err(|e| ("allow_hosts", e))?;
        }
        Ok(())
    }
}

impl Default for ClientMetadataConfig {
    fn default() -> Self {
        ClientMetadataConfig {
            enabled: true,
            timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            max_entries: 1000,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(600),
            failure_ttl: Duration::from_secs(30),
            allow_hosts: Vec::new(),
            ca_file: None,
            max_concurrent_fetches: 8,
            fetches_per_host_per_minute: 10,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            grpc: SocketAddr::from(([127, 0, 0, 1], 9191)),
            http: SocketAddr::from(([127, 0, 0, 1], 9192)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9193)),
            admin_token: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            max_entries: 100_000,
            allow_ttl: Duration::from_secs(300),
            deny_ttl: Duration::from_secs(10),
        }
    }
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            email: "x-auth-request-email".into(),
            user: "x-auth-request-user".into(),
        }
    }
}

impl Default for Envoy {
    fn default() -> Self {
        Envoy {
            outage_response: OutageResponse::GrpcUnavailable,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

#[cfg(test)]
mod tests;
