//! What `mica tune` writes: `tune.json` (summary), `evaluated.csv` (every measured
//! point in the order the search asked for it), `best.toml` (the input config with
//! the best `[pipeline]`, ready to serve) and the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use mica_pipeline::MappingOption;
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::pipeline::tune::cache::Entry;
use crate::pipeline::tune::measure::Measured;
use crate::pipeline::tune::space::Point;

/// The best configuration, in the terms of the config file.
#[derive(Debug, Clone, Serialize)]
pub struct BestConfig {
    /// Mapping option.
    pub option: MappingOption,
    /// Cut points.
    pub cuts: Vec<usize>,
    /// Images per batch.
    pub batch: u32,
    /// Streams per unit.
    pub streams: u32,
    /// Pre- and post-processing threads.
    pub threads: u32,
    /// Stage block ranges and units, as `"dla0: 0..9"`.
    pub stages: Vec<String>,
    /// What it measured.
    pub measured: Measured,
}

/// `tune.json`.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// `sim` (simulated figures, labelled so) or `real`.
    pub backend: String,
    /// Whether the figures come from the simulator.
    pub simulated: bool,
    /// `heuristic` or `exhaustive`.
    pub search: String,
    /// The config tuned.
    pub config: String,
    /// Throughput of the best configuration, images/s.
    pub best_throughput_img_s: f64,
    /// The best configuration.
    pub best_config: BestConfig,
    /// Distinct points the search measured (or read from the cache).
    pub evaluated: usize,
    /// Points in the space.
    pub space_size: usize,
    /// `evaluated / space_size`.
    pub evaluated_fraction: f64,
    /// Wall time of the search, seconds.
    pub wall_time_s: f64,
    /// Points measured in this run (the rest came from the cache).
    pub measured_this_run: usize,
    /// Blocks of the staged model.
    pub model_stages: usize,
    /// Best throughput per mapping option among the evaluated points.
    pub best_per_option: BTreeMap<String, f64>,
    /// The ten best evaluated points.
    pub top: Vec<TopEntry>,
}

/// One line of the top list.
#[derive(Debug, Clone, Serialize)]
pub struct TopEntry {
    /// The point's key (`option/cuts/batch/streams/threads`).
    pub point: String,
    /// Images per second.
    pub throughput_img_s: f64,
    /// Mean latency, ms.
    pub latency_mean_ms: f64,
    /// GPU utilization.
    pub gpu_utilization: f64,
}

/// Best throughput per option.
pub fn best_per_option(entries: &[Entry]) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for e in entries {
        let slot = out.entry(e.point.option.to_string()).or_insert(0.0);
        *slot = slot.max(e.measured.throughput_img_s);
    }
    out
}

/// The ten best entries.
pub fn top(entries: &[Entry], n: usize) -> Vec<TopEntry> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        b.measured
            .throughput_img_s
            .total_cmp(&a.measured.throughput_img_s)
    });
    sorted
        .into_iter()
        .take(n)
        .map(|e| TopEntry {
            point: e.point.key(),
            throughput_img_s: e.measured.throughput_img_s,
            latency_mean_ms: e.measured.latency_mean_ms,
            gpu_utilization: e.measured.gpu_utilization,
        })
        .collect()
}

/// Writes `evaluated.csv`.
pub fn write_csv(path: &Path, entries: &[Entry]) -> anyhow::Result<()> {
    let mut text = String::from(
        "order,option,cuts,batch,streams,threads,throughput_img_s,latency_mean_ms,latency_p99_ms,gpu_utilization,dla_utilization\n",
    );
    for (i, e) in entries.iter().enumerate() {
        let cuts: Vec<String> = e.point.cuts.iter().map(|c| c.to_string()).collect();
        let m = &e.measured;
        let _ = writeln!(
            text,
            "{i},{},{},{},{},{},{:.3},{:.3},{:.3},{:.4},{:.4}",
            e.point.option,
            cuts.join(" "),
            e.point.batch,
            e.point.streams,
            e.point.threads,
            m.throughput_img_s,
            m.latency_mean_ms,
            m.latency_p99_ms,
            m.gpu_utilization,
            m.dla_utilization
        );
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The input config's TOML with `[pipeline]` set to `point` and every path made
/// absolute, so the file serves from wherever it is copied to.
pub fn best_toml(
    config_path: &Path,
    base: &PipelineConfig,
    point: &Point,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    let folder = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let folder = std::fs::canonicalize(&folder).unwrap_or(folder);
    let absolute = |value: &mut toml::Value| {
        if let Some(p) = value.as_str() {
            if Path::new(p).is_relative() {
                *value = toml::Value::String(folder.join(p).display().to_string());
            }
        }
    };
    if let Some(platform) = doc.get_mut("platform").and_then(|v| v.as_table_mut()) {
        if let Some(v) = platform.get_mut("contention_file") {
            absolute(v);
        }
    }
    if let Some(units) = doc.get_mut("units").and_then(|v| v.as_array_mut()) {
        for unit in units.iter_mut().filter_map(|u| u.as_table_mut()) {
            if let Some(v) = unit.get_mut("profile") {
                absolute(v);
            }
            // The engine's own paths (its settings table).
            if let Some(engine) = unit.get_mut("engine").and_then(|v| v.as_table_mut()) {
                for key in mica_engines::EngineSettings::PATH_KEYS {
                    if let Some(v) = engine.get_mut(*key) {
                        absolute(v);
                    }
                }
            }
        }
    }
    let mut pipeline = base.clone();
    pipeline.option = point.option;
    pipeline.cuts = point.cuts.clone();
    pipeline.batch = point.batch;
    pipeline.streams = point.streams;
    pipeline.pre_threads = point.threads;
    pipeline.post_threads = point.threads;
    pipeline.stages.clear();
    pipeline.buffers = 0;
    doc.insert(
        "pipeline".into(),
        toml::Value::try_from(&pipeline).context("serializing [pipeline]")?,
    );
    let mut out = format!(
        "# Written by `mica tune` from {}: the best pipeline found ({}).\n\n",
        config_path.display(),
        point.key()
    );
    out.push_str(&toml::to_string_pretty(&doc).context("serializing best.toml")?);
    Ok(out)
}

/// The table printed at the end of a run.
pub fn table(report: &TuneReport) -> String {
    let mut out = String::new();
    let label = if report.simulated { " (SIMULATED)" } else { "" };
    let _ = writeln!(
        out,
        "mica tune: {} search, backend {}{label}, {}",
        report.search, report.backend, report.config
    );
    let _ = writeln!(
        out,
        "evaluated {} of {} points ({:.2} %) in {:.1} s",
        report.evaluated,
        report.space_size,
        100.0 * report.evaluated_fraction,
        report.wall_time_s
    );
    let _ = writeln!(
        out,
        "\n{:<28} {:>12} {:>12} {:>8}",
        "point", "img/s", "latency ms", "GPU util"
    );
    for t in &report.top {
        let _ = writeln!(
            out,
            "{:<28} {:>12.1} {:>12.2} {:>8.2}",
            t.point, t.throughput_img_s, t.latency_mean_ms, t.gpu_utilization
        );
    }
    let _ = writeln!(out, "\nbest per option:");
    for (option, best) in &report.best_per_option {
        let _ = writeln!(out, "  {option:<4} {best:>10.1} img/s");
    }
    let b = &report.best_config;
    let _ = writeln!(
        out,
        "\nbest: {:.1} img/s — option {}, cuts {:?}, batch {}, streams {}, threads {}\n  stages: {}",
        report.best_throughput_img_s,
        b.option,
        b.cuts,
        b.batch,
        b.streams,
        b.threads,
        b.stages.join(" -> ")
    );
    out
}
