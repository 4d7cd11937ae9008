//! Numerical agreement of the torch engine with PyTorch on ResNet-50: the same weights
//! and input, relative error ‖mica − torch‖/‖torch‖ below 1e-5 in FP32 and 1e-2 in
//! FP16/BF16/autocast.
//!
//! Needs the exported models, so it is ignored by default:
//! `scripts/export_model.py --out DIR --reference 8`, then
//! `MICA_TORCH_MODELS=DIR cargo test -p mica-engines --features torch --test
//! torch_resnet50 -- --ignored` (the CPU unit), with `MICA_TORCH_TEST_CUDA=1` on a GPU host
//! for cuda_fp32, tensor_fp16, tensor_bf16 and amp as well.
#![cfg(feature = "torch")]

mod common;

use std::path::PathBuf;

use common::{relative_error, Fixture};
use mica_engines::torch::TorchEngine;
use mica_engines::{BatchInput, Engine, EngineSettings, EngineSpec, TorchEngineConfig};
use mica_policies::UnitKind;

#[test]
#[ignore = "needs MICA_TORCH_MODELS: the folder written by scripts/export_model.py --reference N"]
fn resnet50_matches_pytorch() {
    let dir =
        PathBuf::from(std::env::var_os("MICA_TORCH_MODELS").expect("MICA_TORCH_MODELS is not set"));
    let fixture = Fixture::load(&dir, "resnet50");
    assert_eq!(fixture.input_len(), 3 * 224 * 224);
    // The reference output was computed with this file.
    assert_eq!(fixture.model, dir.join("resnet50_fp32.pt"));
    // The batch-norm-folded, frozen exports (`*_fused.pt`, what config/gpu.toml runs)
    // are held to the same limits against the same reference, when they were exported.
    let fused = dir.join("resnet50_fp32_fused.pt").is_file();
    let mut units = vec![(UnitKind::Cpu, "resnet50_fp32.pt", 1e-5)];
    if fused {
        units.push((UnitKind::Cpu, "resnet50_fp32_fused.pt", 1e-5));
    }
    if std::env::var("MICA_TORCH_TEST_CUDA").is_ok_and(|v| v == "1") {
        units.extend([
            (UnitKind::CudaFp32, "resnet50_fp32.pt", 1e-5),
            (UnitKind::TensorFp16, "resnet50_fp16.pt", 1e-2),
            (UnitKind::TensorBf16, "resnet50_bf16.pt", 1e-2),
            (UnitKind::Amp, "resnet50_fp32.pt", 1e-2),
        ]);
        if fused {
            units.extend([
                (UnitKind::CudaFp32, "resnet50_fp32_fused.pt", 1e-5),
                (UnitKind::TensorFp16, "resnet50_fp16_fused.pt", 1e-2),
                (UnitKind::TensorBf16, "resnet50_bf16_fused.pt", 1e-2),
                (UnitKind::Amp, "resnet50_fp32_fused.pt", 1e-2),
            ]);
        }
    }
    if units.iter().any(|(kind, _, _)| *kind != UnitKind::Cpu) {
        // libtorch decides once per process whether it has CUDA: load libtorch_cuda
        // before the CPU unit makes that decision without it.
        mica_engines::torch::load_cuda().unwrap_or_else(|e| panic!("libtorch_cuda: {e}"));
    }
    let mut failures = Vec::new();
    for (kind, file, tolerance) in units {
        let settings = EngineSettings::Torch(TorchEngineConfig {
            model: Some(dir.join(file)),
            cuda_graphs: false,
            warmup_batches: 1,
        });
        let spec = EngineSpec::new(
            settings,
            kind,
            fixture.images as u32,
            fixture.image_shape.clone(),
            fixture.classes,
        );
        let mut engine = TorchEngine::load(&spec).unwrap_or_else(|e| panic!("{kind}: {e}"));
        engine.warm_up().unwrap_or_else(|e| panic!("{kind}: {e}"));
        let output = engine
            .infer(BatchInput {
                images: fixture.images as u32,
                data: Some(&fixture.input),
            })
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let error = relative_error(&output.data, &fixture.expected);
        println!(
            "agreement {:<12} {file:<24} relative error {error:.3e} (limit {tolerance:e})",
            kind.as_str()
        );
        if error.is_nan() || error >= tolerance {
            failures.push(format!("{kind}: {error:e} >= {tolerance:e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}
