//! The last lines of `mica bench`'s report: the run beside the static baseline
//! (round_robin over all of the run's units) and the best single unit, for the same
//! offered load and window, and, for a policy that searches online (`adaptive`),
//! whether its search has converged and after how many batches.
//!
//! The references are predicted by the discrete-event simulator in the same process
//! (instant, from the units' profiles and the platform's contention model), or measured
//! with `--compare`: each reference then runs through the real service path for a few
//! seconds. Either way the lines say which, so a prediction is never read as a
//! measurement.

use std::fmt::Write as _;
use std::time::Duration;

use mica_core::SearchProgress;
use mica_policies::PolicyConfig;
use serde::Serialize;

use crate::config::ResolvedConfig;
use crate::experiment::run::{self, RunPlan};
use crate::wiring::RunOverrides;

/// Measured window of each `--compare` reference run.
pub const COMPARE_DURATION: Duration = Duration::from_secs(3);
/// Warm-up of each `--compare` reference run.
pub const COMPARE_WARMUP: Duration = Duration::from_secs(1);
/// Simulated time given to a searching policy to predict when it converges.
const SEARCH_HORIZON: Duration = Duration::from_secs(600);

/// How the references were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// By the discrete-event simulator, for the run's load and window.
    Predicted,
    /// By running them through the service (`--compare`), a few seconds each.
    Measured,
}

/// One reference run: a policy over a set of units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reference {
    /// Policy it ran.
    pub policy: String,
    /// Units it ran on.
    pub units: Vec<String>,
    /// Images per second (predicted or measured, as `Context::source` says).
    pub throughput_img_s: f64,
    /// Whether its units are simulated (sim engine or simulator).
    pub simulated: bool,
}

/// The run in context.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// How the references were obtained.
    pub source: Source,
    /// The run's units.
    pub units: Vec<String>,
    /// round_robin over all of the run's units, or why it could not be had.
    pub static_baseline: Result<Reference, String>,
    /// The fastest unit alone, or why it could not be had.
    pub best_single_unit: Result<Reference, String>,
    /// Where the run's policy's online search stood at the end (`adaptive`).
    pub search: Option<SearchProgress>,
    /// For a search still running at the end: after how many batches the simulator
    /// predicts it converges under the same load.
    pub search_predicted_converged_after: Option<u64>,
}

/// What the references are compared with.
#[derive(Debug, Clone)]
pub struct Setting<'a> {
    /// The run's config.
    pub loaded: &'a ResolvedConfig,
    /// The run's overrides (units, batch size); the policy is replaced per reference.
    pub overrides: &'a RunOverrides,
    /// The run's load and window.
    pub plan: RunPlan,
    /// The run's units, in index order.
    pub units: Vec<String>,
}

impl Context {
    /// The references for `setting`, predicted by the simulator (`source` Predicted)
    /// or measured through the service a few seconds each (Measured). `search` is the
    /// run's policy's search at the end of the run.
    pub fn build(setting: &Setting<'_>, source: Source, search: Option<SearchProgress>) -> Self {
        let reference = |units: Option<Vec<String>>| -> Result<Reference, String> {
            let units = units.unwrap_or_else(|| setting.units.clone());
            let overrides = RunOverrides {
                policy: Some(PolicyConfig::RoundRobin),
                units: Some(units.clone()),
                batch_size: setting.overrides.batch_size,
            };
            let outcome = match source {
                Source::Predicted => run::simulate(setting.loaded, &overrides, &setting.plan),
                Source::Measured => {
                    let plan = RunPlan {
                        duration: COMPARE_DURATION,
                        warmup: COMPARE_WARMUP,
                        ..setting.plan
                    };
                    run::real_time(setting.loaded, &overrides, &plan, false)
                }
            }
            .map_err(|e| format!("{e:#}"))?;
            Ok(Reference {
                policy: outcome.report.policy.clone(),
                units,
                throughput_img_s: outcome.report.total.throughput_img_s,
                simulated: outcome.report.simulated,
            })
        };
        let static_baseline = reference(None);
        let mut best_single_unit: Result<Reference, String> =
            Err("the run has no units".to_string());
        for unit in &setting.units {
            match reference(Some(vec![unit.clone()])) {
                Ok(alone) => {
                    let better = match &best_single_unit {
                        Ok(best) => alone.throughput_img_s > best.throughput_img_s,
                        Err(_) => true,
                    };
                    if better {
                        best_single_unit = Ok(alone);
                    }
                }
                Err(e) => {
                    best_single_unit = Err(format!("unit {unit}: {e}"));
                    break;
                }
            }
        }
        let search_predicted_converged_after = match search {
            Some(SearchProgress::Searching { .. }) => predict_convergence(setting),
            _ => None,
        };
        Self {
            source,
            units: setting.units.clone(),
            static_baseline,
            best_single_unit,
            search,
            search_predicted_converged_after,
        }
    }

    /// The context as JSON (`"context"` in `mica bench --json`): `source`, `units`,
    /// `static_baseline` and `best_single_unit` (each a reference or
    /// `{"unavailable": why}`), and `search` (`null` for policies that do not search).
    pub fn to_json(&self) -> serde_json::Value {
        let reference = |r: &Result<Reference, String>| match r {
            Ok(r) => serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::json!({ "unavailable": e }),
        };
        let search = match self.search {
            Some(SearchProgress::Converged { after_batches }) => serde_json::json!({
                "converged": true,
                "batches": after_batches,
            }),
            Some(SearchProgress::Searching { batches }) => serde_json::json!({
                "converged": false,
                "batches": batches,
                "predicted_converged_after": self.search_predicted_converged_after,
            }),
            None => serde_json::Value::Null,
        };
        serde_json::json!({
            "source": self.source,
            "units": self.units,
            "static_baseline": reference(&self.static_baseline),
            "best_single_unit": reference(&self.best_single_unit),
            "search": search,
        })
    }

    /// The lines printed under the report's table; `run_img_s` is the run's throughput
    /// and `policy` its policy.
    pub fn render(&self, policy: &str, run_img_s: f64) -> String {
        let mut out = String::new();
        let how = match self.source {
            Source::Predicted => "predicted by the simulator for the same load and window",
            Source::Measured => {
                "measured through the service with the same load, 3 s each (--compare)"
            }
        };
        let simulated = [&self.static_baseline, &self.best_single_unit]
            .iter()
            .any(|r| {
                matches!(
                    r,
                    Ok(Reference {
                        simulated: true,
                        ..
                    })
                )
            });
        let label = if simulated { " [SIMULATED units]" } else { "" };
        let _ = writeln!(out, "in context ({how}){label}:");
        let line = |out: &mut String, what: &str, r: &Result<Reference, String>| match r {
            Ok(r) => {
                let ratio = if r.throughput_img_s > 0.0 {
                    format!("this run {:.2}x", run_img_s / r.throughput_img_s)
                } else {
                    "no images".to_string()
                };
                let _ = writeln!(
                    out,
                    "  {what:<17} {:<40} {:>8.1} img/s  {ratio}",
                    describe(r),
                    r.throughput_img_s
                );
            }
            Err(e) => {
                let hint = match self.source {
                    Source::Predicted => "; --compare measures it instead",
                    Source::Measured => "",
                };
                let _ = writeln!(out, "  {what:<17} not available: {e}{hint}");
            }
        };
        line(&mut out, "static baseline", &self.static_baseline);
        line(&mut out, "best single unit", &self.best_single_unit);
        match self.search {
            Some(SearchProgress::Converged { after_batches }) => {
                let _ = writeln!(
                    out,
                    "  {:<17} {policy} converged after {after_batches} completed batches",
                    "policy search"
                );
            }
            Some(SearchProgress::Searching { batches }) => {
                let predicted = match self.search_predicted_converged_after {
                    Some(n) => format!(
                        " (the simulator predicts it converges after {n} batches at this load)"
                    ),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {:<17} {policy} is still searching after {batches} completed batches: \
                     its figures include trials of worse unit sets{predicted}; a longer \
                     --duration or --warmup lets it settle",
                    "policy search"
                );
            }
            None => {}
        }
        out
    }
}

/// "round_robin over cpu+amp" or "amp alone".
fn describe(r: &Reference) -> String {
    match r.units.as_slice() {
        [only] => format!("{only} alone"),
        units => format!("{} over {}", r.policy, units.join("+")),
    }
}

/// Batches after which the simulator predicts the run's (searching) policy converges
/// under the run's load, given time enough.
fn predict_convergence(setting: &Setting<'_>) -> Option<u64> {
    let overrides = RunOverrides {
        units: Some(setting.units.clone()),
        ..setting.overrides.clone()
    };
    let plan = RunPlan {
        duration: SEARCH_HORIZON,
        warmup: Duration::ZERO,
        ..setting.plan
    };
    run::simulate(setting.loaded, &overrides, &plan)
        .ok()?
        .converged_after_batches
}
