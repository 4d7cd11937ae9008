//! Command-line arguments of `mica experiment ...`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::cli::ConfigArg;
use crate::experiment::combination::DlaChoice;

/// The experiments.
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// The multi-instance paper's experiment (Fig. 1): throughput and latency of every
    /// hardware combination and batch size, under the static two-instance baseline
    /// (round_robin) and each policy; writes DIR/results.csv and DIR/multi_instance.png.
    MultiInstance(MultiInstanceArgs),
    /// The pipelining paper's comparison: baseline, batching, GPU-only parallelized,
    /// profile-based pipeline and tuned pipeline, on each config given.
    Pipeline(crate::commands::experiment_pipeline::PipelineExperimentArgs),
}

/// `mica experiment multi-instance`.
#[derive(Debug, Clone, Args)]
pub struct MultiInstanceArgs {
    /// The config.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Output folder (created if missing): results.csv and multi_instance.png.
    #[arg(long, default_value = "out/multi-instance")]
    pub out: PathBuf,
    /// Combinations to run (comma-separated): cpu, cuda, cuda+tensor, cuda+dla,
    /// cuda+tensor+dla, all. Default: every one the config's unit kinds allow.
    #[arg(long, value_delimiter = ',')]
    pub combinations: Option<Vec<String>>,
    /// Fixed batch sizes (each request is one batch of this size).
    #[arg(long, value_delimiter = ',', default_value = "1,8,16,32,64")]
    pub batch_sizes: Vec<u32>,
    /// Policies; round_robin is the static baseline the others are compared with.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "round_robin,least_loaded,weighted,contention_aware,adaptive"
    )]
    pub policies: Vec<String>,
    /// Which DLA cores the combinations with "DLA" use: the config's first DLA (the
    /// paper's setup) or both.
    #[arg(long, value_enum, default_value = "first")]
    pub dla: DlaChoice,
    /// Run through the live service in real time instead of the simulator.
    #[arg(long)]
    pub real_time: bool,
    /// Measured time per run [default: 600s simulated, 5s in real time].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Unmeasured time at the start of each run [default: 60s simulated, 1s in real
    /// time].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Closed-loop requests outstanding per unit of a combination (the paper's two
    /// instances: one running, one waiting).
    #[arg(long, default_value_t = 2)]
    pub concurrency_per_unit: usize,
    /// Simulator runs at once [default: the available cores]. Real time runs one at a
    /// time.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}
