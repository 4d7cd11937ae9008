//! The torch engine on the CPU, against the committed tiny model and the output PyTorch
//! computed for it (`engines/tests/fixtures/`, made by `scripts/export_model.py --tiny`).
//!
//! CUDA unit kinds are checked for clear load errors here (CI has no GPU). With
//! `MICA_TORCH_TEST_CUDA=1` on a GPU host, the same fixture is run on every CUDA unit kind
//! and compared with PyTorch's output instead.
#![cfg(feature = "torch")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{relative_error, Fixture};
use mica_core::contention::NoContention;
use mica_core::UnitKind;
use mica_engines::torch::TorchEngine;
use mica_engines::{
    build_engine, BatchInput, ContentionHub, Engine, EngineContext, EngineError, EngineSettings,
    EngineSpec, TorchEngineConfig,
};

/// The committed fixtures; `MICA_TORCH_FIXTURES` overrides the compiled-in path for a
/// test binary carried to another machine (the GPU host has no Rust toolchain).
fn fixtures_dir() -> PathBuf {
    std::env::var_os("MICA_TORCH_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn fixture() -> Fixture {
    Fixture::load(&fixtures_dir(), "tiny")
}

fn spec(fixture: &Fixture, unit_kind: UnitKind) -> EngineSpec {
    with_settings(fixture, unit_kind, |_| {})
}

/// The spec of `spec` with its torch settings changed by `change` (the model files
/// follow the settings' model).
fn with_settings(
    fixture: &Fixture,
    unit_kind: UnitKind,
    change: impl FnOnce(&mut TorchEngineConfig),
) -> EngineSpec {
    let mut settings = TorchEngineConfig {
        model: Some(fixture.model.clone()),
        cuda_graphs: false,
        warmup_batches: 1,
    };
    change(&mut settings);
    EngineSpec::new(
        EngineSettings::Torch(settings),
        unit_kind,
        8,
        fixture.image_shape.clone(),
        fixture.classes,
    )
}

fn load_error(result: Result<TorchEngine, EngineError>) -> String {
    match result {
        Err(EngineError::Load(message)) => message,
        Err(other) => panic!("expected a load error, got {other:?}"),
        Ok(engine) => panic!("expected a load error, got an engine: {engine:?}"),
    }
}

#[test]
fn cpu_output_matches_pytorch() {
    let fixture = fixture();
    let mut engine = TorchEngine::load(&spec(&fixture, UnitKind::Cpu)).expect("loads");
    engine.warm_up().expect("warms up");
    let info = engine.info();
    assert_eq!(info.engine, "torch");
    assert_eq!(info.input_len, fixture.input_len());
    assert_eq!(info.output_len, fixture.classes);

    let output = engine
        .infer(BatchInput {
            images: fixture.images as u32,
            data: Some(&fixture.input),
        })
        .expect("runs");
    assert_eq!(output.images as usize, fixture.images);
    assert_eq!(output.per_image, fixture.classes);
    let error = relative_error(&output.data, &fixture.expected);
    assert!(error < 1e-5, "relative error {error:e}");
    // The fixture's outputs differ per image, so a batch mix-up would show.
    assert_ne!(output.image(0), output.image(1));
}

#[test]
fn each_image_is_independent_of_its_batch() {
    let fixture = fixture();
    let mut engine = TorchEngine::load(&spec(&fixture, UnitKind::Cpu)).expect("loads");
    let per_image = fixture.input.len() / fixture.images;
    for index in [fixture.images - 1, 0] {
        let image = &fixture.input[index * per_image..(index + 1) * per_image];
        let output = engine
            .infer(BatchInput {
                images: 1,
                data: Some(image),
            })
            .expect("runs");
        let want = &fixture.expected[index * fixture.classes..(index + 1) * fixture.classes];
        let error = relative_error(&output.data, want);
        assert!(error < 1e-5, "image {index}: relative error {error:e}");
    }
}

#[test]
fn synthetic_batches_run_the_model() {
    let fixture = fixture();
    let mut engine = TorchEngine::load(&spec(&fixture, UnitKind::Cpu)).expect("loads");
    for images in [1, 3, 8, 2] {
        let output = engine
            .infer(BatchInput { images, data: None })
            .expect("synthetic batch runs");
        assert_eq!(output.images, images);
        assert_eq!(output.per_image, fixture.classes);
        assert!(output.data.is_empty());
    }
    // Real data after synthetic batches still gives the right answer.
    let output = engine
        .infer(BatchInput {
            images: fixture.images as u32,
            data: Some(&fixture.input),
        })
        .expect("runs");
    assert!(relative_error(&output.data, &fixture.expected) < 1e-5);
}

#[test]
fn bad_batches_are_refused() {
    let fixture = fixture();
    let mut engine = TorchEngine::load(&spec(&fixture, UnitKind::Cpu)).expect("loads");
    let short = &fixture.input[..fixture.input.len() - 1];
    assert_eq!(
        engine.infer(BatchInput {
            images: fixture.images as u32,
            data: Some(short),
        }),
        Err(EngineError::BadInput {
            got: short.len(),
            expected: fixture.input.len(),
            images: fixture.images as u32,
        })
    );
    assert_eq!(
        engine.infer(BatchInput {
            images: 0,
            data: None
        }),
        Err(EngineError::BatchTooLarge {
            images: 0,
            max_batch: 8
        })
    );
    assert_eq!(
        engine.infer(BatchInput {
            images: 9,
            data: None
        }),
        Err(EngineError::BatchTooLarge {
            images: 9,
            max_batch: 8
        })
    );
    // The engine is still usable after refusals.
    let output = engine
        .infer(BatchInput {
            images: fixture.images as u32,
            data: Some(&fixture.input),
        })
        .expect("runs");
    assert!(relative_error(&output.data, &fixture.expected) < 1e-5);
}

#[test]
fn a_model_that_disagrees_with_the_config_fails_clearly() {
    let fixture = fixture();
    // The config promises 11 outputs; the model gives 10.
    let mut wrong_output = spec(&fixture, UnitKind::Cpu);
    wrong_output.output_len = fixture.classes + 1;
    let mut engine = TorchEngine::load(&wrong_output).expect("loads");
    match engine.infer(BatchInput {
        images: 2,
        data: None,
    }) {
        Err(EngineError::Inference(message)) => {
            assert!(message.contains("[2, 10]"), "{message}");
            assert!(message.contains("[2, 11]"), "{message}");
        }
        other => panic!("expected an inference error, got {other:?}"),
    }
    // Input with one channel, for a model whose first convolution wants three.
    let mut wrong_input = spec(&fixture, UnitKind::Cpu);
    wrong_input.input_shape = vec![1, 32, 32];
    let mut engine = TorchEngine::load(&wrong_input).expect("loads");
    let data = vec![0.5_f32; 2 * 32 * 32];
    assert!(matches!(
        engine.infer(BatchInput {
            images: 2,
            data: Some(&data)
        }),
        Err(EngineError::Inference(_))
    ));
}

#[test]
fn a_missing_model_file_is_a_load_error() {
    let fixture = fixture();
    let path = fixtures_dir().join("no_such_model.pt");
    let missing = with_settings(&fixture, UnitKind::Cpu, |s| s.model = Some(path.clone()));
    let message = load_error(TorchEngine::load(&missing));
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    let unset = with_settings(&fixture, UnitKind::Cpu, |s| s.model = None);
    let message = load_error(TorchEngine::load(&unset));
    assert!(message.contains("TorchScript"), "{message}");
}

#[test]
fn a_file_that_is_not_a_package_is_a_load_error_naming_it() {
    let fixture = fixture();
    let dir = std::env::temp_dir().join(format!("mica-torch-pt2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("not_a_package.pt2");
    std::fs::write(&path, b"this is not a zip archive").expect("write");
    let bad = with_settings(&fixture, UnitKind::Cpu, |s| s.model = Some(path.clone()));
    let message = load_error(TorchEngine::load(&bad));
    std::fs::remove_dir_all(&dir).ok();
    assert!(message.contains("AOTInductor package"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn a_file_that_is_not_torchscript_is_a_load_error() {
    let fixture = fixture();
    // A JSON file: exists, but is no TorchScript archive.
    let path = fixtures_dir().join("tiny.json");
    let not_a_model = with_settings(&fixture, UnitKind::Cpu, |s| s.model = Some(path.clone()));
    let message = load_error(TorchEngine::load(&not_a_model));
    assert!(
        message.contains("cannot load TorchScript model"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn bad_specs_are_load_errors() {
    let fixture = fixture();
    let mut dla = spec(&fixture, UnitKind::Dla);
    dla.device = None;
    assert!(load_error(TorchEngine::load(&dla)).contains("tensorrt"));

    let mut zero_batch = spec(&fixture, UnitKind::Cpu);
    zero_batch.max_batch = 0;
    assert!(load_error(TorchEngine::load(&zero_batch)).contains("max_batch"));

    // Asking for CUDA graphs is no longer an error of its own: a GPU unit kind fails
    // here (no GPU) for the same reason as without graphs.
    let graphs = with_settings(&fixture, UnitKind::TensorFp16, |s| s.cuda_graphs = true);
    let with_graphs = load_error(TorchEngine::load(&graphs));
    let without = load_error(TorchEngine::load(&spec(&fixture, UnitKind::TensorFp16)));
    if std::env::var("MICA_TORCH_TEST_CUDA").is_ok_and(|v| v == "1") {
        panic!("tensor_fp16 must load on a GPU host: {with_graphs}");
    }
    assert_eq!(with_graphs, without);
    assert!(!with_graphs.contains("CUDA graphs"), "{with_graphs}");

    // CUDA graphs mean nothing on the CPU: the switch is ignored there.
    let cpu_graphs = with_settings(&fixture, UnitKind::Cpu, |s| s.cuda_graphs = true);
    assert!(TorchEngine::load(&cpu_graphs).is_ok());
}

#[test]
fn the_factory_builds_torch_engines() {
    let fixture = fixture();
    let context = EngineContext {
        hub: Arc::new(ContentionHub::new(Box::new(NoContention))),
        custom: None,
    };
    let mut engine = build_engine(&spec(&fixture, UnitKind::Cpu), &context).expect("builds");
    let output = engine
        .infer(BatchInput {
            images: fixture.images as u32,
            data: Some(&fixture.input),
        })
        .expect("runs");
    assert!(relative_error(&output.data, &fixture.expected) < 1e-5);
}

#[test]
fn engines_run_on_their_own_threads() {
    let fixture = Arc::new(fixture());
    // Built here, moved to and driven from worker threads, as stream workers do.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let engine = TorchEngine::load(&spec(&fixture, UnitKind::Cpu)).expect("loads");
            let fixture = Arc::clone(&fixture);
            std::thread::spawn(move || {
                let mut engine = engine;
                (0..5)
                    .map(|_| {
                        let output = engine
                            .infer(BatchInput {
                                images: fixture.images as u32,
                                data: Some(&fixture.input),
                            })
                            .expect("runs");
                        relative_error(&output.data, &fixture.expected)
                    })
                    .fold(0.0_f64, f64::max)
            })
        })
        .collect();
    for worker in workers {
        let worst = worker.join().expect("worker thread");
        assert!(worst < 1e-5, "relative error {worst:e}");
    }
}

/// On a host without a usable GPU, CUDA units fail at load with a message that says
/// why; with `MICA_TORCH_TEST_CUDA=1` they must load and match PyTorch instead.
#[test]
fn cuda_units() {
    let fixture = fixture();
    let on_gpu = std::env::var("MICA_TORCH_TEST_CUDA").is_ok_and(|v| v == "1");
    // cuda_fp32 and cuda_tf32 cannot share a process (TF32 is process-wide), so the FP32
    // kinds checked here are cuda_fp32 and amp.
    let kinds = [
        (UnitKind::CudaFp32, 1e-5),
        (UnitKind::TensorFp16, 1e-2),
        (UnitKind::TensorBf16, 1e-2),
        (UnitKind::Amp, 1e-2),
    ];
    for (kind, tolerance) in kinds {
        let result = TorchEngine::load(&spec(&fixture, kind));
        if !on_gpu {
            let message = load_error(result);
            assert!(
                message.contains("libtorch_cuda") || message.contains("CUDA device"),
                "{kind}: {message}"
            );
            continue;
        }
        let mut engine = result.unwrap_or_else(|e| panic!("{kind}: {e}"));
        engine.warm_up().expect("warms up");
        let output = engine
            .infer(BatchInput {
                images: fixture.images as u32,
                data: Some(&fixture.input),
            })
            .expect("runs");
        let error = relative_error(&output.data, &fixture.expected);
        assert!(error < tolerance, "{kind}: relative error {error:e}");
        engine
            .infer(BatchInput {
                images: 8,
                data: None,
            })
            .expect("synthetic batch");
    }
    if on_gpu {
        let message = load_error(TorchEngine::load(&spec(&fixture, UnitKind::CudaTf32)));
        assert!(message.contains("process-wide"), "{message}");
    }
}
