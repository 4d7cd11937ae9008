//! mica-engines: the `Engine` trait and its implementations.
//!
//! `sim` emulates a unit from its profile (contention included), `null` does nothing
//! (scheduler overhead), `torch` runs TorchScript through libtorch (feature `torch`),
//! `onnx` runs ONNX models through ONNX Runtime loaded at run time (CPU, CUDA, TensorRT,
//! DLA).
//! An engine never knows a policy.

pub mod batch_sizes;
pub mod contention_hub;
pub mod engine;
pub mod factory;
pub mod faults;
pub mod null;
pub mod onnx;
pub mod settings;
pub mod sim;
#[cfg(feature = "torch")]
pub mod torch;

pub use contention_hub::ContentionHub;
pub use engine::{
    check_input, Activation, BatchInput, BatchOutput, DeviceActivation, Engine, EngineError,
    EngineInfo,
};
pub use factory::{build_engine, CustomEngineBuilder, EngineContext, EngineKind, EngineSpec};
pub use faults::{FaultInjector, FaultPlan};
pub use null::NullEngine;
pub use settings::{
    EngineSettings, OnnxEngineConfig, OnnxProvider, SettingsError, SimEngineConfig,
    TorchEngineConfig, UnitFacts,
};
