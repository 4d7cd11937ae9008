//! One run of a config: through the discrete-event simulator, or in real time through
//! the actors and engines as `mica bench` runs it.
//!
//! Both paths start from the same `wiring::service_setup` output (units, scheduler
//! settings, the policy with the platform's contention model resolved), so a flag means
//! the same thing to `mica simulate`, `mica bench` and the experiments.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use mica_actors::{Service, ServiceSetup};
use mica_core::{RunReport, SearchProgress, SimulationConfig, Workload};

use crate::bench::{self, BenchOptions, Load, Stop};
use crate::config::ResolvedConfig;
use crate::wiring::{self, RunOverrides};

/// What a run offers and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunPlan {
    /// Offered load.
    pub load: Load,
    /// Measured time (warm-up excluded).
    pub duration: Duration,
    /// Time at the start whose requests are not counted.
    pub warmup: Duration,
    /// Images per request (the fixed batch size when there is one).
    pub images_per_request: u32,
    /// Deadline of every request, from its arrival (simulator only).
    pub timeout: Option<Duration>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The report, with the same keys as `mica bench`'s.
    pub report: RunReport,
    /// Simulator only: completed batches `adaptive` took to converge.
    pub converged_after_batches: Option<u64>,
    /// Simulator only: where the policy's online search stood at the end.
    pub search: Option<SearchProgress>,
    /// Simulator only: events processed.
    pub events: u64,
    /// Simulator only: times the policy answered something impossible.
    pub policy_errors: u64,
    /// Simulated (or, in real time, elapsed) seconds including the warm-up.
    pub run_s: f64,
    /// Wall-clock time the run took.
    pub wall: Duration,
    /// Simulator only: requests answered within their deadline (measured window).
    pub deadline_met: u64,
    /// Simulator only: requests the policy shed.
    pub shed: u64,
    /// Simulator only: requests whose deadline passed in the queue.
    pub expired: u64,
}

impl RunOutcome {
    /// Simulated seconds per wall-clock second.
    pub fn speed(&self) -> f64 {
        self.run_s / self.wall.as_secs_f64().max(1e-9)
    }
}

/// The simulator's input for a service setup: the same units, scheduler settings and
/// platform contention model the live service would use.
pub fn simulation_config(
    loaded: &ResolvedConfig,
    setup: &ServiceSetup,
    plan: &RunPlan,
) -> anyhow::Result<SimulationConfig> {
    let workload = match plan.load {
        Load::Closed { concurrency } => Workload::ClosedLoop {
            clients: u32::try_from(concurrency)
                .ok()
                .filter(|c| *c < u32::MAX)
                .context("--concurrency is too large for the simulator")?,
            think_time: Duration::ZERO,
        },
        Load::Open { rate } => Workload::Poisson { rate_per_s: rate },
    };
    // The simulator applies one jitter to every unit; the sim engines each apply their
    // own. Take the largest so the simulation is not smoother than the service.
    let jitter = setup
        .units
        .iter()
        .map(|u| u.engine.engine.jitter())
        .fold(0.0_f64, f64::max);
    Ok(SimulationConfig {
        units: setup.units.iter().map(|u| u.spec.clone()).collect(),
        contention: loaded.emulated_contention().clone(),
        scheduler: setup.scheduler.clone(),
        workload,
        images_per_request: plan.images_per_request,
        priority: 0,
        timeout: plan.timeout,
        duration: plan.warmup + plan.duration,
        warmup: plan.warmup,
        jitter,
        seed: loaded.config.scheduler.seed,
    })
}

/// Runs the setup in the discrete-event simulator.
pub fn simulate(
    loaded: &ResolvedConfig,
    overrides: &RunOverrides,
    plan: &RunPlan,
) -> anyhow::Result<RunOutcome> {
    let setup = wiring::service_setup(loaded, overrides)?;
    let config = simulation_config(loaded, &setup, plan)?;
    let policy = mica_policies::build_policy(&setup.policy);
    let started = Instant::now();
    let outcome = mica_core::simulate(&config, policy).context("simulation")?;
    let wall = started.elapsed();
    Ok(RunOutcome {
        report: outcome.report,
        converged_after_batches: outcome.converged_after_batches,
        search: outcome.search,
        events: outcome.events,
        policy_errors: outcome.policy_errors,
        run_s: config.duration.as_secs_f64(),
        wall,
        deadline_met: outcome.deadline_met,
        shed: outcome.shed,
        expired: outcome.expired,
    })
}

/// Runs the setup in real time: starts the service on a fresh actix system, offers the
/// load with `mica bench`'s generator and shuts the service down. The metrics recorder
/// must already be installed (once per process).
pub fn real_time(
    loaded: &ResolvedConfig,
    overrides: &RunOverrides,
    plan: &RunPlan,
    progress: bool,
) -> anyhow::Result<RunOutcome> {
    let setup = wiring::service_setup(loaded, overrides)?;
    let labels = bench::unit_labels(&setup);
    let options = BenchOptions {
        load: plan.load,
        stop: Stop::After(plan.duration),
        warmup: plan.warmup,
        images_per_request: plan.images_per_request,
        progress,
        seed: loaded.config.scheduler.seed,
        policy: setup.policy.name().to_string(),
    };
    let started = Instant::now();
    let report = actix::System::new().block_on(async move {
        let service = Service::start(setup)?;
        service.wait_ready().await?;
        let report = bench::run(&bench::in_process(service.clone()), labels, &options).await;
        service.shutdown(Duration::from_secs(5)).await;
        Ok::<_, anyhow::Error>(report)
    })?;
    let wall = started.elapsed();
    Ok(RunOutcome {
        report,
        converged_after_batches: None,
        search: None,
        events: 0,
        policy_errors: 0,
        run_s: wall.as_secs_f64(),
        wall,
        deadline_met: 0,
        shed: 0,
        expired: 0,
    })
}
