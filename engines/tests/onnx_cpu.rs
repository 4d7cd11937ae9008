//! The onnx engine on ONNX Runtime's CPU provider, on the committed tiny model
//! (`scripts/export_model.py --tiny --onnx`): agreement with ONNX Runtime's Python API
//! and with PyTorch on the same weights, padding to a fixed batch, a chain of staged
//! models, and the load errors a host without the GPU providers gives.
//!
//! Needs the ONNX Runtime library: `scripts/fetch-onnxruntime.sh` (what `scripts/test.sh`
//! runs) or `ORT_DYLIB_PATH`. Without it the tests say so and pass, unless
//! `MICA_REQUIRE_ONNXRUNTIME` is set (CI sets it), where they fail.

mod common;

use std::path::{Path, PathBuf};

use common::{relative_error, Fixture};
use mica_core::contention::NoContention;
use mica_core::UnitKind;
use mica_engines::{
    build_engine, BatchInput, ContentionHub, Engine, EngineContext, EngineError, EngineSettings,
    EngineSpec, OnnxEngineConfig, OnnxProvider,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn context() -> EngineContext {
    EngineContext {
        hub: std::sync::Arc::new(ContentionHub::new(Box::new(NoContention))),
        custom: None,
    }
}

/// Whether ONNX Runtime can be loaded here; panics when CI requires it and it cannot.
fn runtime_available() -> bool {
    let probe = spec(
        &fixtures().join("tiny_resnet.onnx"),
        OnnxProvider::Cpu,
        UnitKind::Cpu,
        4,
    );
    match build_engine(&probe, &context()).map(|_| ()) {
        Ok(()) => true,
        Err(EngineError::Load(message)) if message.contains("library not found") => {
            if std::env::var_os("MICA_REQUIRE_ONNXRUNTIME").is_some() {
                panic!("MICA_REQUIRE_ONNXRUNTIME is set but: {message}");
            }
            eprintln!("skipping: {message}");
            false
        }
        Err(other) => panic!("the tiny model should load: {other}"),
    }
}

fn spec(model: &Path, provider: OnnxProvider, kind: UnitKind, max_batch: u32) -> EngineSpec {
    let mut settings = OnnxEngineConfig::new(model, provider);
    settings.warmup_batches = 1;
    if provider == OnnxProvider::Tensorrt {
        settings.engine_cache = Some(std::env::temp_dir().join("mica-onnx-test-trt-cache"));
    }
    EngineSpec::new(
        EngineSettings::Onnx(settings),
        kind,
        max_batch,
        vec![3, 32, 32],
        10,
    )
}

fn load(spec: &EngineSpec) -> Box<dyn Engine> {
    let mut engine = build_engine(spec, &context()).expect("engine loads");
    engine.warm_up().expect("warm-up");
    engine
}

#[test]
fn the_tiny_model_agrees_with_onnx_runtime_python_and_pytorch() {
    if !runtime_available() {
        return;
    }
    let torch = Fixture::load(&fixtures(), "tiny");
    let ort_python = Fixture::load(&fixtures(), "tiny_onnx");
    let mut engine = load(&spec(
        &ort_python.model,
        OnnxProvider::Cpu,
        UnitKind::Cpu,
        torch.images as u32,
    ));
    let output = engine
        .infer(BatchInput {
            images: torch.images as u32,
            data: Some(&torch.input),
        })
        .expect("inference");
    assert_eq!(output.per_image, torch.classes);
    let vs_python = relative_error(&output.data, &ort_python.expected);
    let vs_torch = relative_error(&output.data, &torch.expected);
    eprintln!("relative error: vs onnxruntime python {vs_python:.2e}, vs pytorch {vs_torch:.2e}");
    assert!(
        vs_python <= 1e-5,
        "vs ONNX Runtime's Python API: {vs_python}"
    );
    assert!(vs_torch <= 1e-5, "vs PyTorch: {vs_torch}");
}

#[test]
fn each_image_of_a_smaller_batch_gets_its_own_output() {
    if !runtime_available() {
        return;
    }
    let fixture = Fixture::load(&fixtures(), "tiny_onnx");
    let mut engine = load(&spec(&fixture.model, OnnxProvider::Cpu, UnitKind::Cpu, 4));
    let per_image = fixture.input_len();
    for image in 0..fixture.images {
        let output = engine
            .infer(BatchInput {
                images: 1,
                data: Some(&fixture.input[image * per_image..(image + 1) * per_image]),
            })
            .expect("inference");
        let want = &fixture.expected[image * 10..(image + 1) * 10];
        assert!(relative_error(&output.data, want) <= 1e-5, "image {image}");
    }
}

#[test]
fn a_fixed_batch_model_pads_smaller_batches_and_refuses_a_larger_max_batch() {
    if !runtime_available() {
        return;
    }
    let fixture = Fixture::load(&fixtures(), "tiny_onnx");
    let fixed = fixtures().join("tiny_resnet_b4.onnx");
    let mut engine = load(&spec(&fixed, OnnxProvider::Cpu, UnitKind::Cpu, 4));
    let output = engine
        .infer(BatchInput {
            images: 1,
            data: Some(&fixture.input[..fixture.input_len()]),
        })
        .expect("a batch of 1 padded to 4");
    assert_eq!((output.images, output.data.len()), (1, 10));
    assert!(relative_error(&output.data, &fixture.expected[..10]) <= 1e-5);
    // Padding from a request's data must not leak into a later synthetic batch's rows.
    let two = engine
        .infer(BatchInput {
            images: 2,
            data: Some(&fixture.input[..2 * fixture.input_len()]),
        })
        .expect("a batch of 2");
    assert!(relative_error(&two.data, &fixture.expected[..20]) <= 1e-5);

    let error = build_engine(
        &spec(&fixed, OnnxProvider::Cpu, UnitKind::Cpu, 8),
        &context(),
    )
    .err()
    .expect("max_batch 8 on a batch-4 model is refused");
    assert!(error.to_string().contains("exactly 4 images"), "{error}");
}

#[test]
fn the_staged_tiny_model_chained_equals_the_unsplit_one() {
    if !runtime_available() {
        return;
    }
    let fixture = Fixture::load(&fixtures(), "tiny_onnx");
    let stages = fixtures().join("tiny_stages");
    let blocks: Vec<PathBuf> = (0..4)
        .map(|b| stages.join(format!("block_{b}.onnx")))
        .collect();
    let chained = spec(&blocks[0], OnnxProvider::Cpu, UnitKind::Cpu, 4).with_models(blocks);
    let mut engine = load(&chained);
    let output = engine
        .infer(BatchInput {
            images: fixture.images as u32,
            data: Some(&fixture.input),
        })
        .expect("the chain runs");
    let error = relative_error(&output.data, &fixture.expected);
    assert!(
        error <= 1e-5,
        "chained blocks vs the unsplit model: {error}"
    );
}

#[test]
fn gpu_providers_missing_from_the_library_fail_the_load_naming_them() {
    if !runtime_available() {
        return;
    }
    let dynamic = fixtures().join("tiny_resnet.onnx");
    let error = build_engine(
        &spec(&dynamic, OnnxProvider::Cuda, UnitKind::CudaFp32, 4),
        &context(),
    )
    .err()
    .expect("the CPU build has no CUDA provider");
    assert!(
        error
            .to_string()
            .contains("CUDA execution provider is not enabled"),
        "{error}"
    );

    let fixed = fixtures().join("tiny_resnet_b4.onnx");
    let dla = spec(&fixed, OnnxProvider::Tensorrt, UnitKind::Dla, 4).with_unit(3, Some(0), Some(1));
    let error = build_engine(&dla, &context())
        .err()
        .expect("the CPU build has no TensorRT provider");
    let message = error.to_string();
    assert!(message.contains("TensorRT"), "{message}");
    assert!(
        message.contains("not enabled in this ONNX Runtime build"),
        "{message}"
    );
}

#[test]
fn a_model_that_does_not_match_the_config_is_refused_at_load() {
    if !runtime_available() {
        return;
    }
    let model = fixtures().join("tiny_resnet.onnx");
    let mut wrong_input = spec(&model, OnnxProvider::Cpu, UnitKind::Cpu, 4);
    wrong_input.input_shape = vec![3, 224, 224];
    let error = build_engine(&wrong_input, &context())
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("3072 values per image"),
        "{error}"
    );

    let mut wrong_output = spec(&model, OnnxProvider::Cpu, UnitKind::Cpu, 4);
    wrong_output.output_len = 1000;
    let error = build_engine(&wrong_output, &context())
        .err()
        .expect("refused");
    assert!(error.to_string().contains("10 values per image"), "{error}");

    let missing = spec(
        Path::new("/nonexistent/model.onnx"),
        OnnxProvider::Cpu,
        UnitKind::Cpu,
        4,
    );
    let error = build_engine(&missing, &context()).err().expect("refused");
    assert!(error.to_string().contains("does not exist"), "{error}");

    let not_onnx = spec(
        &fixtures().join("tiny.json"),
        OnnxProvider::Cpu,
        UnitKind::Cpu,
        4,
    );
    let error = build_engine(&not_onnx, &context()).err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("not a model ONNX Runtime can load"),
        "{error}"
    );
}

#[test]
fn synthetic_batches_run_at_every_size() {
    if !runtime_available() {
        return;
    }
    let mut settings =
        OnnxEngineConfig::new(fixtures().join("tiny_resnet.onnx"), OnnxProvider::Cpu);
    settings.intra_threads = Some(1);
    let spec = EngineSpec::new(
        EngineSettings::Onnx(settings),
        UnitKind::Cpu,
        8,
        vec![3, 32, 32],
        10,
    );
    let mut engine = load(&spec);
    for images in 1..=8 {
        let output = engine
            .infer(BatchInput { images, data: None })
            .expect("synthetic");
        assert_eq!((output.images, output.per_image), (images, 10));
    }
    let error = engine
        .infer(BatchInput {
            images: 9,
            data: None,
        })
        .unwrap_err();
    assert!(matches!(error, EngineError::BatchTooLarge { .. }));
}
