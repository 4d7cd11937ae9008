//! `engine = { type = "onnx", model = ..., provider = ..., ... }`: the ONNX Runtime
//! engine's settings, checked against the unit kind that runs them.
//!
//! Kind → provider (what `provider` must be):
//! - `cpu`: `provider = "cpu"` (ONNX Runtime's CPU provider, `intra_threads` threads);
//! - `cuda_fp32`, `cuda_tf32`: `"cuda"` with TF32 off / on;
//! - `tensor_fp16`: `"tensorrt"` (FP16 engine) or `"cuda"` on an FP16 model;
//! - `amp`: `"tensorrt"` with FP16 enabled, TensorRT choosing FP16 or FP32 per layer —
//!   the closest ONNX Runtime offers to PyTorch's autocast (the CUDA provider has no
//!   mixed-precision switch);
//! - `dla`: `"tensorrt"` with DLA enabled on the unit's `core`, FP16 (INT8 with
//!   `int8_calibration_table`), GPU fallback for layers the DLA cannot run.
//!
//! `tensor_bf16` has no ONNX Runtime equivalent and is rejected.

use std::ops::Range;
use std::path::{Path, PathBuf};

use mica_core::UnitKind;
use serde::{Deserialize, Serialize};

use super::engine_settings::{SettingsError, UnitFacts};
use super::torch::default_warmup_batches;

/// Which ONNX Runtime execution provider runs the unit. Never falls back to another:
/// a provider missing from the library found is a load error for that unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnnxProvider {
    /// ONNX Runtime's own CPU kernels.
    Cpu,
    /// The CUDA execution provider (cuDNN, cuBLAS).
    Cuda,
    /// The TensorRT execution provider (also the way to the DLA cores).
    Tensorrt,
}

impl OnnxProvider {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnnxProvider::Cpu => "cpu",
            OnnxProvider::Cuda => "cuda",
            OnnxProvider::Tensorrt => "tensorrt",
        }
    }

    /// The providers a unit of `kind` may name, first the one to prefer.
    pub fn allowed_for(kind: UnitKind) -> &'static [OnnxProvider] {
        match kind {
            UnitKind::Cpu => &[OnnxProvider::Cpu],
            UnitKind::CudaFp32 | UnitKind::CudaTf32 => &[OnnxProvider::Cuda],
            UnitKind::TensorFp16 => &[OnnxProvider::Tensorrt, OnnxProvider::Cuda],
            UnitKind::Amp | UnitKind::Dla => &[OnnxProvider::Tensorrt],
            UnitKind::TensorBf16 => &[],
        }
    }
}

impl std::fmt::Display for OnnxProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings of a unit run by ONNX Runtime, loaded at run time (no cargo feature: the
/// `ort` crate's `load-dynamic` mode links nothing, so every build has the engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxEngineConfig {
    /// The `.onnx` file; in a pipeline, the folder of its `block_<i>.onnx` files
    /// (`scripts/export_model.py --stages --onnx`). Relative to the config file.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// `cpu`, `cuda` or `tensorrt`, checked against the unit's kind.
    pub provider: OnnxProvider,
    /// The ONNX Runtime library (`libonnxruntime.so.<version>`). Unset: `ORT_DYLIB_PATH`,
    /// then `.cache/onnxruntime/` (`scripts/fetch-onnxruntime.sh`), then the system's
    /// library paths. One library per process: every onnx unit must agree.
    #[serde(default)]
    pub library: Option<PathBuf>,
    /// Intra-op threads of the session (CPU provider); unset: ONNX Runtime's default
    /// (one per physical core). With several streams, each session has its own pool.
    #[serde(default)]
    pub intra_threads: Option<u32>,
    /// TensorRT: the folder where built engines are cached, one per unit (two DLA units
    /// must not share one: ONNX Runtime issue #26680). Unset: `<STATE_DIRECTORY>/tensorrt/
    /// <unit id>` under systemd (`StateDirectory=mica`: /var/lib/mica), else
    /// `.cache/tensorrt/<unit id>` beside the config file.
    #[serde(default)]
    pub engine_cache: Option<PathBuf>,
    /// DLA units: build an INT8 engine with this calibration table (TensorRT's
    /// format) instead of FP16.
    #[serde(default)]
    pub int8_calibration_table: Option<PathBuf>,
    /// TensorRT: the builder's workspace limit in MiB (unset: TensorRT's default).
    #[serde(default)]
    pub workspace_mib: Option<u32>,
    /// Batches run at load before the unit reports ready.
    #[serde(default = "default_warmup_batches")]
    pub warmup_batches: u32,
}

/// Most intra-op threads a session may ask for.
pub const MAX_INTRA_THREADS: u32 = 1024;

impl OnnxEngineConfig {
    /// Settings for `model` on `provider`, everything else at its default.
    pub fn new(model: impl Into<PathBuf>, provider: OnnxProvider) -> Self {
        Self {
            model: Some(model.into()),
            provider,
            library: None,
            intra_threads: None,
            engine_cache: None,
            int8_calibration_table: None,
            workspace_mib: None,
            warmup_batches: default_warmup_batches(),
        }
    }

    /// Checks the settings against the unit; the error names the key.
    pub fn validate(&self, unit: &UnitFacts) -> Result<(), SettingsError> {
        if self.model.is_none() {
            return Err(SettingsError::new(
                "engine.model",
                "an onnx unit needs an ONNX model file (`model = \"...\"`; \
                 scripts/export_model.py writes them)",
            ));
        }
        let allowed = OnnxProvider::allowed_for(unit.kind);
        if allowed.is_empty() {
            return Err(SettingsError::new(
                "kind",
                format!(
                    "ONNX Runtime has no {} unit (no BF16 execution provider); use the \
                     torch engine or kind tensor_fp16",
                    unit.kind
                ),
            ));
        }
        if !allowed.contains(&self.provider) {
            let names: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
            return Err(SettingsError::new(
                "engine.provider",
                format!(
                    "a {} unit runs on provider {}, not {:?}",
                    unit.kind,
                    names.join(" or "),
                    self.provider.as_str()
                ),
            ));
        }
        if let Some(threads) = self.intra_threads {
            if threads == 0 || threads > MAX_INTRA_THREADS {
                return Err(SettingsError::new(
                    "engine.intra_threads",
                    format!("must be between 1 and {MAX_INTRA_THREADS}, got {threads}"),
                ));
            }
            if self.provider != OnnxProvider::Cpu {
                return Err(SettingsError::new(
                    "engine.intra_threads",
                    "only the cpu provider runs kernels on intra-op threads",
                ));
            }
        }
        if self.provider != OnnxProvider::Tensorrt {
            for (key, set) in [
                ("engine.engine_cache", self.engine_cache.is_some()),
                ("engine.workspace_mib", self.workspace_mib.is_some()),
            ] {
                if set {
                    return Err(SettingsError::new(
                        key,
                        "only the tensorrt provider builds engines",
                    ));
                }
            }
        }
        if self.int8_calibration_table.is_some() && unit.kind != UnitKind::Dla {
            return Err(SettingsError::new(
                "engine.int8_calibration_table",
                "INT8 engines are built for dla units only",
            ));
        }
        if self.workspace_mib == Some(0) {
            return Err(SettingsError::new(
                "engine.workspace_mib",
                "must be at least 1",
            ));
        }
        if unit.kind == UnitKind::Dla && unit.dla_core.is_none() {
            return Err(SettingsError::new(
                "core",
                "an onnx dla unit needs `core = 0` or `core = 1`",
            ));
        }
        Ok(())
    }

    /// Resolves relative paths with `resolve`; gives a TensorRT unit without an
    /// `engine_cache` its own folder (see the field).
    pub fn resolve_paths(&mut self, resolve: &dyn Fn(&Path) -> PathBuf, unit_id: &str) {
        for path in [
            &mut self.model,
            &mut self.library,
            &mut self.engine_cache,
            &mut self.int8_calibration_table,
        ]
        .into_iter()
        .flatten()
        {
            *path = resolve(path);
        }
        if self.provider == OnnxProvider::Tensorrt && self.engine_cache.is_none() {
            self.engine_cache = Some(resolve(&Path::new(".cache").join("tensorrt").join(unit_id)));
        }
    }

    /// The precision the unit runs in on this provider (what `mica units` shows).
    pub fn precision(&self, kind: UnitKind) -> &'static str {
        match (kind, self.provider) {
            (UnitKind::Dla, _) if self.int8_calibration_table.is_some() => "int8",
            (UnitKind::Amp, OnnxProvider::Tensorrt) => "fp16+fp32 (tensorrt per layer)",
            (UnitKind::TensorFp16, OnnxProvider::Cuda) => "fp16 (the model's own)",
            (kind, _) => super::engine_settings::kind_precision(kind),
        }
    }

    /// The model file, for a whole network.
    pub fn model(&self) -> Option<&Path> {
        self.model.as_deref()
    }

    /// The block files of a pipeline stage running `blocks`: `<model>/block_<i>.onnx`,
    /// one ONNX file (and, on TensorRT, one engine) per block.
    pub fn stage_models(&self, blocks: Range<usize>) -> Result<Vec<PathBuf>, String> {
        let dir = self.model.as_ref().ok_or_else(|| {
            "an onnx unit of a pipeline needs `engine.model`, the folder of block_<i>.onnx \
             files (scripts/export_model.py --stages --onnx)"
                .to_string()
        })?;
        Ok(blocks
            .map(|b| dir.join(format!("block_{b}.onnx")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(kind: UnitKind, dla_core: Option<u8>) -> UnitFacts {
        UnitFacts {
            kind,
            dla_core,
            has_profile: false,
        }
    }

    #[test]
    fn every_kind_accepts_exactly_its_providers() {
        let all = [
            OnnxProvider::Cpu,
            OnnxProvider::Cuda,
            OnnxProvider::Tensorrt,
        ];
        for kind in UnitKind::ALL {
            let core = (kind == UnitKind::Dla).then_some(1);
            for provider in all {
                let settings = OnnxEngineConfig::new("m.onnx", provider);
                let accepted = settings.validate(&unit(kind, core)).is_ok();
                assert_eq!(
                    accepted,
                    OnnxProvider::allowed_for(kind).contains(&provider),
                    "{kind} on {provider}"
                );
            }
        }
    }

    #[test]
    fn a_dla_unit_on_the_cpu_provider_names_the_provider_key() {
        let error = OnnxEngineConfig::new("m.onnx", OnnxProvider::Cpu)
            .validate(&unit(UnitKind::Dla, Some(0)))
            .unwrap_err();
        assert_eq!(error.key, "engine.provider");
        assert!(error.message.contains("tensorrt"), "{error}");
    }

    #[test]
    fn settings_only_one_provider_uses_are_rejected_on_the_others() {
        let mut cuda = OnnxEngineConfig::new("m.onnx", OnnxProvider::Cuda);
        cuda.engine_cache = Some("cache".into());
        let error = cuda.validate(&unit(UnitKind::CudaFp32, None)).unwrap_err();
        assert_eq!(error.key, "engine.engine_cache");

        let mut cuda = OnnxEngineConfig::new("m.onnx", OnnxProvider::Cuda);
        cuda.intra_threads = Some(4);
        let error = cuda.validate(&unit(UnitKind::CudaFp32, None)).unwrap_err();
        assert_eq!(error.key, "engine.intra_threads");

        let mut fp16 = OnnxEngineConfig::new("m.onnx", OnnxProvider::Tensorrt);
        fp16.int8_calibration_table = Some("calib.table".into());
        let error = fp16
            .validate(&unit(UnitKind::TensorFp16, None))
            .unwrap_err();
        assert_eq!(error.key, "engine.int8_calibration_table");
    }

    #[test]
    fn a_tensorrt_unit_gets_a_cache_folder_of_its_own() {
        let mut dla0 = OnnxEngineConfig::new("m.onnx", OnnxProvider::Tensorrt);
        let mut dla1 = dla0.clone();
        let resolve = |p: &Path| Path::new("/etc/mica").join(p);
        dla0.resolve_paths(&resolve, "dla0");
        dla1.resolve_paths(&resolve, "dla1");
        assert_eq!(
            dla0.engine_cache.as_deref(),
            Some(Path::new("/etc/mica/.cache/tensorrt/dla0"))
        );
        assert_ne!(dla0.engine_cache, dla1.engine_cache);
        assert_eq!(dla0.model.as_deref(), Some(Path::new("/etc/mica/m.onnx")));
    }
}
