//! The sections of the config file: the whole file's shape, `[scheduler]`,
//! `[platform]` and `[metrics]`. `[[units]]`, `[server]`/`[model]`, `[admin]` and
//! `[pipeline]` have files of their own beside this one.

use std::path::PathBuf;
use std::time::Duration;

use mica_core::{ContentionConfig, HealthRules};
use mica_policies::PolicyConfig;
use serde::{Deserialize, Serialize};

use super::admin::AdminConfig;
use super::error::Invalid;
use super::pipeline::PipelineConfig;
use super::serve::{ModelSettings, ServerSettings};
use super::units::UnitConfig;

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
    pub admin: AdminConfig,
    /// The compute units, in the order policies index them.
    #[serde(default)]
    pub units: Vec<UnitConfig>,
    /// One network split over units (`mica tune`, `mica experiment pipeline`).
    #[serde(default)]
    pub pipeline: Option<PipelineConfig>,
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

    /// Checks values (the policy's parameters too); the error names the bad key.
    pub fn validate(&self) -> Result<(), Invalid> {
        let key = |field: &str| format!("scheduler.{field}");
        self.policy
            .validate()
            .map_err(|m| Invalid::under(&key("policy"), &m))?;
        if self.queue_capacity == 0 {
            return Err(Invalid::new(key("queue_capacity"), "must be at least 1"));
        }
        if self.priority_levels == 0 || self.priority_levels > 16 {
            return Err(Invalid::new(
                key("priority_levels"),
                format!("must be between 1 and 16, got {}", self.priority_levels),
            ));
        }
        if self.max_queue_delay_us > 10_000_000 {
            return Err(Invalid::new(
                key("max_queue_delay_us"),
                "must be at most 10 s",
            ));
        }
        let factor = self.batch_deadline_factor;
        if !(factor.is_finite() && (0.0..=1000.0).contains(&factor)) {
            return Err(Invalid::new(
                key("batch_deadline_factor"),
                format!("must be a number between 0 and 1000, got {factor}"),
            ));
        }
        if self.batch_deadline_floor_ms == 0 || self.batch_deadline_floor_ms > 3_600_000 {
            return Err(Invalid::new(
                key("batch_deadline_floor_ms"),
                format!(
                    "must be between 1 and 3600000 (one hour), got {}",
                    self.batch_deadline_floor_ms
                ),
            ));
        }
        if self.failures_to_quarantine == 0 {
            return Err(Invalid::new(
                key("failures_to_quarantine"),
                "must be at least 1",
            ));
        }
        Ok(())
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
