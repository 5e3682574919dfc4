//! The `bench-envoy` result table (Markdown, pasted as is into BENCHMARKS.md): one row per
//! configuration and rate, with p50 and p99 as multiples of jwt_authn's at the same rate.

use std::time::Duration;

use crate::bench::{
    client::Row,
    report::{markdown, micros},
};

/// What Envoy runs, and with which tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Config {
    NoAuth,
    JwtAuthn,
    ExtAuthzNull,
    ExtAuthzWarm,
    ExtAuthzOpaque,
    ExtAuthzFacade,
    ExtAuthzCold,
    ExtAuthzFirstId,
    ExtAuthzFirstOpaque,
    ExtAuthzFirstFacade,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Self::NoAuth => "(a) noauth",
            Self::JwtAuthn => "(b) jwt_authn, ID token",
            Self::ExtAuthzNull => "(g) ext_authz floor: a Check server that allows unread",
            Self::ExtAuthzWarm => "(c) ext_authz warm, ID token",
            Self::ExtAuthzCold => "(d) ext_authz cold, ID token",
            Self::ExtAuthzOpaque => "(e) ext_authz opaque warm, access token",
            Self::ExtAuthzFacade => "(f) ext_authz warm, our facade's ES256 token",
            Self::ExtAuthzFirstId => "ext_authz warm-up: each ID token once",
            Self::ExtAuthzFirstOpaque => "ext_authz warm-up: each access token once",
            Self::ExtAuthzFirstFacade => "ext_authz warm-up: each facade token once",
        }
    }
}

/// One measured scenario.
#[derive(Debug)]
pub struct Measured {
    pub config: Config,
    /// Whether to compare with jwt_authn at the same rate (not the warm-ups).
    pub compare: bool,
    pub row: Row,
    pub envoy_cpu: Duration,
    pub authz_cpu: Option<Duration>,
    pub client_cpu: Duration,
}

impl Measured {
    /// Adds another slice of the same scenario.
    pub fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        let allowed = |row: &Row| row.latency.len() - row.errors - row.non_ok;
        let seconds = |row: &Row| {
            if row.achieved > 0.0 {
                allowed(row) as f64 / row.achieved
            } else {
                0.0
            }
        };
        let total_seconds = seconds(&self.row) + seconds(&other.row);
        let total_allowed = allowed(&self.row) + allowed(&other.row);
        let (a, b) = (&mut self.row, other.row);
        a.latency.add(&b.latency)?;
        if let (Some(lag), Some(more)) = (a.pacing_lag.as_mut(), b.pacing_lag.as_ref()) {
            lag.add(more)?;
        }
        a.errors += b.errors;
        a.non_ok += b.non_ok;
        a.skipped += b.skipped;
        if a.first_problem.is_none() {
            a.first_problem = b.first_problem;
        }
        a.achieved = if total_seconds > 0.0 {
            total_allowed as f64 / total_seconds
        } else {
            0.0
        };
        self.envoy_cpu += other.envoy_cpu;
        self.authz_cpu = match (self.authz_cpu, other.authz_cpu) {
            (Some(x), Some(y)) => Some(x + y),
            (x, y) => x.or(y),
        };
        self.client_cpu += other.client_cpu;
        Ok(())
    }
}

/// Fixed rates ascending, then the closed-loop (max) rows, then the warm-ups; by config within.
pub fn sort(rows: &mut [Measured]) {
    rows.sort_by_key(|m| (!m.compare, m.row.target.is_none(), m.row.target, m.config));
}

pub fn render(rows: &[Measured]) -> String {
    let header = [
        "configuration",
        "target/s",
        "achieved/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
        "non-200",
        "skipped",
        "p50 × jwt_authn",
        "p99 × jwt_authn",
        "Envoy CPU µs/req",
        "authz CPU µs/req",
        "client CPU µs/req",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            let row = &m.row;
            let q = |quantile: f64| row.latency.value_at_quantile(quantile);
            let reference = rows.iter().find(|r| {
                r.compare && m.compare && r.config == Config::JwtAuthn && r.row.target == row.target
            });
            let ratio = |quantile: f64| match reference {
                Some(r) if r.row.latency.value_at_quantile(quantile) > 0 => format!(
                    "{:.2}",
                    q(quantile) as f64 / r.row.latency.value_at_quantile(quantile) as f64
                ),
                _ => "-".to_string(),
            };
            let per_request = |cpu: Option<Duration>| match (cpu, row.latency.len()) {
                (Some(cpu), n) if n > 0 => format!("{:.1}", cpu.as_secs_f64() * 1e6 / n as f64),
                _ => "-".to_string(),
            };
            vec![
                m.config.name().to_string(),
                row.target
                    .map_or("max".to_string(), |rate| rate.to_string()),
                format!("{:.0}", row.achieved),
                micros(q(0.5)),
                micros(q(0.9)),
                micros(q(0.99)),
                micros(q(0.999)),
                micros(row.latency.max()),
                row.errors.to_string(),
                row.non_ok.to_string(),
                row.pacing_lag
                    .as_ref()
                    .map_or("-".to_string(), |_| row.skipped.to_string()),
                ratio(0.5),
                ratio(0.99),
                per_request(Some(m.envoy_cpu)),
                per_request(m.authz_cpu),
                per_request(Some(m.client_cpu)),
            ]
        })
        .collect();
    markdown(&header, &cells)
}
