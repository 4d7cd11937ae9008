//! The `onnx` engine: ONNX models through ONNX Runtime, loaded at run time by the `ort`
//! crate (`load-dynamic`), on the CPU, CUDA and TensorRT execution providers — the
//! TensorRT one also reaching an Orin's DLA cores.
//!
//! - `runtime.rs`: finding and loading the library, once per process, its version.
//! - `providers.rs`: what each unit kind registers (provider options, DLA, caches).
//! - `engine.rs`: [`OnnxEngine`], sessions per model, batches, padding, warm-up.
//! - `cuda.rs`: a GPU session's own CUDA stream and pinned staging buffer (cudarc).
//! - `ffi.rs`: the `unsafe` it needs (the library's version string).
//!
//! No cargo feature: nothing is linked at build time, so every build has the engine,
//! and a host without ONNX Runtime fails at load, naming what it tried.

mod cuda;
mod engine;
mod ffi;
mod providers;
mod runtime;

pub use engine::OnnxEngine;
pub use providers::ProviderPlan;
pub use runtime::{loaded as loaded_runtime, Runtime, MIN_MINOR_VERSION};

use crate::engine::{Engine, EngineError};
use crate::factory::EngineSpec;

/// Creates an onnx engine instance for `spec` (called by `build_engine`).
pub fn build(spec: &EngineSpec) -> Result<Box<dyn Engine>, EngineError> {
    Ok(Box::new(OnnxEngine::load(spec)?))
}
