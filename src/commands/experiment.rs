//! `mica experiment multi-instance`: the seed paper's experiment on any config.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mica_policies::PolicyConfig;

use crate::config::{ResolvedConfig, MAX_BATCH_LIMIT};
use crate::experiment::combination::{self, DlaChoice, ALL};
use crate::experiment::multi_instance::{self, Grid, Mode};
use crate::experiment::{chart, csv, summary, ExperimentCommand, MultiInstanceArgs};

/// Runs an experiment command.
pub fn run(command: &ExperimentCommand) -> anyhow::Result<()> {
    match command {
        ExperimentCommand::MultiInstance(args) => multi_instance(args),
        ExperimentCommand::Pipeline(args) => super::experiment_pipeline::run(args),
    }
}

fn multi_instance(args: &MultiInstanceArgs) -> anyhow::Result<()> {
    let loaded = ResolvedConfig::load(&args.config.config)?;
    let (combinations, skipped) =
        combination::resolve(&loaded, args.combinations.as_deref(), args.dla)?;
    let batch_sizes = batch_sizes(&args.batch_sizes)?;
    let policies = policies(&args.policies)?;
    if args.concurrency_per_unit == 0 {
        anyhow::bail!("--concurrency-per-unit must be at least 1");
    }
    let mode = if args.real_time {
        Mode::RealTime
    } else {
        Mode::Simulated
    };
    let (default_duration, default_warmup) = match mode {
        Mode::Simulated => (Duration::from_secs(600), Duration::from_secs(60)),
        Mode::RealTime => (Duration::from_secs(5), Duration::from_secs(1)),
    };
    let duration = args.duration.unwrap_or(default_duration);
    if duration.is_zero() {
        anyhow::bail!("--duration must be longer than 0");
    }
    let jobs = match args.jobs {
        Some(0) => anyhow::bail!("--jobs must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    prepare_output(&args.out)?;
    let grid = Grid {
        combinations,
        batch_sizes,
        policies,
        concurrency_per_unit: args.concurrency_per_unit,
        duration,
        warmup: args.warmup.unwrap_or(default_warmup),
        mode,
        jobs,
    };

    let platform = match loaded.config.platform.name.as_str() {
        "" => loaded.path.display().to_string(),
        name => name.to_string(),
    };
    let dla = match args.dla {
        DlaChoice::First => "DLA = the config's first DLA core (the paper's setup)",
        DlaChoice::Both => "DLA = every DLA core of the config",
    };
    eprintln!(
        "multi-instance: {} combinations x {} batch sizes x {} policies = {} runs ({}, {} measured + {} warm-up each) on {platform}",
        grid.combinations.len(),
        grid.batch_sizes.len(),
        grid.policies.len(),
        grid.combinations.len() * grid.batch_sizes.len() * grid.policies.len(),
        mode.as_str(),
        humantime::format_duration(grid.duration),
        humantime::format_duration(grid.warmup),
    );
    for note in &skipped {
        eprintln!("skipped {note}");
    }
    let _metrics = match mode {
        Mode::RealTime => {
            Some(crate::metrics::install_recorder().context("installing the metrics recorder")?)
        }
        Mode::Simulated => None,
    };
    let started = Instant::now();
    let rows = multi_instance::run_grid(&loaded, &grid, !args.no_progress)?;
    let wall = started.elapsed();

    let provenance = summary::provenance(&rows);
    let policy_names: Vec<&str> = grid.policies.iter().map(PolicyConfig::name).collect();
    let all_units = grid
        .combinations
        .iter()
        .find(|c| c.key == ALL)
        .map(|c| c.units_label());
    println!("multi-instance experiment on {platform}: {provenance}");
    println!(
        "static baseline: round_robin, fixed batch, {} requests outstanding per unit; {dla}",
        grid.concurrency_per_unit
    );
    println!();
    print!("{}", summary::render_tables(&rows, &policy_names));
    println!();
    print!(
        "{}",
        summary::render_summary(&summary::summarize(&rows), all_units.as_deref())
    );

    let csv_path = args.out.join("results.csv");
    csv::write(&csv_path, &rows)?;
    let chart_path = args.out.join("multi_instance.png");
    let title = match mode {
        Mode::Simulated => format!("Multi-instance ResNet-50 on {platform} — SIMULATED"),
        Mode::RealTime => format!("Multi-instance ResNet-50 on {platform} — real time"),
    };
    let subtitle = format!(
        "{provenance}. Fixed batch, {} requests outstanding per unit, {} measured per run; {dla}.",
        grid.concurrency_per_unit,
        humantime::format_duration(grid.duration)
    );
    chart::write(&chart_path, &rows, &title, &subtitle)?;
    println!();
    println!(
        "wrote {} and {} ({} runs in {:.1} s wall)",
        csv_path.display(),
        chart_path.display(),
        rows.len(),
        wall.as_secs_f64()
    );
    Ok(())
}

fn batch_sizes(sizes: &[u32]) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for &size in sizes {
        if size == 0 || size > MAX_BATCH_LIMIT {
            anyhow::bail!(
                "--batch-sizes: each must be between 1 and {MAX_BATCH_LIMIT}, got {size}"
            );
        }
        if out.contains(&size) {
            anyhow::bail!("--batch-sizes: {size} is named twice");
        }
        out.push(size);
    }
    if out.is_empty() {
        anyhow::bail!("--batch-sizes: name at least one batch size");
    }
    Ok(out)
}

fn policies(names: &[String]) -> anyhow::Result<Vec<PolicyConfig>> {
    let mut out: Vec<PolicyConfig> = Vec::new();
    for name in names {
        let policy =
            PolicyConfig::from_name(name.trim()).map_err(|m| anyhow::anyhow!("--policies: {m}"))?;
        if out.iter().any(|p| p.name() == policy.name()) {
            anyhow::bail!("--policies: {name:?} is named twice");
        }
        out.push(policy);
    }
    if out.is_empty() {
        anyhow::bail!("--policies: name at least one policy");
    }
    Ok(out)
}

/// Creates the output folder and checks that files can be written in it, before any
/// run starts.
fn prepare_output(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--out: cannot create the folder {}", dir.display()))?;
    let probe = dir.join(".mica-write-check");
    std::fs::write(&probe, b"")
        .with_context(|| format!("--out: cannot write files in {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
