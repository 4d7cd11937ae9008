//! What each unit kind asks of ONNX Runtime: the execution providers registered on its
//! session, in order, each with `error_on_failure` (a provider that cannot register is
//! the unit's load error, never a silent fall back to the CPU).
//!
//! - `cpu` → CPU provider.
//! - `cuda_fp32` / `cuda_tf32` → CUDA provider, `use_tf32` off / on, on the session's
//!   own CUDA stream.
//! - `tensor_fp16` → TensorRT with FP16 (then CUDA for the nodes TensorRT declines), or
//!   CUDA alone on an FP16 model.
//! - `amp` → TensorRT with FP16 enabled: TensorRT picks FP16 or FP32 per layer, the
//!   nearest ONNX Runtime has to autocast.
//! - `dla` core N → TensorRT with `trt_dla_enable`, `trt_dla_core = N`, FP16 (or INT8
//!   with a calibration table). Layers the DLA cannot run fall back to the GPU inside
//!   TensorRT (ONNX Runtime builds DLA engines with GPU fallback allowed), and nodes
//!   TensorRT declines run on the CUDA provider: both are GPU load, which the contention
//!   model counts as the DLA profile's `gpu_fallback` share.
//!
//! TensorRT engines are cached in the unit's own `engine_cache` folder with a timing
//! cache beside them; a dynamic-batch model gets one optimization profile from batch 1
//! to the unit's `max_batch` (optimal at `max_batch`). DLA engines need static shapes:
//! a DLA unit's model must have a fixed batch. Not run on hardware: TensorRT and the
//! DLAs are configured and validated here, never executed (no TensorRT on our hosts).

use std::path::PathBuf;

use mica_core::UnitKind;
use ort::ep::{self, ExecutionProviderDispatch};

use crate::settings::{OnnxEngineConfig, OnnxProvider};

/// The execution-provider choices for one session, before any library is touched.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderPlan {
    /// The provider the unit runs on.
    pub provider: OnnxProvider,
    /// GPU index (CUDA and TensorRT).
    pub device: Option<u32>,
    /// CUDA provider: TF32 allowed.
    pub tf32: bool,
    /// TensorRT: FP16 kernels allowed.
    pub fp16: bool,
    /// TensorRT: the DLA core, when the unit is a DLA.
    pub dla_core: Option<u8>,
    /// TensorRT: INT8 with this calibration table.
    pub int8_table: Option<PathBuf>,
    /// TensorRT: the unit's engine cache folder.
    pub engine_cache: Option<PathBuf>,
    /// TensorRT: builder workspace limit in bytes.
    pub workspace_bytes: Option<usize>,
    /// TensorRT: the optimization profile for a dynamic batch, as ONNX Runtime's
    /// `name:NxCxHxW` strings (min, opt, max).
    pub profile_shapes: Option<(String, String, String)>,
}

impl ProviderPlan {
    /// The plan for a unit of `kind` on GPU `device` (DLA core `dla_core`) running
    /// `settings`.
    pub fn new(
        settings: &OnnxEngineConfig,
        kind: UnitKind,
        device: Option<u32>,
        dla_core: Option<u8>,
    ) -> Self {
        let tensorrt = settings.provider == OnnxProvider::Tensorrt;
        Self {
            provider: settings.provider,
            device: (settings.provider != OnnxProvider::Cpu).then(|| device.unwrap_or(0)),
            tf32: kind == UnitKind::CudaTf32,
            fp16: tensorrt && matches!(kind, UnitKind::TensorFp16 | UnitKind::Amp | UnitKind::Dla),
            dla_core: if kind == UnitKind::Dla {
                dla_core
            } else {
                None
            },
            int8_table: settings.int8_calibration_table.clone(),
            engine_cache: settings.engine_cache.clone().filter(|_| tensorrt),
            workspace_bytes: settings
                .workspace_mib
                .map(|mib| (mib as usize).saturating_mul(1 << 20)),
            profile_shapes: None,
        }
    }

    /// Adds the TensorRT optimization profile of a dynamic-batch model whose input
    /// `input` has per-image dims `image`, for batches 1 to `max_batch`.
    pub fn with_batch_profile(mut self, input: &str, image: &[i64], max_batch: u32) -> Self {
        if self.provider == OnnxProvider::Tensorrt {
            let shape = |batch: u32| {
                let dims: Vec<String> = std::iter::once(batch.to_string())
                    .chain(image.iter().map(i64::to_string))
                    .collect();
                format!("{input}:{}", dims.join("x"))
            };
            self.profile_shapes = Some((shape(1), shape(max_batch), shape(max_batch)));
        }
        self
    }

    /// The name ONNX Runtime gives the provider, for messages.
    pub fn ort_name(&self) -> &'static str {
        match self.provider {
            OnnxProvider::Cpu => "CPUExecutionProvider",
            OnnxProvider::Cuda => "CUDAExecutionProvider",
            OnnxProvider::Tensorrt => "TensorrtExecutionProvider",
        }
    }

    /// The providers to register, in order. `stream` is the CUDA stream the GPU
    /// providers compute on (a `CUstream`), when the session has its own.
    pub fn dispatches(&self, stream: Option<*mut ()>) -> Vec<ExecutionProviderDispatch> {
        let device = self.device.map_or(0, |d| d as i32);
        let cuda = || {
            let mut cuda = ep::CUDA::default()
                .with_device_id(device)
                .with_tf32(self.tf32);
            if let Some(stream) = stream {
                // SAFETY: the stream is owned by the engine that owns this session and is
                // dropped after it (see `OnnxEngine`'s field order).
                cuda = unsafe { cuda.with_compute_stream(stream) };
            }
            cuda.build().error_on_failure()
        };
        match self.provider {
            // `ort`'s CPU provider disables ONNX Runtime's memory arena unless told
            // otherwise; ONNX Runtime's own default (and its Python API's) keeps it, and
            // without it ResNet-50 at batch 8 ran 15 % slower (bench/results/onnx-cpu-*).
            OnnxProvider::Cpu => vec![ep::CPU::default()
                .with_arena_allocator(true)
                .build()
                .error_on_failure()],
            OnnxProvider::Cuda => vec![cuda()],
            OnnxProvider::Tensorrt => {
                let mut trt = ep::TensorRT::default()
                    .with_device_id(device)
                    .with_fp16(self.fp16);
                if let Some(core) = self.dla_core {
                    trt = trt.with_dla(true).with_dla_core(u32::from(core));
                }
                if let Some(table) = &self.int8_table {
                    trt = trt
                        .with_int8(true)
                        .with_int8_calibration_table_name(table.display())
                        .with_int8_use_native_calibration_table(true);
                }
                if let Some(cache) = &self.engine_cache {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(cache.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(cache.display());
                }
                if let Some(bytes) = self.workspace_bytes {
                    trt = trt.with_max_workspace_size(bytes);
                }
                if let Some((min, opt, max)) = &self.profile_shapes {
                    trt = trt
                        .with_profile_min_shapes(min)
                        .with_profile_opt_shapes(opt)
                        .with_profile_max_shapes(max);
                }
                if let Some(stream) = stream {
                    // SAFETY: as for the CUDA provider above.
                    trt = unsafe { trt.with_compute_stream(stream) };
                }
                // CUDA behind TensorRT, for the nodes TensorRT declines.
                vec![trt.build().error_on_failure(), cuda()]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: OnnxProvider) -> OnnxEngineConfig {
        let mut settings = OnnxEngineConfig::new("m.onnx", provider);
        if provider == OnnxProvider::Tensorrt {
            settings.engine_cache = Some("/var/cache/mica/unit".into());
        }
        settings
    }

    #[test]
    fn tf32_follows_the_cuda_unit_kind() {
        let fp32 = ProviderPlan::new(
            &settings(OnnxProvider::Cuda),
            UnitKind::CudaFp32,
            None,
            None,
        );
        let tf32 = ProviderPlan::new(
            &settings(OnnxProvider::Cuda),
            UnitKind::CudaTf32,
            Some(1),
            None,
        );
        assert!(!fp32.tf32 && tf32.tf32);
        assert_eq!((fp32.device, tf32.device), (Some(0), Some(1)));
        assert!(!fp32.fp16);
        assert_eq!(fp32.dispatches(None).len(), 1);
    }

    #[test]
    fn a_dla_unit_runs_fp16_tensorrt_on_its_core_with_cuda_behind() {
        let plan = ProviderPlan::new(
            &settings(OnnxProvider::Tensorrt),
            UnitKind::Dla,
            Some(0),
            Some(1),
        );
        assert_eq!(plan.dla_core, Some(1));
        assert!(plan.fp16);
        assert_eq!(
            plan.engine_cache.as_deref(),
            Some(std::path::Path::new("/var/cache/mica/unit"))
        );
        assert_eq!(plan.dispatches(None).len(), 2);
    }

    #[test]
    fn only_dla_units_enable_the_dla() {
        let plan = ProviderPlan::new(
            &settings(OnnxProvider::Tensorrt),
            UnitKind::TensorFp16,
            Some(0),
            Some(1),
        );
        assert_eq!(plan.dla_core, None);
    }

    #[test]
    fn the_batch_profile_spans_one_to_max_batch() {
        let plan = ProviderPlan::new(&settings(OnnxProvider::Tensorrt), UnitKind::Amp, None, None)
            .with_batch_profile("input", &[3, 224, 224], 64);
        let (min, opt, max) = plan.profile_shapes.unwrap();
        assert_eq!(min, "input:1x3x224x224");
        assert_eq!(opt, "input:64x3x224x224");
        assert_eq!(max, opt);
        let cpu = ProviderPlan::new(&settings(OnnxProvider::Cpu), UnitKind::Cpu, None, None)
            .with_batch_profile("input", &[3, 224, 224], 64);
        assert_eq!(cpu.profile_shapes, None);
        assert_eq!(cpu.device, None);
    }
}
