//! `mica tune --backend real` on real engines: config/tiny-cpu-pipeline.toml (the tiny
//! staged model's TorchScript blocks over two CPU units, with the CPU pre- and
//! post-processing stages around them), a short time per point. The run must finish,
//! write its files, and label its figures as measured (`backend = "real"`).
#![cfg(feature = "torch")]

use std::process::Command;

#[test]
fn a_tiny_real_tune_measures_and_reports() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mica"))
        .current_dir(root)
        .args([
            "tune",
            "--config",
            "config/tiny-cpu-pipeline.toml",
            "--backend",
            "real",
            "--point-duration",
            "300ms",
            "--json",
            "--no-progress",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("mica tune runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mica tune failed:\n{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stderr}"));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("tune.json")).unwrap())
            .unwrap();
    assert_eq!(printed, written);
    let keys: Vec<&str> = written
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "backend",
        "simulated",
        "search",
        "config",
        "best_throughput_img_s",
        "best_config",
        "evaluated",
        "space_size",
        "evaluated_fraction",
        "wall_time_s",
        "measured_this_run",
        "model_stages",
        "best_per_option",
        "top",
    ] {
        assert!(keys.contains(&key), "tune.json lacks {key}: {keys:?}");
    }
    assert_eq!(written["backend"], "real");
    assert_eq!(written["simulated"], false);
    assert_eq!(written["space_size"], 8);
    let evaluated = written["evaluated"].as_u64().unwrap();
    assert!((1..=8).contains(&evaluated), "{written}");
    assert_eq!(written["measured_this_run"].as_u64(), Some(evaluated));
    assert!(written["best_throughput_img_s"].as_f64().unwrap() > 0.0);
    let best = &written["best_config"];
    assert!(best["stages"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(best["measured"]["latency_mean_ms"].as_f64().unwrap() > 0.0);
    for file in ["evaluated.csv", "best.toml", "cache.json", "tune.png"] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
}
