//! One file per command; this module only dispatches.

mod bench;
mod experiment;
mod serve;
mod simulate;
mod units;

use crate::cli::Command;

/// Runs a parsed command.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Bench {
            config,
            run,
            warmup,
            no_progress,
        } => bench::run(&config.config, &run, warmup, !no_progress),
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
        } => simulate::run(&config.config, &run, warmup, !no_progress),
        Command::Experiment { command } => experiment::run(&command),
    }
}
