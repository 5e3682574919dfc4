//! `bench-check`: latency and throughput of `envoy.service.auth.v3.Authorization/Check` on the
//! release `authz` binary, with Google replaced by the in-process stand-in.
//!
//! Modules: `server` (the stand-in, the authz child process, readiness, RSS), `workload` (ID
//! tokens and pre-encoded CheckRequests), `client` (the gRPC client and the open- and
//! closed-loop load generators), `report` (the machine line and the result table).

pub(crate) mod client;
pub(crate) mod report;
pub(crate) mod server;
pub(crate) mod workload;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};

use self::{
    client::{CpuUse, Load, Row, Stop},
    server::Authz,
};

/// The OAuth client id the benchmark's tokens are issued to and authz accepts.
pub(crate) const CLIENT_ID: &str = "bench.apps.googleusercontent.com";
/// The Workspace domain authz allows and the tokens carry in `hd`.
pub(crate) const DOMAIN: &str = "example.com";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Target rate of the warm fixed-rate scenario, in checks per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Length of each warm scenario (fixed rate and max), e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Distinct cached tokens the warm scenarios cycle through.
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// Target rate of the cold scenario (every check a never-seen token), in checks per second.
    #[arg(long, default_value_t = 1_000)]
    cold_rate: u64,
    /// Length of the cold scenario; rate × duration tokens are minted before measuring.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    cold_duration: Duration,
    /// Concurrent workers of the closed-loop (max throughput) scenarios.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Cap on checks in flight in the fixed-rate scenarios; a send due while the cap is hit is
    /// skipped and counted.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// HTTP/2 connections to authz, used round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Threads of the client runtime (1: a current-thread runtime, which leaves the most CPU
    /// to authz on a small machine). The fixed-rate pacer is one more thread.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// The authz binary. Default: `$CARGO_TARGET_DIR/release/authz`, else
    /// `<workspace>/target/release/authz`.
    #[arg(long, env = "AUTHZ_BIN")]
    authz_bin: Option<PathBuf>,
    /// authz's `log.level`. The default, `info`, is production's: one audit line per decision
    /// is part of the cost. `warn` leaves decisions unlogged, to see what logging costs.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// authz's `runtime.worker_threads` (default: unset, one per core).
    #[arg(long)]
    authz_worker_threads: Option<usize>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    ensure!(args.rate > 0 && args.cold_rate > 0, "rates must be > 0");
    ensure!(args.tokens > 0, "--tokens must be > 0");
    ensure!(
        args.concurrency > 0 && args.connections > 0 && args.max_in_flight > 0,
        "--concurrency, --connections and --max-in-flight must be > 0"
    );
    ensure!(!args.duration.is_zero(), "--duration must be > 0");
    ensure!(!args.cold_duration.is_zero(), "--cold-duration must be > 0");
    let runtime = match args.client_threads {
        0 => bail!("--client-threads must be > 0"),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("building the client runtime")?;
    let result = runtime.block_on(run(args));
    // Do not wait for a token minting thread still running after a failure.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", report::machine_line());
    println!("command: {}", report::command_line());
    println!("{}", report::load_line());
    println!(
        "params: rate={}/s duration={:?} tokens={} cold-rate={}/s cold-duration={:?} \
         concurrency={} max-in-flight={} connections={} client-threads={}",
        args.rate,
        args.duration,
        args.tokens,
        args.cold_rate,
        args.cold_duration,
        args.concurrency,
        args.max_in_flight,
        args.connections,
        args.client_threads,
    );

    let bin = match &args.authz_bin {
        Some(bin) => bin.clone(),
        None => server::default_authz_bin(),
    };
    let standin = server::start_standin().await?;
    let mut authz = Authz::spawn(
        &bin,
        standin.issuer(),
        CLIENT_ID,
        DOMAIN,
        &args.log_level,
        args.authz_worker_threads,
    )?;
    println!(
        "authz: {} (pid {}), gRPC {}, log level {} (one audit line per decision at info)",
        bin.display(),
        authz.pid(),
        authz.grpc_addr(),
        args.log_level
    );

    // Minting is ~1 ms of RSA signing per token: do it on every core while authz starts.
    // Exactly the number of checks the cold scenario sends (see Load::open_loop).
    let cold_count = usize::try_from(client::request_count(args.cold_rate, args.cold_duration)?)
        .context("--cold-rate × --cold-duration is too large")?
        .max(1);
    let minting = {
        let standin = standin.clone();
        let (warm, cold) = (args.tokens, cold_count);
        tokio::task::spawn_blocking(move || {
            let tokens = workload::mint_tokens(&standin, CLIENT_ID, DOMAIN, 0..warm + cold);
            workload::check_bodies(&tokens)
        })
    };
    let (_, mut bodies) = tokio::try_join!(authz.wait_ready(Duration::from_secs(30)), async {
        minting.await.context("the token minting task failed")
    })?;
    let cold_bodies: Arc<[_]> = bodies.split_off(args.tokens).into();
    let warm_bodies: Arc<[_]> = bodies.into();
    let rss_ready = authz.memory()?;
    let stats_ready = standin.stats();

    let load = Load::connect(authz.grpc_addr(), args.connections).await?;
    let pid = authz.pid().to_string();
    let mut rows: Vec<Row> = Vec::new();

    // Every token once, so the warm scenarios only see cache hits. Each is a cold check at
    // maximum concurrency: reported too, as it is measured anyway.
    rows.push(
        with_cpu(
            &pid,
            load.closed_loop(
                "cold ID token, max (warm-up: each token once)",
                &warm_bodies,
                args.concurrency,
                Stop::OncePerBody,
            ),
        )
        .await?,
    );
    ensure_all_allowed(&rows)?;
    rows.push(
        with_cpu(
            &pid,
            load.open_loop(
                "warm, fixed rate",
                &warm_bodies,
                args.rate,
                args.duration,
                args.max_in_flight,
            ),
        )
        .await?,
    );
    rows.push(
        with_cpu(
            &pid,
            load.closed_loop(
                "warm, max",
                &warm_bodies,
                args.concurrency,
                Stop::After(args.duration),
            ),
        )
        .await?,
    );
    rows.push(
        with_cpu(
            &pid,
            load.open_loop(
                "cold ID token (JWKS warm), fixed rate",
                &cold_bodies,
                args.cold_rate,
                args.cold_duration,
                args.max_in_flight,
            ),
        )
        .await?,
    );

    let rss_end = authz.memory()?;
    let stats = standin.stats();
    let checked_tokens = args.tokens + cold_count;
    authz.ensure_running()?;

    println!();
    print!("{}", report::table(&rows));
    println!();
    print!("{}", report::pacing_notes(&rows));
    println!(
        "stand-in calls: discovery={} jwks={} tokeninfo={} userinfo={} (at ready: discovery={} jwks={})",
        stats.discovery,
        stats.jwks,
        stats.tokeninfo,
        stats.userinfo,
        stats_ready.discovery,
        stats_ready.jwks
    );
    println!(
        "authz memory: VmRSS {} at ready, {} at end (VmHWM {}) with {} cached verdicts \
         (= distinct tokens checked), ~{} bytes per verdict",
        report::kib(rss_ready.rss_kib),
        report::kib(rss_end.rss_kib),
        report::kib(rss_end.hwm_kib),
        checked_tokens,
        rss_end.rss_kib.saturating_sub(rss_ready.rss_kib) * 1024 / checked_tokens as u64,
    );

    ensure_all_allowed(&rows)?;
    ensure!(
        stats.tokeninfo == 0 && stats.userinfo == 0,
        "ID tokens must be verified locally, but authz called tokeninfo {} and userinfo {} times",
        stats.tokeninfo,
        stats.userinfo
    );
    if !(1..=2).contains(&stats.jwks) {
        println!(
            "warning: authz fetched the JWKS {} times (expected 1 or 2)",
            stats.jwks
        );
    }
    Ok(())
}

/// Runs a scenario, noting the CPU time authz (`pid`) and this process spend meanwhile.
async fn with_cpu(
    pid: &str,
    scenario: impl Future<Output = anyhow::Result<Row>>,
) -> anyhow::Result<Row> {
    let (server_before, client_before) = (server::cpu_time(pid)?, server::cpu_time("self")?);
    let mut row = scenario.await?;
    row.cpu = Some(CpuUse {
        server: server::cpu_time(pid)?.saturating_sub(server_before),
        client: server::cpu_time("self")?.saturating_sub(client_before),
    });
    Ok(row)
}

/// A benchmark that measures denials or errors is measuring the wrong code path: fail.
fn ensure_all_allowed(rows: &[Row]) -> anyhow::Result<()> {
    for row in rows {
        if row.errors > 0 || row.non_ok > 0 {
            print!("{}", report::table(rows));
            bail!(
                "scenario {:?}: {} RPC errors and {} non-OK (denied) responses; first: {}",
                row.name,
                row.errors,
                row.non_ok,
                row.first_problem.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// `10s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1e3,
        "m" | "min" => number * 60.0,
        other => return Err(format!("unknown unit {other:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
