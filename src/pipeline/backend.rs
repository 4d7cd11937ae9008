//! `PipelineBackend`: the `InferBackend` of a config with `[pipeline]`. Requests go
//! through one network split into stages over several units (`mica_actors::pipeline`)
//! instead of the scheduler over whole-network units.
//!
//! A request's images enter the pipeline one by one (each stage forms its own
//! batches) and the request is answered once its last image has come out. Admission
//! is bounded: at most `capacity` images are admitted and not yet answered; more get
//! `Overloaded` (429, `Retry-After` about one mean latency). A driver thread loads the
//! stages (the backend is not ready before every engine is built and warm), then feeds
//! admitted images into the first stage's buffer in arrival order — blocking there is
//! the back-pressure. A request whose timeout passes before its images enter gets
//! `TimedOut`. Priorities are validated like the scheduler's, but a pipeline serves
//! in arrival order. A collector thread hands each finished image to its request; an
//! image a stage failed fails its request (`Engine`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use mica_core::UnitId;
use mica_pipeline::run::{Pipeline, PipelineOutput, PipelineSetup};
use tokio::sync::{oneshot, watch};
use tracing::{error, warn};

use crate::serve::backend::{
    InferBackend, InferError, InferFuture, InferRequest, InferResponse, ReadyFuture, Serves,
    ShutdownFuture,
};

/// Shortest `Retry-After` of an overloaded answer.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(10);

/// How a pipeline is served.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Images admitted and not yet answered; more get 429.
    pub capacity: usize,
    /// Priority levels requests may name (validated; the pipeline serves in order).
    pub priority_levels: u8,
    /// Input values per image (the first stage's input).
    pub input_len: usize,
    /// Output values per image (the last stage's output).
    pub output_len: usize,
    /// Engine label of the answers: the stages' engine, `mixed` when they differ.
    pub engine: &'static str,
}

/// Where the pipeline is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Loading,
    Ready,
    Failed(String),
    Stopped,
}

type Answer = Result<InferResponse, InferError>;

/// One request on its way through the pipeline.
#[derive(Debug)]
struct Slot {
    admitted: Instant,
    state: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    outputs: Vec<Option<Vec<f32>>>,
    remaining: usize,
    entered: Option<Instant>,
    answer: Option<oneshot::Sender<Answer>>,
}

/// What the driver feeds: one admitted request's images.
#[derive(Debug)]
struct Job {
    first_id: u64,
    images: usize,
    data: Vec<f32>,
    deadline: Option<Instant>,
    slot: Arc<Slot>,
}

/// What the handles and the driver and collector threads share.
#[derive(Debug)]
struct Shared {
    options: PipelineOptions,
    unit: UnitId,
    phase: watch::Sender<Phase>,
    closing: AtomicBool,
    in_flight: AtomicUsize,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, (Arc<Slot>, usize)>>,
    mean_latency_us: AtomicU64,
}

/// A served pipeline. Clones share it; it stops when `shutdown` is called or the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct PipelineBackend {
    shared: Arc<Shared>,
    jobs: Arc<Mutex<Option<Sender<Job>>>>,
}

impl PipelineBackend {
    /// Starts loading `setup`'s stages on a driver thread and returns at once.
    pub fn start(setup: PipelineSetup, options: PipelineOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(
            options.capacity > 0,
            "the pipeline must admit at least one image"
        );
        let unit = UnitId::new(&unit_label(&setup));
        let (jobs, receiver) = bounded::<Job>(options.capacity);
        let shared = Arc::new(Shared {
            options,
            unit,
            phase: watch::channel(Phase::Loading).0,
            closing: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            mean_latency_us: AtomicU64::new(0),
        });
        let driver = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("mica-pipeline-feed".into())
            .spawn(move || drive(&driver, setup, &receiver))?;
        Ok(Self {
            shared,
            jobs: Arc::new(Mutex::new(Some(jobs))),
        })
    }

    /// Resolves once every stage is loaded and warm, or with the load error.
    pub async fn wait_ready(&self) -> Result<(), String> {
        let mut phase = self.shared.phase.subscribe();
        let seen = phase
            .wait_for(|p| *p != Phase::Loading)
            .await
            .map_err(|_| "the pipeline driver stopped".to_string())?
            .clone();
        match seen {
            Phase::Ready => Ok(()),
            Phase::Failed(message) => Err(message),
            Phase::Loading | Phase::Stopped => {
                Err("the pipeline stopped before it was ready".into())
            }
        }
    }

    /// Takes no new request, lets the admitted ones finish (up to `drain`), stops the
    /// stages. Returns the images still unanswered.
    pub async fn shutdown(&self, drain: Duration) -> usize {
        self.shared.closing.store(true, Ordering::Release);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let mut phase = self.shared.phase.subscribe();
        let stopped = phase.wait_for(|p| matches!(p, Phase::Stopped | Phase::Failed(_)));
        if tokio::time::timeout(drain, stopped).await.is_err() {
            warn!(?drain, "the pipeline did not drain in time");
        }
        self.shared.in_flight.load(Ordering::Acquire)
    }

    /// Checks `request` and reserves admission for its images; returns their number.
    fn reserve(&self, request: &InferRequest) -> Result<usize, InferError> {
        let shared = &self.shared;
        if shared.closing.load(Ordering::Acquire) {
            return Err(InferError::ShuttingDown);
        }
        match &*shared.phase.borrow() {
            Phase::Ready => {}
            Phase::Loading => {
                return Err(InferError::Unavailable(
                    "the pipeline's stages are still loading".into(),
                ))
            }
            Phase::Failed(message) => {
                return Err(InferError::Unavailable(format!(
                    "the pipeline failed to load: {message}"
                )))
            }
            Phase::Stopped => return Err(InferError::ShuttingDown),
        }
        let images = request.images as usize;
        if images == 0 {
            return Err(InferError::Invalid(
                "a request needs at least one image".into(),
            ));
        }
        if request.priority >= shared.options.priority_levels.max(1) {
            return Err(InferError::Invalid(format!(
                "priority level {} does not exist ({} levels)",
                request.priority, shared.options.priority_levels
            )));
        }
        let Some(data) = &request.data else {
            return Err(InferError::Invalid(
                "a pipeline needs input data (no synthetic requests)".into(),
            ));
        };
        let wanted = images * shared.options.input_len;
        if data.len() != wanted {
            return Err(InferError::Invalid(format!(
                "{} input values for {images} images of {} values",
                data.len(),
                shared.options.input_len
            )));
        }
        let capacity = shared.options.capacity;
        if images > capacity {
            return Err(InferError::Invalid(format!(
                "{images} images in one request; the pipeline admits at most {capacity}"
            )));
        }
        let admitted = shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n + images <= capacity).then_some(n + images)
            });
        if admitted.is_err() {
            let mean = Duration::from_micros(shared.mean_latency_us.load(Ordering::Relaxed));
            return Err(InferError::Overloaded {
                retry_after: mean.max(MIN_RETRY_AFTER),
            });
        }
        Ok(images)
    }

    fn admit(&self, request: InferRequest) -> Result<oneshot::Receiver<Answer>, InferError> {
        let images = self.reserve(&request)?;
        let shared = &self.shared;
        let (answer, receiver) = oneshot::channel();
        let slot = Arc::new(Slot {
            admitted: Instant::now(),
            state: Mutex::new(SlotState {
                outputs: vec![None; images],
                remaining: images,
                entered: None,
                answer: Some(answer),
            }),
        });
        let first_id = shared.next_id.fetch_add(images as u64, Ordering::Relaxed);
        if let Ok(mut pending) = shared.pending.lock() {
            for index in 0..images {
                pending.insert(first_id + index as u64, (Arc::clone(&slot), index));
            }
        }
        let job = Job {
            first_id,
            images,
            data: request.data.unwrap_or_default(),
            deadline: request.timeout.map(|t| slot.admitted + t),
            slot,
        };
        let sent = match self.jobs.lock() {
            Ok(jobs) => match jobs.as_ref() {
                Some(jobs) => jobs.try_send(job).map_err(|e| match e {
                    TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
                }),
                None => Err(job),
            },
            Err(_) => return Err(InferError::ShuttingDown),
        };
        if let Err(job) = sent {
            fail_job(shared, &job, 0, &InferError::ShuttingDown);
        }
        Ok(receiver)
    }
}

impl InferBackend for PipelineBackend {
    fn submit(&self, request: InferRequest) -> InferFuture {
        let admitted = self.admit(request);
        Box::pin(async move {
            admitted?
                .await
                .map_err(|_| InferError::Engine("the pipeline stopped before answering".into()))?
        })
    }

    fn is_ready(&self) -> bool {
        *self.shared.phase.borrow() == Phase::Ready && !self.shared.closing.load(Ordering::Acquire)
    }

    fn max_batch(&self) -> u32 {
        u32::try_from(self.shared.options.capacity).unwrap_or(u32::MAX)
    }

    fn priority_levels(&self) -> u8 {
        self.shared.options.priority_levels
    }

    fn serves(&self) -> Serves {
        Serves {
            part: "pipeline stage",
            unanswered: "images",
        }
    }

    fn wait_ready(&self) -> ReadyFuture {
        let backend = self.clone();
        Box::pin(async move { PipelineBackend::wait_ready(&backend).await })
    }

    fn alive(&self) -> Result<(), String> {
        // The driver and collector threads end only when the pipeline stops; a stage
        // that fails fails its images' requests, not the backend.
        Ok(())
    }

    fn shutdown(&self, drain: Duration) -> ShutdownFuture {
        let backend = self.clone();
        Box::pin(async move { PipelineBackend::shutdown(&backend, drain).await })
    }
}

/// `stage0 units > stage1 units > ...`, duplicated units joined by `|`.
fn unit_label(setup: &PipelineSetup) -> String {
    setup
        .stages
        .iter()
        .map(|s| {
            s.units
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect::<Vec<_>>()
        .join(">")
}

/// The driver thread: load, then feed until every handle is gone, then drain.
fn drive(shared: &Arc<Shared>, setup: PipelineSetup, jobs: &Receiver<Job>) {
    let pipeline = match Pipeline::start(setup) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            error!(error = %e, "a pipeline stage failed to load");
            shared.phase.send_replace(Phase::Failed(e.to_string()));
            let refused = InferError::Unavailable(format!("the pipeline failed to load: {e}"));
            for job in jobs.iter() {
                fail_job(shared, &job, 0, &refused);
            }
            return;
        }
    };
    shared.phase.send_replace(Phase::Ready);
    std::thread::scope(|scope| {
        let collector = std::thread::Builder::new()
            .name("mica-pipeline-collect".into())
            .spawn_scoped(scope, || collect(shared, &pipeline));
        if let Err(e) = collector {
            error!(error = %e, "cannot start the pipeline collector");
            shared.phase.send_replace(Phase::Failed(e.to_string()));
            pipeline.close();
            return;
        }
        for job in jobs.iter() {
            feed(shared, &pipeline, &job);
        }
        pipeline.close();
    });
    pipeline.shutdown();
    shared.phase.send_replace(Phase::Stopped);
}

/// Puts one request's images into the pipeline.
fn feed(shared: &Shared, pipeline: &Pipeline, job: &Job) {
    if job.deadline.is_some_and(|d| Instant::now() >= d) {
        fail_job(shared, job, 0, &InferError::TimedOut);
        return;
    }
    if let Ok(mut state) = job.slot.state.lock() {
        state.entered = Some(Instant::now());
    }
    let len = shared.options.input_len;
    for (index, image) in job.data.chunks_exact(len).enumerate() {
        if pipeline
            .submit_tagged(job.first_id + index as u64, image.to_vec())
            .is_err()
        {
            fail_job(shared, job, index, &InferError::ShuttingDown);
            return;
        }
    }
}

/// Fails images `from..` of `job` (never entered the pipeline) and releases them.
fn fail_job(shared: &Shared, job: &Job, from: usize, error: &InferError) {
    if let Ok(mut pending) = shared.pending.lock() {
        for index in from..job.images {
            pending.remove(&(job.first_id + index as u64));
        }
    }
    let count = job.images - from;
    shared.in_flight.fetch_sub(count, Ordering::AcqRel);
    if let Ok(mut state) = job.slot.state.lock() {
        state.remaining -= count;
        if let Some(answer) = state.answer.take() {
            let _ = answer.send(Err(error.clone()));
        }
    }
}

/// The collector thread: hands each finished image to its request.
fn collect(shared: &Shared, pipeline: &Pipeline) {
    while let Some(output) = pipeline.next_output() {
        let entry = shared
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| pending.remove(&output.id));
        shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        match entry {
            Some((slot, index)) => finish_image(shared, &slot, index, output),
            None => warn!(id = output.id, "a pipeline output no request waits for"),
        }
    }
}

fn finish_image(shared: &Shared, slot: &Slot, index: usize, output: PipelineOutput) {
    let Ok(mut state) = slot.state.lock() else {
        return;
    };
    state.remaining -= 1;
    let expected = shared.options.output_len;
    match output.result {
        Ok(values) if values.len() == expected => state.outputs[index] = Some(values),
        Ok(values) => {
            let message = format!(
                "the last stage gave {} values per image, the model has {expected}",
                values.len()
            );
            if let Some(answer) = state.answer.take() {
                let _ = answer.send(Err(InferError::Engine(message)));
            }
        }
        Err(message) => {
            if let Some(answer) = state.answer.take() {
                let _ = answer.send(Err(InferError::Engine(message)));
            }
        }
    }
    if state.remaining > 0 {
        return;
    }
    let Some(answer) = state.answer.take() else {
        return;
    };
    let images = state.outputs.len();
    let data: Vec<f32> = state.outputs.drain(..).flatten().flatten().collect();
    let latency = slot.admitted.elapsed();
    let queue_wait = state.entered.map_or(latency, |entered| {
        entered.saturating_duration_since(slot.admitted)
    });
    let old = shared.mean_latency_us.load(Ordering::Relaxed);
    let new = latency.as_micros().min(u128::from(u64::MAX / 8)) as u64;
    let mean = if old == 0 { new } else { (old * 7 + new) / 8 };
    shared.mean_latency_us.store(mean, Ordering::Relaxed);
    let _ = answer.send(Ok(InferResponse {
        images: images as u32,
        batch_images: images as u32,
        per_image: expected,
        data,
        unit: shared.unit.clone(),
        unit_index: 0,
        engine: shared.options.engine,
        queue_wait,
        latency,
    }));
}
