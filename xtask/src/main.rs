//! `xtask`: project automation, run as `cargo run --release -p xtask -- <command>`.
//!
//! Commands:
//! - `bench-check`: load-test the `authz` binary's ext_authz `Check` against the in-process
//!   Google stand-in (see `BENCHMARKS.md`).
//! - `bench-envoy`: end to end through a real Envoy: our ext_authz against Envoy's `jwt_authn`
//!   and no auth (see `BENCHMARKS.md`).
//! - `bench-policy`: `Check` with named policies, Google group membership (Directory API via the
//!   stand-in) and per-tool rules: warm throughput and latency, and Google calls per request
//!   (see `BENCHMARKS.md`).
//! - `null-authz` (hidden): the floor row of `bench-envoy`, a `Check` server that allows without
//!   reading the request; `bench-envoy` starts it itself.

mod bench;
mod bench_envoy;
mod bench_policy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Project automation for authz")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// The variants name the subcommands (`bench-check`, ...).
#[allow(clippy::enum_variant_names)]
enum Command {
    /// Benchmark ext_authz Check on target/release/authz (build it first with
    /// `cargo build --release -p authz -p standin`).
    BenchCheck(bench::Args),
    /// Benchmark end to end through Envoy: no auth, jwt_authn and ext_authz (authz), same
    /// tokens, fixed rates (build authz first; Envoy from scripts/python-env).
    BenchEnvoy(bench_envoy::Args),
    /// Benchmark Check with policies and Google groups (Directory API on the stand-in): warm
    /// checks/s and latency, Google calls per 1000 requests (build first with
    /// `cargo build --release -p authz -p standin -p xtask`).
    BenchPolicy(bench_policy::Args),
    /// bench-envoy's floor of an out-of-process ext_authz: a Check server that allows without
    /// looking (started by bench-envoy itself).
    #[command(hide = true)]
    NullAuthz(bench_envoy::null_authz::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BenchCheck(args) => bench::main(args),
        Command::BenchEnvoy(args) => bench_envoy::main(args),
        Command::BenchPolicy(args) => bench_policy::main(args),
        Command::NullAuthz(args) => bench_envoy::null_authz::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
