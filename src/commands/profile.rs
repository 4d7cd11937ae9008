//! `mica profile`: measures a unit's batch latency at each batch size and writes a
//! profile file in the format of `config/profiles/*/*.toml` (`mica_core::Profile`,
//! `origin = "measured"`), so that the policies and the simulator run on measured
//! numbers for real hardware.
//!
//! **What is measured.** Each unit's engine is built from the same `EngineSpec` the
//! service would build (`wiring::service_setup`), on a dedicated OS thread as a stream
//! worker runs it, and warmed up as the stream worker does before the unit reports
//! ready. Then, per batch size: untimed warm-up batches, and timed batches one after the
//! other, each timed around the engine call (which returns when the batch is done: CUDA
//! engines synchronize their stream). That is exactly the `service` time a stream
//! worker reports to the policy for every batch, and what a profile point means: the
//! service time of one batch with the unit running alone. The dispatcher and the actors
//! are not in the loop (their cost is per request, not per batch; `mica bench` measures
//! the whole path). Input is synthetic, as in `mica bench`: real engines keep it on the
//! device, so host-to-device copies of request data are not in the figures.
//!
//! A point's `latency_ms` is the median; p90, mean and minimum go into its `source`.
//! `overhead_ms` is 0 (every fixed cost is inside the measured latencies) and
//! `bandwidth_gbps` is not measured (0 = unknown) unless the unit already had a profile,
//! whose bandwidth figures are then carried over and said to be.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Args;
use mica_core::{Profile, ProfileOrigin, ProfilePoint, UnitKind};
use mica_engines::{build_engine, BatchInput, EngineContext, EngineSpec};
use serde::Serialize;

use crate::config::ResolvedConfig;
use crate::wiring::{self, RunOverrides};

/// `mica profile`'s options.
#[derive(Debug, Clone, Args)]
pub struct ProfileArgs {
    /// Units to profile (comma-separated ids); each gets its own profile, measured alone,
    /// one after the other in this process.
    #[arg(long, value_delimiter = ',', required = true)]
    pub units: Vec<String>,
    /// Batch sizes to measure, increasing.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64,128,256")]
    pub batch_sizes: Vec<u32>,
    /// Timed batches per batch size.
    #[arg(long, default_value_t = 20)]
    pub batches: u32,
    /// Untimed batches per batch size before the timed ones.
    #[arg(long, default_value_t = 5)]
    pub warmup_batches: u32,
    /// Stop timing a batch size after this many seconds (at least 3 timed batches are
    /// always run), so slow units (the CPU at large batches) end in reasonable time.
    #[arg(long, default_value_t = 20.0)]
    pub max_seconds_per_size: f64,
    /// Folder to write `<unit id>.toml` into (created if missing). Without it the
    /// profiles are printed to stdout.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The machine, for the profiles' `source` (e.g. "NVIDIA H100 80GB HBM3, driver
    /// 580.159.04"). Default: the host name, CPU model and NVIDIA GPU models this host
    /// reports.
    #[arg(long)]
    pub machine: Option<String>,
    /// With `--out-dir`: print a JSON summary instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How one unit is measured.
#[derive(Debug, Clone)]
struct Plan {
    batch_sizes: Vec<u32>,
    batches: u32,
    warmup_batches: u32,
    max_per_size: Duration,
}

/// The timings of one batch size.
#[derive(Debug, Clone, Serialize)]
struct SizeTimings {
    batch: u32,
    timed_batches: usize,
    median_ms: f64,
    p90_ms: f64,
    mean_ms: f64,
    min_ms: f64,
    max_ms: f64,
    throughput_img_s: f64,
}

/// One unit's result, for the summary.
#[derive(Debug, Clone, Serialize)]
struct UnitResult {
    unit: String,
    kind: String,
    engine: String,
    file: Option<PathBuf>,
    load_and_warmup_s: f64,
    sizes: Vec<SizeTimings>,
}

/// Runs the command.
pub fn run(config: &Path, args: &ProfileArgs) -> anyhow::Result<()> {
    let plan = plan_of(args)?;
    let loaded = ResolvedConfig::load(config)?;
    let machine = args.machine.clone().unwrap_or_else(describe_machine);
    let command = super::typed_command::current();
    let date = utc_date(SystemTime::now());
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating --out-dir {}", dir.display()))?;
    }
    let mut results = Vec::with_capacity(args.units.len());
    for id in &args.units {
        let overrides = RunOverrides {
            policy: None,
            units: Some(vec![id.clone()]),
            batch_size: None,
        };
        let setup = wiring::service_setup(&loaded, &overrides)?;
        let unit = setup
            .units
            .first()
            .context("service_setup returned no unit for --units; this is a bug")?;
        let mut spec = unit.engine.clone();
        let largest = plan.batch_sizes.iter().copied().max().unwrap_or(1);
        spec.max_batch = spec.max_batch.max(largest);
        let context = EngineContext {
            hub: setup.hub.clone(),
            custom: None,
        };
        eprintln!(
            "profiling {id} ({} on {} engine), batch sizes {:?}",
            spec.unit_kind,
            spec.engine.as_str(),
            plan.batch_sizes
        );
        let (load_s, sizes) = measure_on_thread(id, spec.clone(), context, plan.clone())?;
        let previous = unit.spec.profile.clone();
        let profile = build_profile(
            &loaded.config.model.name,
            &spec,
            previous.as_deref(),
            &sizes,
            &plan,
            &format!("{machine}, {date}"),
            &command,
        );
        profile
            .validate()
            .with_context(|| format!("the measured profile of {id} is not valid"))?;
        let text = format!(
            "# {id}: measured by `mica profile` ({} engine, unit kind {}).\n{}",
            spec.engine.as_str(),
            spec.unit_kind,
            profile.to_toml()
        );
        let file = match &args.out_dir {
            Some(dir) => {
                let path = dir.join(format!("{id}.toml"));
                std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
                Some(path)
            }
            None => {
                println!("{text}");
                None
            }
        };
        results.push(UnitResult {
            unit: id.clone(),
            kind: spec.unit_kind.as_str().to_string(),
            engine: spec.engine.as_str().to_string(),
            file,
            load_and_warmup_s: load_s,
            sizes,
        });
    }
    if args.out_dir.is_some() {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&results).context("serializing the summary")?
            );
        } else {
            print!("{}", render_table(&results));
        }
    }
    Ok(())
}

fn plan_of(args: &ProfileArgs) -> anyhow::Result<Plan> {
    if args.batch_sizes.is_empty() {
        bail!("--batch-sizes: give at least one batch size");
    }
    if args.batch_sizes.contains(&0) {
        bail!("--batch-sizes: batch sizes start at 1");
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
    if args.batch_sizes.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--batch-sizes must be strictly increasing");
    }
    if args.batches == 0 {
        bail!("--batches must be at least 1");
    }
    if !(args.max_seconds_per_size.is_finite() && args.max_seconds_per_size > 0.0) {
        bail!("--max-seconds-per-size must be a positive number of seconds");
    }
    Ok(Plan {
        batch_sizes: args.batch_sizes.clone(),
        batches: args.batches,
        warmup_batches: args.warmup_batches,
        max_per_size: mica_core::time::secs(args.max_seconds_per_size),
    })
}

/// Builds, warms up and times the engine on a thread of its own (CUDA state and
/// libtorch's current stream are per thread, and engine calls block), as a stream
/// worker would. Returns the load + warm-up time in seconds and the timings.
fn measure_on_thread(
    id: &str,
    spec: EngineSpec,
    context: EngineContext,
    plan: Plan,
) -> anyhow::Result<(f64, Vec<SizeTimings>)> {
    let unit = id.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("profile-{id}"))
        .spawn(move || measure(&unit, &spec, &context, &plan))
        .context("spawning the profiling thread")?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            bail!("profiling {id}: the engine panicked: {message}")
        }
    }
}

fn measure(
    id: &str,
    spec: &EngineSpec,
    context: &EngineContext,
    plan: &Plan,
) -> anyhow::Result<(f64, Vec<SizeTimings>)> {
    let started = Instant::now();
    let mut engine =
        build_engine(spec, context).with_context(|| format!("building the engine of {id}"))?;
    engine
        .warm_up()
        .with_context(|| format!("warming up the engine of {id}"))?;
    let load_s = started.elapsed().as_secs_f64();
    let mut sizes = Vec::with_capacity(plan.batch_sizes.len());
    for &images in &plan.batch_sizes {
        let input = BatchInput { images, data: None };
        for _ in 0..plan.warmup_batches {
            engine
                .infer(input)
                .with_context(|| format!("{id}: warm-up batch of {images}"))?;
        }
        let mut samples = Vec::with_capacity(plan.batches as usize);
        let size_started = Instant::now();
        for done in 0..plan.batches {
            if done >= 3 && size_started.elapsed() > plan.max_per_size {
                break;
            }
            let batch_started = Instant::now();
            engine
                .infer(input)
                .with_context(|| format!("{id}: batch of {images}"))?;
            samples.push(batch_started.elapsed());
        }
        let timings = summarize(images, &samples)
            .with_context(|| format!("{id}: no timed batch of {images}"))?;
        eprintln!(
            "  {id} batch {images:>4}: median {:.3} ms, p90 {:.3} ms ({} batches, {:.1} img/s)",
            timings.median_ms, timings.p90_ms, timings.timed_batches, timings.throughput_img_s
        );
        sizes.push(timings);
    }
    Ok((load_s, sizes))
}

/// Median, p90 (nearest rank), mean, min and max of the samples, in milliseconds.
fn summarize(batch: u32, samples: &[Duration]) -> Option<SizeTimings> {
    if samples.is_empty() {
        return None;
    }
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    // Nearest rank: the smallest sample with at least 90 % of the samples at or below it.
    let p90 = ms[(n * 9).div_ceil(10).clamp(1, n) - 1];
    let mean = ms.iter().sum::<f64>() / n as f64;
    Some(SizeTimings {
        batch,
        timed_batches: n,
        median_ms: median,
        p90_ms: p90,
        mean_ms: mean,
        min_ms: ms[0],
        max_ms: ms[n - 1],
        throughput_img_s: if median > 0.0 {
            f64::from(batch) * 1e3 / median
        } else {
            0.0
        },
    })
}

/// Shortest latency a profile point may hold (a profile needs positive latencies; the
/// null engine answers in well under a microsecond).
const MIN_LATENCY_MS: f64 = 1e-6;

fn build_profile(
    model: &str,
    spec: &EngineSpec,
    previous: Option<&Profile>,
    sizes: &[SizeTimings],
    plan: &Plan,
    machine_and_date: &str,
    command: &str,
) -> Profile {
    let occupancy = match (previous, spec.unit_kind) {
        (Some(p), _) => p.gpu_occupancy,
        (None, UnitKind::Cpu) => 0.0,
        (None, _) => 1.0,
    };
    let bandwidth_note = match previous {
        Some(p) if p.points.iter().any(|pt| pt.bandwidth_gbps > 0.0) => {
            "; bandwidth_gbps and gpu_occupancy carried over from the unit's configured profile"
        }
        Some(_) => "; bandwidth not measured (0); gpu_occupancy from the unit's configured profile",
        None => "; bandwidth not measured (0); gpu_occupancy 1 for a GPU unit, 0 for the CPU",
    };
    let source = format!(
        "measured by mica profile on {machine_and_date}; command: {command}; {} engine, unit \
         kind {}, one stream alone, synthetic input on the unit's device (as mica bench), \
         engine warm-up at load, then per batch size {} untimed and up to {} timed batches; \
         latency_ms = median service time of one batch (engine call until the batch is \
         done), fixed costs included (overhead_ms = 0){bandwidth_note}",
        spec.engine.as_str(),
        spec.unit_kind,
        plan.warmup_batches,
        plan.batches,
    );
    let points = sizes
        .iter()
        .map(|t| ProfilePoint {
            batch: t.batch,
            latency_ms: round_ms(t.median_ms.max(MIN_LATENCY_MS)),
            bandwidth_gbps: previous.map_or(0.0, |p| p.bandwidth_gbps(t.batch)),
            source: format!(
                "median of {} batches; p90 {:.4} ms, mean {:.4} ms, min {:.4} ms; {:.1} img/s",
                t.timed_batches, t.p90_ms, t.mean_ms, t.min_ms, t.throughput_img_s
            ),
        })
        .collect();
    Profile {
        model: model.to_string(),
        origin: ProfileOrigin::Measured,
        source,
        overhead_ms: 0.0,
        gpu_occupancy: occupancy,
        points,
    }
}

/// Six significant decimals of a millisecond (a nanosecond) are plenty.
fn round_ms(ms: f64) -> f64 {
    (ms * 1e6).round() / 1e6
}

fn render_table(results: &[UnitResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<12} {:>6} {:>11} {:>11} {:>11} {:>8}",
        "unit", "kind", "batch", "median ms", "p90 ms", "img/s", "batches"
    );
    for result in results {
        for t in &result.sizes {
            let _ = writeln!(
                out,
                "{:<16} {:<12} {:>6} {:>11.3} {:>11.3} {:>11.1} {:>8}",
                result.unit,
                result.kind,
                t.batch,
                t.median_ms,
                t.p90_ms,
                t.throughput_img_s,
                t.timed_batches
            );
        }
    }
    out
}

/// The machine by its hardware: CPU model and core count, NVIDIA GPU models, from
/// `/proc` (no NVIDIA tool needed). Not the host name: a profile describes hardware,
/// not how it was reached.
fn describe_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        });
    let mut gpus: Vec<String> = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| std::fs::read_to_string(entry.path().join("information")).ok())
                .filter_map(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("Model:"))
                        .map(|m| m.trim().to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    gpus.sort();
    let mut parts = Vec::new();
    if let Some(cpu) = cpu {
        parts.push(format!(
            "CPU {cpu} x{}",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
    }
    if !gpus.is_empty() {
        parts.push(format!("GPU {}", gpus.join(" + ")));
    }
    if parts.is_empty() {
        return "unknown machine".to_string();
    }
    parts.join(", ")
}

/// `YYYY-MM-DD` (UTC) of a point in time.
fn utc_date(time: SystemTime) -> String {
    let days = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn median_and_p90_by_nearest_rank() {
        let t = summarize(8, &ms(&[5, 1, 4, 2, 3])).expect("samples");
        assert_eq!(t.median_ms, 3.0);
        assert_eq!(t.p90_ms, 5.0);
        assert_eq!(t.min_ms, 1.0);
        assert_eq!(t.max_ms, 5.0);
        assert_eq!(t.timed_batches, 5);
        assert!((t.throughput_img_s - 8.0 * 1e3 / 3.0).abs() < 1e-9);
        let t = summarize(1, &ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).expect("samples");
        assert_eq!(t.median_ms, 5.5);
        assert_eq!(t.p90_ms, 9.0);
        let t = summarize(1, &ms(&[7])).expect("one sample");
        assert_eq!((t.median_ms, t.p90_ms), (7.0, 7.0));
        assert!(summarize(1, &[]).is_none());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(20_780 * 86_400 + 3_600)),
            "2026-11-23"
        );
    }

    #[test]
    fn batch_sizes_must_increase_and_be_positive() {
        let args = |sizes: Vec<u32>| ProfileArgs {
            units: vec!["u".into()],
            batch_sizes: sizes,
            batches: 3,
            warmup_batches: 1,
            max_seconds_per_size: 1.0,
            out_dir: None,
            machine: None,
            json: false,
        };
        assert!(plan_of(&args(vec![1, 8, 32])).is_ok());
        assert!(plan_of(&args(vec![8, 1])).is_err());
        assert!(plan_of(&args(vec![0, 1])).is_err());
        assert!(plan_of(&args(vec![])).is_err());
    }
}
