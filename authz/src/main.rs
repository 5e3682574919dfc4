//! The `authz` binary: parse arguments, load the config, run until SIGTERM, drain, exit.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use authz::{Listeners, config::Config};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Envoy ext_authz service for MCP servers behind Google Workspace sign-in.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file. Every key can also be set as AUTHZ_<SECTION>__<KEY>.
    #[arg(long, env = "AUTHZ_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the config, print "config ok" and exit (0 valid, 2 invalid).
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// GET a readiness URL and exit 0 if it answers 200, 1 otherwise (for container health
    /// checks: the images have no shell and no curl). Reads no config.
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9192/readyz")]
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: Duration,
    },
    /// Call a running authz's admin API (listen.admin).
    Admin(authz::admin::cli::AdminArgs),
}

/// Exit code for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    match &args.command {
        Some(Command::Healthcheck { url, timeout }) => return healthcheck(url, *timeout),
        Some(Command::Admin(admin)) => return admin_command(admin),
        None => {}
    }
    let text = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) => {
                eprintln!("config: (file): cannot read {}: {e}", path.display());
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        },
        None => None,
    };
    let config = match Config::load(text.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            if args.config.is_none() {
                eprintln!(
                    "config: no config file was given (--config FILE, or AUTHZ_CONFIG): only \
                     AUTHZ_* variables were read"
                );
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    let telemetry = match authz::telemetry::init(&config.log, &config.tracing) {
        Ok(telemetry) => telemetry,
        // The URL was validated; what is left is the exporter's own OTEL_* variables.
        Err(e) => {
            eprintln!("config: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("authz");
    if let Some(threads) = config.runtime.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        worker_threads = runtime.metrics().num_workers(),
        "runtime started"
    );
    let source = authz::reload::Source {
        path: args.config.clone(),
        env: std::env::vars().collect(),
    };
    let code = match runtime.block_on(serve(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stopped::BeforeListening(e)) => {
            tracing::error!(error = format!("{e:#}"), "cannot start");
            eprintln!("authz: {e:#}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
        Err(Stopped::Serving(e)) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("authz: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The spans of the last checks are still queued: export them (bounded by
    // tracing.export_timeout) before the process ends.
    telemetry.shutdown();
    code
}

fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let probe = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let response = client.get(url).send().await?;
        let status = response.status();
        // The readiness body says what is missing (`"jwks": false`, ...): worth printing.
        let body = response.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, body))
    };
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(probe),
        Err(e) => {
            eprintln!("healthcheck: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok((status, _)) if status == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok((status, body)) => {
            let reason: String = body.trim().chars().take(500).collect();
            eprintln!("healthcheck: {url}: {status} {reason}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why `serve` returned early: before a port was bound (a secret or setting that cannot be
/// used: exit 2, like a bad config), or while serving.
enum Stopped {
    BeforeListening(anyhow::Error),
    Serving(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stopped {
    fn from(error: E) -> Stopped {
        Stopped::Serving(error.into())
    }
}

async fn serve(config: Config, source: authz::reload::Source) -> Result<(), Stopped> {
    let grace = config.listen.shutdown_grace;
    let shutdown = CancellationToken::new();
    // Secrets are read and parsed before any port is bound: one that cannot be used stops the
    // start like a bad config, and nothing ever listened.
    let prepared = match authz::prepare(config.clone(), source, shutdown.clone()).await {
        Ok(prepared) => prepared,
        Err(error) => {
            shutdown.cancel();
            return Err(Stopped::BeforeListening(error));
        }
    };
    let listeners = Listeners::bind(&config).await?;
    let (grpc, http) = listeners.local_addrs()?;
    let admin = listeners.admin.local_addr()?;
    tracing::info!(%grpc, %http, %admin, "listening");
    let mut server = tokio::spawn(prepared.serve(listeners, shutdown.clone()));
    tokio::select! {
        signal = wait_for_signal() => signal?,
        // Ended without being asked: a server failed.
        joined = &mut server => return Ok(joined??),
    }
    tracing::info!(grace = ?grace, "shutting down; draining in-flight checks");
    shutdown.cancel();
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => Ok(joined??),
        Err(_) => {
            tracing::warn!("drain did not finish within the grace period");
            Ok(())
        }
    }
}

/// `authz admin ...`: one call, plain output, exit 1 on failure.
fn admin_command(args: &authz::admin::cli::AdminArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(authz::admin::cli::run(args)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authz admin: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
