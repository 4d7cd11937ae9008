//! The handle the rest of mica uses to run inference: `Service`.
//!
//! `Service::start` creates the dispatcher, one unit actor per configured unit and
//! their stream workers; `submit` sends a request and resolves to its answer. Every
//! accepted request is answered exactly once — with an output or with an error —
//! whatever happens to the engine that runs it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext};
use mica_core::{Clock, SchedulerSettings, SearchProgress, UnitHealth, UnitId, UnitSpec};
use mica_engines::{ContentionHub, CustomEngineBuilder, EngineContext, EngineSpec};
use mica_policies::PolicyConfig;
use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::batch_deadline::BatchDeadline;
use crate::dispatcher::{Dispatcher, QueryStatus, SetPolicy, Shutdown, Submit};
use crate::liveness::{Dead, Liveness};
use crate::responder::Responder;
use crate::timer;
use crate::unit_actor::{UnitActor, UnitShared};

/// One inference request.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    /// Images it carries.
    pub images: u32,
    /// `images` × per-image input elements, row-major FP32, already preprocessed;
    /// `None` for synthetic load.
    pub data: Option<Vec<f32>>,
    /// Priority level, 0 the most urgent.
    pub priority: u8,
    /// Longest the request may take from admission to answer; past it, it gets
    /// `TimedOut`, whether it still waits in the queue or its batch is running.
    pub timeout: Option<Duration>,
}

/// The answer to a request.
#[derive(Debug, Clone)]
pub struct InferResponse {
    /// Images answered.
    pub images: u32,
    /// Images in the batch the request ran in.
    pub batch_images: u32,
    /// Output elements per image.
    pub per_image: usize,
    /// `images` × `per_image` values (empty for synthetic input on engines that skip
    /// output).
    pub data: Vec<f32>,
    /// Unit that ran it.
    pub unit: UnitId,
    /// Its index among the configured units.
    pub unit_index: usize,
    /// Engine label of that unit (`sim`, `torch`, ...).
    pub engine: &'static str,
    /// Time from admission to the start of its batch.
    pub queue_wait: Duration,
    /// Time from admission to answer.
    pub latency: Duration,
}

/// Why a request got no output.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum InferError {
    /// The queue for its priority is full; try again after `retry_after`.
    #[error("server overloaded, retry after {retry_after:?}")]
    Overloaded {
        /// Estimated time for the queue to drain.
        retry_after: Duration,
    },
    /// Its timeout passed before it was answered.
    #[error("request timed out")]
    TimedOut,
    /// The policy found no unit able to meet its deadline and shed it.
    #[error("request shed: its deadline cannot be met")]
    DeadlineCannotBeMet,
    /// The request is malformed for this service (batch too large, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The engine failed (or panicked) on its batch.
    #[error("inference failed: {0}")]
    Engine(String),
    /// No unit can run it now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The service is stopping and takes no new work.
    #[error("service is shutting down")]
    ShuttingDown,
}

impl InferError {
    /// Short label for metrics (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            InferError::Overloaded { .. } => "overloaded",
            InferError::TimedOut => "timeout",
            InferError::DeadlineCannotBeMet => "shed",
            InferError::Invalid(_) => "invalid",
            InferError::Engine(_) => "engine",
            InferError::Unavailable(_) => "unavailable",
            InferError::ShuttingDown => "shutting_down",
        }
    }
}

/// Where the scheduler stands, for reports: the policy, its online search if it
/// searches, and each unit's health (offline, quarantined).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    /// The active policy's config name.
    pub policy: &'static str,
    /// Where the policy's online search stands (`adaptive`); `None` if it does not search.
    pub search: Option<SearchProgress>,
    /// Every unit's standing, in index order.
    pub units: Vec<UnitHealth>,
}

/// A unit to run: its scheduling description and the engine each stream gets.
#[derive(Debug, Clone)]
pub struct UnitSetup {
    /// What the scheduler knows of it.
    pub spec: UnitSpec,
    /// Engine to build for stream 0; stream `s` gets a copy with `stream = s`.
    pub engine: EngineSpec,
}

/// Everything `Service::start` needs.
#[derive(Clone)]
pub struct ServiceSetup {
    /// The units, in index order.
    pub units: Vec<UnitSetup>,
    /// Policy at start.
    pub policy: PolicyConfig,
    /// Batching and admission.
    pub scheduler: SchedulerSettings,
    /// How long a batch may run before its engine counts as hung.
    pub batch_deadline: BatchDeadline,
    /// Contention coupling of the simulated units; built on `clock`.
    pub hub: Arc<ContentionHub>,
    /// Where the actors read the time and wait: `Clock::system()` in service, a
    /// `ManualClock` in tests (then every deadline, timeout and drain time fires when
    /// the test advances it).
    pub clock: Clock,
    /// Builds every engine instead of the engine kinds (tests, embedders).
    pub custom_engines: Option<CustomEngineBuilder>,
    /// Test tooling: the dispatcher panics when it admits this many requests (to test
    /// supervision). `None` in service.
    pub dispatcher_panic_after: Option<u64>,
    /// Ready only when every unit loaded (`true`), or once every unit has loaded or
    /// failed and at least one loaded (`false`: the service runs on what is left and
    /// names the units missing).
    pub require_all_units: bool,
}

impl std::fmt::Debug for ServiceSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSetup")
            .field("units", &self.units)
            .field("policy", &self.policy)
            .field("scheduler", &self.scheduler)
            .field("batch_deadline", &self.batch_deadline)
            .field("clock", &self.clock)
            .field("custom_engines", &self.custom_engines.is_some())
            .finish()
    }
}

/// Why the service could not start.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum StartError {
    /// A unit's engine failed to load or warm up.
    #[error("unit {unit}: {message}")]
    UnitFailed {
        /// The unit.
        unit: String,
        /// What went wrong.
        message: String,
    },
    /// No unit is configured.
    #[error("no unit configured")]
    NoUnits,
}

/// Loading progress shared between the stream workers and the handle.
#[derive(Debug)]
pub(crate) struct Readiness {
    /// Workers that have neither loaded nor failed yet.
    pending: AtomicUsize,
    /// Workers that loaded.
    loaded: AtomicUsize,
    /// The first load failure.
    failed: watch::Sender<Option<StartError>>,
    /// Every unit that failed to load, once each, in the order they failed.
    failures: std::sync::Mutex<Vec<StartError>>,
    /// Set when every worker has loaded or failed.
    done: watch::Sender<bool>,
    /// Whether one failed unit keeps the service not ready.
    require_all: bool,
}

impl Readiness {
    pub(crate) fn worker_loaded(&self, result: Result<(), StartError>) {
        match result {
            Ok(()) => {
                self.loaded.fetch_add(1, Ordering::AcqRel);
            }
            Err(error) => {
                {
                    let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                    let unit = |e: &StartError| match e {
                        StartError::UnitFailed { unit, .. } => Some(unit.clone()),
                        StartError::NoUnits => None,
                    };
                    if !failures.iter().any(|f| unit(f) == unit(&error)) {
                        failures.push(error.clone());
                    }
                }
                self.failed.send_if_modified(|first| {
                    let unset = first.is_none();
                    if unset {
                        *first = Some(error);
                    }
                    unset
                });
            }
        }
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.send_replace(true);
        }
    }

    /// Whether what has loaded is enough to be ready (once `done`).
    fn enough(&self) -> bool {
        if self.require_all {
            self.failed.borrow().is_none()
        } else {
            self.loaded.load(Ordering::Acquire) > 0
        }
    }
}

/// Cheap-to-clone handle on the running service.
#[derive(Clone)]
pub struct Service {
    dispatcher: Addr<Dispatcher>,
    readiness: Arc<Readiness>,
    liveness: Arc<Liveness>,
    clock: Clock,
    shutting_down: Arc<AtomicBool>,
    max_batch: u32,
    priority_levels: u8,
    units: Arc<Vec<UnitId>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("units", &self.units)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl Service {
    /// Starts the actors on the current actix system. Engines load in the background
    /// on their own threads; `wait_ready` tells when they are all warm.
    pub fn start(setup: ServiceSetup) -> Result<Self, StartError> {
        if setup.units.is_empty() {
            return Err(StartError::NoUnits);
        }
        let workers: usize = setup.units.iter().map(|u| u.spec.streams as usize).sum();
        let (failed, _) = watch::channel(None);
        let (done, _) = watch::channel(false);
        let readiness = Arc::new(Readiness {
            pending: AtomicUsize::new(workers),
            loaded: AtomicUsize::new(0),
            failed,
            failures: std::sync::Mutex::new(Vec::new()),
            done,
            require_all: setup.require_all_units,
        });
        let specs: Vec<UnitSpec> = setup.units.iter().map(|u| u.spec.clone()).collect();
        let max_batch = specs.iter().map(|s| s.max_batch).max().unwrap_or(0);
        let priority_levels = setup.scheduler.priority_levels.max(1);
        let mailbox = setup.scheduler.queue_capacity * usize::from(priority_levels) + 1024;
        let context = EngineContext {
            hub: setup.hub.clone(),
            custom: setup.custom_engines.clone(),
        };
        let clock = setup.clock.clone();
        let liveness = Arc::new(Liveness::new(
            clock.now(),
            setup.units.iter().map(|u| u.spec.id.to_string()),
        ));
        let deadline = setup.batch_deadline;
        let dispatcher = Dispatcher::create(|ctx| {
            ctx.set_mailbox_capacity(mailbox);
            let dispatcher = ctx.address();
            let units: Vec<Addr<UnitActor>> = setup
                .units
                .iter()
                .enumerate()
                .map(|(index, unit)| {
                    let shared = UnitShared {
                        context: context.clone(),
                        readiness: readiness.clone(),
                        liveness: liveness.clone(),
                        deadline,
                        clock: clock.clone(),
                    };
                    UnitActor::new(index, unit.clone(), dispatcher.clone(), shared).start()
                })
                .collect();
            let policy = mica_policies::build_policy(&setup.policy);
            let engines: Vec<&'static str> = setup
                .units
                .iter()
                .map(|u| u.engine.engine.as_str())
                .collect();
            Dispatcher::new(
                &specs,
                &engines,
                units,
                policy,
                setup.scheduler.clone(),
                liveness.clone(),
                clock.clone(),
            )
            .with_panic_after(setup.dispatcher_panic_after)
        });
        Ok(Self {
            dispatcher,
            readiness,
            liveness,
            clock,
            shutting_down: Arc::new(AtomicBool::new(false)),
            max_batch,
            priority_levels,
            units: Arc::new(setup.units.iter().map(|u| u.spec.id.clone()).collect()),
        })
    }

    /// Sends a request; resolves to its answer. A request with a `timeout` is answered
    /// `TimedOut` once it passes, even while its batch runs (the batch's output for it
    /// is then dropped).
    pub fn submit(
        &self,
        request: InferRequest,
    ) -> impl Future<Output = Result<InferResponse, InferError>> + Send + 'static {
        let (respond, answer) = oneshot::channel();
        let timeout = request
            .timeout
            .map(|limit| timer::after(&self.clock, limit));
        let clock = self.clock.clone();
        let respond = Responder::new(respond);
        let sent = if self.shutting_down.load(Ordering::Acquire) {
            Err(InferError::ShuttingDown)
        } else {
            self.dispatcher
                .try_send(Submit { request, respond })
                .map_err(|error| match error {
                    actix::dev::SendError::Full(_) => InferError::Overloaded {
                        retry_after: Duration::from_secs(1),
                    },
                    actix::dev::SendError::Closed(_) if self.is_shutting_down() => {
                        InferError::ShuttingDown
                    }
                    actix::dev::SendError::Closed(_) => {
                        InferError::Unavailable("the dispatcher stopped".into())
                    }
                })
        };
        async move {
            sent?;
            let lost = || {
                Err(InferError::Unavailable(
                    "the request's batch was lost by a stopped actor".into(),
                ))
            };
            match timeout {
                Some(deadline) => tokio::select! {
                    biased;
                    answer = answer => answer.unwrap_or_else(|_| lost()),
                    () = timer::sleep_until(clock, deadline) => Err(InferError::TimedOut),
                },
                None => answer.await.unwrap_or_else(|_| lost()),
            }
        }
    }

    /// Whether every unit has loaded and warmed up, and the actors are alive.
    pub fn is_ready(&self) -> bool {
        *self.readiness.done.borrow()
            && self.readiness.enough()
            && !self.shutting_down.load(Ordering::Acquire)
            && self.alive().is_ok()
    }

    /// Whether the dispatcher and every unit actor still run: none stopped (a panic in
    /// a handler stops an actor) and none has missed its timers for
    /// `liveness::STALE_AFTER`. After `shutdown` the actors stop on purpose; this is
    /// then not an error worth acting on (check `is_shutting_down`).
    pub fn alive(&self) -> Result<(), Dead> {
        if !self.dispatcher.connected() {
            return Err(Dead::DispatcherStopped);
        }
        self.liveness.check(self.clock.now())
    }

    /// Whether `shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Waits until every unit is warm, or one failed to load (with
    /// `require_all_units = false`: until every unit has loaded or failed, then ready if
    /// any loaded; [`Service::missing_units`] names the others).
    pub async fn wait_ready(&self) -> Result<(), StartError> {
        if !self.readiness.require_all {
            self.wait_settled().await.ok();
            return match self.readiness.enough() {
                true => Ok(()),
                false => Err(self
                    .readiness
                    .failed
                    .borrow()
                    .clone()
                    .unwrap_or(StartError::NoUnits)),
            };
        }
        let mut failed = self.readiness.failed.subscribe();
        let mut done = self.readiness.done.subscribe();
        loop {
            if let Some(error) = failed.borrow_and_update().clone() {
                return Err(error);
            }
            if *done.borrow_and_update() {
                return Ok(());
            }
            tokio::select! {
                _ = failed.changed() => {}
                _ = done.changed() => {}
            }
        }
    }

    /// Waits until every unit has loaded or failed to load; the first load failure, if
    /// any. Unlike `wait_ready` it does not return at the first failure, so the units
    /// that did load are warm when it returns (the failed ones are offline).
    pub async fn wait_settled(&self) -> Result<(), StartError> {
        let mut done = self.readiness.done.subscribe();
        while !*done.borrow_and_update() {
            if done.changed().await.is_err() {
                break;
            }
        }
        match self.readiness.failed.borrow().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The units that failed to load, each with why (empty when all loaded).
    pub fn missing_units(&self) -> Vec<StartError> {
        self.readiness
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Largest batch any unit accepts.
    pub fn max_batch(&self) -> u32 {
        self.max_batch
    }

    /// Number of priority levels (requests name 0..levels).
    pub fn priority_levels(&self) -> u8 {
        self.priority_levels
    }

    /// Replaces the scheduling policy without touching queued or running work.
    /// Resolves to the name of the policy it replaced.
    pub async fn set_policy(&self, policy: PolicyConfig) -> Result<String, InferError> {
        self.dispatcher
            .send(SetPolicy { policy })
            .await
            .map_err(|_| InferError::ShuttingDown)
    }

    /// Where the scheduler stands now: the policy's search and each unit's health.
    pub async fn status(&self) -> Result<ServiceStatus, InferError> {
        self.dispatcher
            .send(QueryStatus)
            .await
            .map_err(|_| InferError::ShuttingDown)
    }

    /// Stops taking requests, lets everything accepted finish (at most `drain`), then
    /// answers what is left with `ShuttingDown`. Resolves to the number of requests
    /// that had to be answered so.
    pub async fn shutdown(&self, drain: Duration) -> usize {
        self.shutting_down.store(true, Ordering::Release);
        let (done, finished) = oneshot::channel();
        self.dispatcher.do_send(Shutdown { drain, done });
        finished.await.unwrap_or(0)
    }
}
