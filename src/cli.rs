//! The command line: `mica <command> [options]`. The CLI only picks the config file and
//! overrides a few run-level knobs; everything else lives in the config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::logging::{self, LogFormat};

/// mica — schedules DNN inference over the heterogeneous compute units of one machine.
#[derive(Debug, Parser)]
#[command(name = "mica", version, about, long_about = None)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The config file to use.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Config file (TOML); `MICA__SECTION__KEY` variables override its keys.
    #[arg(
        long,
        short = 'c',
        env = "MICA_CONFIG",
        default_value = "config/orin-agx-sim.toml"
    )]
    pub config: PathBuf,
}

/// Overrides shared by the commands that run load.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Policy to use instead of the config's (default parameters): round_robin,
    /// least_loaded, weighted, contention_aware, adaptive, slo.
    #[arg(long)]
    pub policy: Option<String>,
    /// Only these units (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub units: Option<Vec<String>>,
    /// The paper's setup: every request carries N images and units run batches of N.
    /// Without it requests carry one image and the dynamic batcher forms batches.
    #[arg(long)]
    pub batch_size: Option<u32>,
    /// Closed loop: this many clients, each with one request outstanding. Without it
    /// (and without --rate) the load keeps every unit busy at its maximum batch: as many
    /// clients as 2 × Σ over units of streams × max_batch images need (one full batch
    /// running and one waiting per stream), in requests of --batch-size images; 528 for
    /// config/orin-agx-sim.toml. With --url the server's units are unknown: 16.
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<usize>,
    /// Open loop: Poisson arrivals at this many requests per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to measure (e.g. 10s, 1m, 3600s).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests instead of after a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Offer load to the configured units in-process and report throughput and latency,
    /// then the run in context: the static baseline (round_robin over all the run's
    /// units) and the best single unit for the same load, predicted by the simulator
    /// (or measured, --compare), and whether a searching policy has converged.
    Bench {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// Load and overrides.
        #[command(flatten)]
        run: RunArgs,
        /// Time at the start whose requests are not counted.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        warmup: Duration,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Record no metrics (as `[metrics] enabled = false`), to measure their cost.
        #[arg(long)]
        no_metrics: bool,
        /// Drive a running server over HTTP (KServe v2, binary tensor data) instead of
        /// an in-process service, e.g. `http://127.0.0.1:8000`. The config is not used.
        #[arg(long)]
        url: Option<String>,
        /// Model to request with `--url`.
        #[arg(long, default_value = "resnet50")]
        model: String,
        /// Run once per concurrency level (comma-separated, e.g. `1,4,16,64`) and print
        /// one summary line each.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["concurrency", "rate"])]
        sweep: Option<Vec<usize>>,
        /// Measure the report's context lines instead of predicting them: the static
        /// baseline (round_robin over all the run's units) and each unit alone run
        /// through the service for 3 s each (after 1 s of warm-up), with the same load.
        /// Without it the simulator predicts them in the same process (instant).
        #[arg(long, conflicts_with = "sweep")]
        compare: bool,
    },
    /// Serve inference over HTTP (KServe v2 / Triton protocol) until SIGTERM/SIGINT.
    Serve {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// Policy to use instead of the config's (default parameters).
        #[arg(long)]
        policy: Option<String>,
        /// Only these units (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        units: Option<Vec<String>>,
    },
    /// List the configured units and their profiles.
    Units {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file and report what is wrong with it.
    Check {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run the configured units in the discrete-event simulator (virtual time, same
    /// policies, profiles and contention model) and report as `mica bench` does.
    Simulate {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// Load and overrides.
        #[command(flatten)]
        run: RunArgs,
        /// Simulated time at the start whose requests are not counted.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        warmup: Duration,
        /// Hide the progress spinner.
        #[arg(long)]
        no_progress: bool,
        /// Give every request this deadline from its arrival (e.g. 200ms): requests
        /// still queued then expire, the `slo` policy sheds what cannot make it, and
        /// the footer reports the deadline-meeting rate.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// Measure units' batch latency at each batch size and write profile files (the
    /// format of config/profiles/, origin "measured") for the policies and the simulator.
    Profile {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// What to measure and where to write it.
        #[command(flatten)]
        options: commands::ProfileArgs,
    },
    /// Measure units alone and together (pairs, larger sets) and fit the platform's
    /// contention model to it; writes DIR/platform.toml and a report (table, JSON, chart)
    /// of measured vs predicted throughput before and after, with held-out error.
    Calibrate {
        /// The config.
        #[command(flatten)]
        config: ConfigArg,
        /// What to measure and where to write it.
        #[command(flatten)]
        options: commands::CalibrateArgs,
    },
    /// Search a pipelined network's mapping option, cut points, streams, threads and
    /// batch size by measuring (simulator or real units); writes DIR/tune.json and
    /// DIR/best.toml.
    Tune(crate::commands::TuneArgs),
    /// Run one of the papers' experiments.
    Experiment {
        /// The experiment.
        #[command(subcommand)]
        command: crate::experiment::ExperimentCommand,
    },
}

/// Parses the command line, runs the command, and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Command::Check { .. } | Command::Serve { .. });
    logging::init(cli.log_format, quiet);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
