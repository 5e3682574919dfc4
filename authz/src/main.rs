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
}

/// Exit code for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Healthcheck { url, timeout }) = &args.command {
        return healthcheck(url, *timeout);
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
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        println!("config ok");
        return ExitCode::SUCCESS;
    }
    authz::telemetry::init(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped");
            eprintln!("authz: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(url: &str, timeout: Duration) -> ExitCode {
    let probe = async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        client.get(url).send().await?.error_for_status()
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
        Ok(response) if response.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("healthcheck: {url}: {}", response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    let (grpc, http) = listeners.local_addrs()?;
    tracing::info!(%grpc, %http, "listening");
    let grace = config.listen.shutdown_grace;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(authz::run(config, listeners, shutdown.clone()));
    wait_for_signal().await?;
    tracing::info!(grace = ?grace, "shutting down; draining in-flight checks");
    shutdown.cancel();
    match tokio::time::timeout(grace, server).await {
        Ok(joined) => joined?,
        Err(_) => {
            tracing::warn!("drain did not finish within the grace period");
            Ok(())
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
