//! `results.csv` of the multi-instance experiment.
//!
//! The first six columns are fixed (combination, batch_size, policy, throughput_img_s,
//! p50_ms, p99_ms); the ones after them say where the figures come from and how each
//! run compares with the best subset and the static baseline.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::experiment::multi_instance::ResultRow;
use crate::experiment::summary;

/// The header line.
pub const HEADER: &[&str] = &[
    "combination",
    "batch_size",
    "policy",
    "throughput_img_s",
    "p50_ms",
    "p99_ms",
    "units",
    "busy_units",
    "best_subset_throughput",
    "ratio_to_best_subset",
    "gain_over_static_pct",
    "converged_after_batches",
    "failed_requests",
    "mode",
    "simulated",
];

/// The CSV text for these rows.
pub fn render(rows: &[ResultRow]) -> String {
    let mut out = HEADER.join(",");
    out.push('\n');
    for row in rows {
        let best = summary::best_subset(rows, row.batch_size).map(|(_, t)| t);
        let optional = |v: Option<f64>, decimals: usize| {
            v.map_or(String::new(), |v| format!("{v:.decimals$}"))
        };
        let fields = [
            field(&row.combination),
            row.batch_size.to_string(),
            field(&row.policy),
            format!("{:.2}", row.throughput_img_s),
            format!("{:.3}", row.p50_ms),
            format!("{:.3}", row.p99_ms),
            field(&row.units),
            field(&row.busy_units),
            optional(best, 2),
            optional(summary::ratio_to_best(rows, row), 4),
            optional(summary::gain_over_static(rows, row).map(|g| g * 100.0), 2),
            row.converged_after_batches
                .map_or(String::new(), |n| n.to_string()),
            row.failed_requests.to_string(),
            row.mode.as_str().to_string(),
            row.simulated.to_string(),
        ];
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

/// Writes the rows to `path`.
pub fn write(path: &Path, rows: &[ResultRow]) -> anyhow::Result<()> {
    std::fs::write(path, render(rows)).with_context(|| format!("writing {}", path.display()))
}

/// A field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::multi_instance::Mode;

    fn row(key: &str, label: &str, policy: &str, throughput: f64) -> ResultRow {
        ResultRow {
            combination: label.into(),
            combination_key: key.into(),
            units: "cuda+dla0".into(),
            batch_size: 8,
            policy: policy.into(),
            throughput_img_s: throughput,
            p50_ms: 10.0,
            p99_ms: 20.0,
            busy_units: "cuda".into(),
            failed_requests: 0,
            simulated: true,
            mode: Mode::Simulated,
            converged_after_batches: None,
            wall_s: 0.1,
        }
    }

    #[test]
    fn header_and_figures() {
        let rows = vec![
            row("cuda", "CUDA", "round_robin", 100.0),
            row("all", "All, units", "round_robin", 80.0),
            row("all", "All, units", "adaptive", 120.0),
        ];
        let text = render(&rows);
        let mut lines = text.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("combination,batch_size,policy,throughput_img_s,p50_ms,p99_ms,"));
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with("\"All, units\",8,adaptive,120.00,10.000,20.000,"),
            "{last}"
        );
        assert!(last.contains(",100.00,1.2000,50.00,"), "{last}");
        assert_eq!(text.lines().count(), 4);
    }
}
