//! Result equality: a network run stage by stage through the pipeline actors gives the
//! unsplit network's output.
//!
//! Checked with the `sim` engine's deterministic outputs (output k of an image is the
//! mean of the k-th of `output_len` equal slices of its input), chained: a 16-value
//! input through a 16→8 stage and an 8→2 stage gives, per image, the means of its two
//! halves — the unsplit 16→2 network's output, and the hand-computed reference below.
//! Stages batch differently (3 and 4), the first is duplicated over two units with two
//! streams each, so items reorder and regroup on the way; ids bring them back. (The
//! torch version of this check needs `scripts/export_model.py --stages` fixtures and
//! the `torch` feature; see tests/pipeline_torch.rs.)

use std::sync::Arc;

use mica_core::contention::NoContention;
use mica_core::{Profile, ProfileOrigin, ProfilePoint, UnitKind};
use mica_engines::{ContentionHub, EngineContext, EngineSettings, EngineSpec, SimEngineConfig};
use mica_pipeline::run::{Pipeline, PipelineSetup};
use mica_pipeline::stage::{StageSetup, StageUnit};

fn spec(unit: usize, stream: u32, input: usize, output: usize, batch: u32) -> EngineSpec {
    let settings = EngineSettings::Sim(SimEngineConfig {
        jitter: 0.0,
        faults: None,
    });
    EngineSpec::new(settings, UnitKind::Cpu, batch, vec![input], output)
        .with_unit(unit, None, None)
        .with_stream(stream)
        .with_seed(1)
        .with_profile(Some(Arc::new(Profile {
            model: "test".into(),
            origin: ProfileOrigin::Calibrated,
            source: String::new(),
            overhead_ms: 0.0,
            gpu_occupancy: 0.0,
            points: vec![ProfilePoint {
                batch: 1,
                latency_ms: 0.01,
                bandwidth_gbps: 0.0,
                source: String::new(),
            }],
        })))
}

fn stage(
    name: &str,
    units: &[(usize, &str)],
    streams: u32,
    io: (usize, usize),
    batch: u32,
) -> StageSetup {
    StageSetup {
        name: name.into(),
        units: units
            .iter()
            .map(|(index, id)| StageUnit {
                id: (*id).into(),
                streams: (0..streams)
                    .map(|s| spec(*index, s, io.0, io.1, batch))
                    .collect(),
            })
            .collect(),
        batch,
        device_output: false,
        builder: None,
    }
}

fn context() -> EngineContext {
    EngineContext {
        hub: Arc::new(ContentionHub::new(Box::new(NoContention))),
        custom: None,
    }
}

fn inputs(images: usize) -> Vec<Vec<f32>> {
    (0..images)
        .map(|i| {
            (0..16)
                .map(|k| ((i * 16 + k) % 37) as f32 * 0.25 - 3.0)
                .collect()
        })
        .collect()
}

#[test]
fn staged_sim_network_equals_the_unsplit_one_and_the_reference() {
    let images = inputs(23);
    let reference: Vec<Vec<f32>> = images
        .iter()
        .map(|x| {
            vec![
                x[..8].iter().sum::<f32>() / 8.0,
                x[8..].iter().sum::<f32>() / 8.0,
            ]
        })
        .collect();

    let unsplit = Pipeline::start(PipelineSetup {
        stages: vec![stage("whole", &[(0, "gpu")], 1, (16, 2), 4)],
        buffer_images: 8,
        context: context(),
    })
    .unwrap();
    let whole = unsplit.run_all(images.clone()).unwrap();
    unsplit.shutdown();

    let split = Pipeline::start(PipelineSetup {
        stages: vec![
            stage("stage0", &[(1, "dla0"), (2, "dla1")], 2, (16, 8), 3),
            stage("stage1", &[(0, "gpu")], 1, (8, 2), 4),
        ],
        buffer_images: 8,
        context: context(),
    })
    .unwrap();
    let staged = split.run_all(images.clone()).unwrap();
    let report = split.report();
    split.shutdown();

    assert_eq!(whole.len(), 23);
    assert_eq!(staged.len(), 23);
    for (i, ((w, s), r)) in whole.iter().zip(&staged).zip(&reference).enumerate() {
        let w = w.result.as_ref().unwrap();
        let s = s.result.as_ref().unwrap();
        for k in 0..2 {
            assert!(
                (w[k] - r[k]).abs() < 1e-5,
                "image {i}: unsplit {w:?} vs {r:?}"
            );
            assert!(
                (s[k] - r[k]).abs() < 1e-5,
                "image {i}: staged {s:?} vs {r:?}"
            );
        }
    }
    // Per-stage counters: every image went through both stages, in batches of ≤ 3 / 4.
    assert_eq!(report[0].images, 23);
    assert_eq!(report[1].images, 23);
    assert!(
        report[0].batches >= 8 && report[1].batches >= 6,
        "{report:?}"
    );
}
