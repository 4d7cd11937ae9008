//! Numerical agreement of the torch engine with PyTorch on ResNet-50: the same weights
//! and input, relative error ‖mica − torch‖/‖torch‖ below 1e-5 in FP32 and 1e-2 in
//! FP16/BF16/autocast.
//!
//! Needs the exported models, so it is ignored by default:
//! `scripts/export_model.py --out DIR --reference 8`, then
//! `MICA_TORCH_MODELS=DIR cargo test -p mica-engines --features torch --test
//! torch_resnet50 -- --ignored` (the CPU unit), with `MICA_TORCH_TEST_CUDA=1` on a GPU host
//! for cuda_fp32, tensor_fp16, tensor_bf16 and amp as well, each also replayed from CUDA
//! graphs (`cuda_graphs = true`) at the full batch and at a partial one (padded to the
//! next captured size). `MICA_TORCH_TEST_PACKAGES=kind:file.pt2[:max_batch],...` adds
//! AOTInductor packages of that folder (scripts/export_model.py --aoti), with and without
//! graphs; a package of one batch size names it as the engine's max_batch, and the
//! fixture's images run padded to it.
#![cfg(feature = "torch")]

mod common;

use std::path::PathBuf;

use common::{relative_error, Fixture};
use mica_core::UnitKind;
use mica_engines::torch::TorchEngine;
use mica_engines::{BatchInput, Engine, EngineSettings, EngineSpec, TorchEngineConfig};

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
    let cuda = std::env::var("MICA_TORCH_TEST_CUDA").is_ok_and(|v| v == "1");
    let mut packages = Vec::new();
    if let Ok(list) = std::env::var("MICA_TORCH_TEST_PACKAGES") {
        for entry in list.split(',').filter(|e| !e.is_empty()) {
            // kind:file, or kind:file:max_batch for a package of one batch size (the
            // engine's max_batch must hold it; the fixture's images run padded to it).
            let mut fields = entry.splitn(3, ':');
            let (Some(kind), Some(file)) = (fields.next(), fields.next()) else {
                panic!("MICA_TORCH_TEST_PACKAGES entry {entry}: kind:file[:max_batch]")
            };
            let max_batch = fields.next().map(|b| {
                b.parse::<u32>()
                    .unwrap_or_else(|_| panic!("{entry}: max_batch {b} is not a number"))
            });
            let kind = UnitKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .unwrap_or_else(|| panic!("{entry}: unknown unit kind {kind}"));
            let tolerance = match kind {
                UnitKind::Cpu | UnitKind::CudaFp32 => 1e-5,
                _ => 1e-2,
            };
            packages.push((kind, file.to_owned(), tolerance, max_batch));
        }
    }
    let mut cases: Vec<Case> = Vec::new();
    let partial = fixture.images.div_ceil(2).max(1) - usize::from(fixture.images > 2);
    for (kind, file, tolerance, max_batch) in units
        .iter()
        .map(|(k, f, t)| (*k, f.to_string(), *t, None))
        .chain(packages)
    {
        let plain = Case {
            kind,
            file,
            tolerance,
            graphs: false,
            images: fixture.images,
            max_batch: max_batch.unwrap_or(fixture.images as u32),
        };
        cases.push(plain.clone());
        if cuda && kind != UnitKind::Cpu {
            cases.push(Case {
                graphs: true,
                ..plain.clone()
            });
            cases.push(Case {
                graphs: true,
                images: partial,
                ..plain
            });
        }
    }
    if cases.iter().any(|case| case.kind != UnitKind::Cpu) {
        // libtorch decides once per process whether it has CUDA: load libtorch_cuda
        // before the CPU unit makes that decision without it.
        mica_engines::torch::load_cuda().unwrap_or_else(|e| panic!("libtorch_cuda: {e}"));
    }
    let mut failures = Vec::new();
    let per_image = fixture.input_len();
    for Case {
        kind,
        file,
        tolerance,
        graphs,
        images,
        max_batch,
    } in cases
    {
        let settings = EngineSettings::Torch(TorchEngineConfig {
            model: Some(dir.join(&file)),
            cuda_graphs: graphs,
            warmup_batches: 1,
        });
        let spec = EngineSpec::new(
            settings,
            kind,
            max_batch,
            fixture.image_shape.clone(),
            fixture.classes,
        );
        let label = format!(
            "{:<12} {file:<40} graphs {:<5} images {images}",
            kind.as_str(),
            graphs
        );
        let mut engine = TorchEngine::load(&spec).unwrap_or_else(|e| panic!("{label}: {e}"));
        engine.warm_up().unwrap_or_else(|e| panic!("{label}: {e}"));
        if graphs {
            let bytes = engine.graph_memory_bytes();
            assert!(
                bytes.is_some_and(|b| b > 0),
                "{label}: no graph memory reported"
            );
            println!("graph memory {label}: {} bytes", bytes.unwrap_or(0));
        }
        // Twice: a replay must not keep anything of the previous batch.
        let mut error = 0.0_f64;
        for _ in 0..2 {
            let output = engine
                .infer(BatchInput {
                    images: images as u32,
                    data: Some(&fixture.input[..images * per_image]),
                })
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            let expected = &fixture.expected[..images * fixture.classes];
            error = error.max(relative_error(&output.data, expected));
        }
        println!("agreement {label} relative error {error:.3e} (limit {tolerance:e})");
        if error.is_nan() || error >= tolerance {
            failures.push(format!("{label}: {error:e} >= {tolerance:e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// One agreement check: a model file on a unit kind, plain or replayed from CUDA graphs.
#[derive(Debug, Clone)]
struct Case {
    kind: UnitKind,
    file: String,
    tolerance: f64,
    graphs: bool,
    /// Images in the batch checked.
    images: usize,
    /// The engine's max_batch: the fixture's images, or a one-size package's batch.
    max_batch: u32,
}
