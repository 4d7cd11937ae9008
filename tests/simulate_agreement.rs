//! The discrete-event simulator and the real-time service with sim engines agree: the
//! same config, units, policy and load through `mica simulate` and `mica bench` (the
//! built binary, `--json`) give total throughput within 5 %.
//!
//! Three contending Orin units (CUDA, AMP, DLA0) at a fixed batch of 16: service times
//! of 35–240 ms, so timer and scheduling noise on a loaded machine stays small against
//! them. The simulator runs a long window (its exact expectation); the real-time run a
//! short one.

use std::path::PathBuf;
use std::process::Command;

fn mica(args: &[&str]) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(env!("CARGO_BIN_EXE_mica"))
        .current_dir(&root)
        .args(args)
        .output()
        .expect("the mica binary runs");
    assert!(
        output.status.success(),
        "mica {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "mica {args:?} printed no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn simulator_and_real_time_agree_on_throughput() {
    let common = [
        "--config",
        "config/orin-agx-sim.toml",
        "--units",
        "cuda,amp,dla0",
        "--batch-size",
        "16",
        "--policy",
        "round_robin",
        "--concurrency",
        "6",
        "--json",
    ];
    let mut simulate = vec!["simulate", "--duration", "120s", "--no-progress"];
    simulate.extend(common);
    let mut bench = vec![
        "bench",
        "--duration",
        "4s",
        "--warmup",
        "1s",
        "--no-progress",
    ];
    bench.extend(common);

    let simulated = mica(&simulate);
    let real_time = mica(&bench);
    assert_eq!(simulated["mode"], "simulate");
    assert_eq!(real_time["mode"], "bench");
    assert_eq!(simulated["simulated"], true);
    assert_eq!(real_time["simulated"], true);

    let throughput = |report: &serde_json::Value| {
        report["total"]["throughput_img_s"]
            .as_f64()
            .expect("total.throughput_img_s is a number")
    };
    let (s, r) = (throughput(&simulated), throughput(&real_time));
    assert!(s > 0.0 && r > 0.0, "simulated {s}, real time {r}");
    let ratio = r / s;
    eprintln!("throughput: simulated {s:.1} img/s, real time {r:.1} img/s, ratio {ratio:.3}");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "real time {r:.1} img/s vs simulated {s:.1} img/s: ratio {ratio:.3} is outside 1 ± 5 %"
    );
    // Every unit ran in both, so the agreement is not one unit's alone.
    for unit in ["cuda", "amp", "dla0"] {
        for report in [&simulated, &real_time] {
            assert!(
                report["units"][unit]["images"].as_u64().unwrap_or(0) > 0,
                "{unit} idle in {}",
                report["mode"]
            );
        }
    }
}
