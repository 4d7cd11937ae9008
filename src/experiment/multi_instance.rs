//! The multi-instance experiment's runner: every combination × batch size × policy,
//! through the simulator (in parallel, deterministic per run) or in real time (one run
//! after another, so runs do not disturb each other's timing).
//!
//! The static baseline is the paper's setup: every request carries a fixed batch
//! (`--batch-size` semantics: units run batches of exactly that size) and a closed loop
//! keeps two requests outstanding per unit of the combination, so every unit always has
//! its next batch waiting. The policies get exactly the same load; what differs is only
//! where they send the batches (and which units they leave idle).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use mica_core::RunReport;
use mica_policies::PolicyConfig;

use crate::bench::Load;
use crate::config::ResolvedConfig;
use crate::experiment::combination::Combination;
use crate::experiment::run::{self, RunOutcome, RunPlan};
use crate::wiring::RunOverrides;

/// How the runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Discrete-event simulator (virtual time).
    Simulated,
    /// The live service (actors, stream workers, engines) in real time.
    RealTime,
}

impl Mode {
    /// Label in the CSV and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Simulated => "simulator",
            Mode::RealTime => "real-time",
        }
    }
}

/// The grid to run.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Hardware combinations.
    pub combinations: Vec<Combination>,
    /// Fixed batch sizes.
    pub batch_sizes: Vec<u32>,
    /// Policies; `round_robin` is the static baseline.
    pub policies: Vec<PolicyConfig>,
    /// Closed-loop requests outstanding per unit of a combination.
    pub concurrency_per_unit: usize,
    /// Measured time of each run.
    pub duration: Duration,
    /// Unmeasured time at the start of each run.
    pub warmup: Duration,
    /// Simulator or real time.
    pub mode: Mode,
    /// Simulator runs at once (real time always runs one at a time).
    pub jobs: usize,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct ResultRow {
    /// Combination label (`CUDA+DLA`).
    pub combination: String,
    /// Combination key (`cuda+dla`).
    pub combination_key: String,
    /// Unit ids of the combination (`cuda+dla0`).
    pub units: String,
    /// Fixed batch size.
    pub batch_size: u32,
    /// Policy name.
    pub policy: String,
    /// Images per second over the measured window.
    pub throughput_img_s: f64,
    /// Median request latency, ms.
    pub p50_ms: f64,
    /// 99th percentile request latency, ms.
    pub p99_ms: f64,
    /// Units that completed at least one image (`amp+dla0`).
    pub busy_units: String,
    /// Requests that failed or were refused.
    pub failed_requests: u64,
    /// Whether any figure is emulated (sim engine or simulator).
    pub simulated: bool,
    /// Simulator or real time.
    pub mode: Mode,
    /// `adaptive` in the simulator: completed batches its search took.
    pub converged_after_batches: Option<u64>,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

impl ResultRow {
    fn new(combination: &Combination, batch_size: u32, outcome: &RunOutcome, mode: Mode) -> Self {
        let report: &RunReport = &outcome.report;
        let busy: Vec<&str> = combination
            .units
            .iter()
            .filter(|id| report.units.get(*id).is_some_and(|u| u.stats.images > 0))
            .map(String::as_str)
            .collect();
        Self {
            combination: combination.label.to_string(),
            combination_key: combination.key.to_string(),
            units: combination.units_label(),
            batch_size,
            policy: report.policy.clone(),
            throughput_img_s: report.total.throughput_img_s,
            p50_ms: report.total.p50_ms,
            p99_ms: report.total.p99_ms,
            busy_units: if busy.is_empty() {
                "-".to_string()
            } else {
                busy.join("+")
            },
            failed_requests: report.failed_requests + report.rejected_requests,
            simulated: report.simulated,
            mode,
            converged_after_batches: outcome.converged_after_batches,
            wall_s: outcome.wall.as_secs_f64(),
        }
    }
}

/// Runs the whole grid, in the order combination, batch size, policy.
pub fn run_grid(
    loaded: &ResolvedConfig,
    grid: &Grid,
    progress: bool,
) -> anyhow::Result<Vec<ResultRow>> {
    let mut cells = Vec::new();
    for combination in &grid.combinations {
        for &batch_size in &grid.batch_sizes {
            for policy in &grid.policies {
                cells.push((combination, batch_size, policy));
            }
        }
    }
    let bar = progress_bar(progress, cells.len(), grid.mode);
    let run_cell = |(combination, batch_size, policy): &(&Combination, u32, &PolicyConfig)| {
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{} bs {batch_size} {}",
                combination.label,
                policy.name()
            ));
        }
        let overrides = RunOverrides {
            policy: Some((*policy).clone()),
            units: Some(combination.units.clone()),
            batch_size: Some(*batch_size),
        };
        let plan = RunPlan {
            load: Load::Closed {
                concurrency: grid.concurrency_per_unit * combination.units.len(),
            },
            duration: grid.duration,
            warmup: grid.warmup,
            images_per_request: *batch_size,
            timeout: None,
        };
        let outcome = match grid.mode {
            Mode::Simulated => run::simulate(loaded, &overrides, &plan),
            Mode::RealTime => run::real_time(loaded, &overrides, &plan, false),
        }
        .map_err(|e| {
            e.context(format!(
                "{} ({}) at batch {batch_size} under {}",
                combination.label,
                combination.units_label(),
                policy.name()
            ))
        })?;
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        Ok::<_, anyhow::Error>(ResultRow::new(
            combination,
            *batch_size,
            &outcome,
            grid.mode,
        ))
    };

    let jobs = match grid.mode {
        Mode::RealTime => 1,
        Mode::Simulated => grid.jobs.clamp(1, cells.len().max(1)),
    };
    let rows = if jobs == 1 {
        cells
            .iter()
            .map(run_cell)
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        // A shared cursor over the cells; each result lands in its cell's slot, so the
        // order (and every figure) is the same whatever the number of jobs.
        let next = AtomicUsize::new(0);
        let slots: Vec<Mutex<Option<anyhow::Result<ResultRow>>>> =
            cells.iter().map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(cell) = cells.get(index) else { break };
                    let result = run_cell(cell);
                    let failed = result.is_err();
                    *slots[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    if failed {
                        // Stop handing out work; the error is reported below.
                        next.store(cells.len(), Ordering::Relaxed);
                    }
                });
            }
        });
        let mut rows = Vec::with_capacity(cells.len());
        for slot in slots {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(result) => rows.push(result?),
                None => continue,
            }
        }
        rows
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(rows)
}

fn progress_bar(show: bool, runs: usize, mode: Mode) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::new(runs as u64);
    let template = format!(
        "{{spinner}} {} [{{bar:40}}] {{pos}}/{{len}} runs {{elapsed_precise}} (eta {{eta}}) {{msg}}",
        mode.as_str()
    );
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("constant template is valid; this is a bug")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}
