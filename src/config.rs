//! The config file: typed, validated, with `MICA__` environment overrides.
//!
//! A TOML file (see `config/orin-agx-sim.toml`) read through the `config` crate, so that
//! `MICA__SCHEDULER__QUEUE_CAPACITY=128` overrides `[scheduler] queue_capacity`. Every
//! struct refuses unknown keys, every key has a default where one makes sense, and
//! `validate` names the file and the key that is wrong. Relative paths (profiles, model
//! files, label files) are resolved against the config file's folder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mica_core::{ContentionConfig, HealthRules, Profile, UnitKind};
use mica_engines::{EngineSettings, UnitFacts};
use mica_policies::PolicyConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::serve::{ModelSettings, ServerSettings};

/// A config that cannot be used, with the file and key at fault.
#[derive(Debug, Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub file: String,
    /// The key at fault (`units[2].streams`, `scheduler.policy`, ...).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The whole config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The model served and its input/output shapes.
    #[serde(default)]
    pub model: ModelSettings,
    /// The HTTP server (`mica serve`).
    #[serde(default)]
    pub server: ServerSettings,
    /// Batching, admission and the policy.
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// The machine: its name and how its units contend.
    #[serde(default)]
    pub platform: PlatformConfig,
    /// Prometheus exposition.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The admin endpoint (policy read/set), off unless a token is configured.
    #[serde(default)]
    pub admin: crate::admin::AdminConfig,
    /// The compute units, in the order policies index them.
    #[serde(default)]
    pub units: Vec<UnitConfig>,
    /// One network split over units (`mica tune`, `mica experiment pipeline`).
    #[serde(default)]
    pub pipeline: Option<crate::pipeline_config::PipelineConfig>,
}

/// `[scheduler]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// The load-allocation policy, e.g. `{ type = "least_loaded" }`.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Longest a request waits for its batch to fill before a smaller batch goes, µs.
    #[serde(default = "default_max_queue_delay_us")]
    pub max_queue_delay_us: u64,
    /// Requests each priority level may hold; more get 429.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Priority levels (requests name 0 = most urgent .. levels-1).
    #[serde(default = "default_priority_levels")]
    pub priority_levels: u8,
    /// Seed of every randomized choice (sim jitter, load generator; no policy randomizes).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Consecutive failed batches that quarantine a unit.
    #[serde(default = "default_failures_to_quarantine")]
    pub failures_to_quarantine: u32,
    /// How long a quarantine lasts, ms.
    #[serde(default = "default_quarantine_ms")]
    pub quarantine_ms: u64,
    /// A batch running longer than `batch_deadline_factor` × its profile's predicted
    /// time + `batch_deadline_floor_ms` counts as hung: its requests are answered with
    /// an error and its stream worker is replaced.
    #[serde(default = "default_batch_deadline_factor")]
    pub batch_deadline_factor: f64,
    /// The fixed part of the batch deadline, ms (all of it for units without profile).
    #[serde(default = "default_batch_deadline_floor_ms")]
    pub batch_deadline_floor_ms: u64,
    /// `true`: ready only when every unit loaded. `false`: ready once every unit has
    /// loaded or failed, if one loaded; the service runs on the units it has, and
    /// readiness, the log and `mica units` name the missing ones (a Jetson whose DLA
    /// engine will not build still serves on its CPU and GPU).
    #[serde(default = "default_true")]
    pub require_all_units: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            policy: PolicyConfig::default(),
            max_queue_delay_us: default_max_queue_delay_us(),
            queue_capacity: default_queue_capacity(),
            priority_levels: default_priority_levels(),
            seed: default_seed(),
            failures_to_quarantine: default_failures_to_quarantine(),
            quarantine_ms: default_quarantine_ms(),
            batch_deadline_factor: default_batch_deadline_factor(),
            batch_deadline_floor_ms: default_batch_deadline_floor_ms(),
            require_all_units: true,
        }
    }
}

impl SchedulerConfig {
    /// The health rules these settings describe.
    pub fn health(&self) -> HealthRules {
        HealthRules {
            failures_to_quarantine: self.failures_to_quarantine,
            quarantine: Duration::from_millis(self.quarantine_ms),
        }
    }

    /// The per-batch deadline rule these settings describe.
    pub fn batch_deadline(&self) -> mica_actors::BatchDeadline {
        mica_actors::BatchDeadline {
            factor: self.batch_deadline_factor,
            floor: Duration::from_millis(self.batch_deadline_floor_ms),
        }
    }
}

fn default_max_queue_delay_us() -> u64 {
    500
}
fn default_queue_capacity() -> usize {
    4096
}
fn default_priority_levels() -> u8 {
    2
}
fn default_seed() -> u64 {
    42
}
fn default_failures_to_quarantine() -> u32 {
    3
}
fn default_quarantine_ms() -> u64 {
    5000
}
fn default_batch_deadline_factor() -> f64 {
    10.0
}
fn default_batch_deadline_floor_ms() -> u64 {
    5000
}

/// `[platform]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// Human name, shown in reports (`jetson-agx-orin-64gb`).
    #[serde(default)]
    pub name: String,
    /// How the units contend for the GPU and DRAM, inline.
    #[serde(default)]
    pub contention: Option<ContentionConfig>,
    /// ... or in a file (relative to the config file), as the calibrated platforms ship it.
    #[serde(default)]
    pub contention_file: Option<PathBuf>,
    /// Research and test tooling: a different contention model (a file, relative to
    /// the config file) that the sim engine and the simulator *emulate*, while the
    /// policies keep *predicting* with `contention`/`contention_file`: a hidden "true"
    /// platform to check `mica calibrate` against without hardware. Absent: the sim
    /// units emulate the model the policies predict with.
    #[serde(default)]
    pub emulated_contention_file: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether to record and expose metrics.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address of the `/metrics` endpoint.
    #[serde(default = "default_metrics_address")]
    pub address: std::net::IpAddr,
    /// Port of the `/metrics` endpoint (Triton's layout: 8002).
    #[serde(default = "default_metrics_port")]
    pub port: u16,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: default_metrics_address(),
            port: default_metrics_port(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_metrics_address() -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, 1])
}
fn default_metrics_port() -> u16 {
    8002
}

/// One `[[units]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// Unit id: the name used in reports, metrics labels and `--units`.
    pub id: String,
    /// Hardware kind: cpu, cuda_fp32, cuda_tf32, tensor_fp16, tensor_bf16, amp, dla.
    pub kind: UnitKind,
    /// What runs it, with that engine's settings: `{ type = "sim", jitter = 0.02 }`
    /// (emulated from its profile), `{ type = "null" }`, `{ type = "torch", model =
    /// "..." }`.
    pub engine: EngineSettings,
    /// DLA core number (kind `dla` only).
    #[serde(default)]
    pub core: Option<u8>,
    /// GPU index (GPU kinds; the GPU a DLA falls back to). Defaults to 0.
    #[serde(default)]
    pub device: Option<u32>,
    /// Stream workers (each its own thread, engine instance and CUDA stream).
    #[serde(default = "default_streams")]
    pub streams: u32,
    /// Largest batch the unit runs. Defaults to the profile's largest point, else 64.
    #[serde(default)]
    pub max_batch: Option<u32>,
    /// Service-time profile file (required for `sim`; used by policies, `mica
    /// simulate` and `mica tune` for any engine).
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// Set false to keep the entry but not start the unit.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_streams() -> u32 {
    1
}

impl UnitConfig {
    /// The GPU the unit runs on or falls back to: `device`, else 0; `None` for the CPU.
    pub fn gpu_device(&self) -> Option<u32> {
        (self.kind != UnitKind::Cpu).then_some(self.device.unwrap_or(0))
    }
}

/// Largest batch any unit may be configured with.
pub const MAX_BATCH_LIMIT: u32 = 4096;
/// Most stream workers per unit.
pub const MAX_STREAMS: u32 = 64;

/// A config loaded from a file, with its folder and the profiles it names read.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it came from.
    pub path: PathBuf,
    /// The config.
    pub config: Config,
    /// Each unit's profile (same order as `config.units`).
    pub profiles: Vec<Option<Arc<Profile>>>,
    /// The platform's contention model.
    pub contention: ContentionConfig,
    /// The model sim units emulate, when it differs (`emulated_contention_file`).
    pub emulated_contention: Option<ContentionConfig>,
}

impl LoadedConfig {
    /// The model the sim engine and the simulator emulate.
    pub fn emulated_contention(&self) -> &ContentionConfig {
        self.emulated_contention
            .as_ref()
            .unwrap_or(&self.contention)
    }
}

impl LoadedConfig {
    /// Reads, overrides from `MICA__*` variables, resolves and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let error = |key: &str, message: String| ConfigError {
            file: file.clone(),
            key: key.to_string(),
            message,
        };
        if !path.is_file() {
            return Err(error("(file)", "no such config file".into()));
        }
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("MICA")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| error("(syntax)", without_source_lines(&e.to_string())))?;
        let config: Config = raw.try_deserialize().map_err(|e| {
            let key = key_of(&e);
            // A bad value under [admin] may be the token itself: never echo it.
            let message = if key.starts_with("admin") {
                "invalid value (not shown: it may be a secret)".to_string()
            } else {
                without_source_lines(&e.to_string())
            };
            error(&key, message)
        })?;
        Self::from_config(path, config)
    }

    /// Resolves and validates an already parsed config as if read from `path`.
    pub fn from_config(path: &Path, mut config: Config) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let error = |key: String, message: String| ConfigError {
            file: file.clone(),
            key,
            message,
        };
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        validate_sections(&config).map_err(|(key, message)| error(key, message))?;

        let contention = match (
            &config.platform.contention,
            &config.platform.contention_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "platform".into(),
                    "give either contention or contention_file, not both".into(),
                ))
            }
            (Some(c), None) => c.clone(),
            (None, Some(f)) => read_contention(&resolve(f))
                .map_err(|m| error("platform.contention_file".into(), m))?,
            (None, None) => ContentionConfig::None,
        };
        contention
            .validate()
            .map_err(|m| error("platform.contention".into(), m))?;
        let emulated_contention = match &config.platform.emulated_contention_file {
            Some(f) => {
                let emulated = read_contention(&resolve(f))
                    .map_err(|m| error("platform.emulated_contention_file".into(), m))?;
                emulated
                    .validate()
                    .map_err(|m| error("platform.emulated_contention_file".into(), m))?;
                Some(emulated)
            }
            None => None,
        };

        if let Some(labels) = &config.server.label_file {
            config.server.label_file = Some(resolve(labels));
        }
        let mut seen = HashSet::new();
        let mut profiles = Vec::with_capacity(config.units.len());
        for (index, unit) in config.units.iter_mut().enumerate() {
            let key = |field: &str| format!("units[{index}] ({}).{field}", unit.id);
            if unit.id.is_empty()
                || !unit
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(error(
                    format!("units[{index}].id"),
                    format!("{:?}: ids are letters, digits, '.', '_' and '-'", unit.id),
                ));
            }
            if !seen.insert(unit.id.clone()) {
                return Err(error(key("id"), "the same id is used by two units".into()));
            }
            if unit.streams == 0 || unit.streams > MAX_STREAMS {
                return Err(error(
                    key("streams"),
                    format!("must be between 1 and {MAX_STREAMS}, got {}", unit.streams),
                ));
            }
            match (unit.kind, unit.core) {
                (UnitKind::Dla, None) => {
                    return Err(error(
                        key("core"),
                        "a dla unit needs `core = 0` or `core = 1`".into(),
                    ))
                }
                (UnitKind::Dla, Some(core)) if core > 1 => {
                    return Err(error(
                        key("core"),
                        format!("DLA cores are 0 and 1, got {core}"),
                    ))
                }
                (kind, Some(_)) if kind != UnitKind::Dla => {
                    return Err(error(key("core"), "only dla units have a core".into()))
                }
                _ => {}
            }
            if unit.kind == UnitKind::Cpu && unit.device.is_some() {
                return Err(error(key("device"), "a cpu unit has no GPU device".into()));
            }
            let profile = match &unit.profile {
                Some(p) => {
                    let resolved = resolve(p);
                    let profile = Profile::from_file(&resolved)
                        .map_err(|e| error(key("profile"), e.to_string()))?;
                    unit.profile = Some(resolved);
                    Some(Arc::new(profile))
                }
                None => None,
            };
            let facts = UnitFacts {
                kind: unit.kind,
                dla_core: unit.core,
                has_profile: profile.is_some(),
            };
            unit.engine
                .validate(&facts)
                .map_err(|e| error(key(&e.key), e.message))?;
            unit.engine.resolve_paths(&resolve, &unit.id);
            let max_batch = unit
                .max_batch
                .unwrap_or_else(|| profile.as_ref().map_or(64, |p| p.max_batch().max(1)));
            if max_batch == 0 || max_batch > MAX_BATCH_LIMIT {
                return Err(error(
                    key("max_batch"),
                    format!("must be between 1 and {MAX_BATCH_LIMIT}, got {max_batch}"),
                ));
            }
            unit.max_batch = Some(max_batch);
            profiles.push(profile);
        }
        check_onnx_units(&config.units).map_err(|(key, message)| error(key, message))?;
        if !config.units.iter().any(|u| u.enabled) {
            return Err(error(
                "units".into(),
                "no enabled unit: add at least one [[units]] entry".into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            config,
            profiles,
            contention,
            emulated_contention,
        })
    }
}

/// What onnx units must agree on across the config: one ONNX Runtime library per
/// process, and a TensorRT engine cache folder of each unit's own (ONNX Runtime issue
/// #26680: an engine cached for DLA core 1 was loaded for core 0 from a shared folder).
fn check_onnx_units(units: &[UnitConfig]) -> Result<(), (String, String)> {
    let mut library: Option<(usize, &Path)> = None;
    let mut caches: Vec<(usize, &Path)> = Vec::new();
    for (index, unit) in units.iter().enumerate().filter(|(_, u)| u.enabled) {
        let EngineSettings::Onnx(onnx) = &unit.engine else {
            continue;
        };
        let key = |field: &str| format!("units[{index}] ({}).engine.{field}", unit.id);
        if let Some(model) = onnx.model() {
            if !model.exists() {
                return Err((
                    key("model"),
                    format!(
                        "{} does not exist (scripts/export_model.py --onnx writes ONNX models)",
                        model.display()
                    ),
                ));
            }
        }
        if let Some(path) = onnx.library.as_deref() {
            match library {
                Some((first, other)) if other != path => {
                    return Err((
                        key("library"),
                        format!(
                            "{} differs from units[{first}]'s {}: a process loads one ONNX \
                             Runtime library, give every onnx unit the same one",
                            path.display(),
                            other.display()
                        ),
                    ))
                }
                Some(_) => {}
                None => library = Some((index, path)),
            }
        }
        if let Some(cache) = onnx.engine_cache.as_deref() {
            if let Some((first, _)) = caches.iter().find(|(_, c)| *c == cache) {
                return Err((
                    key("engine_cache"),
                    format!(
                        "{} is also units[{first}]'s engine cache: each TensorRT unit needs a \
                         folder of its own (ONNX Runtime issue #26680 loads an engine built \
                         for one DLA core on the other from a shared cache)",
                        cache.display()
                    ),
                ));
            }
            caches.push((index, cache));
        }
    }
    Ok(())
}

fn validate_sections(config: &Config) -> Result<(), (String, String)> {
    let s = &config.scheduler;
    s.policy
        .validate()
        .map_err(|m| ("scheduler.policy".to_string(), m))?;
    if s.queue_capacity == 0 {
        return Err((
            "scheduler.queue_capacity".into(),
            "must be at least 1".into(),
        ));
    }
    if s.priority_levels == 0 || s.priority_levels > 16 {
        return Err((
            "scheduler.priority_levels".into(),
            format!("must be between 1 and 16, got {}", s.priority_levels),
        ));
    }
    if s.max_queue_delay_us > 10_000_000 {
        return Err((
            "scheduler.max_queue_delay_us".into(),
            "must be at most 10 s".into(),
        ));
    }
    if !(s.batch_deadline_factor.is_finite() && (0.0..=1000.0).contains(&s.batch_deadline_factor)) {
        return Err((
            "scheduler.batch_deadline_factor".into(),
            format!(
                "must be a number between 0 and 1000, got {}",
                s.batch_deadline_factor
            ),
        ));
    }
    if s.batch_deadline_floor_ms == 0 || s.batch_deadline_floor_ms > 3_600_000 {
        return Err((
            "scheduler.batch_deadline_floor_ms".into(),
            format!(
                "must be between 1 and 3600000 (one hour), got {}",
                s.batch_deadline_floor_ms
            ),
        ));
    }
    if s.failures_to_quarantine == 0 {
        return Err((
            "scheduler.failures_to_quarantine".into(),
            "must be at least 1".into(),
        ));
    }
    config
        .server
        .validate()
        .map_err(|m| ("server".to_string(), m))?;
    config
        .model
        .validate()
        .map_err(|m| ("model".to_string(), m))?;
    Ok(())
}

fn read_contention(path: &Path) -> Result<ContentionConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A parse error without the lines of the file it quotes (the TOML parser shows the
/// offending line with a caret under it): the line may hold a secret such as the admin
/// token, and the error goes to the log and to `mica check`'s output. The line and
/// column numbers and the parser's explanation stay.
fn without_source_lines(text: &str) -> String {
    text.lines()
        .filter(|line| {
            let rest = line
                .trim_start()
                .trim_start_matches(|c: char| c.is_ascii_digit());
            !rest.trim_start().starts_with('|')
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The key a deserialization error is about, when the `config` crate names one.
fn key_of(error: &config::ConfigError) -> String {
    let text = error.to_string();
    // The config crate ends messages with "for key `a.b`" where it knows the key.
    text.rsplit_once("for key `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| dotted(key))
        .unwrap_or_else(|| "(structure)".to_string())
}

/// `units[0]engine` (as the config crate spells a key inside an array) as
/// `units[0].engine`.
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '.' && c != '[' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn syntax_errors_do_not_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "[admin]\ntoken = \"s3cr3t-value\n",
            "[admin]\ntoken = s3cr3t-value\n",
            "[admin]\ntoken = 12345678901234567890\n",
        ] {
            let path = dir.path().join("bad.toml");
            std::fs::write(&path, text).unwrap();
            let error = LoadedConfig::load(&path).unwrap_err().to_string();
            assert!(!error.contains("s3cr3t"), "{error}");
            assert!(!error.contains("1234567890"), "{error}");
        }
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[admin]\ntoken = \"s3cr3t-value\n").unwrap();
        let error = LoadedConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "the position stays: {error}");
    }
}
