//! The `UnitActor`: one per compute unit. Owns the unit's stream workers, hands each
//! batch to a free one, and reports every completion to the dispatcher.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter, Context, Handler, Message};
use mica_engines::EngineContext;
use tracing::{error, warn};

use crate::dispatcher::{BatchCompleted, Dispatcher, Pending, UnitFailed};
use crate::metrics::UnitMetrics;
use crate::service::{InferError, Readiness, UnitSetup};
use crate::stream_worker::{Execute, StreamWorker};

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
    /// The load error, if any.
    pub error: Option<String>,
}

/// Batches a unit holds beyond its free streams before it refuses more. The
/// dispatcher only sends a batch when the scheduler counts a free stream, so this only
/// fills while a worker is still loading.
const BACKLOG_LIMIT: usize = 64;

/// One compute unit.
pub struct UnitActor {
    index: usize,
    setup: UnitSetup,
    context: EngineContext,
    dispatcher: Addr<Dispatcher>,
    readiness: Arc<Readiness>,
    workers: Vec<Addr<StreamWorker>>,
    free: Vec<usize>,
    loaded: Vec<bool>,
    backlog: VecDeque<RunBatch>,
    in_flight: u32,
    busy: BusyClock,
    metrics: UnitMetrics,
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

impl UnitActor {
    /// An actor for unit `index`.
    pub(crate) fn new(
        index: usize,
        setup: UnitSetup,
        context: EngineContext,
        dispatcher: Addr<Dispatcher>,
        readiness: Arc<Readiness>,
    ) -> Self {
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
            workers: Vec::new(),
            free: Vec::new(),
            loaded: Vec::new(),
            backlog: VecDeque::new(),
            in_flight: 0,
            busy: BusyClock::new(Instant::now()),
            metrics,
        }
    }

    fn run(&mut self, worker: usize, batch: RunBatch) {
        self.busy.advance(Instant::now(), self.in_flight);
        self.in_flight += 1;
        for request in &batch.requests {
            self.metrics
                .queue_wait
                .record(request.queue_wait.as_secs_f64());
        }
        self.workers[worker].do_send(Execute {
            batch: batch.batch,
            images: batch.images,
            requests: batch.requests,
        });
    }
}

impl Actor for UnitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        use actix::AsyncContext;
        let me = ctx.address();
        for stream in 0..self.setup.spec.streams {
            let mut spec = self.setup.engine.clone();
            spec.stream = stream;
            let context = self.context.clone();
            let unit = me.clone();
            let id = self.setup.spec.id.clone();
            let index = self.index;
            let worker = stream as usize;
            // Each stream worker gets its own OS thread: CUDA's current stream and
            // libtorch state are per thread, and engine calls block.
            let arbiter = Arbiter::new();
            let address = StreamWorker::start_in_arbiter(&arbiter.handle(), move |_| {
                StreamWorker::new(id, index, worker, spec, context, unit)
            });
            self.workers.push(address);
            self.loaded.push(false);
        }
        self.metrics.healthy.set(0.0);
        ctx.run_interval(crate::metrics::SAMPLE_INTERVAL, |act, _| {
            let ratio =
                act.busy
                    .close_window(Instant::now(), act.in_flight, act.setup.spec.streams);
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

    fn handle(&mut self, batch: RunBatch, _ctx: &mut Self::Context) {
        if let Some(worker) = self.free.pop() {
            self.run(worker, batch);
        } else if self.backlog.len() < BACKLOG_LIMIT {
            self.backlog.push_back(batch);
        } else {
            warn!(unit = %self.setup.spec.id, "unit backlog full; failing a batch");
            for request in batch.requests {
                request.fail(InferError::Unavailable(format!(
                    "unit {} has no free stream",
                    self.setup.spec.id
                )));
            }
            self.dispatcher.do_send(BatchCompleted {
                batch: batch.batch,
                service: Duration::ZERO,
                ok: false,
            });
        }
    }
}

impl Handler<WorkerFinished> for UnitActor {
    type Result = ();

    fn handle(&mut self, done: WorkerFinished, _ctx: &mut Self::Context) {
        self.busy.advance(Instant::now(), self.in_flight);
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
        match self.backlog.pop_front() {
            Some(next) => self.run(done.worker, next),
            None => self.free.push(done.worker),
        }
    }
}

impl Handler<WorkerLoaded> for UnitActor {
    type Result = ();

    fn handle(&mut self, loaded: WorkerLoaded, _ctx: &mut Self::Context) {
        let unit = self.setup.spec.id.to_string();
        match loaded.error {
            None => {
                self.loaded[loaded.worker] = true;
                if self.loaded.iter().all(|l| *l) {
                    self.metrics.healthy.set(1.0);
                }
                self.readiness.worker_loaded(Ok(()));
                match self.backlog.pop_front() {
                    Some(next) => self.run(loaded.worker, next),
                    None => self.free.push(loaded.worker),
                }
            }
            Some(message) => {
                error!(unit = %unit, stream = loaded.worker, error = %message, "engine failed to load");
                self.readiness
                    .worker_loaded(Err(crate::service::StartError::UnitFailed {
                        unit,
                        message,
                    }));
                // The unit gets no more batches; what it already holds is answered by
                // the worker with the load error, so nothing hangs.
                self.dispatcher.do_send(UnitFailed { unit: self.index });
                self.free.push(loaded.worker);
                while let Some(next) = self.backlog.pop_front() {
                    if let Some(worker) = self.free.pop() {
                        self.run(worker, next);
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
