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
    /// The element type its input must have.
    input: Kind,
    /// The batch size it was compiled for (`None`: a dynamic batch dimension).
    batch: Option<u32>,
    /// The largest batch of a dynamic package, when recorded.
    max_batch: Option<u32>,
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
                let input = if input.kind() == p.input && input.is_contiguous() {
                    input
                } else {
                    converted = input
                        .f_to_kind(p.input)
                        .and_then(|t| t.f_contiguous())
                        .map_err(|e| e.to_string())?;
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
    let input = match meta(META_INPUT_DTYPE)?.as_deref() {
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
}
