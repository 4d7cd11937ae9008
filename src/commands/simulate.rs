//! `mica simulate`: the configured units in the discrete-event simulator.
//!
//! Same flags and the same report as `mica bench` (the JSON has the same keys, mode
//! `simulate`), but in virtual time: an hour of traffic takes seconds. The simulator's
//! speed (simulated seconds per wall-clock second) goes to the table's footer, or to
//! stderr with `--json` so stdout stays one JSON document.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::bench::Stop;
use crate::cli::RunArgs;
use crate::commands::bench::{load_and_stop, load_or_default, overrides};
use crate::config::ResolvedConfig;
use crate::experiment::run::{self, RunPlan};
use crate::wiring;

/// Runs the command.
pub fn run(
    config: &Path,
    args: &RunArgs,
    warmup: Duration,
    progress: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let loaded = ResolvedConfig::load(config)?;
    let overrides = overrides(args)?;
    let (load, stop) = load_and_stop(args)?;
    let load = load_or_default(load, &wiring::service_setup(&loaded, &overrides)?, args);
    let duration = match stop {
        Stop::After(duration) => duration,
        Stop::Requests(_) => anyhow::bail!(
            "--requests: the simulator runs for a simulated time; give --duration instead"
        ),
    };
    let plan = RunPlan {
        load,
        duration,
        warmup,
        images_per_request: args.batch_size.unwrap_or(1),
        timeout,
    };
    // The simulator has no progress hook: a spinner shows it is alive.
    let spinner = progress.then(|| {
        let spinner = ProgressBar::new_spinner();
        spinner.set_style(
            ProgressStyle::with_template("{spinner} simulating {msg} {elapsed}")
                .expect("constant template is valid; this is a bug"),
        );
        spinner.set_message(humantime::format_duration(warmup + duration).to_string());
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    });
    let outcome = run::simulate(&loaded, &overrides, &plan);
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let outcome = outcome?;
    let mut footer = format!(
        "simulator: {:.0} s simulated in {:.3} s wall = {:.0} simulated s per wall s ({} events)",
        outcome.run_s,
        outcome.wall.as_secs_f64(),
        outcome.speed(),
        outcome.events
    );
    if let Some(search) = outcome.search {
        footer.push_str(&format!("\npolicy search: {search}"));
    }
    if timeout.is_some() {
        let answered = outcome.report.total.requests;
        let offered = answered + outcome.report.failed_requests + outcome.report.rejected_requests;
        footer.push_str(&format!(
            "\ndeadlines: {} of {} requests met theirs ({:.1} %); {} shed by the policy, {} expired in the queue",
            outcome.deadline_met,
            offered,
            100.0 * outcome.deadline_met as f64 / (offered.max(1)) as f64,
            outcome.shed,
            outcome.expired
        ));
    }
    if outcome.policy_errors > 0 {
        footer.push_str(&format!(
            "\npolicy answered something impossible {} times",
            outcome.policy_errors
        ));
    }
    if args.json {
        println!("{}", outcome.report.to_json());
        eprintln!("{footer}");
    } else {
        print!("{}", outcome.report.render_table());
        println!("{footer}");
    }
    Ok(())
}
