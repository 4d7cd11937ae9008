//! `mica experiment pipeline`: the pipelining paper's comparison (Kang et al.,
//! "Scheduling DNN inference on GPU and DLA... pipelining", journal version JEDI, ACM
//! TECS 2022) on each config given, on the discrete-event pipeline model (simulated
//! figures, labelled so):
//!
//! 1. **baseline**: GPU only, one stream, batch 1, one thread doing pre-processing,
//!    inference and post-processing one after the other (one buffer);
//! 2. **batch**: the same with the batch size of the space that does best;
//! 3. **gpu-parallel**: GPU only with parallel pre/post threads, several streams and
//!    overlapping buffers — the best GPU-only point of the space (all measured);
//! 4. **profile pipeline**: the mapping option and cut points the profiles predict
//!    best (`planner::profile_cuts`), at gpu-parallel's batch, streams and threads,
//!    measured once;
//! 5. **tuned pipeline**: `mica tune`'s heuristic over the whole space.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use mica_pipeline::{bottleneck_ms, profile_cuts, simulate_pipeline, MappingOption, RunLength};
use serde::Serialize;

use crate::pipeline::tune::measure::{point_spec, Backend as _, SimBackend};
use crate::pipeline::tune::run::{describe, Problem};
use crate::pipeline::tune::space::Point;
use crate::pipeline::tune::{BackendChoice, SearchKind, TuneOptions};

/// `mica experiment pipeline`.
#[derive(Debug, Clone, Args)]
pub struct PipelineExperimentArgs {
    /// Configs with a `[pipeline]` section, one column each.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "config/xavier-agx-pipeline.toml,config/orin-agx-pipeline.toml"
    )]
    pub configs: Vec<PathBuf>,
    /// Output folder: pipeline.csv, pipeline.json, and one tune folder per config.
    #[arg(long, default_value = "out/pipeline")]
    pub out: PathBuf,
    /// Hide the progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// One row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The platform (config's `[platform] name`).
    pub platform: String,
    /// The configuration (baseline, batch, ...).
    pub setup: String,
    /// What it runs.
    pub point: String,
    /// Its stages.
    pub stages: String,
    /// Images per second (simulated).
    pub throughput_img_s: f64,
    /// Mean latency, ms (simulated).
    pub latency_mean_ms: f64,
    /// Throughput over the baseline's.
    pub speedup: f64,
}

fn measure_sequential(problem: &Problem, point: &Point) -> anyhow::Result<(f64, f64)> {
    let mut spec = point_spec(problem.base(), problem.roles(), point)?;
    spec.buffers = 1;
    let model = problem.resolved.contention.build();
    let out = simulate_pipeline(&spec, model.as_ref(), RunLength::for_spec(&spec))
        .map_err(anyhow::Error::msg)?;
    Ok((out.throughput_img_s, out.latency_mean_ms))
}

fn rows_for(config: &std::path::Path, args: &PipelineExperimentArgs) -> anyhow::Result<Vec<Row>> {
    let problem = Problem::load(config, None)?;
    let platform = problem.loaded.config.platform.name.clone();
    let space = &problem.space;
    let mut backend = SimBackend::new(&problem.resolved);
    let gpu = |batch, streams, threads| Point {
        option: MappingOption::Gpu,
        cuts: Vec::new(),
        batch,
        streams,
        threads,
    };
    let mut rows = Vec::new();
    let mut push = |setup: &str, point: &Point, tp: f64, lat: f64| {
        rows.push(Row {
            platform: platform.clone(),
            setup: setup.into(),
            point: point.key(),
            stages: describe(problem.base(), problem.roles(), point).join(" -> "),
            throughput_img_s: tp,
            latency_mean_ms: lat,
            speedup: 0.0,
        });
    };
    // 1. Baseline.
    let base = gpu(1, 1, 1);
    let (tp, lat) = measure_sequential(&problem, &base)?;
    push("baseline (1 stream, GPU only)", &base, tp, lat);
    // 2. Batch processing.
    let mut best_batch = (base.clone(), tp, lat);
    for &b in &space.batch_sizes {
        let p = gpu(b, 1, 1);
        let (tp, lat) = measure_sequential(&problem, &p)?;
        if tp > best_batch.1 {
            best_batch = (p, tp, lat);
        }
    }
    push(
        "batch processing",
        &best_batch.0,
        best_batch.1,
        best_batch.2,
    );
    // 3. GPU-only parallelized: every GPU-only point.
    let mut best_gpu: Option<(Point, f64, f64)> = None;
    for &b in &space.batch_sizes {
        for &s in &space.streams {
            for &t in &space.threads {
                let p = gpu(b, s, t);
                let m = backend.measure(&p)?;
                if best_gpu
                    .as_ref()
                    .is_none_or(|(_, tp, _)| m.throughput_img_s > *tp)
                {
                    best_gpu = Some((p, m.throughput_img_s, m.latency_mean_ms));
                }
            }
        }
    }
    let (gp, gtp, glat) = best_gpu.context("the space has no GPU-only point")?;
    push("GPU-only parallelized (threads + streams)", &gp, gtp, glat);
    // 4. Profile-based pipeline.
    let mut predicted: Option<(f64, Point)> = None;
    for &option in &space.options {
        if option == MappingOption::Gpu {
            continue;
        }
        let units = &problem.base().units;
        let cuts = profile_cuts(option, problem.roles(), units, &space.table, gp.batch)
            .map_err(anyhow::Error::msg)?;
        let load = bottleneck_ms(
            option,
            &cuts,
            problem.roles(),
            units,
            &space.table,
            gp.batch,
        )
        .map_err(anyhow::Error::msg)?;
        if predicted.as_ref().is_none_or(|(l, _)| load < *l) {
            predicted = Some((
                load,
                Point {
                    option,
                    cuts,
                    ..gp.clone()
                },
            ));
        }
    }
    if let Some((_, p)) = predicted {
        let m = backend.measure(&p)?;
        push(
            "profile-based pipeline",
            &p,
            m.throughput_img_s,
            m.latency_mean_ms,
        );
    }
    // 5. Tuned pipeline.
    let stem = config
        .file_stem()
        .map_or("config".into(), |s| s.to_string_lossy().to_string());
    let started = Instant::now();
    let report = crate::pipeline::tune::tune(&TuneOptions {
        config: config.to_path_buf(),
        backend: BackendChoice::Sim,
        search: SearchKind::Heuristic,
        model_stages: None,
        out: args.out.join(format!("tune-{stem}")),
        resume: false,
        progress: !args.no_progress,
        seed: 42,
        real_duration: std::time::Duration::from_secs(3),
    })?;
    let b = &report.best_config;
    let tuned = Point {
        option: b.option,
        cuts: b.cuts.clone(),
        batch: b.batch,
        streams: b.streams,
        threads: b.threads,
    };
    push(
        &format!(
            "tuned pipeline (heuristic, {} points, {:.1} s)",
            report.evaluated,
            started.elapsed().as_secs_f64()
        ),
        &tuned,
        b.measured.throughput_img_s,
        b.measured.latency_mean_ms,
    );
    let baseline = rows.first().map_or(1.0, |r| r.throughput_img_s.max(1e-9));
    for row in &mut rows {
        row.speedup = row.throughput_img_s / baseline;
    }
    Ok(rows)
}

/// Runs the comparison on every config and writes the table.
pub fn run(args: &PipelineExperimentArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut rows = Vec::new();
    for config in &args.configs {
        rows.extend(rows_for(config, args).with_context(|| config.display().to_string())?);
    }
    let mut csv =
        String::from("platform,setup,point,stages,throughput_img_s,latency_mean_ms,speedup\n");
    let mut table = String::from(
        "SIMULATED (discrete-event pipeline model, calibrated profiles; not measurements)\n",
    );
    let mut platform = String::new();
    for r in &rows {
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.2},{:.3},{:.3}",
            r.platform,
            r.setup,
            r.point,
            r.stages,
            r.throughput_img_s,
            r.latency_mean_ms,
            r.speedup
        );
        if r.platform != platform {
            platform = r.platform.clone();
            let _ = writeln!(
                table,
                "\n{platform}\n{:<52} {:>10} {:>9} {:>8}  configuration",
                "setup", "img/s", "lat ms", "speedup"
            );
        }
        let _ = writeln!(
            table,
            "{:<52} {:>10.1} {:>9.2} {:>7.2}x  {} [{}]",
            r.setup, r.throughput_img_s, r.latency_mean_ms, r.speedup, r.point, r.stages
        );
    }
    std::fs::write(args.out.join("pipeline.csv"), csv)?;
    std::fs::write(
        args.out.join("pipeline.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    print!("{table}");
    println!("\nwrote {}/pipeline.{{csv,json}}", args.out.display());
    Ok(())
}
