//! The calibrated profile files and platform contention tables under
//! `config/profiles/` load, hit the hard calibration targets, and make the seed paper's
//! findings come out of the static baseline (every unit of a combination kept busy).

use std::path::PathBuf;

use mica_core::{ContentionConfig, Load, Profile, UnitKind};

fn dir(platform: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config/profiles")
        .join(platform)
}

fn profile(platform: &str, name: &str) -> Profile {
    let path = dir(platform).join(format!("{name}.toml"));
    Profile::from_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn platform(name: &str) -> ContentionConfig {
    ContentionConfig::from_file(&dir(name).join("platform.toml")).unwrap()
}

/// Throughput of units (kind, profile, batch) all busy at once under the platform's
/// contention model.
fn together(model: &ContentionConfig, units: &[(UnitKind, &Profile, u32)]) -> f64 {
    let loads: Vec<Load> = units
        .iter()
        .enumerate()
        .map(|(unit, (kind, p, batch))| Load {
            unit,
            kind: *kind,
            device: (*kind != UnitKind::Cpu).then_some(0),
            gpu_occupancy: p.gpu_occupancy,
            bandwidth_gbps: p.bandwidth_gbps(*batch),
            images: *batch,
        })
        .collect();
    let mut slowdowns = Vec::new();
    model.build().slowdowns(&loads, &mut slowdowns);
    units
        .iter()
        .zip(&slowdowns)
        .map(|((_, p, batch), s)| p.throughput(*batch) / s)
        .sum()
}

#[test]
fn every_point_cites_its_source() {
    for (platform, names) in [
        (
            "orin-agx",
            &["cpu", "cuda_fp32", "amp", "tensor_fp16", "dla"][..],
        ),
        ("xavier-agx", &["gpu_int8", "dla_int8"][..]),
    ] {
        for name in names {
            let p = profile(platform, name);
            assert!(!p.source.is_empty(), "{platform}/{name}");
            for point in &p.points {
                assert!(
                    !point.source.is_empty(),
                    "{platform}/{name} batch {}",
                    point.batch
                );
                assert!(point.bandwidth_gbps > 0.0, "{platform}/{name}");
            }
        }
    }
}

#[test]
fn orin_hard_targets() {
    let cuda = profile("orin-agx", "cuda_fp32");
    assert!(
        (cuda.throughput(64) - 415.2).abs() < 0.05,
        "{}",
        cuda.throughput(64)
    );
    assert_eq!(cuda.best_batch(), 64);
    let cpu = profile("orin-agx", "cpu");
    assert!(
        (cpu.throughput(1) - 10.1).abs() < 0.05,
        "{}",
        cpu.throughput(1)
    );
    let mut previous = f64::INFINITY;
    for batch in 1..=64 {
        let t = cpu.throughput(batch);
        assert!(
            t <= previous + 1e-9,
            "cpu throughput grows at batch {batch}"
        );
        previous = t;
    }
    // No unit alone reaches the contention onset: a lone unit runs as profiled.
    let model = platform("orin-agx");
    for name in ["cpu", "cuda_fp32", "amp", "tensor_fp16", "dla"] {
        let p = profile("orin-agx", name);
        for batch in [1, 8, 16, 32, 64] {
            let alone = together(&model, &[(UnitKind::Amp, &p, batch)]);
            assert!(
                (alone - p.throughput(batch)).abs() < 1e-9,
                "{name} at {batch}"
            );
        }
    }
}

#[test]
fn orin_static_baseline_reproduces_the_paper() {
    let model = platform("orin-agx");
    let cuda = profile("orin-agx", "cuda_fp32");
    let amp = profile("orin-agx", "amp");
    let dla = profile("orin-agx", "dla");
    for batch in [1, 8, 16] {
        let alone = cuda.throughput(batch);
        let with_dla = together(
            &model,
            &[
                (UnitKind::CudaFp32, &cuda, batch),
                (UnitKind::Dla, &dla, batch),
            ],
        );
        let gain = with_dla - alone;
        assert!(
            (40.0..=50.0).contains(&gain),
            "CUDA+DLA gain {gain:.1} at {batch}"
        );
    }
    let alone = amp.throughput(64);
    let with_dla = together(
        &model,
        &[(UnitKind::Amp, &amp, 64), (UnitKind::Dla, &dla, 64)],
    );
    let loss = alone - with_dla;
    assert!(
        (27.0..=32.0).contains(&loss),
        "CUDA+Tensor+DLA loss {loss:.1} at 64"
    );
}

#[test]
fn xavier_gpu_and_two_dlas_match_mlperf() {
    let model = platform("xavier-agx");
    let gpu = profile("xavier-agx", "gpu_int8");
    let dla = profile("xavier-agx", "dla_int8");
    assert!((gpu.throughput(64) - 1478.0).abs() < 5.0);
    assert!((dla.throughput(32) - 396.0).abs() < 2.0);
    let total = together(
        &model,
        &[
            (UnitKind::TensorFp16, &gpu, 64),
            (UnitKind::Dla, &dla, 32),
            (UnitKind::Dla, &dla, 32),
        ],
    );
    assert!((total - 2039.1).abs() < 20.0, "GPU + 2 DLA {total:.1}");
}
