//! A GPU session's own CUDA stream and its pinned input buffer, through `cudarc` with
//! `libcuda` loaded at run time (so the engine builds, and its CPU units run, on hosts
//! without CUDA). Run on an H200 with ONNX Runtime 1.31.1's GPU build
//! (bench/results/onnx-h200-2026-12-02.md); not yet on a Jetson.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream, PinnedHostSlice};

/// One stream on one GPU, owned by one session (its providers' compute stream).
#[derive(Debug)]
pub struct SessionStream {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl SessionStream {
    /// A new stream on GPU `device` (its primary context).
    pub fn new(device: u32) -> Result<Self, String> {
        // SAFETY: only tries to load libcuda and unloads it again.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("the CUDA driver library (libcuda.so) is not on this host".into());
        }
        let context =
            CudaContext::new(device as usize).map_err(|e| format!("CUDA device {device}: {e}"))?;
        let stream = context
            .new_stream()
            .map_err(|e| format!("a CUDA stream on device {device}: {e}"))?;
        Ok(Self { context, stream })
    }

    /// The raw `CUstream`, for ONNX Runtime's `user_compute_stream`.
    pub fn raw(&self) -> *mut () {
        self.stream.cu_stream().cast()
    }

    /// A zeroed page-locked host buffer of `len` FP32 values (written by the CPU, read
    /// by the GPU's copy engine: write-combined).
    pub fn pinned(&self, len: usize) -> Result<PinnedHostSlice<f32>, String> {
        // SAFETY: the memory is uninitialised until the fill below, and nothing reads it
        // before that.
        let mut buffer = unsafe { self.context.alloc_pinned::<f32>(len) }
            .map_err(|e| format!("{len} pinned FP32 values: {e}"))?;
        buffer
            .as_mut_slice()
            .map_err(|e| format!("pinned buffer: {e}"))?
            .fill(0.0);
        Ok(buffer)
    }

    /// Waits for everything queued on the stream.
    pub fn synchronize(&self) -> Result<(), String> {
        self.stream
            .synchronize()
            .map_err(|e| format!("CUDA stream synchronize: {e}"))
    }
}
