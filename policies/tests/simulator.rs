//! The discrete-event simulator on the calibrated Orin: hard targets through the
//! simulator, agreement with the contention model's steady state, the policies'
//! results on the paper's combinations, determinism and speed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mica_core::{
    simulate, ContentionConfig, Profile, SchedulerSettings, SimulationConfig, SimulationOutcome,
    UnitId, UnitKind, UnitSpec, Workload,
};
use mica_policies::{build_policy, PolicyConfig};

fn orin(name: &str) -> Arc<Profile> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../config/profiles/orin-agx")
        .join(format!("{name}.toml"));
    Arc::new(Profile::from_file(&path).unwrap())
}

fn platform() -> ContentionConfig {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/profiles/orin-agx/platform.toml");
    ContentionConfig::from_file(&path).unwrap()
}

fn spec(id: &str, kind: UnitKind, profile: &str, streams: u32) -> UnitSpec {
    UnitSpec {
        id: UnitId::new(id),
        kind,
        device: (kind != UnitKind::Cpu).then_some(0),
        simulated: true,
        streams,
        max_batch: 64,
        profile: Some(orin(profile)),
        run_sizes: Vec::new(),
        stagger_min_images: 0,
    }
}

fn cuda() -> UnitSpec {
    spec("gpu0.fp32", UnitKind::CudaFp32, "cuda_fp32", 1)
}
fn amp() -> UnitSpec {
    spec("gpu0.amp", UnitKind::Amp, "amp", 1)
}
fn dla(core: u32) -> UnitSpec {
    spec(&format!("dla{core}"), UnitKind::Dla, "dla", 1)
}

fn config(units: Vec<UnitSpec>, batch: u32, seconds: u64) -> SimulationConfig {
    let clients = 3 * units.iter().map(|u| u.streams).sum::<u32>();
    SimulationConfig {
        units,
        contention: platform(),
        scheduler: SchedulerSettings {
            fixed_batch: Some(batch),
            ..Default::default()
        },
        workload: Workload::ClosedLoop {
            clients,
            think_time: Duration::ZERO,
        },
        images_per_request: batch,
        priority: 0,
        timeout: None,
        duration: Duration::from_secs(seconds),
        warmup: Duration::from_secs(seconds / 10),
        jitter: 0.0,
        seed: 7,
    }
}

fn run(config: &SimulationConfig, policy: &str) -> SimulationOutcome {
    let mut policy = PolicyConfig::from_name(policy).unwrap();
    policy.resolve_contention(&config.contention);
    let outcome = simulate(config, build_policy(&policy)).unwrap();
    assert_eq!(outcome.policy_errors, 0);
    outcome
}

fn throughput(config: &SimulationConfig, policy: &str) -> f64 {
    run(config, policy).report.total.throughput_img_s
}

fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected
}

#[test]
fn hard_targets_hold_through_the_simulator() {
    let t = throughput(&config(vec![cuda()], 64, 120), "round_robin");
    assert!(close(t, 415.2, 0.01), "cuda_fp32 at 64: {t}");
    let cpu = spec("cpu", UnitKind::Cpu, "cpu", 2);
    let t = throughput(&config(vec![cpu], 1, 300), "round_robin");
    assert!(close(t, 10.1, 0.01), "cpu at 1 with two streams: {t}");
}

#[test]
fn static_baseline_reproduces_the_paper_and_contention_aware_does_not_lose() {
    for batch in [1, 8, 64] {
        let cuda_only = throughput(&config(vec![cuda()], batch, 120), "round_robin");
        let cuda_dla = throughput(&config(vec![cuda(), dla(0)], batch, 120), "round_robin");
        if batch <= 8 {
            let gain = cuda_dla - cuda_only;
            assert!(
                (38.0..=52.0).contains(&gain),
                "CUDA+DLA gain {gain} at {batch}"
            );
        }
    }
    let amp_only = throughput(&config(vec![amp()], 64, 120), "round_robin");
    let all = config(vec![amp(), dla(0)], 64, 120);
    let static_baseline = throughput(&all, "round_robin");
    let loss = amp_only - static_baseline;
    assert!((26.0..=33.0).contains(&loss), "CUDA+Tensor+DLA loss {loss}");
    let aware = throughput(&all, "contention_aware");
    assert!(
        aware >= amp_only * 0.995,
        "contention_aware {aware} vs amp alone {amp_only}"
    );
    let adaptive = throughput(&config(vec![amp(), dla(0)], 64, 600), "adaptive");
    assert!(adaptive >= aware * 0.95, "adaptive {adaptive} vs {aware}");
}

#[test]
fn adaptive_converges_near_contention_aware_on_five_units() {
    let units = || {
        vec![
            spec("cpu", UnitKind::Cpu, "cpu", 1),
            cuda(),
            spec("gpu0.fp16", UnitKind::TensorFp16, "tensor_fp16", 1),
            dla(0),
            dla(1),
        ]
    };
    let aware = run(&config(units(), 64, 600), "contention_aware");
    let adaptive = run(&config(units(), 64, 600), "adaptive");
    let ratio = adaptive.report.total.throughput_img_s / aware.report.total.throughput_img_s;
    println!(
        "five units, batch 64: contention_aware {:.1} img/s, adaptive {:.1} img/s (ratio {ratio:.3}), converged after {:?} batches",
        aware.report.total.throughput_img_s,
        adaptive.report.total.throughput_img_s,
        adaptive.converged_after_batches
    );
    assert!(ratio >= 0.95, "adaptive / contention_aware = {ratio}");
    assert!(adaptive.converged_after_batches.is_some());
    // The static baseline loses to both: the two GPU units time-slice the SMs.
    let static_baseline = throughput(&config(units(), 64, 120), "round_robin");
    assert!(aware.report.total.throughput_img_s > static_baseline * 1.1);
}

#[test]
fn poisson_below_capacity_serves_the_offered_load_deterministically() {
    let mut c = config(vec![cuda(), dla(0)], 1, 200);
    c.scheduler.fixed_batch = None;
    c.images_per_request = 1;
    c.workload = Workload::Poisson { rate_per_s: 60.0 };
    c.jitter = 0.05;
    let a = run(&c, "least_loaded");
    let b = run(&c, "least_loaded");
    assert_eq!(a.report, b.report);
    assert_eq!(a.events, b.events);
    assert!(
        close(a.report.total.throughput_img_s, 60.0, 0.05),
        "{:?}",
        a.report.total
    );
    assert_eq!(a.report.failed_requests, 0);
    c.seed = 8;
    assert_ne!(run(&c, "least_loaded").report, a.report);
}

#[test]
fn slo_sheds_under_overload_and_meets_more_deadlines_than_least_loaded() {
    let mut c = config(
        vec![cuda(), dla(0), spec("cpu", UnitKind::Cpu, "cpu", 1)],
        1,
        120,
    );
    c.scheduler.fixed_batch = None;
    c.images_per_request = 1;
    c.scheduler.max_queue_delay = Duration::from_millis(5);
    c.workload = Workload::Poisson { rate_per_s: 900.0 };
    c.timeout = Some(Duration::from_millis(250));
    let slo = run(&c, "slo");
    let least = run(&c, "least_loaded");
    assert!(slo.shed > 0, "{slo:?}");
    assert!(
        slo.deadline_met > least.deadline_met,
        "slo {} vs least_loaded {}",
        slo.deadline_met,
        least.deadline_met
    );
}

/// One simulated hour of a 5-unit Orin; run with `--release -- --ignored` (< 5 s).
#[test]
#[ignore]
fn an_hour_of_five_units_in_seconds() {
    let units = vec![
        spec("cpu", UnitKind::Cpu, "cpu", 2),
        spec("gpu0.fp32", UnitKind::CudaFp32, "cuda_fp32", 2),
        spec("gpu0.fp16", UnitKind::TensorFp16, "tensor_fp16", 2),
        spec("dla0", UnitKind::Dla, "dla", 2),
        spec("dla1", UnitKind::Dla, "dla", 2),
    ];
    for policy in PolicyConfig::names() {
        let mut c = config(units.clone(), 1, 3600);
        c.scheduler.fixed_batch = None;
        c.images_per_request = 1;
        c.workload = Workload::ClosedLoop {
            clients: 256,
            think_time: Duration::ZERO,
        };
        let started = Instant::now();
        let outcome = run(&c, policy);
        let wall = started.elapsed();
        println!(
            "{policy}: {:.0} img/s, {} events, {:.2} s wall, {:.0} simulated s per wall s",
            outcome.report.total.throughput_img_s,
            outcome.events,
            wall.as_secs_f64(),
            3600.0 / wall.as_secs_f64()
        );
        assert!(wall < Duration::from_secs(5), "{policy}: {wall:?}");
    }
}

/// `mica experiment multi-instance`'s setup (fixed batch, two requests outstanding per
/// unit, 600 s measured after 60 s): `adaptive` with every unit is never below the best
/// of the paper's subsets under the static baseline, at every batch size.
#[test]
fn adaptive_with_all_units_matches_the_best_subset_at_every_batch_size() {
    let cpu = || spec("cpu", UnitKind::Cpu, "cpu", 1);
    let all = || vec![cpu(), cuda(), amp(), dla(0), dla(1)];
    let subsets: Vec<Vec<UnitSpec>> = vec![
        vec![cpu()],
        vec![cuda()],
        vec![amp()],
        vec![cuda(), dla(0)],
        vec![amp(), dla(0)],
    ];
    let experiment = |units: Vec<UnitSpec>, batch: u32| {
        let mut c = config(units, batch, 660);
        let clients = 2 * c.units.len() as u32;
        c.workload = Workload::ClosedLoop {
            clients,
            think_time: Duration::ZERO,
        };
        c.warmup = Duration::from_secs(60);
        c
    };
    for batch in [1, 8, 16, 32, 64] {
        let best = subsets
            .iter()
            .map(|s| throughput(&experiment(s.clone(), batch), "round_robin"))
            .fold(0.0, f64::max);
        let adaptive = run(&experiment(all(), batch), "adaptive");
        let t = adaptive.report.total.throughput_img_s;
        println!(
            "batch {batch}: best subset {best:.1} img/s, adaptive {t:.1} img/s ({:.3}), converged after {:?} batches",
            t / best,
            adaptive.converged_after_batches
        );
        assert!(
            t >= best * 0.995,
            "batch {batch}: adaptive {t} vs best subset {best}"
        );
        assert!(adaptive.converged_after_batches.is_some());
    }
}

/// A unit 100x slower than the others, whose batch (seconds, time-sliced with the GPU
/// unit it shares the SMs with) lasts far longer than an epoch: `adaptive` judges it on
/// what it finished (nothing), leaves it idle, converges within its wall-time bound and
/// delivers what the best subset delivers.
#[test]
fn adaptive_drops_a_unit_one_hundred_times_slower() {
    let slow_profile = {
        let mut p = (*orin("cuda_fp32")).clone();
        for point in &mut p.points {
            point.latency_ms *= 100.0;
        }
        Arc::new(p)
    };
    let slow = UnitSpec {
        id: UnitId::new("slow"),
        profile: Some(slow_profile),
        run_sizes: Vec::new(),
        stagger_min_images: 0,
        ..cuda()
    };
    for batch in [8, 64] {
        let best = [vec![amp()], vec![amp(), dla(0)]]
            .iter()
            .map(|s| throughput(&config(s.clone(), batch, 300), "round_robin"))
            .fold(0.0, f64::max);
        let mut c = config(vec![amp(), dla(0), slow.clone()], batch, 300);
        c.warmup = Duration::from_secs(60);
        let adaptive = run(&c, "adaptive");
        let t = adaptive.report.total.throughput_img_s;
        let slow_images = adaptive
            .report
            .units
            .get("slow")
            .map_or(0, |u| u.stats.images);
        println!(
            "batch {batch}: best subset {best:.1} img/s, adaptive {t:.1} img/s ({:.3}), slow unit {slow_images} images, converged after {:?} batches",
            t / best,
            adaptive.converged_after_batches
        );
        for (id, u) in &adaptive.report.units {
            println!("  {id}: {:.1} img/s", u.stats.throughput_img_s);
        }
        assert!(
            t >= best * 0.97,
            "batch {batch}: adaptive {t} vs best subset {best}"
        );
        assert!(adaptive.converged_after_batches.is_some());
    }
}
