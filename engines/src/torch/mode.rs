//! How each unit kind runs a model: device, numeric type of weights and input,
//! autocast, TF32. Pure decisions, tested without a device.
//!
//! | unit kind     | device   | weights / input       | notes                                  |
//! |---------------|----------|-----------------------|----------------------------------------|
//! | `cpu`         | host     | FP32                  |                                        |
//! | `cuda_fp32`   | `cuda:i` | FP32                  | TF32 off (process-wide, see `cuda.rs`) |
//! | `cuda_tf32`   | `cuda:i` | FP32                  | TF32 on (process-wide)                 |
//! | `tensor_fp16` | `cuda:i` | FP16                  | channels-last when the model is the FP16 wrapper of `scripts/export_model.py` |
//! | `tensor_bf16` | `cuda:i` | BF16                  | same, BF16 wrapper                     |
//! | `amp`         | `cuda:i` | FP32 weights, autocast| FP16 where autocast deems it safe      |
//! | `dla`         | —        | —                     | not a torch unit (TensorRT engine)     |

use mica_core::UnitKind;
use tch::{Device, Kind};

use crate::engine::EngineError;

/// The way one engine instance runs its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunMode {
    /// Where weights, input and activations live.
    pub device: Device,
    /// The numeric type the model computes in (weights and input).
    pub compute: Kind,
    /// Whether `forward` runs under CUDA autocast.
    pub autocast: bool,
    /// The process-wide TF32 setting this unit needs, if it needs one.
    pub tf32: Option<bool>,
}

impl RunMode {
    /// The mode of a unit of `kind` on GPU `device` (`None` means GPU 0 for GPU kinds;
    /// ignored for the CPU).
    pub(crate) fn for_unit(kind: UnitKind, device: Option<u32>) -> Result<Self, EngineError> {
        let gpu = || -> Result<Device, EngineError> {
            let index = device.unwrap_or(0);
            usize::try_from(index)
                .map(Device::Cuda)
                .map_err(|_| EngineError::Load(format!("GPU index {index} is out of range")))
        };
        let mode = match kind {
            UnitKind::Cpu => Self {
                device: Device::Cpu,
                compute: Kind::Float,
                autocast: false,
                tf32: None,
            },
            UnitKind::CudaFp32 => Self {
                device: gpu()?,
                compute: Kind::Float,
                autocast: false,
                tf32: Some(false),
            },
            UnitKind::CudaTf32 => Self {
                device: gpu()?,
                compute: Kind::Float,
                autocast: false,
                tf32: Some(true),
            },
            UnitKind::TensorFp16 => Self {
                device: gpu()?,
                compute: Kind::Half,
                autocast: false,
                tf32: None,
            },
            UnitKind::TensorBf16 => Self {
                device: gpu()?,
                compute: Kind::BFloat16,
                autocast: false,
                tf32: None,
            },
            UnitKind::Amp => Self {
                device: gpu()?,
                compute: Kind::Float,
                autocast: true,
                tf32: None,
            },
            UnitKind::Dla => {
                return Err(EngineError::Load(
                    "dla units cannot run on the torch engine (libtorch has no DLA backend); \
                     use the tensorrt engine"
                        .into(),
                ))
            }
        };
        Ok(mode)
    }

    /// Whether the unit runs on a GPU.
    pub(crate) fn is_cuda(&self) -> bool {
        self.device.is_cuda()
    }

    /// The GPU index, for CUDA units.
    pub(crate) fn cuda_index(&self) -> Option<usize> {
        match self.device {
            Device::Cuda(index) => Some(index),
            _ => None,
        }
    }
}

/// What to do with a loaded model whose weights are of type `weights` on a unit that
/// computes in `compute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightPlan {
    /// The weights already have the unit's type: run the model as it is.
    AsIs,
    /// Convert an FP32 model's weights to the unit's reduced type at load (NCHW layout:
    /// correct, but slower than the channels-last wrapper models).
    Convert,
}

/// Decides how a model's weights fit a unit; an error names what to export instead.
pub(crate) fn weight_plan(
    unit: UnitKind,
    compute: Kind,
    weights: Option<Kind>,
) -> Result<WeightPlan, EngineError> {
    let Some(weights) = weights else {
        // No floating-point parameters at all: nothing to convert.
        return Ok(WeightPlan::AsIs);
    };
    if weights == compute {
        return Ok(WeightPlan::AsIs);
    }
    if weights == Kind::Float && matches!(compute, Kind::Half | Kind::BFloat16) {
        return Ok(WeightPlan::Convert);
    }
    Err(EngineError::Load(format!(
        "a {unit} unit computes in {compute:?} but the model's weights are {weights:?}; \
         give {unit} units the {} model from scripts/export_model.py",
        match compute {
            Kind::Half => "FP16 (resnet50_fp16.pt)",
            Kind::BFloat16 => "BF16 (resnet50_bf16.pt)",
            _ => "FP32 (resnet50_fp32.pt)",
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_torch_kind_has_a_mode() {
        for kind in UnitKind::ALL {
            let mode = RunMode::for_unit(kind, Some(1));
            match kind {
                UnitKind::Dla => assert!(matches!(mode, Err(EngineError::Load(_)))),
                UnitKind::Cpu => assert_eq!(mode.as_ref().map(|m| m.device), Ok(Device::Cpu)),
                _ => assert_eq!(mode.as_ref().map(|m| m.device), Ok(Device::Cuda(1))),
            }
        }
    }

    #[test]
    fn precision_follows_the_unit_kind() {
        let mode = |kind| RunMode::for_unit(kind, None).expect("a torch unit kind");
        assert_eq!(mode(UnitKind::CudaFp32).tf32, Some(false));
        assert_eq!(mode(UnitKind::CudaTf32).tf32, Some(true));
        assert_eq!(mode(UnitKind::TensorFp16).compute, Kind::Half);
        assert_eq!(mode(UnitKind::TensorBf16).compute, Kind::BFloat16);
        assert!(mode(UnitKind::Amp).autocast);
        assert_eq!(mode(UnitKind::Amp).compute, Kind::Float);
        assert_eq!(mode(UnitKind::TensorFp16).device, Device::Cuda(0));
        assert_eq!(mode(UnitKind::Cpu).cuda_index(), None);
    }

    #[test]
    fn weights_are_converted_only_from_fp32_down() {
        let fp16 = UnitKind::TensorFp16;
        assert_eq!(
            weight_plan(fp16, Kind::Half, Some(Kind::Half)),
            Ok(WeightPlan::AsIs)
        );
        assert_eq!(
            weight_plan(fp16, Kind::Half, Some(Kind::Float)),
            Ok(WeightPlan::Convert)
        );
        assert_eq!(
            weight_plan(UnitKind::Cpu, Kind::Float, None),
            Ok(WeightPlan::AsIs)
        );
        let err = weight_plan(UnitKind::CudaFp32, Kind::Float, Some(Kind::Half));
        assert!(
            matches!(&err, Err(EngineError::Load(m)) if m.contains("resnet50_fp32.pt")),
            "{err:?}"
        );
        let err = weight_plan(fp16, Kind::Half, Some(Kind::BFloat16));
        assert!(
            matches!(&err, Err(EngineError::Load(m)) if m.contains("resnet50_fp16.pt")),
            "{err:?}"
        );
    }
}
