//! Tests of the pipeline model against hand-computed figures.

use std::sync::Arc;

use super::*;
use mica_core::contention::NoContention;
use mica_core::pccs::{Pccs, PccsParams};
use mica_core::profile::{Profile, ProfileOrigin, ProfilePoint};
use mica_core::unit::{UnitId, UnitKind};

fn flat_profile(ms_per_image: f64, overhead_ms: f64, occupancy: f64) -> Arc<Profile> {
    Arc::new(Profile {
        model: "m".into(),
        origin: ProfileOrigin::Calibrated,
        source: String::new(),
        overhead_ms,
        gpu_occupancy: occupancy,
        points: vec![ProfilePoint {
            batch: 1,
            latency_ms: ms_per_image,
            bandwidth_gbps: 0.0,
            source: String::new(),
        }],
    })
}

fn unit(id: &str, kind: UnitKind, profile: Arc<Profile>) -> PipelineUnit {
    PipelineUnit {
        id: UnitId::new(id),
        kind,
        device: Some(0),
        profile,
    }
}

fn cpu(pre: f64, post: f64, threads: u32) -> CpuSide {
    CpuSide {
        pre_threads: threads,
        post_threads: threads,
        pre_ms_per_image: pre,
        post_ms_per_image: post,
        cores: 8,
        bandwidth_gbps_per_thread: 0.0,
    }
}

fn spec(
    units: Vec<PipelineUnit>,
    stages: Vec<StageSpec>,
    cpu: CpuSide,
    buffers: u32,
) -> PipelineSpec {
    PipelineSpec {
        units,
        stages,
        table: BlockTable::resnet50(),
        cpu,
        buffers,
        transfer_gbps: 1e9,
        transfer_overhead_ms: 0.0,
    }
}

fn length() -> RunLength {
    RunLength {
        warmup_images: 50,
        measured_images: 500,
    }
}

#[test]
fn one_buffer_is_the_sequential_baseline() {
    // pre 2 ms + GPU 10 ms + post 1 ms, one image at a time: 1000 / 13 img/s.
    let gpu = unit("gpu", UnitKind::TensorFp16, flat_profile(10.0, 0.0, 1.0));
    let stages = vec![StageSpec {
        units: vec![0],
        blocks: 0..18,
        batch: 1,
        streams: 1,
    }];
    let s = spec(vec![gpu], stages, cpu(2.0, 1.0, 1), 1);
    let out = simulate_pipeline(&s, &NoContention, length()).unwrap();
    assert!(
        (out.throughput_img_s - 1000.0 / 13.0).abs() < 0.01,
        "{out:?}"
    );
    assert!((out.latency_mean_ms - 13.0).abs() < 1e-6);
    // With buffers the three overlap: the GPU (10 ms) is the bottleneck.
    let mut s = s;
    s.buffers = 4;
    let out = simulate_pipeline(&s, &NoContention, length()).unwrap();
    assert!((out.throughput_img_s - 100.0).abs() < 0.01, "{out:?}");
    assert!(out.unit_utilization[0] > 0.999);
}

#[test]
fn a_two_stage_pipeline_runs_at_its_slowest_stage_and_duplication_doubles_a_stage() {
    let table = BlockTable::resnet50();
    let gpu = unit("gpu", UnitKind::TensorFp16, flat_profile(10.0, 0.0, 1.0));
    let dla = |id: &str| unit(id, UnitKind::Dla, flat_profile(30.0, 0.0, 0.0));
    let units = vec![gpu, dla("dla0"), dla("dla1")];
    let roles = RoleUnits {
        gpu: 0,
        dla0: Some(1),
        dla1: Some(2),
    };
    let cut = 9;
    let dla_share = StageProfile::new(&table, UnitKind::Dla).fraction(0..cut);
    let gpu_share = StageProfile::new(&table, UnitKind::TensorFp16).fraction(cut..18);
    let (dla_ms, gpu_ms) = (30.0 * dla_share, 10.0 * gpu_share);
    for (option, dla_units) in [(MappingOption::A, 1.0), (MappingOption::Dup, 2.0)] {
        let stages = roles.stages(option, &[cut], &table, 1, 1).unwrap();
        let s = spec(units.clone(), stages, cpu(0.1, 0.1, 2), 8);
        let out = simulate_pipeline(&s, &NoContention, length()).unwrap();
        let expected = 1000.0 / (dla_ms / dla_units).max(gpu_ms);
        assert!(
            (out.throughput_img_s - expected).abs() / expected < 1e-3,
            "{option}: {} vs {expected}",
            out.throughput_img_s
        );
    }
}

#[test]
fn gpu_stages_of_one_network_time_slice_the_gpu_and_streams_hide_fixed_costs() {
    let table = BlockTable::resnet50();
    // 4 ms fixed + 6 ms compute per image on the GPU.
    let gpu = unit("gpu", UnitKind::TensorFp16, flat_profile(6.0, 4.0, 1.0));
    let roles = RoleUnits {
        gpu: 0,
        dla0: None,
        dla1: None,
    };
    let whole = |streams| {
        let stages = roles
            .stages(MappingOption::Gpu, &[], &table, 1, streams)
            .unwrap();
        let s = spec(vec![gpu.clone()], stages, cpu(0.0, 0.0, 4), 8);
        let model = Pccs::new(PccsParams::orin_agx());
        simulate_pipeline(&s, &model, length())
            .unwrap()
            .throughput_img_s
    };
    // One stream: 10 ms per image. Two streams overlap one's fixed part with the
    // other's compute (here, started together, they stay in step: both compute at
    // once, time-sliced, then both wait: 16 ms per two images); the SMs bound it at
    // 6 ms per image.
    assert!((whole(1) - 100.0).abs() < 0.01, "{}", whole(1));
    let two = whole(2);
    assert!(two > 120.0 && two <= 1000.0 / 6.0 + 0.5, "{two}");
    assert!(whole(3) >= two - 0.5);
}

#[test]
fn profile_cuts_balance_the_stages() {
    let table = BlockTable::resnet50();
    let gpu = unit("gpu", UnitKind::TensorFp16, flat_profile(10.0, 0.0, 1.0));
    let dla = unit("dla0", UnitKind::Dla, flat_profile(10.0, 0.0, 0.0));
    let roles = RoleUnits {
        gpu: 0,
        dla0: Some(1),
        dla1: None,
    };
    let units = vec![gpu, dla];
    let cuts = profile_cuts(MappingOption::A, &roles, &units, &table, 1).unwrap();
    let load = bottleneck_ms(MappingOption::A, &cuts, &roles, &units, &table, 1).unwrap();
    for other in MappingOption::A.all_cuts(&table) {
        let l = bottleneck_ms(MappingOption::A, &other, &roles, &units, &table, 1).unwrap();
        assert!(load <= l + 1e-12);
    }
    // Equal whole-network speeds: the balance point is near half of the time.
    assert!(load < 7.0, "{load}");
}
