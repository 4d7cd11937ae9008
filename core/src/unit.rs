//! Compute units: their ids, kinds and numeric precisions.
//!
//! A unit is one place a batch can run: the CPU, the CUDA cores of GPU 0 in FP32, the
//! Tensor Cores of GPU 0 in FP16, DLA core 1, and so on. Its id is the name it has in the
//! config file (`cpu`, `gpu0.fp16`, `dla0`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The name of a unit, as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnitId(Arc<str>);

impl UnitId {
    /// Makes an id from its config name.
    pub fn new(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The config name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for UnitId {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// What kind of hardware (and numeric mode) a unit runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// The host CPU, FP32.
    Cpu,
    /// GPU CUDA cores in FP32, TF32 off.
    CudaFp32,
    /// GPU in FP32 with TF32 allowed on Tensor Cores.
    CudaTf32,
    /// GPU Tensor Cores, FP16 weights and activations (channels-last).
    TensorFp16,
    /// GPU Tensor Cores, BF16 weights and activations.
    TensorBf16,
    /// Automatic mixed precision (autocast): CUDA cores and Tensor Cores in one instance.
    Amp,
    /// A deep-learning accelerator core (Jetson DLA); the core number is in the unit config.
    Dla,
}

impl UnitKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [UnitKind; 7] = [
        UnitKind::Cpu,
        UnitKind::CudaFp32,
        UnitKind::CudaTf32,
        UnitKind::TensorFp16,
        UnitKind::TensorBf16,
        UnitKind::Amp,
        UnitKind::Dla,
    ];

    /// The config spelling (`cuda_fp32`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Cpu => "cpu",
            UnitKind::CudaFp32 => "cuda_fp32",
            UnitKind::CudaTf32 => "cuda_tf32",
            UnitKind::TensorFp16 => "tensor_fp16",
            UnitKind::TensorBf16 => "tensor_bf16",
            UnitKind::Amp => "amp",
            UnitKind::Dla => "dla",
        }
    }

    /// Whether the unit runs on a GPU's streaming multiprocessors (and so shares them
    /// with the other GPU units of the same device).
    pub fn uses_gpu_sms(self) -> bool {
        matches!(
            self,
            UnitKind::CudaFp32
                | UnitKind::CudaTf32
                | UnitKind::TensorFp16
                | UnitKind::TensorBf16
                | UnitKind::Amp
        )
    }

    /// The numeric precision the unit computes in.
    pub fn precision(self) -> Precision {
        match self {
            UnitKind::Cpu | UnitKind::CudaFp32 => Precision::Fp32,
            UnitKind::CudaTf32 => Precision::Tf32,
            UnitKind::TensorFp16 | UnitKind::Dla => Precision::Fp16,
            UnitKind::TensorBf16 => Precision::Bf16,
            UnitKind::Amp => Precision::Mixed,
        }
    }
}

impl fmt::Display for UnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Numeric precision of a unit's arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// IEEE single precision.
    Fp32,
    /// FP32 storage, TF32 matrix products.
    Tf32,
    /// IEEE half precision.
    Fp16,
    /// bfloat16.
    Bf16,
    /// 8-bit integer (TensorRT engines).
    Int8,
    /// Autocast: FP16 where safe, FP32 elsewhere.
    Mixed,
}

impl Precision {
    /// The spelling used in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
            Precision::Mixed => "mixed",
        }
    }
}
