//! One `mica tune` run: load the config's `[pipeline]`, build the space and the
//! backend, search (heuristic or exhaustive) through the cached evaluator, write the
//! report files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use mica_pipeline::{PipelineSpec, RoleUnits, StageSpec};

use crate::config::ResolvedConfig;
use crate::config::{PipelineConfig, ResolvedPipeline};
use crate::pipeline::tune::cache::Evaluator;
use crate::pipeline::tune::heuristic::{self, Settings};
use crate::pipeline::tune::measure::{point_spec, SimBackend};
use crate::pipeline::tune::report::{self, BestConfig, TuneReport};
use crate::pipeline::tune::space::{Point, Space};
use crate::pipeline::tune::{chart, exhaustive};

/// Where points are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The discrete-event pipeline model: fast, simulated figures.
    Sim,
    /// The pipeline actors in real time on the configured engines.
    Real,
}

/// How the space is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchKind {
    /// The pipelining paper's heuristic.
    Heuristic,
    /// Every point.
    Exhaustive,
}

impl SearchKind {
    fn as_str(self) -> &'static str {
        match self {
            SearchKind::Heuristic => "heuristic",
            SearchKind::Exhaustive => "exhaustive",
        }
    }
}

/// What to tune and how.
#[derive(Debug, Clone)]
pub struct TuneOptions {
    /// The config file (with a `[pipeline]` section).
    pub config: PathBuf,
    /// Where to measure.
    pub backend: Backend,
    /// How to search.
    pub search: SearchKind,
    /// Blocks of the staged model (coarser cut points); default: the model's own.
    pub model_stages: Option<usize>,
    /// Output folder.
    pub out: PathBuf,
    /// Reuse `DIR/cache.json` from an earlier run.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Seed of the heuristic's sampling.
    pub seed: u64,
    /// `--backend real`: measured time per point.
    pub real_duration: Duration,
}

/// The tuning problem: config, pipeline and space.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The loaded config.
    pub loaded: ResolvedConfig,
    /// Its `[pipeline]`.
    pub pipeline: PipelineConfig,
    /// The resolved pipeline (base units, CPU side, contention).
    pub resolved: ResolvedPipeline,
    /// The space.
    pub space: Space,
}

impl Problem {
    /// Loads `config` and builds the space (`model_stages` coarsens the model).
    pub fn load(config: &Path, model_stages: Option<usize>) -> anyhow::Result<Self> {
        let loaded = ResolvedConfig::load(config)?;
        let pipeline = loaded.config.pipeline.clone().with_context(|| {
            format!(
                "{} has no [pipeline] section: name the gpu and dla units there",
                config.display()
            )
        })?;
        let mut resolved = loaded
            .pipeline
            .clone()
            .expect("a config with [pipeline] resolves it when it loads; this is a bug");
        if let Some(n) = model_stages {
            let table = resolved.spec.table.coarsen(n).map_err(anyhow::Error::msg)?;
            resolved.spec.stages = vec![StageSpec {
                units: vec![resolved.roles.gpu],
                blocks: 0..table.len(),
                batch: 1,
                streams: 1,
            }];
            resolved.spec.table = table;
        }
        let dlas =
            usize::from(resolved.roles.dla0.is_some()) + usize::from(resolved.roles.dla1.is_some());
        let space = Space::new(&pipeline.tune, resolved.spec.table.clone(), dlas);
        Ok(Self {
            loaded,
            pipeline,
            resolved,
            space,
        })
    }

    /// The base pipeline the points vary.
    pub fn base(&self) -> &PipelineSpec {
        &self.resolved.spec
    }

    /// The GPU/DLA roles.
    pub fn roles(&self) -> &RoleUnits {
        &self.resolved.roles
    }
}

/// A fingerprint of what the cached measurements depend on.
fn fingerprint(config: &Path, problem: &Problem) -> String {
    let text = std::fs::read(config).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let extra = format!("{:?}|{}", problem.pipeline.tune, problem.space.table.len());
    for byte in text.iter().chain(extra.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Describes a point's stages as `"dla0: 0..9"`.
pub fn describe(base: &PipelineSpec, roles: &RoleUnits, point: &Point) -> Vec<String> {
    match point_spec(base, roles, point) {
        Ok(spec) => spec
            .stages
            .iter()
            .map(|s| {
                let units: Vec<&str> = s.units.iter().map(|&u| spec.units[u].id.as_str()).collect();
                format!("{}: {}..{}", units.join("|"), s.blocks.start, s.blocks.end)
            })
            .collect(),
        Err(e) => vec![e.to_string()],
    }
}

/// Runs `mica tune`.
pub fn tune(options: &TuneOptions) -> anyhow::Result<TuneReport> {
    let problem = Problem::load(&options.config, options.model_stages)?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let mut sim;
    let mut real;
    let backend: &mut dyn crate::pipeline::tune::measure::Backend = match options.backend {
        Backend::Sim => {
            sim = SimBackend::new(&problem.resolved);
            &mut sim
        }
        Backend::Real => {
            real = crate::pipeline::tune::real::RealBackend::new(&problem, options.real_duration)?;
            &mut real
        }
    };
    let backend_name = backend.name();
    let space_size = problem.space.size();
    let progress = if options.progress {
        let bar = match options.search {
            SearchKind::Exhaustive => ProgressBar::new(space_size as u64),
            SearchKind::Heuristic => ProgressBar::new_spinner(),
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} points {per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let cache_path = options.out.join("cache.json");
    let mut ev = Evaluator::new(
        backend,
        Some(&cache_path),
        options.resume,
        fingerprint(&options.config, &problem),
        progress,
    )?;
    let started = Instant::now();
    let (best, measured) = match options.search {
        SearchKind::Exhaustive => exhaustive::search(&problem.space, &mut ev)?,
        SearchKind::Heuristic => heuristic::search(
            &problem.space,
            &mut ev,
            problem.base(),
            problem.roles(),
            Settings {
                threshold: problem.pipeline.tune.gpu_utilization_threshold,
                seed: options.seed,
                ..Settings::default()
            },
        )?,
    };
    let wall = started.elapsed().as_secs_f64();
    ev.finish();
    ev.save()?;
    let entries = ev.evaluated.clone();
    let report = TuneReport {
        backend: backend_name.to_string(),
        simulated: backend_name == "sim",
        search: options.search.as_str().to_string(),
        config: options.config.display().to_string(),
        best_throughput_img_s: measured.throughput_img_s,
        best_config: BestConfig {
            option: best.option,
            cuts: best.cuts.clone(),
            batch: best.batch,
            streams: best.streams,
            threads: best.threads,
            stages: describe(problem.base(), problem.roles(), &best),
            measured: measured.clone(),
        },
        evaluated: entries.len(),
        space_size,
        evaluated_fraction: entries.len() as f64 / space_size.max(1) as f64,
        wall_time_s: wall,
        measured_this_run: ev.measured_now,
        model_stages: problem.space.table.len(),
        best_per_option: report::best_per_option(&entries),
        top: report::top(&entries, 10),
    };
    let out = &options.out;
    std::fs::write(
        out.join("tune.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .with_context(|| format!("writing {}", out.join("tune.json").display()))?;
    report::write_csv(&out.join("evaluated.csv"), &entries)?;
    let best_pipeline = problem.pipeline.clone();
    let best_for_file = fine_point(&problem, &best);
    std::fs::write(
        out.join("best.toml"),
        report::best_toml(&options.config, &best_pipeline, &best_for_file)?,
    )
    .with_context(|| format!("writing {}", out.join("best.toml").display()))?;
    let label = if report.simulated {
        "SIMULATED"
    } else {
        "measured"
    };
    chart::draw(
        &out.join("tune.png"),
        &format!(
            "mica tune ({}, {} search, {label}): {} of {} points",
            problem.loaded.config.platform.name, report.search, report.evaluated, space_size
        ),
        &entries,
    )?;
    Ok(report)
}

/// `point`'s cuts in the model's own blocks (a coarsened model's cuts map back).
fn fine_point(problem: &Problem, point: &Point) -> Point {
    let Ok(fine) = problem.pipeline.table() else {
        return point.clone();
    };
    if fine.len() == problem.space.table.len() {
        return point.clone();
    }
    // Each coarse boundary is the end of a group of fine blocks: find it by output.
    let mut cuts = Vec::with_capacity(point.cuts.len());
    let mut fine_index = 0;
    let mut coarse_flops = 0.0;
    for &cut in &point.cuts {
        let target: f64 = problem.space.table.blocks[..cut]
            .iter()
            .map(|b| b.flops)
            .sum();
        while fine_index < fine.len() && coarse_flops + 1.0 < target {
            coarse_flops += fine.blocks[fine_index].flops;
            fine_index += 1;
        }
        cuts.push(fine_index);
    }
    Point {
        cuts,
        ..point.clone()
    }
}
