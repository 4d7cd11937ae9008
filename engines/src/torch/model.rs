//! The two model formats of the torch engine behind one [`Model`]:
//!
//! - **TorchScript** (`.pt`, anything not `.pt2`): `torch.jit` modules through tch's
//!   `CModule`, their weights fitted to the unit at load (`mode::weight_plan`).
//! - **AOTInductor packages** (`.pt2`, from `torch._inductor.aoti_compile_and_package`):
//!   ahead-of-time compiled by Inductor for one device type, loaded through libtorch's
//!   `torch::inductor::AOTIModelPackageLoader` (the C++ shim, `ffi::AotiPackage`). A
//!   package's precision and layout are fixed when it is compiled; mica reads what
//!   `scripts/export_model.py` records in the package's metadata and refuses a package
//!   built for another device or precision than the unit's. Nothing falls back: a package
//!   that does not load is a load error naming the file.

use std::path::Path;

use mica_core::UnitKind;
use tch::{CModule, Kind, Tensor};
use tracing::{debug, info, warn};

use super::ffi::{AotiPackage, CudaStream};
use super::mode::{weight_plan, RunMode, WeightPlan};
use crate::batch_sizes::is_package;
use crate::engine::EngineError;

/// Metadata keys `scripts/export_model.py` writes into the packages it compiles.
pub(crate) const META_INPUT_DTYPE: &str = "mica_input_dtype";
/// The precision the package computes in (`float32`, `float16`, `bfloat16`, `amp`).
pub(crate) const META_COMPUTE: &str = "mica_compute";
/// The batch size the package was compiled for, or `dynamic` (with `mica_max_batch`).
pub(crate) const META_BATCH: &str = "mica_batch";
/// The largest batch of a package with a dynamic batch dimension.
pub(crate) const META_MAX_BATCH: &str = "mica_max_batch";
/// The memory layout its input must have: `contiguous` (the default when absent) or
/// `channels_last` (an image batch `[N, C, H, W]` stored as `[N, H, W, C]`).
pub(crate) const META_INPUT_LAYOUT: &str = "mica_input_layout";
/// libtorch's own key: the device type the package was compiled for.
const META_DEVICE: &str = "AOTI_DEVICE_KEY";

/// A loaded model.
pub(crate) enum Model {
    /// A TorchScript module.
    Script(CModule),
    /// An AOTInductor package.
    Package(Package),
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Script(_) => f.write_str("Script"),
            Self::Package(p) => f.debug_tuple("Package").field(p).finish(),
        }
    }
}

/// An AOTInductor package and what its metadata says about its input.
#[derive(Debug)]
pub(crate) struct Package {
    package: AotiPackage,
    /// The element type and layout its input must have.
    input: InputForm,
    /// The batch size it was compiled for (`None`: a dynamic batch dimension).
    batch: Option<u32>,
    /// The largest batch of a dynamic package, when recorded.
    max_batch: Option<u32>,
}

/// The element type and memory layout a package takes its input in. A package compiled
/// for an input already in its compute precision and channels-last layout (what
/// `export_model.py --aoti ...:cl` writes) skips the conversion a package taking
/// FP32 does as its first kernel; mica converts a request's FP32 data to it on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InputForm {
    pub(crate) kind: Kind,
    pub(crate) channels_last: bool,
}

impl InputForm {
    /// Whether `input` already has this form.
    fn holds(self, input: &Tensor) -> bool {
        input.kind() == self.kind
            && if self.channels_last {
                is_channels_last(input)
            } else {
                input.is_contiguous()
            }
    }

    /// `input` (any floating kind and layout, on its device) in this form: one copy
    /// kernel, which converts the element type and the layout together.
    pub(crate) fn convert(self, input: &Tensor) -> Result<Tensor, String> {
        if !self.channels_last {
            return input
                .f_to_kind(self.kind)
                .and_then(|t| t.f_contiguous())
                .map_err(|e| e.to_string());
        }
        let [n, c, h, w] = input.size()[..] else {
            return Err(format!(
                "the package takes a channels-last image batch [N, C, H, W], but its input \
                 has shape {:?}",
                input.size()
            ));
        };
        // Storage in [N, H, W, C] order, viewed as [N, C, H, W]: channels-last strides.
        let mut view = Tensor::f_empty([n, h, w, c], (self.kind, input.device()))
            .and_then(|nhwc| nhwc.f_permute([0, 3, 1, 2]))
            .map_err(|e| e.to_string())?;
        view.f_copy_(input).map_err(|e| e.to_string())?;
        Ok(view)
    }
}

/// Whether `t` is a 4-D tensor with channels-last strides (PyTorch's
/// `torch.channels_last`: `[N, C, H, W]` stored as `[N, H, W, C]`).
pub(crate) fn is_channels_last(t: &Tensor) -> bool {
    let [_, c, h, w] = t.size()[..] else {
        return false;
    };
    t.stride() == [h * w * c, 1, w * c, c]
}

impl Model {
    /// Loads the model file at `path` for a unit of kind `unit` running in `mode`: an
    /// AOTInductor package when the name ends in `.pt2`, TorchScript otherwise.
    pub(crate) fn load(path: &Path, unit: UnitKind, mode: &RunMode) -> Result<Self, EngineError> {
        if is_package(path) {
            load_package(path, unit, mode).map(Self::Package)
        } else {
            load_script(path, unit, mode).map(Self::Script)
        }
    }

    /// The batch size a fixed-batch package must run at.
    pub(crate) fn fixed_batch(&self) -> Option<u32> {
        match self {
            Self::Script(_) => None,
            Self::Package(p) => p.batch,
        }
    }

    /// The input form a package needs (`None` for TorchScript, which takes FP32 and
    /// converts inside its own graph or on entry).
    pub(crate) fn package_input(&self) -> Option<InputForm> {
        match self {
            Self::Script(_) => None,
            Self::Package(p) => Some(p.input),
        }
    }

    /// The largest batch a dynamic package was compiled for, when it says.
    pub(crate) fn max_batch(&self) -> Option<u32> {
        match self {
            Self::Script(_) => None,
            Self::Package(p) => p.batch.or(p.max_batch),
        }
    }

    /// Runs the model on `input` (on the unit's device, any floating kind), queued on
    /// the current stream (`stream`, for packages: the same one, passed explicitly).
    pub(crate) fn forward(
        &self,
        input: &Tensor,
        mode: &RunMode,
        stream: Option<&CudaStream>,
    ) -> Result<Tensor, String> {
        match self {
            Self::Script(module) => {
                let converted;
                let input = if input.kind() == mode.compute {
                    input
                } else {
                    converted = input.f_to_kind(mode.compute).map_err(|e| e.to_string())?;
                    &converted
                };
                let output = if mode.autocast {
                    tch::autocast(true, || module.forward_ts(&[input]))
                } else {
                    module.forward_ts(&[input])
                };
                output.map_err(|e| e.to_string())
            }
            Self::Package(p) => {
                let converted;
                let input = if p.input.holds(input) {
                    input
                } else {
                    converted = p.input.convert(input)?;
                    &converted
                };
                p.package.run(input, stream)
            }
        }
    }
}

/// Loads a TorchScript file onto the unit's device and fits its weights to the unit.
fn load_script(path: &Path, unit: UnitKind, mode: &RunMode) -> Result<CModule, EngineError> {
    let mut module = CModule::load_on_device(path, mode.device).map_err(|e| {
        EngineError::Load(format!(
            "cannot load TorchScript model {}: {e}",
            path.display()
        ))
    })?;
    module
        .f_set_eval()
        .map_err(|e| EngineError::Load(format!("cannot set {} to eval: {e}", path.display())))?;
    let parameters = module.named_parameters().map_err(|e| {
        EngineError::Load(format!(
            "cannot list the parameters of {}: {e}",
            path.display()
        ))
    })?;
    let weights = parameters
        .iter()
        .filter_map(|(_, p)| p.f_kind().ok())
        .find(|k| matches!(k, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double));
    match weight_plan(unit, mode.compute, weights)? {
        WeightPlan::AsIs => {}
        WeightPlan::Convert => {
            warn!(
                model = %path.display(),
                unit_kind = %unit,
                "converting FP32 weights at load (NCHW); the channels-last wrapper models of \
                 scripts/export_model.py are faster"
            );
            module.to(mode.device, mode.compute, false);
        }
    }
    debug!(model = %path.display(), parameters = parameters.len(), "model loaded");
    Ok(module)
}

/// Loads an AOTInductor package and checks its metadata against the unit.
fn load_package(path: &Path, unit: UnitKind, mode: &RunMode) -> Result<Package, EngineError> {
    let fail = |what: String| {
        EngineError::Load(format!(
            "cannot load AOTInductor package {}: {what}",
            path.display()
        ))
    };
    let device = match mode.cuda_index() {
        Some(index) => Some(i32::try_from(index).map_err(|_| fail("GPU index too large".into()))?),
        None => None,
    };
    let started = std::time::Instant::now();
    let package = AotiPackage::load(path, device).map_err(fail)?;
    let load_s = started.elapsed().as_secs_f64();
    let meta = |key: &str| package.metadata(key).map_err(&fail);
    let built_for = meta(META_DEVICE)?.unwrap_or_default();
    let wanted = if mode.is_cuda() { "cuda" } else { "cpu" };
    if built_for != wanted {
        return Err(fail(format!(
            "it was compiled for device type `{built_for}`, but this {unit} unit runs on \
             `{wanted}`; export a package for this device (scripts/export_model.py --aoti)"
        )));
    }
    let kind = match meta(META_INPUT_DTYPE)?.as_deref() {
        Some(name) => kind_named(name).ok_or_else(|| {
            fail(format!(
                "its metadata gives the unknown input dtype `{name}` ({META_INPUT_DTYPE})"
            ))
        })?,
        None => {
            warn!(
                model = %path.display(),
                "the package records no {META_INPUT_DTYPE}; feeding it float32 (the \
                 packages of scripts/export_model.py record theirs)"
            );
            Kind::Float
        }
    };
    let channels_last = match meta(META_INPUT_LAYOUT)?.as_deref() {
        None | Some("contiguous") => false,
        Some("channels_last") => true,
        Some(other) => {
            return Err(fail(format!(
                "its metadata gives the unknown input layout `{other}` ({META_INPUT_LAYOUT}; \
                 expected contiguous or channels_last)"
            )))
        }
    };
    let input = InputForm {
        kind,
        channels_last,
    };
    if let Some(compute) = meta(META_COMPUTE)? {
        let expected = compute_name(unit);
        if compute != expected {
            return Err(fail(format!(
                "it computes in `{compute}`, but a {unit} unit computes in `{expected}`; \
                 give this unit the package exported for it"
            )));
        }
    } else {
        warn!(model = %path.display(), unit_kind = %unit, "the package records no precision");
    }
    let parse = |key: &str, value: &str| {
        value.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
            fail(format!(
                "its metadata {key} = `{value}` is not a batch size"
            ))
        })
    };
    let batch = match meta(META_BATCH)?.as_deref() {
        None | Some("dynamic") => None,
        Some(value) => Some(parse(META_BATCH, value)?),
    };
    let max_batch = match meta(META_MAX_BATCH)? {
        Some(value) => Some(parse(META_MAX_BATCH, &value)?),
        None => None,
    };
    info!(
        model = %path.display(),
        unit_kind = %unit,
        input = ?input,
        batch = ?batch,
        max_batch = ?max_batch,
        load_s = format_args!("{load_s:.2}"),
        "aotinductor package loaded"
    );
    Ok(Package {
        package,
        input,
        batch,
        max_batch,
    })
}

/// The element type named as PyTorch prints it (without `torch.`).
fn kind_named(name: &str) -> Option<Kind> {
    match name.trim_start_matches("torch.") {
        "float32" | "float" => Some(Kind::Float),
        "float16" | "half" => Some(Kind::Half),
        "bfloat16" => Some(Kind::BFloat16),
        _ => None,
    }
}

/// The `mica_compute` value a package for a unit of kind `unit` records.
pub(crate) fn compute_name(unit: UnitKind) -> &'static str {
    match unit {
        UnitKind::Cpu | UnitKind::CudaFp32 => "float32",
        UnitKind::CudaTf32 => "tf32",
        UnitKind::TensorFp16 => "float16",
        UnitKind::TensorBf16 => "bfloat16",
        UnitKind::Amp => "amp",
        UnitKind::Dla => "dla",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_dtypes_parse_as_pytorch_prints_them() {
        assert_eq!(kind_named("torch.float32"), Some(Kind::Float));
        assert_eq!(kind_named("float16"), Some(Kind::Half));
        assert_eq!(kind_named("torch.bfloat16"), Some(Kind::BFloat16));
        assert_eq!(kind_named("int8"), None);
    }

    fn image_batch() -> Tensor {
        Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, tch::Device::Cpu)).reshape([2, 3, 4, 5])
    }

    #[test]
    fn a_channels_last_form_keeps_every_value_and_reorders_the_storage() {
        let input = image_batch();
        let form = InputForm {
            kind: Kind::Half,
            channels_last: true,
        };
        assert!(
            !form.holds(&input),
            "an FP32 contiguous batch is not in the form"
        );
        let converted = form.convert(&input).unwrap();
        assert_eq!(converted.size(), [2, 3, 4, 5]);
        assert_eq!(converted.kind(), Kind::Half);
        assert_eq!(converted.stride(), [60, 1, 15, 3]);
        assert!(is_channels_last(&converted) && form.holds(&converted));
        assert!(!is_channels_last(&input));
        // Element [n, c, h, w] is where it was (the values are exact in FP16).
        let difference = (converted.to_kind(Kind::Float) - &input).abs().max();
        assert_eq!(difference.double_value(&[]), 0.0);
        // The storage is [N, H, W, C]: the first four values are pixel (0, 0) of the
        // three channels, then pixel (0, 1).
        let mut storage = [0.0_f32; 4];
        converted
            .permute([0, 2, 3, 1])
            .contiguous()
            .to_kind(Kind::Float)
            .flatten(0, -1)
            .narrow(0, 0, 4)
            .copy_data(&mut storage, 4);
        assert_eq!(storage, [0.0, 20.0, 40.0, 1.0]);
    }

    #[test]
    fn a_contiguous_form_converts_the_kind_only() {
        let input = image_batch();
        let form = InputForm {
            kind: Kind::Float,
            channels_last: false,
        };
        assert!(form.holds(&input));
        let half = InputForm {
            kind: Kind::Half,
            channels_last: false,
        };
        let converted = half.convert(&input).unwrap();
        assert_eq!(converted.kind(), Kind::Half);
        assert!(converted.is_contiguous() && half.holds(&converted));
    }

    #[test]
    fn a_channels_last_form_refuses_an_input_that_is_not_an_image_batch() {
        let form = InputForm {
            kind: Kind::Half,
            channels_last: true,
        };
        let flat = Tensor::zeros([2, 10], (Kind::Float, tch::Device::Cpu));
        let error = form.convert(&flat).unwrap_err();
        assert!(
            error.contains("channels-last") && error.contains("[2, 10]"),
            "{error}"
        );
        assert!(!form.holds(&flat));
    }
}
