//! Result equality with real engines: the tiny staged model (`scripts/export_model.py
//! --stages`, fixtures in engines/tests/fixtures/tiny_stages/: four TorchScript blocks
//! with the committed tiny model's weights, its input and PyTorch's unsplit output),
//! run through the pipeline actors as two stages of torch engines on the CPU, gives the
//! unsplit model's output.
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mica_actors::pipeline::{Pipeline, PipelineSetup};
use mica_actors::pipeline_stage::{StageSetup, StageUnit};
use mica_engines::{ContentionHub, EngineContext, EngineKind, EngineSpec};
use mica_policies::contention::NoContention;
use mica_policies::UnitKind;

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

fn block_spec(manifest: &serde_json::Value, block: usize) -> EngineSpec {
    let entry = &manifest["blocks"][block];
    let elems = |key: &str| -> usize {
        entry[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .product()
    };
    EngineSpec {
        engine: EngineKind::Torch,
        unit: 0,
        unit_kind: UnitKind::Cpu,
        device: None,
        stream: 0,
        max_batch: 4,
        input_shape: vec![elems("input_shape")],
        output_len: elems("output_shape"),
        profile: None,
        model_path: Some(dir().join(entry["file"].as_str().unwrap())),
        jitter: 0.0,
        seed: 0,
        cuda_graphs: false,
        warmup_batches: 0,
    }
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
    let stage = |name: &str, blocks: std::ops::Range<usize>, batch: u32| StageSetup {
        name: name.into(),
        units: vec![StageUnit {
            id: "cpu".into(),
            streams: vec![blocks.map(|b| block_spec(&manifest, b)).collect()],
        }],
        batch,
    };
    let pipeline = Pipeline::start(PipelineSetup {
        stages: vec![stage("stage0", 0..2, 3), stage("stage1", 2..4, 2)],
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
    assert_eq!(got.len(), expected.len());
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (g, w) in got.iter().zip(&expected) {
        diff += (f64::from(*g) - f64::from(*w)).powi(2);
        norm += f64::from(*w).powi(2);
    }
    assert!(
        (diff / norm).sqrt() < 1e-5,
        "relative error {}",
        (diff / norm).sqrt()
    );
}
