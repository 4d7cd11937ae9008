//! Discrete-event simulator: an hour of traffic in seconds, with the live service's
//! scheduling code.
//!
//! Virtual time advances from event to event (arrivals, batch completions, the
//! scheduler's wake-ups); nothing sleeps. The simulator drives the same `Scheduler` as
//! the live dispatcher (admit, poll, complete), so policy, batching, deadlines and
//! health rules are the service's own. Running batches are emulated by the same
//! `ContentionProgress` as the sim engine's `ContentionHub` uses in real time: each
//! batch carries its isolated service time (profile latency, optionally jittered) as
//! remaining work, which progresses at 1 / slowdown, the slowdown coming from the
//! platform's contention model applied to every batch running at that instant and
//! recomputed at every start and end.
//!
//! Workloads: closed loop (N clients, each sending its next request when the previous
//! one is answered, after an optional think time) or open Poisson arrivals at a rate.
//! Everything random (arrivals, jitter) comes from one seed, so a run is reproducible.
//! The result is the same `RunReport` as `mica bench` (mode `simulate`, simulated).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::cluster::UnitSpec;
use crate::contention::{ContentionConfig, ContentionModel, Load};
use crate::policy::{Policy, SearchProgress};
use crate::progress::{ContentionProgress, WorkId};
use crate::report::{ReportBuilder, RunReport};
use crate::scheduler::{Action, DropReason, Scheduler, SchedulerSettings};

/// Where requests come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// `clients` clients, each with one request outstanding at a time.
    ClosedLoop {
        /// Number of clients.
        clients: u32,
        /// Pause between an answer and the client's next request.
        think_time: Duration,
    },
    /// Open-loop Poisson arrivals.
    Poisson {
        /// Mean requests per second.
        rate_per_s: f64,
    },
}

/// One simulation run.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// The units; every one needs a profile.
    pub units: Vec<UnitSpec>,
    /// The platform's contention model (the one the sim engine applies).
    pub contention: ContentionConfig,
    /// Batching, queueing and health settings of the scheduler.
    pub scheduler: SchedulerSettings,
    /// Request source.
    pub workload: Workload,
    /// Images per request (ignored when `scheduler.fixed_batch` is set: then that).
    pub images_per_request: u32,
    /// Priority level of every request.
    pub priority: u8,
    /// Per-request deadline, from admission.
    pub timeout: Option<Duration>,
    /// Simulated length of the run, warm-up included.
    pub duration: Duration,
    /// Leading part of the run left out of the report.
    pub warmup: Duration,
    /// Relative jitter of service times (uniform in 1 ± jitter), as the sim engine.
    pub jitter: f64,
    /// Seed of arrivals and jitter.
    pub seed: u64,
}

/// What a run produced beyond the report.
#[derive(Debug, Clone)]
pub struct SimulationOutcome {
    /// The report (mode `simulate`, `simulated = true`), over the measured window.
    pub report: RunReport,
    /// Requests answered within their deadline (all answered ones without a deadline).
    pub deadline_met: u64,
    /// Requests the policy shed (measured window).
    pub shed: u64,
    /// Requests whose deadline passed in the queue (measured window).
    pub expired: u64,
    /// Times the policy answered something impossible.
    pub policy_errors: u64,
    /// Completed batches the policy's online search took, if it searches.
    pub converged_after_batches: Option<u64>,
    /// Where the policy's online search stands at the end, if it searches.
    pub search: Option<SearchProgress>,
    /// Events processed (arrivals, completions, wake-ups).
    pub events: u64,
}

/// A run that cannot start.
#[derive(Debug, Error, PartialEq)]
pub enum SimulationError {
    /// A unit has no profile to emulate it from.
    #[error("unit {0} has no profile: the simulator emulates units from their profiles")]
    NoProfile(String),
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A closed-loop client (or the Poisson source, `u32::MAX`) sends a request.
    Arrival(u32),
    /// The scheduler asked to be polled again.
    Wake,
}

const POISSON: u32 = u32::MAX;

/// A running batch, the payload of its item in the `ContentionProgress`.
#[derive(Debug)]
struct Running {
    batch: u64,
    unit: usize,
    started: Duration,
    requests: Vec<(u32, Duration)>,
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Runs `policy` over the configured units and workload; see the module docs.
pub fn simulate(
    config: &SimulationConfig,
    policy: Box<dyn Policy>,
) -> Result<SimulationOutcome, SimulationError> {
    Sim::new(config, policy)?.run()
}

struct Sim<'a> {
    config: &'a SimulationConfig,
    model: Box<dyn ContentionModel>,
    scheduler: Scheduler<u32>,
    rng: ChaCha8Rng,
    report: ReportBuilder,
    heap: BinaryHeap<Reverse<(u64, u64, Event)>>,
    sequence: u64,
    running: ContentionProgress<Running>,
    now: Duration,
    images: u32,
    outcome: SimulationOutcome,
    scheduled_wake: Option<Duration>,
}

impl<'a> Sim<'a> {
    fn new(config: &'a SimulationConfig, policy: Box<dyn Policy>) -> Result<Self, SimulationError> {
        if let Some(unit) = config.units.iter().find(|u| u.profile.is_none()) {
            return Err(SimulationError::NoProfile(unit.id.to_string()));
        }
        config
            .contention
            .validate()
            .map_err(|e| SimulationError::Invalid(format!("contention: {e}")))?;
        if !(0.0..1.0).contains(&config.jitter) {
            return Err(SimulationError::Invalid(format!(
                "jitter must be in [0, 1), got {}",
                config.jitter
            )));
        }
        if config.warmup >= config.duration {
            return Err(SimulationError::Invalid(
                "warmup must be shorter than duration".into(),
            ));
        }
        let images = config
            .scheduler
            .fixed_batch
            .unwrap_or(config.images_per_request);
        let scheduler = Scheduler::new(&config.units, policy, config.scheduler.clone());
        scheduler
            .check(images)
            .map_err(|e| SimulationError::Invalid(format!("requests of {images} images: {e:?}")))?;
        let report = ReportBuilder::new(
            config
                .units
                .iter()
                .map(|u| (u.id.to_string(), u.kind.to_string(), "sim".to_string()))
                .collect(),
        );
        Ok(Self {
            config,
            model: config.contention.build_for(
                &config
                    .units
                    .iter()
                    .map(|u| u.id.clone())
                    .collect::<Vec<_>>(),
            ),
            scheduler,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            report,
            heap: BinaryHeap::new(),
            sequence: 0,
            running: ContentionProgress::new(),
            now: Duration::ZERO,
            images,
            outcome: SimulationOutcome {
                report: RunReport::default(),
                deadline_met: 0,
                shed: 0,
                expired: 0,
                policy_errors: 0,
                converged_after_batches: None,
                search: None,
                events: 0,
            },
            scheduled_wake: None,
        })
    }

    fn push(&mut self, at: Duration, event: Event) {
        self.sequence += 1;
        self.heap.push(Reverse((nanos(at), self.sequence, event)));
    }

    fn measuring(&self) -> bool {
        self.now >= self.config.warmup
    }

    fn run(mut self) -> Result<SimulationOutcome, SimulationError> {
        match self.config.workload {
            Workload::ClosedLoop { clients, .. } => {
                for client in 0..clients.min(POISSON - 1) {
                    self.push(Duration::ZERO, Event::Arrival(client));
                }
            }
            Workload::Poisson { rate_per_s } => {
                if !(rate_per_s.is_finite() && rate_per_s > 0.0) {
                    return Err(SimulationError::Invalid(format!(
                        "rate_per_s must be positive, got {rate_per_s}"
                    )));
                }
                let first = self.exponential(rate_per_s);
                self.push(first, Event::Arrival(POISSON));
            }
        }
        let end = self.config.duration;
        let mut actions = Vec::new();
        loop {
            let completion = self.next_completion();
            let event_at = self
                .heap
                .peek()
                .map(|Reverse((at, _, _))| Duration::from_nanos(*at));
            let (at, is_completion) = match (completion, event_at) {
                (Some((_, c)), Some(e)) if c <= e => (c, true),
                (Some((_, c)), None) => (c, true),
                (_, Some(e)) => (e, false),
                (None, None) => break,
            };
            if at > end {
                break;
            }
            self.advance(at);
            self.outcome.events += 1;
            if is_completion {
                let (id, _) = completion.expect("checked above; this is a bug");
                self.complete(id);
            } else if let Some(Reverse((_, _, event))) = self.heap.pop() {
                match event {
                    Event::Arrival(client) => self.arrive(client),
                    Event::Wake => {
                        if self.scheduled_wake.is_some_and(|w| w <= self.now) {
                            self.scheduled_wake = None;
                        }
                    }
                }
            }
            let wake = self.scheduler.poll(self.now, &mut actions);
            for action in actions.drain(..) {
                self.apply(action);
            }
            if let Some(wake) = wake.filter(|w| *w > self.now) {
                if self
                    .scheduled_wake
                    .is_none_or(|s| s > wake || s <= self.now)
                {
                    self.scheduled_wake = Some(wake);
                    self.push(wake, Event::Wake);
                }
            }
        }
        self.outcome.policy_errors = self.scheduler.policy_errors();
        self.outcome.converged_after_batches = self.scheduler.policy().converged_after_batches();
        self.outcome.search = self.scheduler.policy().search_progress();
        let name = self.scheduler.policy().name();
        self.outcome.report = self.report.finish(
            "simulate",
            name,
            true,
            self.config.duration - self.config.warmup,
        );
        let health = self.scheduler.unit_health(self.now);
        let ids = self.config.units.iter().map(|u| u.id.as_str());
        self.outcome.report.explain_idle(ids.zip(health));
        Ok(self.outcome)
    }

    fn exponential(&mut self, rate_per_s: f64) -> Duration {
        let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
        crate::time::secs(-u.ln() / rate_per_s)
    }

    /// The running batch that finishes first, and when.
    fn next_completion(&self) -> Option<(WorkId, Duration)> {
        self.running
            .next_finish()
            .map(|(id, s)| (id, self.now + crate::time::secs(s)))
    }

    /// Moves virtual time to `at`, progressing every running batch at 1 / slowdown.
    fn advance(&mut self, at: Duration) {
        self.running
            .advance(at.saturating_sub(self.now).as_secs_f64());
        self.now = self.now.max(at);
    }

    fn arrive(&mut self, client: u32) {
        if client == POISSON {
            if let Workload::Poisson { rate_per_s } = self.config.workload {
                let next = self.now + self.exponential(rate_per_s);
                self.push(next, Event::Arrival(POISSON));
            }
        }
        let admitted = self.scheduler.admit(
            self.now,
            self.images,
            self.config.priority,
            self.config.timeout,
            client,
        );
        if admitted.is_err() {
            if self.measuring() {
                self.report.record_rejection();
            }
            self.answered(client, true);
        }
    }

    /// A client's request was answered (or refused): it sends the next one.
    fn answered(&mut self, client: u32, refused: bool) {
        if let Workload::ClosedLoop { think_time, .. } = self.config.workload {
            if client != POISSON {
                // A refused client backs off at least a millisecond, so a full queue
                // cannot spin the simulation at one instant.
                let pause = if refused {
                    think_time.max(Duration::from_millis(1))
                } else {
                    think_time
                };
                self.push(self.now + pause, Event::Arrival(client));
            }
        }
    }

    fn apply(&mut self, action: Action<u32>) {
        match action {
            Action::Start {
                unit,
                batch,
                images,
                requests,
            } => {
                let spec = &self.config.units[unit];
                let profile = spec
                    .profile
                    .as_ref()
                    .expect("profiles checked at construction; this is a bug");
                let mut work = profile.latency(images).as_secs_f64();
                if self.config.jitter > 0.0 {
                    let j = self.config.jitter;
                    work *= 1.0 + self.rng.random_range(-j..=j);
                }
                let load = Load {
                    unit,
                    kind: spec.kind,
                    device: spec.device,
                    gpu_occupancy: profile.gpu_occupancy,
                    bandwidth_gbps: profile.bandwidth_gbps(images),
                    images,
                };
                let running = Running {
                    batch,
                    unit,
                    started: self.now,
                    requests: requests
                        .into_iter()
                        .map(|q| (q.payload, q.meta.arrival))
                        .collect(),
                };
                self.running.add(self.model.as_ref(), load, work, running);
            }
            Action::Drop { request, reason } => {
                if self.measuring() {
                    self.report.record_failure();
                    match reason {
                        DropReason::Shed => self.outcome.shed += 1,
                        DropReason::Expired => self.outcome.expired += 1,
                    }
                }
                self.answered(request.payload, false);
            }
        }
    }

    fn complete(&mut self, id: WorkId) {
        let done = self
            .running
            .remove(self.model.as_ref(), id)
            .expect("the batch that finishes first is running; this is a bug");
        let unit = done.unit;
        let images_per_request = self.images;
        self.scheduler.complete(self.now, done.batch, None, true);
        let measuring = self.measuring();
        let mut images = 0;
        for (client, arrival) in &done.requests {
            let latency = self.now.saturating_sub(*arrival);
            if measuring {
                self.report.record_request(
                    unit,
                    images_per_request,
                    latency,
                    done.started.saturating_sub(*arrival),
                );
                if self.config.timeout.is_none_or(|t| latency <= t) {
                    self.outcome.deadline_met += 1;
                }
            }
            images += images_per_request;
            self.answered(*client, false);
        }
        if measuring {
            self.report.record_batch(unit, images);
        }
    }
}
