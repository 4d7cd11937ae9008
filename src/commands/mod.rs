//! One file per command; this module only dispatches.

mod bench;
mod calibrate;
mod calibrate_chart;
mod experiment;
pub(crate) mod experiment_pipeline;
mod profile;
mod serve;
mod serve_banner;
mod simulate;
mod tune;
mod typed_command;
mod units;

use crate::cli::Command;

pub use calibrate::CalibrateArgs;
pub use profile::ProfileArgs;
pub use tune::TuneArgs;

/// Runs a parsed command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench {
            config,
            run,
            warmup,
            no_progress,
            no_metrics,
            url,
            model,
            sweep,
            compare,
        } => {
            let how = bench::How {
                warmup,
                progress: !no_progress,
                metrics: !no_metrics,
                url,
                model,
                sweep,
                compare,
            };
            bench::run(&config.config, &run, &how)
        }
        Command::Units { config, json } => units::run(&config.config, json),
        Command::Serve {
            config,
            policy,
            units,
        } => {
            let run = crate::cli::RunArgs {
                policy,
                units,
                batch_size: None,
                concurrency: None,
                rate: None,
                duration: None,
                requests: None,
                json: false,
            };
            serve::run(&config.config, &bench::overrides(&run)?)
        }
        Command::Check { config } => units::check(&config.config),
        Command::Simulate {
            config,
            run,
            warmup,
            no_progress,
            timeout,
        } => simulate::run(&config.config, &run, warmup, !no_progress, timeout),
        Command::Profile { config, options } => profile::run(&config.config, &options),
        Command::Calibrate { config, options } => calibrate::run(&config.config, &options),
        Command::Tune(args) => tune::run(&args),
        Command::Experiment { command } => experiment::run(&command),
    }
}
