//! Result equality with real engines: the tiny staged model (`scripts/export_model.py
//! --stages`, fixtures in engines/tests/fixtures/tiny_stages/: four TorchScript blocks
//! with the committed tiny model's weights, its input and PyTorch's unsplit output),
//! run through the pipeline actors as two stages of torch engines on the CPU, gives the
//! unsplit model's output — and so does `mica serve` on config/tiny-cpu-pipeline.toml
//! (the same blocks over two CPU units), over HTTP.
#![cfg(feature = "torch")]

mod serve_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mica_core::contention::NoContention;
use mica_core::UnitKind;
use mica_engines::{ContentionHub, EngineContext, EngineSettings, EngineSpec, TorchEngineConfig};
use mica_pipeline::run::{Pipeline, PipelineSetup};
use mica_pipeline::stage::{StageSetup, StageUnit};
use serve_support::{free_port, shipped_config, ChildServer};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("engines/tests/fixtures/tiny_stages")
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One engine for blocks `blocks` of the staged model: the first block's file as the
/// model, the rest chained after it (as `build_setup` makes a torch stage).
fn stage_spec(manifest: &serde_json::Value, blocks: std::ops::Range<usize>) -> EngineSpec {
    let elems = |block: usize, key: &str| -> usize {
        manifest["blocks"][block][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .product()
    };
    let file = |block: usize| dir().join(manifest["blocks"][block]["file"].as_str().unwrap());
    let settings = EngineSettings::Torch(TorchEngineConfig {
        model: Some(file(blocks.start)),
        cuda_graphs: false,
        warmup_batches: 0,
    });
    let input_shape = vec![elems(blocks.start, "input_shape")];
    let output_len = elems(blocks.end - 1, "output_shape");
    EngineSpec::new(settings, UnitKind::Cpu, 4, input_shape, output_len)
        .with_models(blocks.map(file).collect())
}

#[test]
fn tiny_model_stage_by_stage_equals_the_unsplit_model() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap())
            .unwrap();
    let input = read_f32(&dir().join("tiny_input.bin"));
    let expected = read_f32(&dir().join("tiny_expected.bin"));
    let images = 4;
    let per_image = input.len() / images;
    // Stage 0 hands its output over through host memory, then as tensors kept where
    // the engine computed them (the device hand-off between torch stages).
    for device_output in [false, true] {
        let stage =
            |name: &str, blocks: std::ops::Range<usize>, batch: u32, device_output| StageSetup {
                name: name.into(),
                units: vec![StageUnit {
                    id: "cpu".into(),
                    streams: vec![stage_spec(&manifest, blocks)],
                }],
                batch,
                device_output,
                builder: None,
            };
        let pipeline = Pipeline::start(PipelineSetup {
            stages: vec![
                stage("stage0", 0..2, 3, device_output),
                stage("stage1", 2..4, 2, false),
            ],
            buffer_images: 4,
            context: EngineContext {
                hub: Arc::new(ContentionHub::new(Box::new(NoContention))),
                custom: None,
            },
        })
        .unwrap();
        let outputs = pipeline
            .run_all(input.chunks(per_image).map(<[f32]>::to_vec).collect())
            .unwrap();
        pipeline.shutdown();
        let got: Vec<f32> = outputs
            .into_iter()
            .flat_map(|o| o.result.unwrap())
            .collect();
        assert_relative_error_below(&got, &expected, 1e-5);
    }
}

fn assert_relative_error_below(got: &[f32], expected: &[f32], bound: f64) {
    assert_eq!(got.len(), expected.len());
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (g, w) in got.iter().zip(expected) {
        diff += (f64::from(*g) - f64::from(*w)).powi(2);
        norm += f64::from(*w).powi(2);
    }
    let error = (diff / norm).sqrt();
    assert!(error < bound, "relative error {error}");
}

#[test]
fn served_tiny_pipeline_answers_the_unsplit_models_output() {
    let work = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = shipped_config(
        "tiny-cpu-pipeline.toml",
        work.path(),
        port,
        "",
        metrics_port,
    );
    let mut server = ChildServer::start(&config, work.path());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    server.wait_ready(addr);

    // The fixture's 4 images in one binary request, then one by one.
    let input = read_f32(&dir().join("tiny_input.bin"));
    let expected = read_f32(&dir().join("tiny_expected.bin"));
    let infer = |images: &[f32]| -> Vec<f32> {
        let n = images.len() / (3 * 32 * 32);
        let head = serde_json::json!({
            "inputs": [{"name": "input", "shape": [n, 3, 32, 32], "datatype": "FP32",
                        "parameters": {"binary_data_size": images.len() * 4}}]
        });
        let response = serve_support::post_binary(
            addr,
            "/v2/models/tiny-pipe/infer",
            &head,
            &serve_support::le_bytes(images),
        );
        assert_eq!(
            response.status,
            200,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        let body = response.json();
        assert_eq!(body["parameters"]["mica_unit"], "cpu0>cpu1");
        assert_eq!(body["parameters"]["mica_engine"], "torch");
        body["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    assert_relative_error_below(&infer(&input), &expected, 1e-5);
    let one_by_one: Vec<f32> = input.chunks(3 * 32 * 32).flat_map(infer).collect();
    assert_relative_error_below(&one_by_one, &expected, 1e-5);

    let metrics: SocketAddr = ([127, 0, 0, 1], metrics_port).into();
    let text = String::from_utf8(serve_support::get(metrics, "/metrics").body).unwrap();
    for series in [
        "mica_pipeline_stage_images_total{stage=\"stage0\",unit=\"cpu0\"} 8",
        "mica_pipeline_stage_images_total{stage=\"stage1\",unit=\"cpu1\"} 8",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    let status = server.terminate();
    assert!(status.success(), "exited with {status}\n{}", server.log());
}
