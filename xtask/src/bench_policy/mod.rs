//! `bench-policy`: `Check` with named policies, Google group membership (Directory API, through
//! the stand-in) and per-tool rules, on the release `authz` and `standin` binaries: checks/s and
//! latency with warm caches, and how many Google calls a realistic mix costs.
//!
//! Modules: `mix` (users, groups, policies, the request mix and the expected decisions), `setup`
//! (the two child processes, authz's config, the stand-in's control API), `probe` (encoded
//! CheckRequests and a sender that checks every decision). Load generation, pacing and
//! histograms are `bench-check`'s (`crate::bench::client`).

mod mix;
mod probe;
mod setup;

use std::{collections::HashSet, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};
use standin::Stats;

use self::{
    mix::{Population, Rng},
    probe::{Clients, Tally, Workload},
    setup::{Authz, StandIn, google_calls},
};
use crate::bench::{
    client::{self, Row, Stop},
    parse_duration, report, server,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workspace users, each with one ID token.
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Groups (at least 5: eng, platform, sre (nested in platform), admins, security; more are
    /// `team<k>@`, added to the `docs` policy's any-of list).
    #[arg(long, default_value_t = 5)]
    groups: usize,
    /// Target rate of the warm fixed-rate phase, in checks per second.
    #[arg(long, default_value_t = 5_000)]
    rate: u64,
    /// Length of each warm phase (fixed rate and max), e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Length of the random request sequence the warm phases cycle through.
    #[arg(long, default_value_t = 100_000)]
    mix: usize,
    /// Seed of the population and the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Concurrent workers of the closed-loop phases.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Cap on checks in flight in the fixed-rate phase; a send due while the cap is hit is
    /// skipped and counted.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// HTTP/2 connections to authz, used round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The authz binary. Default: `$CARGO_TARGET_DIR/release/authz`, else
    /// `<workspace>/target/release/authz`.
    #[arg(long, env = "AUTHZ_BIN")]
    authz_bin: Option<PathBuf>,
    /// The standin binary. Default: next to the authz binary.
    #[arg(long)]
    standin_bin: Option<PathBuf>,
    /// authz's `log.level` (`info`, production's, logs one audit line per decision).
    #[arg(long, default_value = "info")]
    log_level: String,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    ensure!(args.users > 0, "--users must be > 0");
    ensure!(
        args.groups >= 5,
        "--groups must be at least 5 (the policies name five)"
    );
    ensure!(
        args.rate > 0 && args.mix > 0,
        "--rate and --mix must be > 0"
    );
    ensure!(!args.duration.is_zero(), "--duration must be > 0");
    ensure!(
        args.concurrency > 0 && args.connections > 0 && args.max_in_flight > 0,
        "--concurrency, --connections and --max-in-flight must be > 0"
    );
    // One client thread (plus the pacer) leaves the most CPU to authz on a small machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// One measured phase.
struct Phase {
    row: Row,
    tally: Arc<Tally>,
    stats: Stats,
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", report::machine_line());
    println!("command: {}", report::command_line());
    println!("{}", report::load_line());
    println!(
        "params: users={} groups={} rate={}/s duration={:?} mix={} seed={} concurrency={} \
         max-in-flight={} connections={} log-level={}",
        args.users,
        args.groups,
        args.rate,
        args.duration,
        args.mix,
        args.seed,
        args.concurrency,
        args.max_in_flight,
        args.connections,
        args.log_level,
    );

    let authz_bin = args
        .authz_bin
        .clone()
        .unwrap_or_else(server::default_authz_bin);
    let standin_bin = args
        .standin_bin
        .clone()
        .unwrap_or_else(|| authz_bin.with_file_name("standin"));

    let mut rng = Rng::new(args.seed);
    let population = Population::generate(args.users, args.groups, &mut rng);
    let standin = StandIn::start(&standin_bin).await?;
    let key_file = standin.set_up_google(&population).await?;
    let mut authz = Authz::spawn(
        &authz_bin,
        &standin.url(),
        &key_file,
        &population,
        &args.log_level,
    )?;
    // Two sets of tokens: the first for most phases, the second (a minute younger) for the
    // "new ID tokens" phase, as when every user's client refreshes its token.
    let (_, first, second) = tokio::try_join!(
        authz.wait_ready(),
        standin.mint_tokens(args.users, 60),
        standin.mint_tokens(args.users, 0),
    )?;
    let at_ready = standin.reset_stats().await?;
    println!(
        "standin: pid {}, {}; authz: pid {}, gRPC {}",
        standin.process.pid(),
        standin.url(),
        authz.process.pid(),
        authz.grpc
    );
    println!(
        "stand-in calls until authz was ready: discovery={} jwks={} token={} hasMember={}",
        at_ready.discovery, at_ready.jwks, at_ready.token, at_ready.directory_has_member
    );

    // Every distinct request (user × policy × MCP call), its expected decision, and the
    // (user, group) pairs deciding it consults.
    let requests = population.requests();
    let mut expected = Vec::with_capacity(requests.len());
    let mut pairs = HashSet::new();
    for request in &requests {
        let (allowed, consulted) = population.decide(*request);
        expected.push(allowed);
        pairs.extend(consulted.into_iter().map(|g| (request.user, g)));
    }
    let labels: Arc<[String]> = requests.iter().map(ToString::to_string).collect();
    let expected: Arc<[bool]> = expected.into();
    let workload = |tokens: &[String]| Workload {
        bodies: requests
            .iter()
            .enumerate()
            .map(|(i, request)| probe::check_body(&tokens[request.user], *request, i))
            .collect(),
        expected: expected.clone(),
        labels: labels.clone(),
    };
    let (first, second) = (workload(&first), workload(&second));
    let once: Arc<[u32]> = mix::shuffled(requests.len(), &mut rng).into();
    let random: Arc<[u32]> = mix::random_mix(&population, args.mix, &mut rng).into();
    let allowed_share =
        random.iter().filter(|&&i| expected[i as usize]).count() as f64 / random.len() as f64;
    println!(
        "population: {} users in {} groups ({} in none); {} distinct requests ({} allowed); \
         the mix allows {:.1}%; {} (user, group) pairs consulted in all",
        population.users(),
        population.groups.len(),
        (0..population.users()).filter(|u| u % 10 == 9).count(),
        requests.len(),
        expected.iter().filter(|&&a| a).count(),
        allowed_share * 100.0,
        pairs.len(),
    );

    let clients = Clients::connect(authz.grpc, args.connections).await?;
    let pid = authz.process.pid().to_string();
    let mut phases = Vec::new();

    // Cold start: empty caches, each distinct request once (in random order), flat out. This is
    // also the warm-up of the phases after it.
    let tally = Arc::new(Tally::default());
    let send = clients.sender(&first, once.clone(), tally.clone());
    let row = with_cpu(
        &pid,
        client::closed_loop(
            "cold start: empty caches, each request once, max",
            once.len(),
            args.concurrency,
            Stop::OncePerBody,
            send,
        ),
    )
    .await?;
    phases.push(finish(&standin, row, tally).await?);
    ensure_sound(&phases)?;

    let tally = Arc::new(Tally::default());
    let send = clients.sender(&first, random.clone(), tally.clone());
    let total = client::request_count(args.rate, args.duration)?;
    let row = with_cpu(
        &pid,
        client::open_loop(
            "warm, random mix, fixed rate",
            args.rate,
            args.duration,
            args.max_in_flight,
            send,
        ),
    )
    .await?;
    ensure!(
        row.checks() + row.skipped == total,
        "the fixed-rate phase answered {} of {total} checks",
        row.checks()
    );
    phases.push(finish(&standin, row, tally).await?);

    let tally = Arc::new(Tally::default());
    let send = clients.sender(&first, random.clone(), tally.clone());
    let row = with_cpu(
        &pid,
        client::closed_loop(
            "warm, random mix, max",
            random.len(),
            args.concurrency,
            Stop::After(args.duration),
            send,
        ),
    )
    .await?;
    phases.push(finish(&standin, row, tally).await?);

    // Every user presents a new ID token: verdicts and identities miss, memberships hit.
    let tally = Arc::new(Tally::default());
    let send = clients.sender(&second, once.clone(), tally.clone());
    let row = with_cpu(
        &pid,
        client::closed_loop(
            "new ID tokens (membership cache warm), each request once, max",
            once.len(),
            args.concurrency,
            Stop::OncePerBody,
            send,
        ),
    )
    .await?;
    phases.push(finish(&standin, row, tally).await?);
    authz.process.ensure_running()?;

    println!();
    print!("{}", table(&phases));
    println!();
    for phase in &phases {
        if let Some(lag) = &phase.row.pacing_lag {
            println!(
                "pacing lag ({}): p50 {} µs, p99 {} µs, max {} µs (included above); skipped {}",
                phase.row.name,
                report::micros(lag.value_at_quantile(0.5)),
                report::micros(lag.value_at_quantile(0.99)),
                report::micros(lag.max()),
                phase.row.skipped,
            );
        }
    }
    for phase in &phases {
        let s = &phase.stats;
        println!(
            "stand-in calls ({}): hasMember={} members.get={} token={} jwks={} discovery={} \
             tokeninfo={} userinfo={}",
            phase.row.name,
            s.directory_has_member,
            s.directory_members_get,
            s.token,
            s.jwks,
            s.discovery,
            s.tokeninfo,
            s.userinfo
        );
    }
    println!(
        "bound for the cold start: {} distinct (user, group) pairs consulted ≤ users × groups = {}",
        pairs.len(),
        population.users() * population.groups.len()
    );

    ensure_sound(&phases)?;
    let cold = &phases[0].stats;
    if cold.directory_has_member + cold.directory_members_get > pairs.len() as u64 {
        println!(
            "warning: the cold start made {} Directory calls for {} distinct (user, group) pairs: \
             concurrent misses were not coalesced",
            cold.directory_has_member + cold.directory_members_get,
            pairs.len()
        );
    }
    for phase in &phases[1..] {
        if google_calls(&phase.stats) > 0 {
            println!(
                "note: {} Google calls in {:?} with a warm cache (TTL refresh-ahead?)",
                google_calls(&phase.stats),
                phase.row.name
            );
        }
    }
    Ok(())
}

/// Runs a phase, noting the CPU time authz (`pid`) spends meanwhile.
async fn with_cpu(
    pid: &str,
    phase: impl Future<Output = anyhow::Result<Row>>,
) -> anyhow::Result<Row> {
    let (server_before, client_before) = (server::cpu_time(pid)?, server::cpu_time("self")?);
    let mut row = phase.await?;
    row.cpu = Some(client::CpuUse {
        server: server::cpu_time(pid)?.saturating_sub(server_before),
        client: server::cpu_time("self")?.saturating_sub(client_before),
    });
    Ok(row)
}

/// The phase's Google calls: the stand-in's counters, zeroed for the next phase.
async fn finish(standin: &StandIn, row: Row, tally: Arc<Tally>) -> anyhow::Result<Phase> {
    let stats = standin.reset_stats().await?;
    Ok(Phase { row, tally, stats })
}

/// Fails on any RPC error (an outage is UNAVAILABLE), any decision other than the model's, and
/// on a phase where every check was allowed or every one forbidden.
fn ensure_sound(phases: &[Phase]) -> anyhow::Result<()> {
    for phase in phases {
        let (row, tally) = (&phase.row, &phase.tally);
        let allowed = tally.allowed.load(std::sync::atomic::Ordering::Relaxed);
        let forbidden = tally.forbidden.load(std::sync::atomic::Ordering::Relaxed);
        let problem = if row.errors > 0 || row.non_ok > 0 {
            Some(format!(
                "{} RPC errors and {} wrong decisions; first: {}",
                row.errors,
                row.non_ok,
                row.first_problem.as_deref().unwrap_or("?")
            ))
        } else if allowed == 0 || forbidden == 0 {
            Some(format!(
                "{allowed} allowed and {forbidden} forbidden: the mix should have both"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            print!("{}", table(phases));
            bail!("phase {:?}: {problem}", row.name);
        }
    }
    Ok(())
}

fn table(phases: &[Phase]) -> String {
    let header = [
        "phase",
        "target/s",
        "requests",
        "checks/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "allowed",
        "forbidden",
        "Google calls",
        "Google calls / 1000 req",
        "authz CPU µs/check",
    ];
    let cells: Vec<Vec<String>> = phases
        .iter()
        .map(|phase| {
            let row = &phase.row;
            let q = |quantile: f64| report::micros(row.latency.value_at_quantile(quantile));
            let calls = google_calls(&phase.stats);
            let checks = row.checks();
            vec![
                row.name.clone(),
                row.target
                    .map_or("max".to_string(), |rate| rate.to_string()),
                checks.to_string(),
                // Correct decisions per second; every decision is correct or the run fails.
                format!("{:.0}", row.achieved),
                q(0.5),
                q(0.99),
                q(0.999),
                phase
                    .tally
                    .allowed
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
                phase
                    .tally
                    .forbidden
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .to_string(),
                calls.to_string(),
                if checks == 0 {
                    "-".to_string()
                } else {
                    format!("{:.2}", calls as f64 * 1000.0 / checks as f64)
                },
                match &row.cpu {
                    Some(cpu) if checks > 0 => {
                        format!("{:.1}", cpu.server.as_secs_f64() * 1e6 / checks as f64)
                    }
                    _ => "-".to_string(),
                },
            ]
        })
        .collect();
    report::markdown(&header, &cells)
}
