//! The system under test: the `standin` binary (Google, Directory API included) and the
//! `authz` binary, both child processes killed when dropped; and the stand-in's control API.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};
use standin::Stats;

use super::mix::{ADMINS, ENG, PLATFORM, Population, SECURITY, SRE};
use crate::bench::{
    CLIENT_ID, DOMAIN,
    server::{Process, free_port},
};

/// The Workspace admin authz impersonates (domain-wide delegation).
pub const ADMIN: &str = "admin@example.com";
pub const SERVICE_ACCOUNT: &str = "authz-groups@project.iam.gserviceaccount.com";
const DIRECTORY_SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";

/// A fresh temporary directory for one child process.
fn temp_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{name}-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Starts `bin` with `args`, its output going to `<dir>/<name>.log`.
fn spawn(
    name: &'static str,
    bin: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> anyhow::Result<(Process, PathBuf)> {
    ensure!(
        bin.is_file(),
        "{} does not exist: run `cargo build --release -p authz -p standin -p xtask` first \
         (or pass --{name}-bin)",
        bin.display()
    );
    let dir = temp_dir(name)?;
    let log_path = dir.join(format!("{name}.log"));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new(bin);
    // The config file is the whole config: no AUTHZ_* overrides from the caller.
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("AUTHZ_") {
            command.env_remove(var);
        }
    }
    let child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file handle")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()));
    match child {
        Ok(child) => Ok((Process::new(name, child, dir.clone()), dir)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

/// The running `standin` binary and a client for its control API.
#[derive(Debug)]
pub struct StandIn {
    pub process: Process,
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl StandIn {
    pub async fn start(bin: &Path) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let listen = addr.to_string();
        // Quiet: at info it logs every control call.
        let (mut process, _) = spawn(
            "standin",
            bin,
            &["--listen".as_ref(), listen.as_ref()],
            &[("RUST_LOG", "warn")],
        )?;
        process
            .wait_ready(addr, "/_standin/stats", std::time::Duration::from_secs(15))
            .await?;
        Ok(Self {
            process,
            addr,
            http: reqwest::Client::new(),
        })
    }

    /// The issuer, and the base URL of every Google API it plays.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/_standin/{path}", self.url());
        let response = self
            .http
            .request(method, &url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        ensure!(status.is_success(), "{url} answered {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("{url} answered non-JSON: {text}"))
    }

    /// The Workspace tenant, the service account (its key file is returned) and the groups.
    pub async fn set_up_google(&self, population: &Population) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            "directory",
            json!({"domains": [DOMAIN], "admins": [ADMIN]}),
        )
        .await?;
        let key = self
            .call(
                reqwest::Method::POST,
                "service_account",
                json!({"email": SERVICE_ACCOUNT, "delegated_scopes": [DIRECTORY_SCOPE]}),
            )
            .await?;
        for (g, group) in population.groups.iter().enumerate() {
            self.call(
                reqwest::Method::PUT,
                "group",
                json!({"group": group, "members": population.members(g)}),
            )
            .await?;
        }
        Ok(key)
    }

    /// One ID token per user, claims as Google issues them; `age` seconds old (so that two
    /// sets minted at once differ, as a token refreshed later would).
    pub async fn mint_tokens(&self, users: usize, age: u64) -> anyhow::Result<Vec<String>> {
        use futures::{StreamExt as _, TryStreamExt as _};
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            - age;
        let issuer = self.url();
        futures::stream::iter(0..users)
            .map(|user| {
                let claims = json!({
                    "iss": issuer,
                    "aud": CLIENT_ID,
                    "azp": CLIENT_ID,
                    "sub": format!("{}", 100_000_000_000_000_000_000u128 + user as u128),
                    "email": Population::email(user),
                    "email_verified": true,
                    "hd": DOMAIN,
                    "iat": now,
                    "exp": now + 3600,
                });
                async move {
                    let answer = self
                        .call(reqwest::Method::POST, "id_token", json!({"claims": claims}))
                        .await?;
                    answer["token"]
                        .as_str()
                        .map(str::to_owned)
                        .context("POST /_standin/id_token answered without a token")
                }
            })
            .buffered(8)
            .try_collect()
            .await
    }

    /// Zeroes the counters, returning what they held.
    pub async fn reset_stats(&self) -> anyhow::Result<Stats> {
        let old = self
            .call(reqwest::Method::POST, "stats/reset", json!({}))
            .await?;
        serde_json::from_value(old).context("decoding the stand-in's stats")
    }
}

/// Google calls the membership path makes: Directory lookups and access-token fetches.
pub fn google_calls(stats: &Stats) -> u64 {
    stats.directory_has_member + stats.directory_members_get + stats.token
}

/// The running `authz` binary.
#[derive(Debug)]
pub struct Authz {
    pub process: Process,
    pub grpc: SocketAddr,
    http: SocketAddr,
}

impl Authz {
    /// Writes the service-account key and a config (groups from the stand-in's Directory API,
    /// three policies, two routes) to a fresh temporary directory and starts `bin` with it.
    pub fn spawn(
        bin: &Path,
        standin_url: &str,
        key_file: &Value,
        population: &Population,
        log_level: &str,
    ) -> anyhow::Result<Self> {
        let dir = temp_dir("authz")?;
        let key_path = dir.join("service-account.json");
        std::fs::write(&key_path, key_file.to_string())
            .with_context(|| format!("writing {}", key_path.display()))?;
        let (grpc, http) = (free_port()?, free_port()?);
        let groups = &population.groups;
        let quoted = |list: &[&String]| {
            list.iter()
                .map(|g| format!("{g:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let docs_groups: Vec<&String> = [&groups[ENG], &groups[PLATFORM]]
            .into_iter()
            .chain(groups.iter().skip(super::mix::NAMED_GROUPS.len()))
            .collect();
        let config = format!(
            r#"[listen]
grpc = "{grpc}"
http = "{http}"

[google]
client_ids = ["{CLIENT_ID}"]
issuer = "{standin_url}"
tokeninfo_url = "{standin_url}/tokeninfo"
# A benchmark measures capacity: lift the production bound on never-seen tokens.
max_concurrent_new_tokens = 100000
new_tokens_per_second = 1000000

[access]
domains = ["{DOMAIN}"]

[resource]
url = "https://mcp.example.com/mcp"

[cache]
max_entries = 1000000

[log]
level = "{log_level}"

[groups]
api = "directory"
directory_url = "{standin_url}"
token_url = "{standin_url}/token"
positive_ttl = "5m"
negative_ttl = "1m"

[groups.credentials]
kind = "service-account-key"
file = {key_path:?}
subject = "{ADMIN}"

[policies.docs]
groups = [{docs}]

[policies.grafana]
groups = [{platform}]

[[policies.grafana.rules]]
name = "destructive"
methods = ["tools/call"]
tools = ["delete_*"]
groups = [{sre}]

[policies.admin]
groups = [{admin}]
require = "all"

[[routes]]
prefix = "/grafana"
policy = "grafana"

[[routes]]
prefix = "/admin"
policy = "admin"
"#,
            docs = quoted(&docs_groups),
            platform = quoted(&[&groups[PLATFORM]]),
            sre = quoted(&[&groups[SRE]]),
            admin = quoted(&[&groups[ADMINS], &groups[SECURITY]]),
        );
        let config_path = dir.join("authz.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let spawned = spawn(
            "authz",
            bin,
            &["--config".as_ref(), config_path.as_ref()],
            &[],
        );
        // The process owns a directory of its own; this one is ours to remove.
        let (process, own_dir) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        debug_assert_eq!(own_dir, dir);
        Ok(Self {
            process,
            grpc,
            http,
        })
    }

    /// Polls `GET /readyz` until it answers 200 (discovery, JWKS and API credentials).
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.process
            .wait_ready(self.http, "/readyz", std::time::Duration::from_secs(30))
            .await
    }
}
