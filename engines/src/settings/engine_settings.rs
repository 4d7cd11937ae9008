//! The tagged enum of engine settings and what every engine's settings answer.

use std::ops::Range;
use std::path::{Path, PathBuf};

use mica_core::UnitKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{OnnxEngineConfig, SimEngineConfig, TorchEngineConfig};
use crate::factory::EngineKind;

/// Which engine runs a unit, with that engine's settings:
/// `engine = { type = "sim", jitter = 0.02 }`, `{ type = "torch", model = "..." }`,
/// `{ type = "onnx", model = "...", provider = "tensorrt" }`, `{ type = "null" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EngineSettings {
    /// Emulates the unit from its profile (never a measurement).
    Sim(SimEngineConfig),
    /// Does nothing: measures the scheduler's own overhead.
    Null,
    /// TorchScript through libtorch (feature `torch`).
    Torch(TorchEngineConfig),
    /// ONNX models through ONNX Runtime (CPU, CUDA, TensorRT and DLA), loaded at run time.
    Onnx(OnnxEngineConfig),
}

/// The unit an engine's settings are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitFacts {
    /// The unit's kind.
    pub kind: UnitKind,
    /// Its DLA core (kind `dla`).
    pub dla_core: Option<u8>,
    /// Whether the unit has a service-time profile.
    pub has_profile: bool,
}

/// An engine setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    /// The key at fault, relative to the unit (`engine.model`, `profile`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl SettingsError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl EngineSettings {
    /// The keys of any engine's settings that hold a path relative to the config file
    /// (for tools that rewrite a config elsewhere).
    pub const PATH_KEYS: &'static [&'static str] =
        &["model", "library", "engine_cache", "int8_calibration_table"];

    /// Which engine.
    pub fn kind(&self) -> EngineKind {
        match self {
            EngineSettings::Sim(_) => EngineKind::Sim,
            EngineSettings::Null => EngineKind::Null,
            EngineSettings::Torch(_) => EngineKind::Torch,
            EngineSettings::Onnx(_) => EngineKind::Onnx,
        }
    }

    /// The config spelling, also the `engine` metric label.
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// Simulated settings with the default jitter.
    pub fn sim() -> Self {
        EngineSettings::Sim(SimEngineConfig::default())
    }

    /// Checks the settings against the unit that runs them; the error names the key.
    pub fn validate(&self, unit: &UnitFacts) -> Result<(), SettingsError> {
        if !self.kind().is_built() {
            return Err(SettingsError::new(
                "engine.type",
                format!(
                    "engine {:?} is not built into this binary (rebuild with --features {})",
                    self.as_str(),
                    self.as_str()
                ),
            ));
        }
        match self {
            EngineSettings::Sim(sim) => sim.validate(unit),
            EngineSettings::Null => Ok(()),
            EngineSettings::Torch(torch) => torch.validate(),
            EngineSettings::Onnx(onnx) => onnx.validate(unit),
        }
    }

    /// Resolves the relative paths of the settings (model files) with `resolve`, and
    /// fills the defaults that depend on the unit (`unit_id`'s own engine cache).
    pub fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf, unit_id: &str) {
        match self {
            EngineSettings::Onnx(onnx) => onnx.resolve_paths(resolve, unit_id),
            EngineSettings::Sim(_) | EngineSettings::Null => {}
            EngineSettings::Torch(torch) => {
                if let Some(model) = &torch.model {
                    torch.model = Some(resolve(model));
                }
            }
        }
    }

    /// The model files a whole-network instance runs (none for engines without one).
    pub fn models(&self) -> Vec<PathBuf> {
        match self {
            EngineSettings::Sim(_) | EngineSettings::Null => Vec::new(),
            EngineSettings::Torch(torch) => {
                torch.model().map(Path::to_path_buf).into_iter().collect()
            }
            EngineSettings::Onnx(onnx) => onnx.model().map(Path::to_path_buf).into_iter().collect(),
        }
    }

    /// The model files of a pipeline stage over `blocks` (the staged model's own block
    /// indices), in the order they run; none for engines that emulate the stage.
    pub fn stage_models(&self, blocks: Range<usize>) -> Result<Vec<PathBuf>, String> {
        match self {
            EngineSettings::Sim(_) | EngineSettings::Null => Ok(Vec::new()),
            EngineSettings::Torch(torch) => torch.stage_models(blocks),
            EngineSettings::Onnx(onnx) => onnx.stage_models(blocks),
        }
    }

    /// Relative jitter of service times (`sim`; 0 for real engines).
    pub fn jitter(&self) -> f64 {
        match self {
            EngineSettings::Sim(sim) => sim.jitter,
            EngineSettings::Null | EngineSettings::Torch(_) | EngineSettings::Onnx(_) => 0.0,
        }
    }

    /// Batches run at load before the unit reports ready (0 for engines that need none).
    pub fn warmup_batches(&self) -> u32 {
        match self {
            EngineSettings::Torch(torch) => torch.warmup_batches,
            EngineSettings::Onnx(onnx) => onnx.warmup_batches,
            EngineSettings::Sim(_) | EngineSettings::Null => 0,
        }
    }
}

impl EngineSettings {
    /// Provider, precision and DLA core as `mica units` and the model-config route show
    /// them: `(provider, precision)`, `None` for engines without a provider.
    pub fn provider_label(&self, kind: UnitKind) -> Option<(&'static str, &'static str)> {
        match self {
            EngineSettings::Onnx(onnx) => Some((onnx.provider.as_str(), onnx.precision(kind))),
            EngineSettings::Torch(_) => Some(("libtorch", kind_precision(kind))),
            EngineSettings::Sim(_) | EngineSettings::Null => None,
        }
    }
}

impl EngineSettings {
    /// Said wherever the unit is shown, for code paths no one has run on hardware yet.
    pub fn not_run_on_hardware(&self) -> Option<&'static str> {
        match self {
            EngineSettings::Onnx(onnx) => match onnx.provider {
                super::OnnxProvider::Tensorrt => Some(
                    "not run on hardware: the TensorRT/DLA path is configured and validated, \
                     never executed (no TensorRT where mica is developed)",
                ),
                // Ran on an H200 with ONNX Runtime 1.31.1's GPU build (agreement 4e-7
                // against the CPU provider; bench/results/onnx-h200-2026-12-02.md).
                super::OnnxProvider::Cuda | super::OnnxProvider::Cpu => None,
            },
            _ => None,
        }
    }
}

/// The precision a unit kind runs in.
pub(super) fn kind_precision(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::Cpu | UnitKind::CudaFp32 => "fp32",
        UnitKind::CudaTf32 => "tf32",
        UnitKind::TensorFp16 | UnitKind::Dla => "fp16",
        UnitKind::TensorBf16 => "bf16",
        UnitKind::Amp => "mixed",
    }
}
