//! A unit's engine settings as written in the config: `engine = { type = "...", ... }`.
//!
//! Engines are chosen like policies: a serde enum tagged `type` whose variants carry
//! each engine's own settings, each validating itself against the unit it runs and
//! owning the layout of its model files (a whole network, a pipeline stage's blocks).

mod engine_settings;
mod onnx;
mod sim;
mod torch;

pub use engine_settings::{EngineSettings, SettingsError, UnitFacts};
pub use onnx::{OnnxEngineConfig, OnnxProvider, MAX_INTRA_THREADS};
pub use sim::SimEngineConfig;
pub use torch::TorchEngineConfig;
