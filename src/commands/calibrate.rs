//! `mica calibrate`: measures what running together costs and fits the platform's
//! contention model to it.
//!
//! **Runs.** Each unit alone, then every pair, then (for up to four units) every larger
//! set, else the full set, at each batch size; every stream of every unit of a set busy
//! with back-to-back batches of that size. A unit's figure is its rate while busy
//! (images / service time × streams, over the batches that started after the warm-up
//! and finished in the window), as `mica profile` and `adaptive` measure. Real engines
//! are built once per (unit, stream) on threads of their own and kept for every run.
//! When every unit is a `sim` engine the runs go through the discrete-event simulator
//! instead (virtual time, the same emulation as the sim engine, seconds instead of
//! minutes): figures from it are emulations and labelled so.
//!
//! **Fit.** `mica_core::fit`: the base model's parameters (PCCS / proportional
//! sharing) by coordinate descent from the config's model, then pairwise terms where the
//! parametric model still misses. It is fitted on the *training* runs only: pairs at the
//! batch sizes not held out. Sets of three or more units and every set at the held-out
//! batch sizes are reported as held out.
//!
//! **Output** (in `--out`): `platform.toml` (point `[platform] contention_file` at it),
//! `report.json`, `report.md` (the table, also printed), `calibration.png` (predicted vs
//! measured, before and after), and `measurements.json`, written after every run, which
//! `--resume` continues from. `--budget` stops measuring after that many seconds and
//! fits on what was measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use mica_core::fit::{self, FitSettings, Observation, ObservedUnit};
use mica_core::pairwise::MeasuredSet;
use mica_core::{
    simulate, ContentionConfig, Load, SchedulerSettings, SimulationConfig, UnitId, UnitSpec,
    Workload,
};
use mica_engines::{build_engine, BatchInput, EngineContext, EngineKind, EngineSpec};
use mica_policies::PolicyConfig;
use serde::{Deserialize, Serialize};

use crate::config::ResolvedConfig;
use crate::wiring::{self, RunOverrides};

/// `mica calibrate`'s options.
#[derive(Debug, Clone, Args)]
pub struct CalibrateArgs {
    /// Units to calibrate (comma-separated ids) [default: every enabled unit].
    #[arg(long, value_delimiter = ',')]
    pub units: Option<Vec<String>>,
    /// Batch sizes to run, increasing.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch_sizes: Vec<u32>,
    /// Batch sizes whose runs are held out of the fit and only reported [default: the
    /// middle one of three or more sizes, none otherwise].
    #[arg(long, value_delimiter = ',')]
    pub holdout_batch_sizes: Option<Vec<u32>>,
    /// Folder for platform.toml, the report and the measurements (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Measured seconds per run (at least two batches of every unit are always waited for).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Unmeasured seconds at the start of each run.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,
    /// Stop measuring after this many seconds in all and fit on what was measured.
    #[arg(long)]
    pub budget: Option<f64>,
    /// Continue from `--out`'s measurements.json instead of starting over.
    #[arg(long)]
    pub resume: bool,
    /// Measure nothing: fit again on the runs in `--out`'s measurements.json (after a
    /// change to the fit, or with other held-out sizes). Implies `--resume`.
    #[arg(long)]
    pub refit: bool,
    /// Measure sim units in real time (their engines and the contention hub) instead
    /// of the discrete-event simulator.
    #[arg(long)]
    pub real_time: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// One measured run: units (ids), batch, each unit's rate while busy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Measured {
    units: Vec<String>,
    batch: u32,
    img_s: Vec<f64>,
    seconds: f64,
}

/// `measurements.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Measurements {
    /// Config file, units and mode the runs belong to; `--resume` refuses others.
    fingerprint: String,
    /// Emulated (simulator or sim engines) or measured on real engines.
    simulated: bool,
    runs: Vec<Measured>,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
struct Row {
    units: String,
    batch: u32,
    held_out: bool,
    measured_img_s: f64,
    predicted_before_img_s: f64,
    error_before: f64,
    predicted_after_img_s: f64,
    error_after: f64,
}

/// Mean and largest absolute error of a group of rows.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct ErrorSummary {
    rows: usize,
    mean_abs_before: f64,
    max_abs_before: f64,
    mean_abs_after: f64,
    max_abs_after: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    config: String,
    command: String,
    simulated: bool,
    units: Vec<String>,
    batch_sizes: Vec<u32>,
    holdout_batch_sizes: Vec<u32>,
    complete: bool,
    measuring_seconds: f64,
    before: ContentionConfig,
    after: ContentionConfig,
    rows: Vec<Row>,
    training: ErrorSummary,
    held_out: ErrorSummary,
    /// Per batch size: the best measured set and the best single unit.
    best: Vec<BestAt>,
}

#[derive(Debug, Clone, Serialize)]
struct BestAt {
    batch: u32,
    best_set: String,
    best_set_img_s: f64,
    best_single: String,
    best_single_img_s: f64,
}

/// Runs the command.
pub fn run(config: &Path, args: &CalibrateArgs) -> anyhow::Result<()> {
    check_args(args)?;
    let loaded = ResolvedConfig::load(config)?;
    let setup = wiring::service_setup(
        &loaded,
        &RunOverrides {
            policy: Some(PolicyConfig::RoundRobin),
            units: args.units.clone(),
            batch_size: None,
        },
    )?;
    let ids: Vec<UnitId> = setup.units.iter().map(|u| u.spec.id.clone()).collect();
    if ids.len() < 2 {
        bail!("--units: calibrating contention needs at least two units");
    }
    let all_sim = setup
        .units
        .iter()
        .all(|u| u.engine.engine.kind() == EngineKind::Sim);
    let virtual_time = all_sim && !args.real_time;
    let simulated = all_sim || setup.units.iter().any(|u| u.spec.simulated);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let fingerprint = format!(
        "{}; units {}; batch sizes {:?}; {}",
        config.display(),
        ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(","),
        args.batch_sizes,
        if virtual_time {
            "simulator"
        } else {
            "real time"
        }
    );
    let store = args.out.join("measurements.json");
    if args.refit && !store.is_file() {
        bail!(
            "--refit: {} does not exist (nothing measured to fit on)",
            store.display()
        );
    }
    let mut measurements = if (args.resume || args.refit) && store.is_file() {
        let text = std::fs::read_to_string(&store)
            .with_context(|| format!("reading {}", store.display()))?;
        let m: Measurements = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a calibrate measurement file", store.display()))?;
        if m.fingerprint != fingerprint {
            bail!(
                "--resume: {} belongs to another calibration ({}); this one is {}",
                store.display(),
                m.fingerprint,
                fingerprint
            );
        }
        m
    } else {
        Measurements {
            fingerprint: fingerprint.clone(),
            simulated,
            runs: Vec::new(),
        }
    };

    let max_batches: Vec<u32> = setup.units.iter().map(|u| u.spec.max_batch).collect();
    let plan = plan_runs(&max_batches, &args.batch_sizes);
    let mut todo: Vec<&(Vec<usize>, u32)> = plan
        .iter()
        .filter(|(set, batch)| {
            !measurements
                .runs
                .iter()
                .any(|m| m.batch == *batch && m.units == names(&ids, set))
        })
        .collect();
    let bar = if args.no_progress {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(plan.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed} {msg}")
                .expect("static template; this is a bug"),
        );
        bar
    };
    bar.set_position((plan.len() - todo.len()) as u64);
    let started = Instant::now();
    // `--refit` measures nothing; what the plan still lacks leaves the report incomplete.
    let mut complete = !args.refit || todo.is_empty();
    if args.refit {
        todo.clear();
    }
    let mut runner: Box<dyn Runner> = if virtual_time {
        Box::new(Simulated {
            loaded: &loaded,
            units: setup.units.iter().map(|u| u.spec.clone()).collect(),
            seconds: args.seconds,
            warmup: args.warmup_seconds,
        })
    } else if todo.is_empty() {
        Box::new(Nothing)
    } else {
        Box::new(RealEngines::start(
            &setup,
            &args.batch_sizes,
            args.seconds,
            args.warmup_seconds,
        )?)
    };
    for (set, batch) in todo {
        if args
            .budget
            .is_some_and(|b| started.elapsed().as_secs_f64() >= b)
        {
            complete = false;
            bar.println("budget spent: fitting on what was measured");
            break;
        }
        bar.set_message(format!("{} at batch {batch}", names(&ids, set).join("+")));
        let run_started = Instant::now();
        let img_s = runner.measure(set, *batch)?;
        measurements.runs.push(Measured {
            units: names(&ids, set),
            batch: *batch,
            img_s,
            seconds: run_started.elapsed().as_secs_f64(),
        });
        let text = serde_json::to_string_pretty(&measurements).context("serializing runs")?;
        std::fs::write(&store, text).with_context(|| format!("writing {}", store.display()))?;
        bar.inc(1);
    }
    drop(runner);
    bar.finish_and_clear();

    let holdout = holdout_sizes(args);
    let observations = observations(&setup.units, &ids, &measurements.runs);
    let train: Vec<Observation> = observations
        .iter()
        .filter(|(_, obs)| obs.units.len() == 2 && !holdout.contains(&obs.batch))
        .map(|(_, o)| o.clone())
        .collect();
    if train.is_empty() {
        bail!("no training run was measured (raise --budget, or hold out fewer batch sizes)");
    }
    let before = loaded.contention.clone();
    let after = fit::fit(&before, &ids, &train, FitSettings::default());
    let mut rows = Vec::new();
    for (label, obs) in &observations {
        let held_out = obs.units.len() != 2 || holdout.contains(&obs.batch);
        let measured = obs.measured_img_s();
        let p_before: f64 = fit::predict(&before, &ids, obs).iter().sum();
        let p_after: f64 = fit::predict(&after, &ids, obs).iter().sum();
        rows.push(Row {
            units: label.clone(),
            batch: obs.batch,
            held_out,
            measured_img_s: measured,
            predicted_before_img_s: p_before,
            error_before: p_before / measured - 1.0,
            predicted_after_img_s: p_after,
            error_after: p_after / measured - 1.0,
        });
    }
    let summary = |held_out: bool| {
        let group: Vec<&Row> = rows.iter().filter(|r| r.held_out == held_out).collect();
        let n = group.len().max(1) as f64;
        ErrorSummary {
            rows: group.len(),
            mean_abs_before: group.iter().map(|r| r.error_before.abs()).sum::<f64>() / n,
            max_abs_before: group
                .iter()
                .map(|r| r.error_before.abs())
                .fold(0.0, f64::max),
            mean_abs_after: group.iter().map(|r| r.error_after.abs()).sum::<f64>() / n,
            max_abs_after: group
                .iter()
                .map(|r| r.error_after.abs())
                .fold(0.0, f64::max),
        }
    };
    let held_out = summary(true);
    let training = summary(false);
    // The rows judge the fit on the training runs alone; the file gets the fit on every
    // pair measured, the held-out ones too, so that the policies use all there is.
    let all_pairs: Vec<Observation> = observations
        .iter()
        .filter(|(_, obs)| obs.units.len() == 2)
        .map(|(_, o)| o.clone())
        .collect();
    let mut after = if all_pairs.len() > train.len() {
        fit::fit(&before, &ids, &all_pairs, FitSettings::default())
    } else {
        after
    };
    // The file carries what was measured and how sure the model is where nothing was:
    // `contention_aware` and `slo` prefer a measured set over a prediction.
    if let ContentionConfig::Calibrated(params) = &mut after {
        params.held_out_error = if held_out.rows > 0 {
            held_out.max_abs_after
        } else {
            training.max_abs_after
        }
        .min(0.5);
        params.measured = measurements
            .runs
            .iter()
            .map(|m| MeasuredSet {
                units: m.units.clone(),
                batch: m.batch,
                img_s: (m.img_s.iter().sum::<f64>() * 10.0).round() / 10.0,
            })
            .collect();
    }
    let report = Report {
        config: config.display().to_string(),
        command: super::typed_command::current(),
        simulated: measurements.simulated,
        units: ids.iter().map(|i| i.to_string()).collect(),
        batch_sizes: args.batch_sizes.clone(),
        holdout_batch_sizes: holdout.clone(),
        complete,
        measuring_seconds: measurements.runs.iter().map(|m| m.seconds).sum(),
        before: before.clone(),
        training,
        held_out,
        best: best_per_batch(&measurements.runs, &args.batch_sizes),
        after: after.clone(),
        rows,
    };
    write_outputs(&args.out, &report)?;
    Ok(())
}

fn check_args(args: &CalibrateArgs) -> anyhow::Result<()> {
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) {
        bail!("--batch-sizes: give batch sizes of at least 1");
    }
    if args.batch_sizes.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--batch-sizes must be strictly increasing");
    }
    if args
        .batch_sizes
        .iter()
        .any(|&b| b > crate::config::MAX_BATCH_LIMIT)
    {
        bail!(
            "--batch-sizes: at most {} images per batch",
            crate::config::MAX_BATCH_LIMIT
        );
    }
    if let Some(h) = &args.holdout_batch_sizes {
        if let Some(b) = h.iter().find(|b| !args.batch_sizes.contains(b)) {
            bail!("--holdout-batch-sizes: {b} is not one of --batch-sizes");
        }
        if h.len() >= args.batch_sizes.len() {
            bail!("--holdout-batch-sizes: leave at least one batch size to fit on");
        }
    }
    for (name, value, min) in [
        ("--seconds", args.seconds, 0.01),
        ("--warmup-seconds", args.warmup_seconds, 0.0),
    ] {
        if !(value.is_finite() && value >= min && value <= 3600.0) {
            bail!("{name} must be between {min} and 3600 seconds, got {value}");
        }
    }
    if let Some(b) = args.budget {
        if !(b.is_finite() && b > 0.0) {
            bail!("--budget must be a positive number of seconds, got {b}");
        }
    }
    Ok(())
}

fn holdout_sizes(args: &CalibrateArgs) -> Vec<u32> {
    match &args.holdout_batch_sizes {
        Some(h) => h.clone(),
        None if args.batch_sizes.len() >= 3 => vec![args.batch_sizes[args.batch_sizes.len() / 2]],
        None => Vec::new(),
    }
}

fn names(ids: &[UnitId], set: &[usize]) -> Vec<String> {
    set.iter().map(|&i| ids[i].to_string()).collect()
}

/// Every unit alone, every pair, and every larger set (all of them up to four units,
/// else, at each batch size, the set of every unit that accepts it), at every batch
/// size its units accept (`max_batch`); solos first.
fn plan_runs(max_batches: &[u32], batch_sizes: &[u32]) -> Vec<(Vec<usize>, u32)> {
    let n = max_batches.len();
    let mut sets: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    for i in 0..n {
        for j in i + 1..n {
            sets.push(vec![i, j]);
        }
    }
    if n <= 4 {
        for mask in 0u32..(1 << n) {
            if mask.count_ones() >= 3 {
                sets.push((0..n).filter(|i| mask & (1 << i) != 0).collect());
            }
        }
    }
    let mut plan = Vec::new();
    for set in &sets {
        for &batch in batch_sizes {
            if set.iter().all(|&i| max_batches[i] >= batch) {
                plan.push((set.clone(), batch));
            }
        }
    }
    if n > 4 {
        // With five or more units, every subset is too many runs: the largest set that
        // can run each batch size identifies how the whole platform shares.
        for &batch in batch_sizes {
            let accepting: Vec<usize> = (0..n).filter(|&i| max_batches[i] >= batch).collect();
            if accepting.len() >= 3 {
                plan.push((accepting, batch));
            }
        }
    }
    plan
}

/// The load one batch of `images` puts on the platform, from the unit's profile.
fn load_of(index: usize, spec: &UnitSpec, images: u32) -> Load {
    match &spec.profile {
        Some(p) => Load {
            unit: index,
            kind: spec.kind,
            device: spec.device,
            gpu_occupancy: p.gpu_occupancy,
            bandwidth_gbps: p.bandwidth_gbps(images),
            images,
        },
        None => Load {
            unit: index,
            kind: spec.kind,
            device: spec.device,
            gpu_occupancy: if spec.kind.uses_gpu_sms() { 1.0 } else { 0.0 },
            bandwidth_gbps: 0.0,
            images,
        },
    }
}

/// Observations of the co-runs whose units were all measured alone at that batch.
fn observations(
    units: &[mica_actors::UnitSetup],
    ids: &[UnitId],
    runs: &[Measured],
) -> Vec<(String, Observation)> {
    let index = |name: &str| ids.iter().position(|i| i.as_str() == name);
    let mut alone: BTreeMap<(usize, u32), f64> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.units.len() == 1) {
        if let Some(i) = index(&run.units[0]) {
            alone.insert((i, run.batch), run.img_s[0]);
        }
    }
    let mut out = Vec::new();
    for run in runs.iter().filter(|r| r.units.len() >= 2) {
        let mut observed = Vec::new();
        for (name, &img_s) in run.units.iter().zip(&run.img_s) {
            let Some(i) = index(name) else { continue };
            let Some(&solo) = alone.get(&(i, run.batch)) else {
                continue;
            };
            let spec = &units[i].spec;
            observed.push(ObservedUnit {
                index: i,
                streams: spec.streams,
                load: Some(load_of(i, spec, run.batch.min(spec.max_batch.max(1)))),
                alone_img_s: solo,
                measured_img_s: img_s,
            });
        }
        if observed.len() == run.units.len() {
            out.push((
                run.units.join("+"),
                Observation {
                    batch: run.batch,
                    units: observed,
                },
            ));
        }
    }
    out
}

fn best_per_batch(runs: &[Measured], batch_sizes: &[u32]) -> Vec<BestAt> {
    let mut out = Vec::new();
    for &batch in batch_sizes {
        let at: Vec<&Measured> = runs.iter().filter(|r| r.batch == batch).collect();
        let total = |m: &Measured| m.img_s.iter().sum::<f64>();
        let best = at.iter().max_by(|a, b| total(a).total_cmp(&total(b)));
        let single = at
            .iter()
            .filter(|m| m.units.len() == 1)
            .max_by(|a, b| total(a).total_cmp(&total(b)));
        if let (Some(best), Some(single)) = (best, single) {
            out.push(BestAt {
                batch,
                best_set: best.units.join("+"),
                best_set_img_s: total(best),
                best_single: single.units.join("+"),
                best_single_img_s: total(single),
            });
        }
    }
    out
}

/// Measures one set at one batch size: each unit's rate while busy, in set order.
trait Runner {
    fn measure(&mut self, set: &[usize], batch: u32) -> anyhow::Result<Vec<f64>>;
}

/// Nothing left to measure.
struct Nothing;

impl Runner for Nothing {
    fn measure(&mut self, _set: &[usize], _batch: u32) -> anyhow::Result<Vec<f64>> {
        bail!("no runs left to measure; this is a bug")
    }
}

/// Sim units through the discrete-event simulator (virtual time): the emulated platform
/// (`emulated_contention_file` if set), every stream busy (round_robin, a closed loop of
/// two requests per stream).
struct Simulated<'a> {
    loaded: &'a ResolvedConfig,
    units: Vec<UnitSpec>,
    seconds: f64,
    warmup: f64,
}

impl Runner for Simulated<'_> {
    fn measure(&mut self, set: &[usize], batch: u32) -> anyhow::Result<Vec<f64>> {
        let units: Vec<UnitSpec> = set.iter().map(|&i| self.units[i].clone()).collect();
        let clients = 2 * units.iter().map(|u| u.streams.max(1)).sum::<u32>();
        // Long enough for every unit to finish many batches, however short --seconds is.
        let slowest = units
            .iter()
            .filter_map(|u| u.profile.as_ref())
            .map(|p| p.latency(batch).as_secs_f64())
            .fold(0.0, f64::max);
        let seconds = self.seconds.max(50.0 * slowest) * 10.0;
        let warmup = self.warmup.max(5.0 * slowest);
        let jitter = self
            .loaded
            .config
            .units
            .iter()
            .map(|u| u.engine.jitter())
            .fold(0.0, f64::max);
        let config = SimulationConfig {
            units: units.clone(),
            contention: self.loaded.emulated_contention().clone(),
            scheduler: SchedulerSettings {
                fixed_batch: Some(batch),
                ..Default::default()
            },
            workload: Workload::ClosedLoop {
                clients,
                think_time: Duration::ZERO,
            },
            images_per_request: batch,
            priority: 0,
            timeout: None,
            duration: Duration::from_secs_f64(warmup + seconds),
            warmup: Duration::from_secs_f64(warmup),
            jitter,
            seed: self.loaded.config.scheduler.seed,
        };
        let outcome = simulate(
            &config,
            mica_policies::build_policy(&PolicyConfig::RoundRobin),
        )
        .map_err(|e| anyhow::anyhow!("simulating {batch}-image batches: {e}"))?;
        Ok(units
            .iter()
            .map(|u| {
                outcome
                    .report
                    .units
                    .get(u.id.as_str())
                    .map_or(0.0, |s| s.stats.throughput_img_s)
            })
            .collect())
    }
}

/// A finished batch of a worker.
struct Done {
    unit: usize,
    images: u32,
    started: Instant,
    finished: Instant,
}

enum Job {
    /// Run back-to-back batches of this size until the flag is set, then say so.
    Run {
        images: u32,
        stop: Arc<AtomicBool>,
        done: mpsc::Sender<Option<Done>>,
    },
}

/// Real engines: one thread per (unit, stream), each holding its engine for every run.
struct RealEngines {
    workers: Vec<(usize, mpsc::Sender<Job>)>,
    threads: Vec<std::thread::JoinHandle<()>>,
    streams: Vec<u32>,
    seconds: f64,
    warmup: f64,
}

impl RealEngines {
    fn start(
        setup: &mica_actors::ServiceSetup,
        batch_sizes: &[u32],
        seconds: f64,
        warmup: f64,
    ) -> anyhow::Result<Self> {
        let largest = batch_sizes.iter().copied().max().unwrap_or(1);
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        let mut ready = Vec::new();
        for (index, unit) in setup.units.iter().enumerate() {
            for stream in 0..unit.spec.streams.max(1) {
                let mut spec: EngineSpec = unit.engine.clone();
                spec.stream = stream;
                spec.max_batch = spec.max_batch.max(largest);
                let context = EngineContext {
                    hub: setup.hub.clone(),
                    custom: None,
                };
                let (tx, rx) = mpsc::channel::<Job>();
                let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
                let name = format!("calibrate-{}-{stream}", unit.spec.id);
                let id = unit.spec.id.to_string();
                let handle = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || worker(index, &id, &spec, &context, &rx, &ready_tx))
                    .context("spawning a calibration worker")?;
                workers.push((index, tx));
                threads.push(handle);
                ready.push((unit.spec.id.to_string(), ready_rx));
            }
        }
        for (id, rx) in ready {
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => bail!("unit {id}: {e}"),
                Err(_) => bail!("unit {id}: its worker stopped while loading"),
            }
        }
        Ok(Self {
            workers,
            threads,
            streams: setup.units.iter().map(|u| u.spec.streams.max(1)).collect(),
            seconds,
            warmup,
        })
    }
}

fn worker(
    index: usize,
    id: &str,
    spec: &EngineSpec,
    context: &EngineContext,
    jobs: &mpsc::Receiver<Job>,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    let mut engine = match build_engine(spec, context)
        .map_err(|e| format!("building the engine: {e}"))
        .and_then(|mut e| {
            e.warm_up()
                .map_err(|e| format!("warming up the engine: {e}"))?;
            Ok(e)
        }) {
        Ok(engine) => {
            let _ = ready.send(Ok(()));
            engine
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Ok(Job::Run { images, stop, done }) = jobs.recv() {
        while !stop.load(Ordering::Acquire) {
            let started = Instant::now();
            if let Err(e) = engine.infer(BatchInput { images, data: None }) {
                tracing::warn!(unit = id, error = %e, "calibration batch failed");
                break;
            }
            let _ = done.send(Some(Done {
                unit: index,
                images,
                started,
                finished: Instant::now(),
            }));
        }
        let _ = done.send(None);
    }
}

impl Runner for RealEngines {
    fn measure(&mut self, set: &[usize], batch: u32) -> anyhow::Result<Vec<f64>> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let begin = Instant::now();
        let mut running = 0usize;
        for (unit, jobs) in &self.workers {
            if set.contains(unit) {
                jobs.send(Job::Run {
                    images: batch,
                    stop: stop.clone(),
                    done: tx.clone(),
                })
                .map_err(|_| anyhow::anyhow!("a calibration worker stopped"))?;
                running += 1;
            }
        }
        drop(tx);
        let measure_from = begin + Duration::from_secs_f64(self.warmup);
        let measure_for = Duration::from_secs_f64(self.seconds);
        let hard_stop = measure_from + measure_for * 20;
        let mut images = vec![0.0f64; set.len()];
        let mut busy = vec![0.0f64; set.len()];
        let mut counted = vec![0u32; set.len()];
        let mut stopped = false;
        while running > 0 {
            let now = Instant::now();
            let enough = now >= measure_from + measure_for && counted.iter().all(|&c| c >= 2);
            if !stopped && (enough || now >= hard_stop) {
                stop.store(true, Ordering::Release);
                stopped = true;
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(Some(done)) => {
                    if done.started >= measure_from && !stopped {
                        if let Some(k) = set.iter().position(|&u| u == done.unit) {
                            images[k] += f64::from(done.images);
                            busy[k] += (done.finished - done.started).as_secs_f64();
                            counted[k] += 1;
                        }
                    }
                }
                Ok(None) => running -= 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        Ok(set
            .iter()
            .enumerate()
            .map(|(k, &u)| {
                if busy[k] > 0.0 {
                    images[k] / busy[k] * f64::from(self.streams[u])
                } else {
                    0.0
                }
            })
            .collect())
    }
}

impl Drop for RealEngines {
    fn drop(&mut self) {
        self.workers.clear();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn percent(x: f64) -> String {
    format!("{:+.1} %", x * 100.0)
}

fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let label = if report.simulated {
        "SIMULATED (emulated units, not a measurement of hardware)"
    } else {
        "measured on real engines"
    };
    let _ = writeln!(out, "# mica calibrate: {label}\n");
    let _ = writeln!(out, "`{}`\n", report.command);
    let _ = writeln!(
        out,
        "| units | batch | split | measured img/s | predicted before | error before | predicted after | error after |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for r in &report.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.1} | {} | {:.1} | {} |",
            r.units,
            r.batch,
            if r.held_out { "held out" } else { "fit" },
            r.measured_img_s,
            r.predicted_before_img_s,
            percent(r.error_before),
            r.predicted_after_img_s,
            percent(r.error_after)
        );
    }
    for (name, s) in [("fit", report.training), ("held out", report.held_out)] {
        let _ = writeln!(
            out,
            "\n{name}: {} combinations; mean |error| before {:.1} % (max {:.1} %), after {:.1} % (max {:.1} %)",
            s.rows,
            s.mean_abs_before * 100.0,
            s.max_abs_before * 100.0,
            s.mean_abs_after * 100.0,
            s.max_abs_after * 100.0
        );
    }
    let _ = writeln!(out);
    for b in &report.best {
        let _ = writeln!(
            out,
            "batch {}: best measured set {} {:.1} img/s; best single unit {} {:.1} img/s ({:.3}x)",
            b.batch,
            b.best_set,
            b.best_set_img_s,
            b.best_single,
            b.best_single_img_s,
            b.best_set_img_s / b.best_single_img_s.max(1e-9)
        );
    }
    if !report.complete {
        let _ = writeln!(
            out,
            "\nincomplete: not every planned run was measured (--budget ran out, or \
             --refit); `--resume` measures the rest"
        );
    }
    out
}

fn write_outputs(dir: &Path, report: &Report) -> anyhow::Result<()> {
    let platform = format!(
        "# Contention model fitted by `mica calibrate` ({}).\n# Command: {}\n# Held-out \
         error: mean {:.1} %, max {:.1} % over {} combinations (report.json), of the fit \
         on the training runs;\n# this file is fitted on every pair run, held-out ones \
         included.\n# Point `[platform] contention_file` at this file.\n{}",
        if report.simulated {
            "on SIMULATED units"
        } else {
            "on real engines"
        },
        report.command,
        report.held_out.mean_abs_after * 100.0,
        report.held_out.max_abs_after * 100.0,
        report.held_out.rows,
        toml::to_string(&report.after).context("serializing the fitted model")?
    );
    let path = dir.join("platform.toml");
    std::fs::write(&path, platform).with_context(|| format!("writing {}", path.display()))?;
    let json = serde_json::to_string_pretty(report).context("serializing the report")?;
    std::fs::write(dir.join("report.json"), json).context("writing report.json")?;
    let table = render_table(report);
    std::fs::write(dir.join("report.md"), &table).context("writing report.md")?;
    print!("{table}");
    super::calibrate_chart::draw(
        &dir.join("calibration.png"),
        &format!(
            "mica calibrate{}: predicted vs measured",
            if report.simulated { " (SIMULATED)" } else { "" }
        ),
        &report
            .rows
            .iter()
            .map(|r| {
                (
                    r.measured_img_s,
                    r.predicted_before_img_s,
                    r.predicted_after_img_s,
                    r.held_out,
                )
            })
            .collect::<Vec<_>>(),
    )?;
    eprintln!("wrote {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_platforms_run_every_subset() {
        let plan = plan_runs(&[8, 8, 8], &[1, 8]);
        // 3 alone + 3 pairs + 1 triple, each at both sizes.
        assert_eq!(plan.len(), 14);
        assert!(plan.contains(&(vec![0, 1, 2], 8)));
    }

    #[test]
    fn large_platforms_run_the_largest_set_that_accepts_each_batch_size() {
        // A CPU unit that takes 8 at most beside four that take 256, as in config/gpu.toml.
        let plan = plan_runs(&[8, 256, 256, 256, 256], &[8, 64]);
        assert!(plan.contains(&(vec![0, 1, 2, 3, 4], 8)));
        assert!(plan.contains(&(vec![1, 2, 3, 4], 64)));
        assert!(!plan
            .iter()
            .any(|(set, batch)| *batch == 64 && set.contains(&0)));
        // 5 + 4 alone, 10 + 6 pairs, one full set per size.
        assert_eq!(plan.len(), 9 + 16 + 2);
        let first_pair = plan.iter().position(|(set, _)| set.len() == 2).unwrap();
        assert!(plan[..first_pair].iter().all(|(set, _)| set.len() == 1));
    }
}
