//! What the multi-instance grid shows: the terminal tables and, per batch size, the
//! best subset under the static baseline against the smart policies with every unit.

use std::fmt::Write as _;

use crate::experiment::combination::{is_subset, ALL};
use crate::experiment::multi_instance::{Mode, ResultRow};

/// The static baseline's policy.
pub const BASELINE: &str = "round_robin";
/// The policies judged against the best subset.
pub const JUDGED: &[&str] = &["contention_aware", "adaptive"];

/// A judged policy with every unit, at one batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Policy name.
    pub policy: String,
    /// Its throughput with every unit.
    pub throughput_img_s: f64,
    /// Throughput / best subset's (≥ 1 is the goal).
    pub ratio_to_best_subset: Option<f64>,
    /// Throughput / the static baseline's with every unit, − 1.
    pub gain_over_static: Option<f64>,
    /// Units it kept busy.
    pub busy_units: String,
    /// `adaptive`: completed batches its search took.
    pub converged_after_batches: Option<u64>,
}

/// The comparison at one batch size.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSummary {
    /// Batch size.
    pub batch_size: u32,
    /// Best combination under the static baseline: label and throughput.
    pub best_subset: Option<(String, f64)>,
    /// The static baseline with every unit.
    pub static_all: Option<f64>,
    /// The judged policies with every unit.
    pub judged: Vec<Judged>,
    /// Static baseline: CUDA+DLA − CUDA, img/s (the paper: DLA helps at small batch).
    pub dla_gain_over_cuda: Option<f64>,
    /// Static baseline: CUDA+Tensor+DLA − CUDA+Tensor, img/s (the paper: hurts at 64).
    pub dla_gain_over_tensor: Option<f64>,
}

fn find<'a>(rows: &'a [ResultRow], key: &str, batch: u32, policy: &str) -> Option<&'a ResultRow> {
    rows.iter()
        .find(|r| r.combination_key == key && r.batch_size == batch && r.policy == policy)
}

/// The best subset (static baseline) at a batch size: label and throughput.
pub fn best_subset(rows: &[ResultRow], batch: u32) -> Option<(String, f64)> {
    rows.iter()
        .filter(|r| r.batch_size == batch && r.policy == BASELINE && is_subset(&r.combination_key))
        .max_by(|a, b| a.throughput_img_s.total_cmp(&b.throughput_img_s))
        .map(|r| (r.combination.clone(), r.throughput_img_s))
}

/// Per batch size, in the order the batch sizes first appear.
pub fn summarize(rows: &[ResultRow]) -> Vec<BatchSummary> {
    let mut batches: Vec<u32> = Vec::new();
    for row in rows {
        if !batches.contains(&row.batch_size) {
            batches.push(row.batch_size);
        }
    }
    batches
        .into_iter()
        .map(|batch| {
            let best = best_subset(rows, batch);
            let static_all = find(rows, ALL, batch, BASELINE).map(|r| r.throughput_img_s);
            let judged = JUDGED
                .iter()
                .filter_map(|policy| find(rows, ALL, batch, policy))
                .map(|r| Judged {
                    policy: r.policy.clone(),
                    throughput_img_s: r.throughput_img_s,
                    ratio_to_best_subset: best
                        .as_ref()
                        .filter(|(_, t)| *t > 0.0)
                        .map(|(_, t)| r.throughput_img_s / t),
                    gain_over_static: static_all
                        .filter(|t| *t > 0.0)
                        .map(|t| r.throughput_img_s / t - 1.0),
                    busy_units: r.busy_units.clone(),
                    converged_after_batches: r.converged_after_batches,
                })
                .collect();
            let base = |key: &str| find(rows, key, batch, BASELINE).map(|r| r.throughput_img_s);
            let difference = |with: &str, without: &str| Some(base(with)? - base(without)?);
            BatchSummary {
                batch_size: batch,
                best_subset: best,
                static_all,
                judged,
                dla_gain_over_cuda: difference("cuda+dla", "cuda"),
                dla_gain_over_tensor: difference("cuda+tensor+dla", "cuda+tensor"),
            }
        })
        .collect()
}

/// Ratio of a row to the best subset at its batch size.
pub fn ratio_to_best(rows: &[ResultRow], row: &ResultRow) -> Option<f64> {
    best_subset(rows, row.batch_size)
        .filter(|(_, t)| *t > 0.0)
        .map(|(_, t)| row.throughput_img_s / t)
}

/// Gain of a row over the static baseline of the same combination and batch size.
pub fn gain_over_static(rows: &[ResultRow], row: &ResultRow) -> Option<f64> {
    find(rows, &row.combination_key, row.batch_size, BASELINE)
        .filter(|b| b.throughput_img_s > 0.0)
        .map(|b| row.throughput_img_s / b.throughput_img_s - 1.0)
}

/// A heading that says where the figures come from.
pub fn provenance(rows: &[ResultRow]) -> &'static str {
    let simulated = rows.iter().any(|r| r.simulated);
    match (rows.first().map(|r| r.mode), simulated) {
        (Some(Mode::Simulated), _) => {
            "SIMULATED: discrete-event simulator over calibrated profiles; not measurements"
        }
        (_, true) => "SIMULATED units (sim engine) run in real time; not measurements",
        _ => "measured in real time on the configured engines",
    }
}

/// The terminal tables: throughput, then p50 / p99 latency, one column per policy.
pub fn render_tables(rows: &[ResultRow], policies: &[&str]) -> String {
    let mut out = String::new();
    let mut groups: Vec<(&str, &str, u32)> = Vec::new();
    for row in rows {
        let key = (row.combination.as_str(), row.units.as_str(), row.batch_size);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    let head = |out: &mut String, title: &str, width: usize| {
        let _ = writeln!(out, "{title}");
        let _ = write!(out, "{:<16} {:<24} {:>4}", "combination", "units", "bs");
        for policy in policies {
            let _ = write!(out, " {policy:>width$}");
        }
        let _ = writeln!(out);
    };
    let cell = |combination: &str, batch: u32, policy: &str| {
        rows.iter()
            .find(|r| r.combination == combination && r.batch_size == batch && r.policy == policy)
    };
    head(&mut out, "throughput, images/s", 16);
    for (combination, units, batch) in &groups {
        let _ = write!(out, "{combination:<16} {units:<24} {batch:>4}");
        for policy in policies {
            let text = cell(combination, *batch, policy)
                .map_or("-".to_string(), |r| format!("{:.1}", r.throughput_img_s));
            let _ = write!(out, " {text:>16}");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    head(&mut out, "latency p50 / p99, ms", 16);
    for (combination, units, batch) in &groups {
        let _ = write!(out, "{combination:<16} {units:<24} {batch:>4}");
        for policy in policies {
            let text = cell(combination, *batch, policy).map_or("-".to_string(), |r| {
                format!("{} / {}", short_ms(r.p50_ms), short_ms(r.p99_ms))
            });
            let _ = write!(out, " {text:>16}");
        }
        let _ = writeln!(out);
    }
    out
}

/// Milliseconds in few characters: 3 significant digits, no more than 6 wide.
fn short_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// The per-batch-size comparison as text.
pub fn render_summary(summaries: &[BatchSummary], all_units: Option<&str>) -> String {
    let mut out = String::new();
    let all = all_units.unwrap_or("every unit");
    let _ = writeln!(
        out,
        "best subset (static {BASELINE}) vs contention_aware and adaptive with all units ({all})"
    );
    let pct = |g: Option<f64>| g.map_or("-".to_string(), |g| format!("{:+.1} %", g * 100.0));
    if summaries.iter().all(|s| s.judged.is_empty()) {
        let _ = writeln!(
            out,
            "  (no comparison: it needs the combination {ALL:?} and the policies {})",
            JUDGED.join(", ")
        );
    }
    for s in summaries {
        let best = s
            .best_subset
            .as_ref()
            .map_or("-".to_string(), |(label, t)| format!("{t:.1} ({label})"));
        let _ = writeln!(
            out,
            "bs {:>3}: best subset {best}; static all units {}",
            s.batch_size,
            s.static_all.map_or("-".to_string(), |t| format!("{t:.1}"))
        );
        for j in &s.judged {
            let converged = match j.converged_after_batches {
                Some(n) => format!("; converged after {n} batches"),
                None if j.policy == "adaptive" => "; did not converge in the run".to_string(),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "         {:<17} {:>8.1} img/s  ratio to best subset {}  gain over static {}  busy {}{converged}",
                j.policy,
                j.throughput_img_s,
                j.ratio_to_best_subset.map_or("-".to_string(), |r| format!("{r:.3}")),
                pct(j.gain_over_static),
                j.busy_units,
            );
        }
    }
    let with_dla: Vec<String> = summaries
        .iter()
        .filter_map(|s| {
            let over_cuda = s.dla_gain_over_cuda?;
            let over_tensor = s.dla_gain_over_tensor?;
            Some(format!(
                "bs {}: CUDA+DLA {:+.1} over CUDA, CUDA+Tensor+DLA {:+.1} over CUDA+Tensor",
                s.batch_size, over_cuda, over_tensor
            ))
        })
        .collect();
    if !with_dla.is_empty() {
        let _ = writeln!(out, "adding the DLA under the static baseline (img/s):");
        for line in with_dla {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
