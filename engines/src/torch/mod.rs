//! The `torch` engine (feature `torch`): TorchScript models and AOTInductor packages
//! through libtorch 2.11.0 (tch 0.24) on the CPU and on CUDA devices, in each unit
//! kind's precision, optionally replayed from CUDA graphs.
//!
//! - `engine.rs`: [`TorchEngine`], loading, warm-up, graph capture, batches.
//! - `model.rs`: the model formats (TorchScript, `.pt2` packages) behind one `Model`.
//! - `graphs.rs`: one instance's captured CUDA graphs and their static buffers.
//! - `mode.rs`: what each unit kind means for device, precision and autocast.
//! - `cuda.rs`: process-wide CUDA state (libtorch_cuda loading, the CUDA graph library,
//!   TF32, cuDNN autotuning).
//! - `ffi.rs`: every `unsafe` (libtorch_cuda's stream functions, the TF32 and package
//!   shim, the CUDA graph library, the staging-buffer copy); `shim.cpp` and
//!   `cuda_graph_shim.cpp` are the C++ side, built by `build.rs`.
//!
//! Building needs `LIBTORCH` (see `scripts/fetch-libtorch.sh`); running needs libtorch's
//! `lib/` folder in `LD_LIBRARY_PATH`.

mod cuda;
mod engine;
mod ffi;
mod graphs;
mod mode;
mod model;

pub use engine::TorchEngine;

use crate::engine::{Engine, EngineError};
use crate::factory::EngineSpec;

/// Creates a torch engine instance for `spec` (called by `build_engine`).
pub fn build(spec: &EngineSpec) -> Result<Box<dyn Engine>, EngineError> {
    Ok(Box::new(TorchEngine::load(spec)?))
}

/// Loads libtorch_cuda.so now. Call it once at start-up, before building any engine,
/// when a CUDA unit is configured: libtorch decides once whether it has CUDA, at its
/// first CUDA query, and a CPU unit running first could make that query too early.
pub fn load_cuda() -> Result<(), EngineError> {
    cuda::load().map(|_| ())
}
