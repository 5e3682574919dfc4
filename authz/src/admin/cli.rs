//! `authz admin ...`: the admin API's command-line client, printing plain text.

use std::time::Duration;

use tonic::{Request, metadata::MetadataValue, transport::Endpoint};

use super::pb::{
    CacheStatsRequest, ConfigVersionRequest, InvalidateUserRequest, admin_client::AdminClient,
};

/// Calls the admin API of a running authz (listen.admin).
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The admin listener's address (listen.admin).
    #[arg(long, default_value = "127.0.0.1:9193")]
    pub addr: String,
    /// A file holding the admin token (listen.admin_token); surrounding whitespace is ignored.
    /// Without it, the token is read from the environment variable AUTHZ_ADMIN_TOKEN, if set.
    #[arg(long, env = "AUTHZ_ADMIN_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Forget everything cached about a user (verdicts, identities, group memberships), so
    /// that off-boarding takes effect on the user's next request.
    InvalidateUser { email: String },
    /// Entries, hits and misses of each cache.
    Stats,
    /// The loaded configuration's version, load time and source.
    ConfigVersion,
}

/// Why the command failed; printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach the admin API at {addr} (is authz running, and is listen.admin this address?): {cause}"
    )]
    Unreachable { addr: String, cause: String },
    #[error("the admin API refused: {0}")]
    Refused(String),
    #[error("reading the admin token from {path}: {cause}")]
    Token { path: String, cause: String },
}

/// Runs one command and returns what to print.
pub async fn run(args: &AdminArgs) -> Result<String, CliError> {
    let unreachable = |cause: String| CliError::Unreachable {
        addr: args.addr.clone(),
        cause,
    };
    let endpoint = Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(source_chain(&e)))?;
    let (source, text) = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError::Token {
                path: path.display().to_string(),
                cause: e.to_string(),
            })?;
            (path.display().to_string(), Some(text))
        }
        None => (
            "AUTHZ_ADMIN_TOKEN".to_string(),
            std::env::var("AUTHZ_ADMIN_TOKEN").ok(),
        ),
    };
    let token = match text {
        Some(text) => Some(
            MetadataValue::try_from(format!("Bearer {}", text.trim())).map_err(|_| {
                CliError::Token {
                    path: source,
                    cause: "not a valid header value".into(),
                }
            })?,
        ),
        None => None,
    };
    let mut client = AdminClient::with_interceptor(channel, move |mut request: Request<()>| {
        if let Some(token) = &token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    });
    let refused = |status: tonic::Status| CliError::Refused(status.message().to_string());
    Ok(match &args.command {
        AdminCommand::InvalidateUser { email } => {
            let request = InvalidateUserRequest {
                email: email.clone(),
            };
            let removed = client
                .invalidate_user(request)
                .await
                .map_err(refused)?
                .into_inner();
            format!(
                "invalidated {email}: {} verdicts, {} identities, {} memberships, {} refresh-token families removed\n",
                removed.verdicts,
                removed.identities,
                removed.memberships,
                removed.refresh_token_families
            )
        }
        AdminCommand::Stats => {
            let stats = client
                .cache_stats(CacheStatsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let mut out = format!(
                "{:<12} {:>10} {:>12} {:>12} {:>9}\n",
                "cache", "entries", "hits", "misses", "hit rate"
            );
            for cache in stats.caches {
                let lookups = cache.hits + cache.misses;
                let rate = if lookups == 0 {
                    "-".to_string()
                } else {
                    format!("{:.1}%", cache.hits as f64 * 100.0 / lookups as f64)
                };
                out += &format!(
                    "{:<12} {:>10} {:>12} {:>12} {:>9}\n",
                    cache.name, cache.entries, cache.hits, cache.misses, rate
                );
            }
            out
        }
        AdminCommand::ConfigVersion => {
            let version = client
                .config_version(ConfigVersionRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let error = if version.last_reload_error.is_empty() {
                "none"
            } else {
                &version.last_reload_error
            };
            format!(
                "version      {}\nfingerprint  {}\nloaded at    {} (unix)\nsource       {}\nreloads      {}\nlast error   {}\n",
                version.version,
                version.fingerprint,
                version.loaded_at,
                version.source,
                version.reloads,
                error
            )
        }
    })
}

/// tonic's transport error says only "transport error"; the cause is further down.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}
