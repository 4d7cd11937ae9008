//! The `UnitActor`: one per compute unit. Owns the unit's stream workers, hands each
//! batch to a free one, watches every batch's deadline, and reports every completion to
//! the dispatcher.
//!
//! A batch that runs past its deadline (`BatchDeadline`) means the engine call hung: the
//! unit answers the batch's requests with an error, reports the batch failed (which
//! counts towards quarantine), abandons the worker's thread (it cannot be interrupted;
//! it ends when the call returns) and starts a replacement worker on a new thread. While
//! a replacement loads, the unit takes no batches. Once more threads hang than
//! `MAX_HUNG_PER_STREAM` per stream, the unit is taken out of service instead.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, Addr, Arbiter, ArbiterHandle, AsyncContext, Context, Handler, Message, SpawnHandle,
};
use mica_core::Clock;
use mica_engines::EngineContext;
use tracing::{error, info, warn};

use crate::batch_deadline::BatchDeadline;
use crate::dispatcher::{BatchCompleted, Dispatcher, Pending, UnitFailed, UnitServing};
use crate::liveness::{Liveness, StopGuard};
use crate::metrics::UnitMetrics;
use crate::responder::Responder;
use crate::service::{InferError, Readiness, UnitSetup};
use crate::stream_worker::{Execute, StreamWorker};
use crate::timer;

/// Command: run these requests as one batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunBatch {
    /// Batch id from the scheduler.
    pub batch: u64,
    /// Images in the batch.
    pub images: u32,
    /// The requests, in queue order.
    pub requests: Vec<Pending>,
}

/// Event: a stream worker finished a batch.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WorkerFinished {
    /// Which worker.
    pub worker: usize,
    /// Which incarnation of it (a replaced worker's late answer is told apart).
    pub generation: u64,
    /// Batch id.
    pub batch: u64,
    /// Images in it.
    pub images: u32,
    /// Engine time.
    pub service: Duration,
    /// Success, or the error its requests got.
    pub error: Option<String>,
}

/// Event: a stream worker loaded (or failed to load) its engine.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct WorkerLoaded {
    /// Which worker.
    pub worker: usize,
    /// Which incarnation of it.
    pub generation: u64,
    /// The load error, if any.
    pub error: Option<String>,
}

/// Batches a unit holds beyond its free streams before it refuses more. The
/// dispatcher only sends a batch when the scheduler counts a free stream, so this only
/// fills while a worker is still loading.
const BACKLOG_LIMIT: usize = 64;

/// Threads per stream that may be stuck in hung engine calls before the unit is taken
/// out of service rather than given yet another worker.
pub const MAX_HUNG_PER_STREAM: u32 = 2;

/// One stream worker and its thread.
struct WorkerSlot {
    address: Addr<StreamWorker>,
    arbiter: ArbiterHandle,
    generation: u64,
    loaded: bool,
}

/// The batch a worker runs now.
struct Running {
    batch: u64,
    images: u32,
    responders: Vec<Responder>,
    deadline: Duration,
    timer: SpawnHandle,
}

/// One compute unit.
pub struct UnitActor {
    index: usize,
    setup: UnitSetup,
    context: EngineContext,
    dispatcher: Addr<Dispatcher>,
    readiness: Arc<Readiness>,
    deadline: BatchDeadline,
    workers: Vec<WorkerSlot>,
    running: Vec<Option<Running>>,
    free: Vec<usize>,
    backlog: VecDeque<RunBatch>,
    in_flight: u32,
    /// Workers whose replacement is still loading.
    repairing: u32,
    /// Threads abandoned in hung calls that have not returned.
    hung: u32,
    next_generation: u64,
    offline: bool,
    busy: BusyClock,
    metrics: UnitMetrics,
    guard: StopGuard,
    clock: Clock,
}

/// Integrates running batches over time, for the busy ratio.
#[derive(Debug)]
struct BusyClock {
    window_start: Instant,
    last_change: Instant,
    busy: Duration,
}

impl BusyClock {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            last_change: now,
            busy: Duration::ZERO,
        }
    }

    /// Accounts the time since the last change with `running` batches.
    fn advance(&mut self, now: Instant, running: u32) {
        self.busy += now.saturating_duration_since(self.last_change) * running;
        self.last_change = now;
    }

    /// Busy share of `streams` over the window ending now; starts the next window.
    fn close_window(&mut self, now: Instant, running: u32, streams: u32) -> f64 {
        self.advance(now, running);
        let span = now.saturating_duration_since(self.window_start) * streams.max(1);
        let ratio = if span.is_zero() {
            0.0
        } else {
            (self.busy.as_secs_f64() / span.as_secs_f64()).min(1.0)
        };
        self.window_start = now;
        self.busy = Duration::ZERO;
        ratio
    }
}

/// What every unit actor gets from the service.
#[derive(Clone)]
pub(crate) struct UnitShared {
    /// What its engines are built with.
    pub(crate) context: EngineContext,
    /// Loading progress, reported as its workers load.
    pub(crate) readiness: Arc<Readiness>,
    /// Heartbeats.
    pub(crate) liveness: Arc<Liveness>,
    /// The per-batch deadline rule.
    pub(crate) deadline: BatchDeadline,
    /// The service's clock.
    pub(crate) clock: Clock,
}

impl UnitActor {
    /// An actor for unit `index`.
    pub(crate) fn new(
        index: usize,
        setup: UnitSetup,
        dispatcher: Addr<Dispatcher>,
        shared: UnitShared,
    ) -> Self {
        let UnitShared {
            context,
            readiness,
            liveness,
            deadline,
            clock,
        } = shared;
        let metrics = UnitMetrics::new(
            setup.spec.id.as_str(),
            setup.engine.engine.as_str(),
            setup.spec.streams,
        );
        Self {
            index,
            setup,
            context,
            dispatcher,
            readiness,
            deadline,
            workers: Vec::new(),
            running: Vec::new(),
            free: Vec::new(),
            backlog: VecDeque::new(),
            in_flight: 0,
            repairing: 0,
            hung: 0,
            next_generation: 0,
            offline: false,
            busy: BusyClock::new(clock.now()),
            metrics,
            guard: StopGuard::unit(liveness, index),
            clock,
        }
    }

    /// Starts stream worker `worker` on a thread of its own: CUDA's current stream and
    /// libtorch state are per thread, and engine calls block.
    fn spawn_worker(&mut self, ctx: &mut Context<Self>, worker: usize) -> WorkerSlot {
        let mut spec = self.setup.engine.clone();
        spec.stream = worker as u32;
        let context = self.context.clone();
        let clock = self.clock.clone();
        let unit = ctx.address();
        let id = self.setup.spec.id.clone();
        let index = self.index;
        let generation = self.next_generation;
        self.next_generation += 1;
        let arbiter = Arbiter::new().handle();
        let address = StreamWorker::start_in_arbiter(&arbiter, move |_| {
            StreamWorker::new(id, index, generation, spec, context, unit, clock)
        });
        WorkerSlot {
            address,
            arbiter,
            generation,
            loaded: false,
        }
    }

    fn run(&mut self, ctx: &mut Context<Self>, worker: usize, batch: RunBatch) {
        let now = self.clock.now();
        self.busy.advance(now, self.in_flight);
        self.in_flight += 1;
        for request in &batch.requests {
            self.metrics
                .queue_wait
                .record(request.queue_wait.as_secs_f64());
        }
        let deadline = self
            .deadline
            .for_batch(self.setup.spec.profile.as_deref(), batch.images);
        let generation = self.workers[worker].generation;
        let id = batch.batch;
        let at = now + deadline.min(mica_core::time::MAX_TIME);
        let timer = timer::run_at(ctx, &self.clock, at, move |act, ctx| {
            act.batch_overdue(ctx, worker, generation, id);
        });
        self.running[worker] = Some(Running {
            batch: batch.batch,
            images: batch.images,
            responders: batch.requests.iter().map(|r| r.respond.clone()).collect(),
            deadline,
            timer,
        });
        self.workers[worker].address.do_send(Execute {
            batch: batch.batch,
            images: batch.images,
            requests: batch.requests,
        });
    }

    /// Gives `worker` the next backlogged batch, or marks it free.
    fn next_or_free(&mut self, ctx: &mut Context<Self>, worker: usize) {
        match self.backlog.pop_front() {
            Some(next) => self.run(ctx, worker, next),
            None => self.free.push(worker),
        }
    }

    /// Answers a batch that cannot run with `error` and reports it failed.
    fn refuse(&self, batch: RunBatch, error: &InferError) {
        for request in batch.requests {
            request.fail(error.clone());
        }
        self.dispatcher.do_send(BatchCompleted {
            batch: batch.batch,
            service: Duration::ZERO,
            ok: false,
        });
    }

    /// The deadline of the batch on `worker` passed: the engine call hung.
    fn batch_overdue(
        &mut self,
        ctx: &mut Context<Self>,
        worker: usize,
        generation: u64,
        batch: u64,
    ) {
        if self.workers[worker].generation != generation
            || self.running[worker].as_ref().map(|r| r.batch) != Some(batch)
        {
            return;
        }
        let Some(running) = self.running[worker].take() else {
            return;
        };
        let unit = self.setup.spec.id.to_string();
        error!(
            unit = %unit,
            stream = worker,
            batch,
            images = running.images,
            deadline_ms = running.deadline.as_millis() as u64,
            "batch ran past its deadline: the engine hung; replacing its stream worker"
        );
        let message = format!(
            "unit {unit}: the batch did not finish within its deadline of {:?} (the engine \
             hung)",
            running.deadline
        );
        for responder in &running.responders {
            responder.fail(InferError::Engine(message.clone()));
        }
        self.busy.advance(self.clock.now(), self.in_flight);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.metrics.timeouts.increment(1);
        self.metrics.failures.increment(1);
        self.dispatcher.do_send(BatchCompleted {
            batch,
            service: running.deadline,
            ok: false,
        });
        // The thread cannot be interrupted: it stops once the call returns, and its
        // late answer is ignored (the requests were answered above).
        self.workers[worker].arbiter.stop();
        self.hung += 1;
        self.metrics.hung_workers.set(f64::from(self.hung));
        if self.hung > MAX_HUNG_PER_STREAM * self.setup.spec.streams {
            self.take_offline(&format!(
                "{} stream-worker threads are stuck in hung engine calls",
                self.hung
            ));
            return;
        }
        if self.repairing == 0 {
            self.dispatcher.do_send(UnitServing {
                unit: self.index,
                serving: false,
            });
        }
        self.repairing += 1;
        let slot = self.spawn_worker(ctx, worker);
        self.workers[worker] = slot;
    }

    /// Takes the unit out of service for good: no more batches, the backlog answered.
    fn take_offline(&mut self, why: &str) {
        error!(unit = %self.setup.spec.id, reason = why, "unit taken out of service");
        self.offline = true;
        self.dispatcher.do_send(UnitFailed { unit: self.index });
        let error = InferError::Unavailable(format!(
            "unit {} was taken out of service: {why}",
            self.setup.spec.id
        ));
        while let Some(batch) = self.backlog.pop_front() {
            self.refuse(batch, &error);
        }
    }
}

impl Actor for UnitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for worker in 0..self.setup.spec.streams as usize {
            let slot = self.spawn_worker(ctx, worker);
            self.workers.push(slot);
            self.running.push(None);
        }
        self.guard.beat(self.clock.now());
        ctx.run_interval(crate::metrics::SAMPLE_INTERVAL, |act, _| {
            let now = act.clock.now();
            act.guard.beat(now);
            let ratio = act
                .busy
                .close_window(now, act.in_flight, act.setup.spec.streams);
            act.metrics.busy_ratio.set(ratio);
            act.metrics.in_flight.set(f64::from(act.in_flight));
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.metrics.in_flight.set(f64::from(self.in_flight));
    }
}

impl Handler<RunBatch> for UnitActor {
    type Result = ();

    fn handle(&mut self, batch: RunBatch, ctx: &mut Self::Context) {
        if self.offline {
            let error =
                InferError::Unavailable(format!("unit {} is out of service", self.setup.spec.id));
            self.refuse(batch, &error);
        } else if let Some(worker) = self.free.pop() {
            self.run(ctx, worker, batch);
        } else if self.backlog.len() < BACKLOG_LIMIT {
            self.backlog.push_back(batch);
        } else {
            warn!(unit = %self.setup.spec.id, "unit backlog full; failing a batch");
            let error =
                InferError::Unavailable(format!("unit {} has no free stream", self.setup.spec.id));
            self.refuse(batch, &error);
        }
    }
}

impl Handler<WorkerFinished> for UnitActor {
    type Result = ();

    fn handle(&mut self, done: WorkerFinished, ctx: &mut Self::Context) {
        if self.workers[done.worker].generation != done.generation {
            // A call abandoned as hung returned at last; its thread now ends.
            self.hung = self.hung.saturating_sub(1);
            self.metrics.hung_workers.set(f64::from(self.hung));
            info!(
                unit = %self.setup.spec.id,
                batch = done.batch,
                after_ms = done.service.as_millis() as u64,
                "a hung engine call returned; its answer was already given"
            );
            return;
        }
        match self.running[done.worker].take() {
            Some(running) if running.batch == done.batch => {
                ctx.cancel_future(running.timer);
            }
            other => {
                self.running[done.worker] = other;
                warn!(unit = %self.setup.spec.id, batch = done.batch, "completion of a batch this worker does not run");
                return;
            }
        }
        self.busy.advance(self.clock.now(), self.in_flight);
        self.in_flight = self.in_flight.saturating_sub(1);
        match &done.error {
            None => {
                self.metrics.batches.increment(1);
                self.metrics.images.increment(u64::from(done.images));
                self.metrics.duration.record(done.service.as_secs_f64());
                self.metrics.batch_size.record(f64::from(done.images));
                if let Some(profile) = &self.setup.spec.profile {
                    let isolated = profile.latency(done.images.max(1)).as_secs_f64();
                    if isolated > 0.0 {
                        self.metrics
                            .slowdown
                            .record(done.service.as_secs_f64() / isolated);
                    }
                }
            }
            Some(message) => {
                self.metrics.failures.increment(1);
                warn!(unit = %self.setup.spec.id, batch = done.batch, error = %message, "batch failed");
            }
        }
        self.dispatcher.do_send(BatchCompleted {
            batch: done.batch,
            service: done.service,
            ok: done.error.is_none(),
        });
        self.next_or_free(ctx, done.worker);
    }
}

impl Handler<WorkerLoaded> for UnitActor {
    type Result = ();

    fn handle(&mut self, loaded: WorkerLoaded, ctx: &mut Self::Context) {
        if self.workers[loaded.worker].generation != loaded.generation {
            return;
        }
        let unit = self.setup.spec.id.to_string();
        // Generations below the stream count are the first workers, whose loading
        // decides readiness; later ones replace a worker lost to a hung call.
        let replacement = loaded.generation >= u64::from(self.setup.spec.streams);
        match loaded.error {
            None => {
                self.workers[loaded.worker].loaded = true;
                if replacement {
                    info!(unit = %unit, stream = loaded.worker, "replacement stream worker ready");
                    self.repairing = self.repairing.saturating_sub(1);
                    if self.repairing == 0 && !self.offline {
                        self.dispatcher.do_send(UnitServing {
                            unit: self.index,
                            serving: true,
                        });
                    }
                } else {
                    self.readiness.worker_loaded(Ok(()));
                    if self.workers.iter().all(|w| w.loaded) {
                        self.dispatcher.do_send(UnitServing {
                            unit: self.index,
                            serving: true,
                        });
                    }
                }
                self.next_or_free(ctx, loaded.worker);
            }
            Some(message) => {
                error!(unit = %unit, stream = loaded.worker, error = %message, "engine failed to load");
                if !replacement {
                    self.readiness
                        .worker_loaded(Err(crate::service::StartError::UnitFailed {
                            unit,
                            message: message.clone(),
                        }));
                }
                // The unit gets no more batches; what it already holds is answered by
                // the worker with the load error, so nothing hangs.
                self.dispatcher.do_send(UnitFailed { unit: self.index });
                self.free.push(loaded.worker);
                while let Some(next) = self.backlog.pop_front() {
                    if let Some(worker) = self.free.pop() {
                        self.run(ctx, worker, next);
                    } else {
                        self.backlog.push_front(next);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ratio_integrates_running_batches() {
        let start = Instant::now();
        let mut clock = BusyClock::new(start);
        // One of two streams busy for the whole second: half busy.
        clock.advance(start, 0);
        let ratio = clock.close_window(start + Duration::from_secs(1), 1, 2);
        assert!((ratio - 0.5).abs() < 1e-9, "{ratio}");
        // Next window: idle for 0.5 s, then both streams busy for 0.5 s.
        let t = start + Duration::from_millis(1500);
        clock.advance(t, 0);
        let ratio = clock.close_window(start + Duration::from_secs(2), 2, 2);
        assert!((ratio - 0.5).abs() < 1e-9, "{ratio}");
    }
}
