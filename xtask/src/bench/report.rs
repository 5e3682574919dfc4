//! Output: the machine line, the command, and the results as a Markdown table (pasted as is into
//! BENCHMARKS.md).

use std::{fmt::Write as _, time::Duration};

use super::client::{CpuUse, Row};

/// `machine: 2 CPUs, <model>, Linux <release>, <memory>`.
pub fn machine_line() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "? RAM".to_string(),
            |kib| format!("{} RAM", self::kib(kib)),
        );
    format!(
        "machine: {cpus} CPUs (nproc), {model}, Linux {}, {memory}",
        kernel.trim()
    )
}

/// The load average before starting: anything else running skews the numbers.
pub fn load_line() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("load average at start (1/5/15 min): {}", averages.join(" "))
}

/// The command as typed, assuming it was run through `cargo run --release -p xtask`.
pub fn command_line() -> String {
    let mut line = "cargo run --release -p xtask --".to_string();
    for arg in std::env::args().skip(1) {
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            let _ = write!(line, " '{}'", arg.replace('\'', r"'\''"));
        } else {
            let _ = write!(line, " {arg}");
        }
    }
    line
}

/// The results, latencies in microseconds.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "target/s",
        "achieved/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
        "non-OK",
        "skipped",
        "authz CPU µs/check",
        "client CPU µs/check",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let q = |quantile: f64| micros(row.latency.value_at_quantile(quantile));
            vec![
                row.name.clone(),
                row.target
                    .map_or("max".to_string(), |rate| rate.to_string()),
                format!("{:.0}", row.achieved),
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                micros(row.latency.max()),
                row.errors.to_string(),
                row.non_ok.to_string(),
                row.pacing_lag
                    .as_ref()
                    .map_or("-".to_string(), |_| row.skipped.to_string()),
                per_check(row, |cpu| cpu.server),
                per_check(row, |cpu| cpu.client),
            ]
        })
        .collect();
    markdown(&header, &cells)
}

/// A markdown table, columns padded to line up; the first left-aligned, the rest right.
pub(crate) fn markdown(header: &[&str], cells: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            cells
                .iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &mut dyn Iterator<Item = String>| {
        let mut out = String::from("|");
        for (column, value) in values.enumerate() {
            let pad = " ".repeat(widths[column].saturating_sub(value.chars().count()));
            if column == 0 {
                let _ = write!(out, " {value}{pad} |");
            } else {
                let _ = write!(out, " {pad}{value} |");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().map(|h| h.to_string()));
    out += &line(&mut widths.iter().enumerate().map(|(column, &width)| {
        if column == 0 {
            "-".repeat(width)
        } else {
            format!("{}:", "-".repeat(width.saturating_sub(1)))
        }
    }));
    for row in cells {
        out += &line(&mut row.iter().cloned());
    }
    out
}

/// CPU time per answered check, or `-` when not measured.
fn per_check(row: &Row, which: impl Fn(&CpuUse) -> Duration) -> String {
    match (&row.cpu, row.checks()) {
        (Some(cpu), checks) if checks > 0 => {
            format!("{:.1}", which(cpu).as_secs_f64() * 1e6 / checks as f64)
        }
        _ => "-".to_string(),
    }
}

/// For the fixed-rate rows: how late the pacer handed requests over (included in the latency).
pub fn pacing_notes(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        if let Some(lag) = &row.pacing_lag {
            let _ = writeln!(
                out,
                "pacing lag ({}): p50 {} µs, p99 {} µs, max {} µs (client-side, included above)",
                row.name,
                micros(lag.value_at_quantile(0.5)),
                micros(lag.value_at_quantile(0.99)),
                micros(lag.max()),
            );
        }
    }
    out
}

/// `123.4 MiB` from KiB.
pub fn kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub(crate) fn micros(nanos: u64) -> String {
    let micros = nanos as f64 / 1000.0;
    if micros < 10.0 {
        format!("{micros:.1}")
    } else {
        format!("{micros:.0}")
    }
}

#[cfg(test)]
mod tests {
    use hdrhistogram::Histogram;

    use super::*;

    #[test]
    fn table_is_markdown() {
        let mut latency = Histogram::new(3).unwrap();
        latency.record(120_000).unwrap();
        let row = Row {
            name: "warm".into(),
            target: None,
            achieved: 1234.4,
            latency,
            errors: 0,
            non_ok: 0,
            skipped: 0,
            pacing_lag: None,
            first_problem: None,
            cpu: None,
        };
        let table = table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].starts_with("| warm "), "{table}");
        assert!(lines[2].contains(" max "), "{table}");
        assert!(lines[2].contains(" 1234 "), "{table}");
        assert!(lines[2].contains(" 120 "), "{table}");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count())
        );
    }
}
