//! Building an engine instance from its unit's config.

use std::path::PathBuf;
use std::sync::Arc;

use mica_core::{Profile, UnitKind};
use serde::{Deserialize, Serialize};

use crate::contention_hub::ContentionHub;
use crate::engine::{Engine, EngineError};
use crate::null::NullEngine;
use crate::settings::EngineSettings;
use crate::sim::{SimEngine, SimSettings};

/// Which implementation runs a unit's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// Emulates the unit from its profile (never a measurement).
    Sim,
    /// Does nothing: measures the scheduler's own overhead.
    Null,
    /// TorchScript through libtorch (feature `torch`).
    Torch,
    /// ONNX Runtime, loaded at run time (always built).
    Onnx,
}

impl EngineKind {
    /// The config spelling, also the `engine` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sim => "sim",
            EngineKind::Null => "null",
            EngineKind::Torch => "torch",
            EngineKind::Onnx => "onnx",
        }
    }

    /// Whether its engines take and keep pipeline activations on their device
    /// (`Engine::keeps_activations_on_device`), known before any is built.
    pub fn keeps_activations_on_device(self) -> bool {
        match self {
            EngineKind::Sim | EngineKind::Null | EngineKind::Onnx => false,
            EngineKind::Torch => true,
        }
    }

    /// Whether this binary was built with the engine.
    pub fn is_built(self) -> bool {
        match self {
            EngineKind::Sim | EngineKind::Null | EngineKind::Onnx => true,
            EngineKind::Torch => cfg!(feature = "torch"),
        }
    }
}

/// Everything needed to create one engine instance (one per stream worker). Made by
/// [`EngineSpec::new`] and its `with_*` methods, never as a literal.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// The engine and its settings (paths resolved).
    pub engine: EngineSettings,
    /// Index of the unit among all configured units.
    pub unit: usize,
    /// The unit's kind (decides precision and device for real engines).
    pub unit_kind: UnitKind,
    /// GPU index (GPU units, DLA fallback); `None` for the CPU.
    pub device: Option<u32>,
    /// DLA core (kind `dla`).
    pub dla_core: Option<u8>,
    /// Which of the unit's streams this instance serves (0-based).
    pub stream: u32,
    /// Largest batch accepted.
    pub max_batch: u32,
    /// Per-image input shape, e.g. `[3, 224, 224]`.
    pub input_shape: Vec<usize>,
    /// Output elements per image.
    pub output_len: usize,
    /// The unit's profile (required by `sim`).
    pub profile: Option<Arc<Profile>>,
    /// The model files this instance runs, in order, each on the previous one's output
    /// without leaving the device: one for a whole network, a pipeline stage's block
    /// files for a stage (from [`EngineSettings::stage_models`]), none for `sim`/`null`.
    pub models: Vec<PathBuf>,
    /// Seed of the engine's randomness (`sim`: the jitter sequence).
    pub seed: u64,
}

impl EngineSpec {
    /// The spec of stream 0 of unit 0 of kind `unit_kind` running `engine`'s whole
    /// model: on GPU 0 unless the unit is a CPU, no profile, seed 0.
    pub fn new(
        engine: EngineSettings,
        unit_kind: UnitKind,
        max_batch: u32,
        input_shape: Vec<usize>,
        output_len: usize,
    ) -> Self {
        let models = engine.models();
        Self {
            engine,
            unit: 0,
            unit_kind,
            device: (unit_kind != UnitKind::Cpu).then_some(0),
            dla_core: None,
            stream: 0,
            max_batch,
            input_shape,
            output_len,
            profile: None,
            models,
            seed: 0,
        }
    }

    /// Placed as unit `unit` (its index among all configured units) on GPU `device`
    /// (`None` for the CPU) and DLA core `dla_core`.
    pub fn with_unit(mut self, unit: usize, device: Option<u32>, dla_core: Option<u8>) -> Self {
        self.unit = unit;
        self.device = device;
        self.dla_core = dla_core;
        self
    }

    /// For stream worker `stream`.
    pub fn with_stream(mut self, stream: u32) -> Self {
        self.stream = stream;
        self
    }

    /// With the unit's profile.
    pub fn with_profile(mut self, profile: Option<Arc<Profile>>) -> Self {
        self.profile = profile;
        self
    }

    /// With the seed of its randomness.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Running these model files in order instead of the settings' whole model.
    pub fn with_models(mut self, models: Vec<PathBuf>) -> Self {
        self.models = models;
        self
    }

    /// Input elements per image.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
}

/// Builds engines in place of `build_engine` (tests with scripted engines, embedders
/// with engines of their own).
pub type CustomEngineBuilder =
    Arc<dyn Fn(&EngineSpec) -> Result<Box<dyn Engine>, EngineError> + Send + Sync>;

/// What engines of one platform share.
#[derive(Clone)]
pub struct EngineContext {
    /// Contention coupling of the simulated units.
    pub hub: Arc<ContentionHub>,
    /// When set, every engine is built by this instead of from its kind.
    pub custom: Option<CustomEngineBuilder>,
}

impl std::fmt::Debug for EngineContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineContext")
            .field("hub", &self.hub)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

/// Creates an engine instance.
pub fn build_engine(
    spec: &EngineSpec,
    context: &EngineContext,
) -> Result<Box<dyn Engine>, EngineError> {
    if let Some(custom) = &context.custom {
        return custom(spec);
    }
    match &spec.engine {
        EngineSettings::Null => Ok(Box::new(NullEngine::new(
            spec.max_batch,
            spec.input_len(),
            spec.output_len,
        ))),
        EngineSettings::Sim(sim) => {
            let profile = spec.profile.clone().ok_or_else(|| {
                EngineError::Load("the sim engine needs a profile for its unit".into())
            })?;
            Ok(Box::new(SimEngine::new(
                SimSettings {
                    unit: spec.unit,
                    kind: spec.unit_kind,
                    device: spec.device,
                    max_batch: spec.max_batch,
                    input_len: spec.input_len(),
                    output_len: spec.output_len,
                    jitter: sim.jitter,
                    seed: spec
                        .seed
                        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        .wrapping_add((spec.unit as u64) << 16 | u64::from(spec.stream)),
                    faults: sim.faults.clone(),
                },
                profile,
                context.hub.clone(),
            )))
        }
        EngineSettings::Torch(_) => build_torch(spec),
        EngineSettings::Onnx(_) => crate::onnx::build(spec),
    }
}

#[cfg(feature = "torch")]
fn build_torch(spec: &EngineSpec) -> Result<Box<dyn Engine>, EngineError> {
    crate::torch::build(spec)
}

#[cfg(not(feature = "torch"))]
fn build_torch(_spec: &EngineSpec) -> Result<Box<dyn Engine>, EngineError> {
    Err(EngineError::NotBuilt("torch"))
}
