//! The README's first command, as a new user runs it: `mica bench` on the shipped
//! simulated Orin with no load given. The default load keeps every unit's streams busy
//! at their maximum batch; the report ends with the run in context (the static baseline
//! and the best single unit, labelled as predicted); a unit that got no work says why.
//! All figures come from simulated units.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mica::bench::{saturating_concurrency, Load};
use mica::bench_context::{Context, Setting, Source};
use mica::config::ResolvedConfig;
use mica::experiment::run::{simulate, RunPlan};
use mica::wiring::{service_setup, RunOverrides};
use mica_core::{SearchProgress, UnitSpec};
use mica_policies::PolicyConfig;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn orin() -> ResolvedConfig {
    ResolvedConfig::load(&root().join("config/orin-agx-sim.toml")).unwrap()
}

fn specs(loaded: &ResolvedConfig, overrides: &RunOverrides) -> Vec<UnitSpec> {
    service_setup(loaded, overrides)
        .unwrap()
        .units
        .into_iter()
        .map(|u| u.spec)
        .collect()
}

fn plan(concurrency: usize, seconds: u64) -> RunPlan {
    RunPlan {
        load: Load::Closed { concurrency },
        duration: Duration::from_secs(seconds),
        warmup: Duration::from_secs(1),
        images_per_request: 1,
        timeout: None,
    }
}

fn policy(name: &str) -> RunOverrides {
    RunOverrides {
        policy: Some(PolicyConfig::from_name(name).unwrap()),
        ..RunOverrides::default()
    }
}

#[test]
fn the_default_load_is_two_full_batches_per_stream() {
    let loaded = orin();
    let units = specs(&loaded, &RunOverrides::default());
    // cpu 1 stream × 8 + four units × 1 stream × 64 = 264 images, twice.
    assert_eq!(saturating_concurrency(&units, 1), 528);
    // Requests of 64 images: 528 / 64 rounded up.
    assert_eq!(saturating_concurrency(&units, 64), 9);
    let mut two_streams = units.clone();
    two_streams[1].streams = 2;
    assert_eq!(saturating_concurrency(&two_streams, 1), 528 + 128);
    assert_eq!(saturating_concurrency(&units[..1], 1000), 1);
}

#[test]
fn at_the_default_load_every_unit_runs_full_batches() {
    // round_robin uses every unit: at the default load none of them waits for work, so
    // each runs (nearly) its maximum batch. The old default, 16 clients, could not fill
    // even one 64-image batch.
    let loaded = orin();
    let overrides = policy("round_robin");
    let units = specs(&loaded, &overrides);
    let concurrency = saturating_concurrency(&units, 1);
    let full = simulate(&loaded, &overrides, &plan(concurrency, 30)).unwrap();
    for unit in &units {
        let stats = &full.report.units[unit.id.as_str()].stats;
        assert!(
            stats.mean_batch_size >= 0.95 * f64::from(unit.max_batch),
            "{}: mean batch {:.1} of {} at the default load",
            unit.id,
            stats.mean_batch_size,
            unit.max_batch
        );
    }
    let old = simulate(&loaded, &overrides, &plan(16, 30)).unwrap();
    assert!(
        full.report.total.throughput_img_s > 1.3 * old.report.total.throughput_img_s,
        "default load {:.1} img/s vs 16 clients {:.1}",
        full.report.total.throughput_img_s,
        old.report.total.throughput_img_s
    );
}

fn context(loaded: &ResolvedConfig, overrides: &RunOverrides, seconds: u64) -> Context {
    let setup = service_setup(loaded, overrides).unwrap();
    let units: Vec<String> = setup.units.iter().map(|u| u.spec.id.to_string()).collect();
    let specs: Vec<UnitSpec> = setup.units.iter().map(|u| u.spec.clone()).collect();
    let plan = plan(saturating_concurrency(&specs, 1), seconds);
    let run = simulate(loaded, overrides, &plan).unwrap();
    let setting = Setting {
        loaded,
        overrides,
        plan,
        units,
    };
    Context::build(&setting, Source::Predicted, run.search)
}

#[test]
fn the_context_lines_name_the_baseline_and_the_best_single_unit() {
    let loaded = orin();
    let overrides = policy("contention_aware");
    let context = context(&loaded, &overrides, 10);
    let baseline = context.static_baseline.clone().unwrap();
    assert_eq!(baseline.policy, "round_robin");
    assert_eq!(
        baseline.units.len(),
        5,
        "over every unit: {:?}",
        baseline.units
    );
    assert!(baseline.simulated);
    // The best single unit is the fastest of the units run alone, each predicted here
    // independently.
    let best = context.best_single_unit.clone().unwrap();
    assert_eq!(best.units.len(), 1);
    for unit in ["cpu", "cuda", "amp", "dla0", "dla1"] {
        let alone = RunOverrides {
            units: Some(vec![unit.to_string()]),
            ..policy("round_robin")
        };
        let p = plan(528, 10);
        let t = simulate(&loaded, &alone, &p)
            .unwrap()
            .report
            .total
            .throughput_img_s;
        assert!(
            t <= best.throughput_img_s,
            "{unit} alone {t} beats {best:?}"
        );
    }
    assert_eq!(best.units, vec!["amp".to_string()]);
    let text = context.render("contention_aware", 1000.0);
    assert!(
        text.starts_with("in context (predicted by the simulator for the same load and window) [SIMULATED units]:"),
        "{text}"
    );
    let baseline_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("static baseline"))
        .expect("a baseline line");
    assert!(
        baseline_line.contains("round_robin over cpu+cuda+amp+dla0+dla1"),
        "{baseline_line}"
    );
    let ratio = format!("this run {:.2}x", 1000.0 / baseline.throughput_img_s);
    assert!(baseline_line.ends_with(&ratio), "{baseline_line} / {ratio}");
    assert!(text.contains("best single unit  amp alone"), "{text}");
    assert!(
        !text.contains("policy search"),
        "contention_aware does not search"
    );
    let json = context.to_json();
    assert_eq!(json["source"], "predicted");
    assert_eq!(json["static_baseline"]["policy"], "round_robin");
    assert_eq!(json["best_single_unit"]["units"][0], "amp");
}

#[test]
fn a_searching_policy_says_whether_it_has_converged() {
    let loaded = orin();
    let overrides = policy("adaptive");
    let short = context(&loaded, &overrides, 2);
    assert!(
        matches!(short.search, Some(SearchProgress::Searching { .. })),
        "{:?}",
        short.search
    );
    let text = short.render("adaptive", 500.0);
    assert!(text.contains("adaptive is still searching after"), "{text}");
    assert!(
        short.search_predicted_converged_after.is_some(),
        "the simulator predicts when it converges"
    );
    let long = context(&loaded, &overrides, 120);
    let Some(SearchProgress::Converged { after_batches }) = long.search else {
        panic!("adaptive after 120 s: {:?}", long.search);
    };
    assert!(long.render("adaptive", 800.0).contains(&format!(
        "adaptive converged after {after_batches} completed batches"
    )));
}

#[test]
fn the_shipped_policy_beats_the_static_baseline_and_the_best_single_unit() {
    // What the shipped config's policy choice promises, by the simulator's prediction
    // at the default load (the README's first command).
    for config in ["config/orin-agx-sim.toml", "config/xavier-agx-sim.toml"] {
        let loaded = ResolvedConfig::load(&root().join(config)).unwrap();
        let overrides = RunOverrides::default();
        let units = specs(&loaded, &overrides);
        let p = plan(saturating_concurrency(&units, 1), 60);
        let run = simulate(&loaded, &overrides, &p).unwrap();
        let context = context(&loaded, &overrides, 60);
        let own = run.report.total.throughput_img_s;
        let baseline = context.static_baseline.unwrap().throughput_img_s;
        let best = context.best_single_unit.unwrap().throughput_img_s;
        assert!(
            own >= baseline && own >= best,
            "{config}: policy {} {own:.1} img/s, static baseline {baseline:.1}, best single unit {best:.1}",
            run.report.policy
        );
    }
}

fn mica(args: &[&str], dir: &Path) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mica"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the mica binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "mica {args:?}: {stderr}\n{stdout}");
    (stdout, stderr)
}

#[test]
fn the_readme_command_prints_busy_units_or_why_not_and_the_context() {
    let (out, _) = mica(
        &[
            "bench",
            "--config",
            "config/orin-agx-sim.toml",
            "--duration",
            "2s",
            "--no-progress",
        ],
        &root(),
    );
    assert!(out.contains("[SIMULATED units"), "{out}");
    assert!(out.contains("load: closed loop, 528 clients"), "{out}");
    for unit in ["cpu", "cuda", "amp", "dla0", "dla1"] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(unit))
            .unwrap_or_else(|| panic!("no row for {unit}:\n{out}"));
        let fields: Vec<&str> = row.split_whitespace().collect();
        let busy = fields
            .get(3)
            .and_then(|f| f.parse::<f64>().ok())
            .is_some_and(|t| t > 0.0);
        assert!(
            busy || row.contains("idle: kept idle by the policy"),
            "{unit}: neither busy nor explained: {row}"
        );
    }
    assert!(
        out.contains("in context (predicted by the simulator for the same load and window) [SIMULATED units]:"),
        "{out}"
    );
    assert!(
        out.contains("static baseline   round_robin over cpu+cuda+amp+dla0+dla1"),
        "{out}"
    );
    assert!(out.contains("best single unit  amp alone"), "{out}");

    let (json, _) = mica(
        &[
            "bench",
            "--config",
            "config/orin-agx-sim.toml",
            "--policy",
            "adaptive",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--no-progress",
            "--json",
        ],
        &root(),
    );
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let context = &value["context"];
    assert_eq!(context["source"], "predicted");
    assert!(
        context["static_baseline"]["throughput_img_s"].is_number(),
        "{context}"
    );
    assert!(context["search"]["converged"].is_boolean(), "{context}");
    assert!(context["search"]["batches"].is_number(), "{context}");
}
