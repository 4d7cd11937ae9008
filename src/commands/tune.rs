//! `mica tune`: search mapping option, cut points, streams, threads and batch size of
//! a pipelined network by measuring (Kang et al., JEDI, ACM TECS 2022); see
//! `crate::pipeline::tune`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::pipeline::tune::{tune, BackendChoice, SearchKind, TuneOptions};

/// `mica tune`.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Config file with a `[pipeline]` section (units, CPU side, `[pipeline.tune]` space).
    #[arg(
        long,
        short = 'c',
        env = "MICA_CONFIG",
        default_value = "config/orin-agx-pipeline.toml"
    )]
    pub config: PathBuf,
    /// Where to measure: the discrete-event model (fast, simulated figures) or the
    /// pipeline actors on the configured engines.
    #[arg(long, value_enum, default_value = "sim")]
    pub backend: BackendChoice,
    /// The paper's heuristic, or every point of the space.
    #[arg(long, value_enum, default_value = "heuristic")]
    pub search: SearchKind,
    /// Blocks of the staged model (coarser cut points); default: the model's own (18
    /// for ResNet-50).
    #[arg(long)]
    pub model_stages: Option<usize>,
    /// Output folder: tune.json, evaluated.csv, tune.png, best.toml, cache.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Reuse the measured points in DIR/cache.json.
    #[arg(long)]
    pub resume: bool,
    /// Seed of the heuristic's sampled starting points.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `--backend real`: measured time per point.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub point_duration: Duration,
    /// Print tune.json instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `mica tune`.
pub fn run(args: &TuneArgs) -> anyhow::Result<()> {
    let report = tune(&TuneOptions {
        config: args.config.clone(),
        backend: args.backend,
        search: args.search,
        model_stages: args.model_stages,
        out: args.out.clone(),
        resume: args.resume,
        progress: !args.no_progress,
        seed: args.seed,
        real_duration: args.point_duration,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::pipeline::tune::report::table(&report));
        println!(
            "wrote {}/{{tune.json,evaluated.csv,tune.png,best.toml,cache.json}}",
            args.out.display()
        );
    }
    Ok(())
}
