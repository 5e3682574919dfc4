//! The system under test: the Google stand-in (in-process) and the release `authz` binary (a
//! child process, killed when its guard drops, so also on errors and panics).

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use authz::facade_token::{
    access_token::{self, Audience, User},
    keys::SigningKeys,
};
use standin::{Options, StandIn};

/// `$CARGO_TARGET_DIR/release/authz`, else `<workspace>/target/release/authz`.
pub fn default_authz_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new(".."))
                .join("target")
        });
    target.join("release").join("authz")
}

/// Starts the stand-in on a free port of 127.0.0.1, serving from the current runtime.
pub async fn start_standin() -> anyhow::Result<StandIn> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the stand-in's listener")?;
    StandIn::start(listener, Options::default())
        .await
        .context("starting the Google stand-in")
}

/// A child process and its temporary directory (config and `<name>.log`), killed and cleaned
/// up when dropped, so also on errors and panics. Shared by every process a benchmark starts.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    dir: PathBuf,
}

impl Process {
    pub(crate) fn new(name: &'static str, child: Child, dir: PathBuf) -> Self {
        Self { name, child, dir }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET path` on `addr` until it answers 200.
    pub(crate) async fn wait_ready(
        &mut self,
        addr: SocketAddr,
        path: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let status = tokio::task::spawn_blocking(move || http_status(addr, path))
                .await
                .context("the readiness probe task failed")?;
            if let Ok(200) = status {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {timeout:?} (last {path}: {status:?}); its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails, with the end of its log, if the process has exited.
    pub(crate) fn ensure_running(&mut self) -> anyhow::Result<()> {
        let name = self.name;
        if let Some(status) = self
            .child
            .try_wait()
            .with_context(|| format!("waiting for {name}"))?
        {
            bail!("{name} exited ({status}); its log:\n{}", self.log_tail());
        }
        Ok(())
    }

    /// The last 20 lines of its log.
    pub(crate) fn log_tail(&self) -> String {
        let log = self
            .dir
            .join(format!("{}.log", self.name.to_ascii_lowercase()));
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running authz process.
#[derive(Debug)]
pub struct Authz {
    process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
    /// The facade's signing key given to this authz, so benchmarks can mint its tokens.
    facade_keys: Arc<SigningKeys>,
}

/// The facade's issuer and our resource in the benchmark config (tokens must match both).
pub const FACADE_ISSUER: &str = "https://mcp.example.com";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";

/// Memory of the authz process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Authz {
    /// Writes a config for `issuer` to a fresh temporary directory and starts `bin` with it.
    pub fn spawn(
        bin: &Path,
        issuer: &str,
        client_id: &str,
        domain: &str,
        log_level: &str,
        worker_threads: Option<usize>,
    ) -> anyhow::Result<Self> {
        ensure!(
            bin.is_file(),
            "{} does not exist: run `cargo build --release -p authz -p standin` first \
             (or pass --authz-bin)",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!("authz-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (grpc, http) = (free_port()?, free_port()?);
        let pkcs8 =
            authz::facade_token::keys::generate_pkcs8().context("generating a facade key")?;
        let facade_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8));
        let facade_keys =
            Arc::new(SigningKeys::from_pem_bundle(&facade_pem).context("reading the facade key")?);
        let config = format!(
            r#"[listen]
grpc = "{grpc}"
http = "{http}"

[google]
client_ids = ["{client_id}"]
issuer = "{issuer}"
tokeninfo_url = "{issuer}/tokeninfo"
# A benchmark measures capacity: lift the production bound on never-seen tokens.
max_concurrent_new_tokens = 100000
new_tokens_per_second = 1000000

[access]
domains = ["{domain}"]

[resource]
url = "{RESOURCE}"

[oauth]
issuer = "{FACADE_ISSUER}"
google_client_id = "{client_id}"
google_client_secret = "bench"
signing_keys = '''{facade_pem}'''

[cache]
max_entries = 1000000

[log]
level = "{log_level}"
{runtime}"#,
            runtime = worker_threads
                .map(|n| format!("\n[runtime]\nworker_threads = {n}\n"))
                .unwrap_or_default(),
        );
        let config_path = dir.join("authz.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let log_path = dir.join("authz.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(bin);
        // The config file is the whole config: no AUTHZ_* overrides from the caller.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AUTHZ_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()));
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Self {
            process: Process::new("authz", child, dir),
            grpc,
            http,
            facade_keys,
        })
    }

    /// Access tokens as the OAuth facade of this authz issues them (same key, issuer and
    /// audience), one per user `user{i}@domain`, valid for an hour.
    pub fn facade_tokens(&self, domain: &str, count: usize) -> anyhow::Result<Vec<String>> {
        let audience = Audience {
            issuer: FACADE_ISSUER.to_string(),
            resources: vec![RESOURCE.to_string()],
            leeway: 0,
        };
        (0..count)
            .map(|i| {
                let user = User {
                    sub: format!("{}", 300_000_000_000_000_000_000u128 + i as u128),
                    email: format!("user{i}@{domain}"),
                    hd: Some(domain.to_string()),
                };
                let session = format!("bench-session-{i}");
                let grant = access_token::Grant {
                    resource: RESOURCE,
                    user: &user,
                    client_id: "bench",
                    client_name: None,
                    scope: "mcp",
                    session: &session,
                };
                access_token::issue(&self.facade_keys, &audience, grant, 3600)
                    .map(|(token, _)| token)
                    .context("minting a facade token")
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// Polls `GET /readyz` until it answers 200 (discovery and JWKS loaded).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.process.wait_ready(self.http, "/readyz", timeout).await
    }

    /// Fails, with the end of its log, if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.process.ensure_running()
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in {path}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// CPU time (user + system, all threads, exited ones included) of process `pid`, or of this
/// process for `"self"`, from `/proc/<pid>/stat` (10 ms resolution).
pub fn cpu_time(pid: &str) -> anyhow::Result<Duration> {
    /// `USER_HZ`, the unit of `/proc/<pid>/stat` times: 100 on every Linux platform we run on.
    const TICKS_PER_SECOND: u64 = 100;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index - 3)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("no field {index} in {path}"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_millis(total * 1000 / TICKS_PER_SECOND))
}

/// A port that was free a moment ago (the kernel does not hand it out again right away).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    listener.local_addr().context("reading a free port")
}

/// `GET path` over HTTP/1.1; returns the status code.
pub(crate) fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))
}
