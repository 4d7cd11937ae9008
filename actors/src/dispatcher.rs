//! The `Dispatcher` actor: admits requests, forms batches and routes them to units.
//!
//! All decisions are made by the synchronous `Scheduler` core (mica-core); this
//! actor only turns messages into scheduler events and scheduler actions into messages,
//! and keeps one timer for the scheduler's next wake-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, SpawnHandle};
use mica_core::{Action, Clock, DropReason, Scheduler, SchedulerSettings, UnitSpec};
use mica_policies::PolicyConfig;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::liveness::{Liveness, StopGuard};
use crate::metrics::DispatcherMetrics;
use crate::responder::Responder;
use crate::service::{InferError, InferRequest, ServiceStatus};
use crate::timer;
use crate::unit_actor::{RunBatch, UnitActor};

/// A request in flight through the actors, with the channel its answer goes to.
#[derive(Debug)]
pub struct Pending {
    /// Images the request carries.
    pub images: u32,
    /// Input data (`None` for synthetic load).
    pub data: Option<Vec<f32>>,
    /// Where the answer goes (answered once, by whoever comes first).
    pub respond: Responder,
    /// When it was admitted (on the service's clock).
    pub admitted: Instant,
    /// Time it waited before its batch started (set at dispatch).
    pub queue_wait: Duration,
}

impl Pending {
    /// Answers with an error (the receiver may be gone: nothing to do then).
    pub fn fail(self, error: InferError) {
        self.respond.fail(error);
    }
}

/// Command: admit a request.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    /// The request.
    pub request: InferRequest,
    /// Where its answer goes.
    pub respond: Responder,
}

/// Event: a unit finished a batch.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct BatchCompleted {
    /// Batch id from the scheduler.
    pub batch: u64,
    /// The engine's own time for the batch.
    pub service: Duration,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Event: a unit's engine failed to load; it gets no more batches.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct UnitFailed {
    /// Index of the unit.
    pub unit: usize,
}

/// Event: a unit's workers all became ready (`serving`), or one of them is being
/// replaced after a hung batch (not `serving`: it gets no batches until the
/// replacement is warm).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct UnitServing {
    /// Index of the unit.
    pub unit: usize,
    /// Whether it can take batches.
    pub serving: bool,
}

/// Command: replace the policy; answers the old policy's name.
#[derive(Message)]
#[rtype(result = "String")]
pub struct SetPolicy {
    /// The new policy.
    pub policy: PolicyConfig,
}

/// Query: where the scheduler stands now (each unit's health, the policy's search).
#[derive(Message, Debug)]
#[rtype(result = "ServiceStatus")]
pub struct QueryStatus;

/// Command: stop admitting, drain, answer the rest, stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    /// Longest to wait for accepted work to finish.
    pub drain: Duration,
    /// Resolves with the number of requests answered `ShuttingDown`.
    pub done: oneshot::Sender<usize>,
}

/// Routes batches to units.
pub struct Dispatcher {
    scheduler: Scheduler<Pending>,
    units: Vec<Addr<UnitActor>>,
    clock: Clock,
    epoch: Instant,
    timer: Option<(Duration, SpawnHandle)>,
    actions: Vec<Action<Pending>>,
    draining: Option<(Instant, oneshot::Sender<usize>)>,
    metrics: DispatcherMetrics,
    /// Per unit: loaded and not being repaired (the scheduler's view adds quarantine).
    serving: Vec<bool>,
    /// Per unit: taken out of service for good.
    failed: Vec<bool>,
    guard: StopGuard,
    /// Test tooling: panic at this many admitted requests.
    panic_after: Option<u64>,
    admitted: u64,
}

impl Dispatcher {
    /// A dispatcher over these units.
    pub fn new(
        specs: &[UnitSpec],
        engines: &[&'static str],
        units: Vec<Addr<UnitActor>>,
        policy: Box<dyn mica_core::Policy>,
        settings: SchedulerSettings,
        liveness: Arc<Liveness>,
        clock: Clock,
    ) -> Self {
        let metrics = DispatcherMetrics::new(specs, engines, policy.name());
        Self {
            serving: vec![false; specs.len()],
            failed: vec![false; specs.len()],
            guard: StopGuard::dispatcher(liveness),
            panic_after: None,
            admitted: 0,
            scheduler: Scheduler::new(specs, policy, settings),
            units,
            epoch: clock.now(),
            clock,
            timer: None,
            actions: Vec::new(),
            draining: None,
            metrics,
        }
    }

    /// Test tooling: panic when admitting the `n`-th request (`None`: never).
    pub fn with_panic_after(mut self, n: Option<u64>) -> Self {
        self.panic_after = n;
        self
    }

    fn sample_queue(&self) {
        self.metrics.queue(
            self.scheduler.queued_requests(),
            self.scheduler.running_batches(),
        );
    }

    /// Scheduler time: since the dispatcher was made, on the service's clock.
    fn now(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.epoch)
    }

    /// Sets `mica_unit_healthy` from what the dispatcher knows: loaded, not failed, not
    /// being repaired after a hung batch, not quarantined.
    fn publish_health(&mut self) {
        let now = self.now();
        let view = self.scheduler.view_at(now);
        for (index, unit) in view.units.iter().enumerate() {
            let healthy = unit.healthy && self.serving[index] && !self.failed[index];
            self.metrics.unit_healthy(index, healthy);
        }
    }

    /// Runs the scheduler and carries out what it decides.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();
        let wake = self.scheduler.poll(now, &mut self.actions);
        let policy = self.scheduler.policy().name();
        for action in self.actions.drain(..) {
            match action {
                Action::Start {
                    unit,
                    batch,
                    images,
                    mut requests,
                } => {
                    let started = self.clock.now();
                    for request in &mut requests {
                        request.payload.queue_wait =
                            started.saturating_duration_since(request.payload.admitted);
                    }
                    self.metrics.dispatched(unit, policy, images);
                    self.units[unit].do_send(RunBatch {
                        batch,
                        images,
                        requests: requests.into_iter().map(|r| r.payload).collect(),
                    });
                }
                Action::Drop { request, reason } => {
                    let error = match reason {
                        DropReason::Expired => InferError::TimedOut,
                        DropReason::Shed => InferError::DeadlineCannotBeMet,
                    };
                    self.metrics.dropped(error.reason());
                    request.payload.fail(error);
                }
            }
        }
        self.arm_timer(ctx, now, wake);
        self.check_drained(ctx);
    }

    fn arm_timer(&mut self, ctx: &mut Context<Self>, now: Duration, wake: Option<Duration>) {
        let Some(wake) = wake else {
            return;
        };
        if let Some((at, handle)) = self.timer {
            if at <= wake && at > now {
                return;
            }
            ctx.cancel_future(handle);
        }
        let at = self.epoch + wake.min(mica_core::time::MAX_TIME);
        let handle = timer::run_at(ctx, &self.clock, at, |act, ctx| {
            act.timer = None;
            act.schedule(ctx);
        });
        self.timer = Some((wake, handle));
    }

    fn check_drained(&mut self, ctx: &mut Context<Self>) {
        let Some((deadline, _)) = &self.draining else {
            return;
        };
        let idle = self.scheduler.queued_requests() == 0 && self.scheduler.running_batches() == 0;
        if !idle && self.clock.now() < *deadline {
            return;
        }
        let (_, done) = self.draining.take().expect("checked above; this is a bug");
        let left = self.scheduler.drain_queue();
        let count = left.len();
        for request in left {
            request.payload.fail(InferError::ShuttingDown);
        }
        if count > 0 {
            warn!(
                requests = count,
                "drain time over: answered queued requests with an error"
            );
        }
        let _ = done.send(count);
        ctx.stop();
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        debug!(units = self.units.len(), "dispatcher started");
        self.sample_queue();
        self.guard.beat(self.clock.now());
        self.publish_health();
        ctx.run_interval(crate::metrics::SAMPLE_INTERVAL, |act, _| {
            act.guard.beat(act.clock.now());
            act.publish_health();
            let policy = act.scheduler.policy();
            let slowdowns = policy.predicted_slowdowns(act.scheduler.view());
            act.metrics.predicted_slowdowns(slowdowns.as_deref());
            act.sample_queue();
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.sample_queue();
    }
}

impl Handler<Submit> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: Submit, ctx: &mut Self::Context) {
        let Submit { request, respond } = message;
        let pending = Pending {
            images: request.images,
            data: request.data,
            respond,
            admitted: self.clock.now(),
            queue_wait: Duration::ZERO,
        };
        if self.draining.is_some() {
            pending.fail(InferError::ShuttingDown);
            return;
        }
        if let Err(invalid) = self.scheduler.check(request.images) {
            pending.fail(InferError::Invalid(match invalid {
                mica_core::InvalidRequest::TooManyImages { images, max } => {
                    format!("batch of {images} images; the largest any unit accepts is {max}")
                }
                mica_core::InvalidRequest::WrongBatch { images, fixed } => {
                    format!("batch of {images} images; this run takes batches of exactly {fixed}")
                }
            }));
            self.metrics.dropped("invalid");
            return;
        }
        self.admitted += 1;
        if self.panic_after == Some(self.admitted) {
            panic!(
                "injected dispatcher panic (test tooling) at request {}",
                self.admitted
            );
        }
        let now = self.now();
        match self.scheduler.admit(
            now,
            request.images,
            request.priority,
            request.timeout,
            pending,
        ) {
            Ok(_) => self.schedule(ctx),
            Err(rejected) => {
                self.metrics.dropped("overloaded");
                rejected.payload.fail(InferError::Overloaded {
                    retry_after: rejected.retry_after,
                });
            }
        }
    }
}

impl Handler<BatchCompleted> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: BatchCompleted, ctx: &mut Self::Context) {
        let now = self.now();
        if self
            .scheduler
            .complete(now, message.batch, Some(message.service), message.ok)
            .is_none()
        {
            warn!(batch = message.batch, "completion of an unknown batch");
        }
        if !message.ok {
            self.publish_health();
        }
        self.schedule(ctx);
    }
}

impl Handler<UnitFailed> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: UnitFailed, ctx: &mut Self::Context) {
        warn!(unit = message.unit, "unit taken out of service");
        self.failed[message.unit] = true;
        self.scheduler.set_offline(message.unit, true);
        self.publish_health();
        self.schedule(ctx);
    }
}

impl Handler<UnitServing> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: UnitServing, ctx: &mut Self::Context) {
        let was = self.serving[message.unit];
        self.serving[message.unit] = message.serving;
        // A unit that was serving and stops (a worker being replaced) gets no batches
        // until it serves again; at start a unit still loading keeps its batches in
        // its own backlog, as before.
        if was != message.serving && !self.failed[message.unit] {
            self.scheduler.set_offline(message.unit, !message.serving);
        }
        self.publish_health();
        self.schedule(ctx);
    }
}

impl Handler<SetPolicy> for Dispatcher {
    type Result = String;

    fn handle(&mut self, message: SetPolicy, ctx: &mut Self::Context) -> Self::Result {
        let old = self.scheduler.policy().name();
        let policy = mica_policies::build_policy(&message.policy);
        info!(from = old, to = policy.name(), "policy swapped");
        self.metrics.policy_changed(old, policy.name());
        self.scheduler.set_policy(policy);
        self.schedule(ctx);
        old.to_string()
    }
}

impl Handler<QueryStatus> for Dispatcher {
    type Result = actix::MessageResult<QueryStatus>;

    fn handle(&mut self, _message: QueryStatus, _ctx: &mut Self::Context) -> Self::Result {
        // The scheduler knows a unit is out of service; the dispatcher knows why: its
        // engine failed to load, or a worker lost to a hung batch is being replaced.
        let mut units = self.scheduler.unit_health(self.now());
        for (index, unit) in units.iter_mut().enumerate() {
            unit.offline = self.failed[index];
            unit.replacing_worker = !self.failed[index] && !self.serving[index];
        }
        let policy = self.scheduler.policy();
        actix::MessageResult(ServiceStatus {
            policy: policy.name(),
            search: policy.search_progress(),
            units,
        })
    }
}

impl Handler<Shutdown> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: Shutdown, ctx: &mut Self::Context) {
        info!(
            queued = self.scheduler.queued_requests(),
            running = self.scheduler.running_batches(),
            "draining"
        );
        let deadline = timer::after(&self.clock, message.drain);
        self.draining = Some((deadline, message.done));
        timer::run_at(ctx, &self.clock, deadline, |act, ctx| {
            act.check_drained(ctx)
        });
        self.schedule(ctx);
    }
}
