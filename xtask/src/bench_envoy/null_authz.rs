//! `xtask null-authz`: the floor of any out-of-process ext_authz. A gRPC `Check` server that
//! answers OK without looking at the request, in its own process, on the same stack as authz
//! (tonic, a multi-threaded tokio runtime with one worker per core, TCP_NODELAY). What
//! `bench-envoy` measures through it is the cost of the hop itself: Envoy building the
//! CheckRequest, two loopback HTTP/2 messages, two process wake-ups, and resuming the request.
//! The gap between it and authz is what authz's own work costs.
//!
//! `bench-envoy` starts it as a child process (`spawn`) on a free port and kills it at the end.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use envoy_types::ext_authz::v3::{
    CheckResponseExt, OkHttpResponseBuilder,
    pb::{Authorization, AuthorizationServer, CheckRequest, CheckResponse},
};
use tonic::{Request, Response, Status, transport::server::TcpIncoming};

struct AllowAll;

#[tonic::async_trait]
impl Authorization for AllowAll {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        // The same response shape authz sends on an allow, minus the identity headers.
        let mut ok = OkHttpResponseBuilder::new();
        ok.remove_header("authorization");
        let mut response = CheckResponse::with_status(Status::ok(""));
        response.set_http_response(ok);
        Ok(Response::new(response))
    }
}

use crate::bench::server::{Process, free_port};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve gRPC on.
    #[arg(long)]
    listen: SocketAddr,
    /// Worker threads, as authz's `runtime.worker_threads` (default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    // The runtime authz's `main` builds.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.worker_threads {
        builder.worker_threads(threads);
    }
    let runtime = builder.build().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(AuthorizationServer::new(AllowAll))
            .serve_with_incoming(incoming)
            .await
            .context("serving")
    })
}

/// Starts `xtask null-authz` (this executable) on a free port and waits until it accepts
/// connections. The process is killed when the returned guard drops.
pub fn spawn(worker_threads: Option<usize>) -> anyhow::Result<(Process, SocketAddr)> {
    let addr = free_port()?;
    let dir = std::env::temp_dir().join(format!("authz-bench-null-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("null-authz.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the xtask executable")?;
    let mut command = Command::new(exe);
    command
        .arg("null-authz")
        .arg("--listen")
        .arg(addr.to_string());
    if let Some(threads) = worker_threads {
        command.arg("--worker-threads").arg(threads.to_string());
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log file handle")?)
        .stderr(log)
        .spawn()
        .context("starting xtask null-authz")?;
    let mut process = Process::new("null-authz", child, dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        process.ensure_running()?;
        if Instant::now() > deadline {
            bail!("null-authz did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((process, addr))
}
