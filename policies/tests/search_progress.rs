//! `Policy::search_progress`: a searching policy (`adaptive`) says whether its search has
//! converged and after how many batches; the others say nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mica_core::{
    simulate, ContentionConfig, Profile, SchedulerSettings, SearchProgress, SimulationConfig,
    UnitId, UnitKind, UnitSpec, Workload,
};
use mica_policies::{build_policy, PolicyConfig};

fn unit(id: &str, kind: UnitKind, profile: &str) -> UnitSpec {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config/profiles/orin-agx")
        .join(format!("{profile}.toml"));
    UnitSpec {
        id: UnitId::new(id),
        kind,
        device: (kind != UnitKind::Cpu).then_some(0),
        simulated: true,
        streams: 1,
        max_batch: 64,
        profile: Some(Arc::new(Profile::from_file(&path).unwrap())),
        run_sizes: Vec::new(),
        stagger_min_images: 0,
    }
}

fn config(seconds: u64) -> SimulationConfig {
    let platform =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/profiles/orin-agx/platform.toml");
    SimulationConfig {
        units: vec![
            unit("amp", UnitKind::Amp, "amp"),
            unit("cuda", UnitKind::CudaFp32, "cuda_fp32"),
            unit("dla0", UnitKind::Dla, "dla"),
        ],
        contention: ContentionConfig::from_file(&platform).unwrap(),
        scheduler: SchedulerSettings {
            fixed_batch: Some(64),
            ..Default::default()
        },
        workload: Workload::ClosedLoop {
            clients: 9,
            think_time: Duration::ZERO,
        },
        images_per_request: 64,
        priority: 0,
        timeout: None,
        duration: Duration::from_secs(seconds),
        warmup: Duration::ZERO,
        jitter: 0.0,
        seed: 3,
    }
}

fn search(seconds: u64, policy: &str) -> Option<SearchProgress> {
    let config = config(seconds);
    let mut policy = PolicyConfig::from_name(policy).unwrap();
    policy.resolve_contention(&config.contention);
    let outcome = simulate(&config, build_policy(&policy)).unwrap();
    let batches: u64 = outcome.report.total.batches;
    match outcome.search {
        Some(SearchProgress::Searching { batches: searched }) => {
            assert!(searched <= batches, "searched {searched} of {batches}");
            assert_eq!(outcome.converged_after_batches, None);
        }
        Some(SearchProgress::Converged { after_batches }) => {
            assert!(
                after_batches <= batches,
                "converged after {after_batches} of {batches}"
            );
            assert_eq!(outcome.converged_after_batches, Some(after_batches));
        }
        None => assert_eq!(outcome.converged_after_batches, None),
    }
    outcome.search
}

#[test]
fn adaptive_says_it_is_still_searching_then_that_it_converged() {
    // One second is a handful of batches: far from the end of the search.
    match search(1, "adaptive") {
        Some(SearchProgress::Searching { batches }) => assert!(batches > 0),
        other => panic!("adaptive after 1 s: {other:?}"),
    }
    // Ten minutes is far past it (it converges within a few hundred batches here).
    match search(600, "adaptive") {
        Some(SearchProgress::Converged { after_batches }) => assert!(after_batches > 0),
        other => panic!("adaptive after 600 s: {other:?}"),
    }
}

#[test]
fn policies_that_do_not_search_report_no_progress() {
    for policy in [
        "round_robin",
        "least_loaded",
        "contention_aware",
        "weighted",
        "slo",
    ] {
        assert_eq!(search(5, policy), None, "{policy}");
    }
}

#[test]
fn progress_reads_as_a_sentence() {
    assert_eq!(
        SearchProgress::Searching { batches: 12 }.to_string(),
        "still searching after 12 completed batches"
    );
    assert_eq!(
        SearchProgress::Converged { after_batches: 340 }.to_string(),
        "converged after 340 completed batches"
    );
}
