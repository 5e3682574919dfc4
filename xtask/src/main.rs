//! `xtask`: project automation, run as `cargo run --release -p xtask -- <command>`.
//!
//! Commands:
//! - `bench-check`: load-test the `authz` binary's ext_authz `Check` against the in-process
//!   Google stand-in (see `BENCHMARKS.md`).

mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Project automation for authz")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark ext_authz Check on target/release/authz (build it first with
    /// `cargo build --release -p authz -p standin`).
    BenchCheck(bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BenchCheck(args) => bench::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
