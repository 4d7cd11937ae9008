//! `mica profile` end to end on units that need no hardware: a `sim` unit (whose
//! measured latencies must come out near the profile it emulates) and a `null` unit,
//! through the real binary; the written files must read back as measured profiles.

use std::path::{Path, PathBuf};
use std::process::Command;

use mica_core::{Profile, ProfileOrigin};

/// A config with a sim unit emulating 2 ms at batch 1 and 6 ms at batch 4, and a null
/// unit, in `dir`.
fn write_config(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("emulated.toml"),
        r#"
model = "tiny"
origin = "calibrated"
source = "test profile"
overhead_ms = 0.0
gpu_occupancy = 1.0

[[points]]
batch = 1
latency_ms = 2.0
bandwidth_gbps = 10.0

[[points]]
batch = 4
latency_ms = 6.0
bandwidth_gbps = 20.0
"#,
    )
    .expect("write profile");
    let config = dir.join("profile-test.toml");
    std::fs::write(
        &config,
        r#"
[platform]
name = "test"

[model]
name = "tiny"
input_shape = [4]
output_shape = [2]
max_batch = 4

[[units]]
id = "gpu.sim"
kind = "tensor_fp16"
engine = { type = "sim", jitter = 0.0 }
device = 0
max_batch = 4
profile = "emulated.toml"

[[units]]
id = "null0"
kind = "cpu"
engine = { type = "null" }
max_batch = 4
"#,
    )
    .expect("write config");
    config
}

fn mica() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mica"));
    command.env_remove("MICA_CONFIG");
    command
}

#[test]
fn profiles_sim_and_null_units_into_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let out = dir.path().join("measured");
    let output = mica()
        .args(["profile", "--config"])
        .arg(&config)
        .args([
            "--units",
            "gpu.sim,null0",
            "--batch-sizes",
            "1,4",
            "--batches",
            "8",
            "--warmup-batches",
            "2",
            "--machine",
            "test machine",
            "--json",
            "--out-dir",
        ])
        .arg(&out)
        .output()
        .expect("mica runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mica profile failed: {stderr}");

    // The JSON summary names both units and both batch sizes.
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("stdout is the JSON summary");
    let units = summary.as_array().expect("an array of units");
    assert_eq!(units.len(), 2);
    assert_eq!(units[0]["unit"], "gpu.sim");
    assert_eq!(units[0]["sizes"].as_array().map(Vec::len), Some(2));

    let sim = Profile::from_file(&out.join("gpu.sim.toml")).expect("sim profile reads back");
    assert_eq!(sim.origin, ProfileOrigin::Measured);
    assert_eq!(sim.model, "tiny");
    assert!(sim.source.contains("test machine"), "{}", sim.source);
    assert!(sim.source.contains("mica profile"), "{}", sim.source);
    assert_eq!(sim.overhead_ms, 0.0);
    // The configured profile's occupancy and bandwidth are carried over.
    assert_eq!(sim.gpu_occupancy, 1.0);
    let batches: Vec<u32> = sim.points.iter().map(|p| p.batch).collect();
    assert_eq!(batches, [1, 4]);
    assert_eq!(sim.points[1].bandwidth_gbps, 20.0);
    // The sim engine sleeps for the emulated time: the median is at least that, and
    // not far above it on an idle machine (generous bound for loaded CI hosts).
    for (point, emulated) in sim.points.iter().zip([2.0, 6.0]) {
        assert!(
            point.latency_ms >= emulated * 0.95 && point.latency_ms < emulated + 15.0,
            "batch {}: measured {} ms for an emulated {} ms",
            point.batch,
            point.latency_ms,
            emulated
        );
        assert!(point.source.contains("median of"), "{}", point.source);
    }

    let null = Profile::from_file(&out.join("null0.toml")).expect("null profile reads back");
    assert_eq!(null.origin, ProfileOrigin::Measured);
    assert_eq!(null.gpu_occupancy, 0.0);
    assert!(null
        .points
        .iter()
        .all(|p| p.latency_ms > 0.0 && p.latency_ms < 5.0));
}

#[test]
fn prints_the_profile_without_an_out_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let output = mica()
        .args(["profile", "--config"])
        .arg(&config)
        .args([
            "--units",
            "null0",
            "--batch-sizes",
            "1,2,4",
            "--batches",
            "3",
        ])
        .output()
        .expect("mica runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let profile: Profile = toml::from_str(&text).expect("stdout is a profile");
    assert_eq!(profile.origin, ProfileOrigin::Measured);
    assert_eq!(profile.points.len(), 3);
    profile.validate().expect("a valid profile");
}

#[test]
fn refuses_bad_batch_sizes_and_unknown_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let run = |args: &[&str]| {
        mica()
            .args(["profile", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .expect("mica runs")
    };
    let output = run(&["--units", "null0", "--batch-sizes", "4,1"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("increasing"));
    let output = run(&["--units", "nope"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no unit \"nope\""));
}
