//! `mica calibrate` without hardware: the simulated Orin's sim units emulate a hidden
//! "true" platform (`emulated_contention_file`, tests/fixtures/calibrate/) while the
//! policies' model starts as the shipped first guess; the fit, on pairs at three batch
//! sizes, must predict the combinations it did not see (every pair at the held-out batch
//! size and the full set) within 5 %. Virtual time: the runs go through the
//! discrete-event simulator, so the test takes seconds.

use std::path::{Path, PathBuf};
use std::process::Command;

use mica_core::ContentionConfig;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write_config(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(repo().join("config/orin-agx-sim.toml")).unwrap();
    let profiles = repo().join("config/profiles");
    let text = shipped
        .replace(
            "contention_file = \"profiles/orin-agx/platform.toml\"",
            &format!(
                "contention_file = {:?}\nemulated_contention_file = {:?}",
                profiles.join("orin-agx/platform.toml"),
                repo().join("tests/fixtures/calibrate/hidden-orin-platform.toml")
            ),
        )
        .replace(
            "profile = \"profiles/",
            &format!("profile = \"{}/", profiles.display()),
        );
    assert!(
        text.contains("emulated_contention_file"),
        "config layout changed"
    );
    let path = dir.join("orin-hidden.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn calibrate(config: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let status = Command::new(env!("CARGO_BIN_EXE_mica"))
        .args(["calibrate", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args([
            "--batch-sizes",
            "8,16,32,64",
            "--holdout-batch-sizes",
            "32",
            "--no-progress",
        ])
        .args(extra)
        .status()
        .expect("run mica calibrate");
    assert!(status.success(), "mica calibrate failed: {status}");
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn calibration_recovers_a_hidden_platform_within_five_percent_on_held_out_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = dir.path().join("out");
    let report = calibrate(&config, &out, &[]);
    assert_eq!(report["simulated"], true);
    let held = &report["held_out"];
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    println!("held out: {held}");
    assert!(f(&held["rows"]) >= 7.0, "{held}");
    // The shipped model is wrong by more than the target on what is held out...
    assert!(f(&held["max_abs_before"]) > 0.05, "{held}");
    // ...and the fitted one within it.
    assert!(f(&held["max_abs_after"]) <= 0.05, "{held}");
    assert!(f(&report["training"]["max_abs_after"]) <= 0.05);
    // The full set is among the held-out rows.
    let rows = report["rows"].as_array().unwrap();
    assert!(rows
        .iter()
        .any(|r| r["units"] == "cpu+cuda+amp+dla0+dla1" && r["held_out"] == true));
    // platform.toml reads back as the fitted model, and the outputs are there.
    let fitted = ContentionConfig::from_file(&out.join("platform.toml")).unwrap();
    assert!(matches!(fitted, ContentionConfig::Calibrated(_)));
    for file in ["report.md", "calibration.png", "measurements.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // --resume measures nothing again and fits the same model.
    let again = calibrate(&config, &out, &["--resume"]);
    assert_eq!(again["after"], report["after"]);
    assert_eq!(again["measuring_seconds"], report["measuring_seconds"]);
    // --refit on a store missing a run fits on the rest and says the report is
    // incomplete, without measuring the missing run.
    let store = out.join("measurements.json");
    let mut runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
    let last = runs["runs"].as_array_mut().unwrap().pop().unwrap();
    std::fs::write(&store, runs.to_string()).unwrap();
    let refit = calibrate(&config, &out, &["--refit"]);
    assert_eq!(refit["complete"], false);
    assert_eq!(refit["rows"].as_array().unwrap().len(), rows.len() - 1);
    let measured: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&store).unwrap()).unwrap();
    assert!(!measured["runs"].as_array().unwrap().contains(&last));
}
