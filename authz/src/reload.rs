//! Reloading the configuration while serving: on SIGHUP, and when the config file changes.
//!
//! A reload reads the file again, overlays the same `AUTHZ_*` environment as at start-up, and
//! validates the result exactly as at start-up (a changed `[groups]` reads its credential JSON
//! again, and a secret that cannot be read fails the reload). Only then does it swap in the new
//! policies, routes, domains and group settings, in one atomic step
//! ([`Authorizer::replace_rules`]). A file that does not validate, or that changes a section only
//! a restart can apply (listeners, Google, resource, cache, headers, envoy, log, secrets,
//! oauth, client_metadata, runtime), changes
//! nothing: authz keeps serving with the old config and logs one ERROR line naming the key.
//!
//! The verdict and identity caches are kept across reloads (their keys include the policy
//! fingerprint, so nothing cached under the old policies answers under the new ones). The
//! membership cache is kept when `[groups]` is unchanged and rebuilt empty when it changed.
//!
//! The file is polled (modification time, then a content hash) rather than watched with
//! inotify: one small read every interval, and it works the same on every filesystem and in
//! containers with bind-mounted or symlinked (ConfigMap-style) files. Write the file atomically
//! (write a temporary file, then rename) so the poller never reads it half-written.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::{
    authorizer::Authorizer,
    config::{Config, ConfigError},
    groups::Groups,
    groups::MembershipLookup,
    secrets::Secrets,
};

/// Where the configuration came from, kept to read it again the same way.
#[derive(Debug, Clone)]
pub struct Source {
    /// The TOML file; `None` when everything came from the environment (nothing to reload).
    pub path: Option<PathBuf>,
    /// The `AUTHZ_*` environment as it was at start-up.
    pub env: Vec<(String, String)>,
}

/// Which configuration is serving, for the admin API.
#[derive(Debug, Clone)]
pub struct Version {
    pub fingerprint: [u8; 32],
    pub loaded_at: SystemTime,
    /// The file's path, or `(environment only)`.
    pub source: String,
    /// Successful reloads since start-up.
    pub reloads: u64,
    /// The last failed reload's one-line error; cleared by a successful one.
    pub last_error: Option<String>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config: (file): no config file to reload (started from the environment only)")]
    NoFile,
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("config: {key}: cannot change on reload; restart authz to apply it")]
    RestartOnly { key: &'static str },
    #[error("config: groups: {0}")]
    Groups(String),
}

/// What triggered a reload, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Sighup,
    FileChanged,
}

/// Reloads the configuration into a running authorizer.
#[derive(Debug)]
pub struct Reloader {
    source: Source,
    authorizer: Arc<Authorizer>,
    /// Resolves the credential secret of a changed `[groups]`.
    secrets: Arc<Secrets>,
    /// The config serving now and its group lookup. Held for a whole reload so two reloads
    /// (SIGHUP and the poller) cannot interleave; an async mutex, because a changed `[groups]`
    /// reads its credential (perhaps from Secrets Manager) while holding it.
    current: tokio::sync::Mutex<Current>,
    version: ArcSwap<Version>,
}

#[derive(Debug)]
struct Current {
    config: Config,
    groups: Option<Arc<Groups>>,
}

/// A file's identity between two polls: its modification time and a hash of its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    hash: [u8; 32],
}

// === impl Source ===

impl Source {
    /// Reads and validates the configuration as at start-up.
    pub fn load(&self) -> Result<Config, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: "(file)".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Ok(Config::load(Some(&text), self.env.iter().cloned())?)
    }

    fn describe(&self) -> String {
        self.path.as_ref().map_or_else(
            || "(environment only)".to_string(),
            |path| path.display().to_string(),
        )
    }

    /// `None` when the file cannot be read right now (the next poll tries again).
    fn stamp(&self, previous: Option<&Stamp>) -> Option<Stamp> {
        let path = self.path.as_ref()?;
        let modified = std::fs::metadata(path).ok()?.modified().ok();
        if let Some(previous) = previous {
            if previous.modified == modified && modified.is_some() {
                return Some(previous.clone());
            }
        }
        let bytes = std::fs::read(path).ok()?;
        Some(Stamp {
            modified,
            hash: Sha256::digest(&bytes).into(),
        })
    }
}

// === impl Reloader ===

impl Reloader {
    /// `config` and `groups` are what the authorizer was built with.
    pub fn new(
        source: Source,
        config: Config,
        groups: Option<Arc<Groups>>,
        authorizer: Arc<Authorizer>,
        secrets: Arc<Secrets>,
    ) -> Reloader {
        let version = Version {
            fingerprint: config.policy_fingerprint(),
            loaded_at: SystemTime::now(),
            source: source.describe(),
            reloads: 0,
            last_error: None,
        };
        Reloader {
            source,
            authorizer,
            secrets,
            current: tokio::sync::Mutex::new(Current { config, groups }),
            version: ArcSwap::from_pointee(version),
        }
    }

    pub fn version(&self) -> Arc<Version> {
        self.version.load_full()
    }

    /// Reads, validates and swaps in the configuration; on any error nothing changes.
    pub async fn reload(&self) -> Result<Arc<Version>, ReloadError> {
        let mut current = self.current.lock().await;
        let result = self.swap(&mut current).await;
        let previous = self.version.load_full();
        let version = match &result {
            Ok(()) => Version {
                fingerprint: current.config.policy_fingerprint(),
                loaded_at: SystemTime::now(),
                source: previous.source.clone(),
                reloads: previous.reloads + 1,
                last_error: None,
            },
            Err(error) => Version {
                last_error: Some(error.to_string()),
                ..(*previous).clone()
            },
        };
        self.version.store(Arc::new(version));
        result.map(|()| self.version.load_full())
    }

    /// Loads the next config and, when it is valid, swaps it in.
    async fn swap(&self, current: &mut Current) -> Result<(), ReloadError> {
        let next = self.source.load()?;
        restart_only_change(&current.config, &next)?;
        let groups = if next.groups == current.config.groups {
            current.groups.clone()
        } else {
            match &next.groups {
                Some(settings) => Some(Arc::new(
                    Groups::new(settings, &self.secrets, Arc::default())
                        .await
                        .map_err(|e| ReloadError::Groups(format!("{e:#}")))?,
                )),
                None => None,
            }
        };
        let lookup = groups
            .clone()
            .map(|groups| groups as Arc<dyn MembershipLookup>);
        self.authorizer.replace_rules(&next, lookup);
        *current = Current {
            config: next,
            groups,
        };
        Ok(())
    }

    /// Reloads on SIGHUP and whenever the file's contents change (checked every `interval`),
    /// until `shutdown`. Each attempt logs one line: INFO with the new version, or ERROR with
    /// the one-line reason and "keeping the previous config".
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file change only");
                None
            }
        };
        let mut seen = self.source.stamp(None);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => Trigger::Sighup,
                _ = tick.tick() => {
                    let now = self.source.stamp(seen.as_ref());
                    if now.is_none() || now.as_ref().map(|s| s.hash) == seen.as_ref().map(|s| s.hash) {
                        seen = now.or(seen);
                        continue;
                    }
                    seen = now;
                    Trigger::FileChanged
                }
            };
            self.reload_and_log(trigger).await;
            if trigger == Trigger::Sighup {
                seen = self.source.stamp(None);
            }
        }
    }

    async fn reload_and_log(&self, trigger: Trigger) {
        let trigger = match trigger {
            Trigger::Sighup => "SIGHUP",
            Trigger::FileChanged => "file changed",
        };
        match self.reload().await {
            Ok(version) => tracing::info!(
                trigger,
                version = %version.label(),
                "config reloaded"
            ),
            Err(error) => tracing::error!(
                trigger,
                error = %error,
                "config reload failed; keeping the previous config"
            ),
        }
    }
}

// === impl Version ===

impl Version {
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `<12 hex digits of the fingerprint>@<load time>`: changes on every successful load.
    pub fn label(&self) -> String {
        format!(
            "{}@{}",
            &self.fingerprint_hex()[..12],
            humantime::format_rfc3339_millis(self.loaded_at)
        )
    }

    pub fn loaded_at_unix(&self) -> i64 {
        self.loaded_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }
}

/// The first section a reload cannot apply, if the new config changes one. Listeners are
/// bound, the Google client and the Check service are built once, and the log is set up once.
fn restart_only_change(old: &Config, new: &Config) -> Result<(), ReloadError> {
    let key = if old.listen.grpc != new.listen.grpc {
        "listen.grpc"
    } else if old.listen.http != new.listen.http {
        "listen.http"
    } else if old.listen.admin != new.listen.admin {
        "listen.admin"
    } else if old.listen != new.listen {
        "listen"
    } else if old.google != new.google {
        "google"
    } else if old.resource != new.resource || old.resources != new.resources {
        "resource"
    } else if old.cache != new.cache {
        "cache"
    } else if old.headers != new.headers {
        "headers"
    } else if old.envoy != new.envoy {
        "envoy"
    } else if old.log != new.log {
        "log"
    } else if old.tracing != new.tracing {
        "tracing"
    } else if old.client_metadata != new.client_metadata {
        "client_metadata"
    } else if old.oauth != new.oauth {
        "oauth"
    } else if old.secrets != new.secrets {
        "secrets"
    } else if old.runtime != new.runtime {
        "runtime"
    } else {
        return Ok(());
    };
    Err(ReloadError::RestartOnly { key })
}

#[cfg(test)]
mod tests;
