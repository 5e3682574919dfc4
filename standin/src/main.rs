//! `standin --listen 127.0.0.1:PORT [--issuer URL] [--browser-url URL] [--jwks-max-age SECS]`: runs the Google
//! stand-in until SIGTERM or SIGINT.

use std::{io::Write as _, net::SocketAddr};

use anyhow::Context as _;
use clap::Parser;
use standin::{Options, StandIn};
use tracing_subscriber::EnvFilter;

/// A local stand-in for Google's OpenID Connect endpoints.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:8085 (port 0 picks a free one).
    #[arg(long)]
    listen: SocketAddr,
    /// Issuer URL to announce; default http://{bound address}.
    #[arg(long)]
    issuer: Option<String>,
    /// max-age of the JWKS Cache-Control header, in seconds.
    #[arg(long, default_value_t = 3600)]
    jwks_max_age: u64,
    /// Where browsers reach the stand-in when not at the issuer (e.g. a published port): the
    /// sign-in page is announced there.
    #[arg(long)]
    browser_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let standin = StandIn::start(
        listener,
        Options {
            issuer: args.issuer,
            jwks_max_age: args.jwks_max_age,
            browser_url: args.browser_url,
        },
    )
    .await?;
    // Handlers go in before the ready line: a supervisor may send SIGTERM the moment it sees it.
    let shutdown = shutdown_signal()?;
    // Scripts wait for this exact line (and read the port from it), so flush it at once.
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "standin listening on http://{} issuer={}",
        standin.addr(),
        standin.issuer()
    )?;
    stdout.flush()?;
    drop(stdout);
    shutdown.await;
    tracing::info!("shutting down");
    Ok(())
}

/// Installs the handlers now; the future resolves on the first SIGINT or (on Unix) SIGTERM.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Resolves on the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
