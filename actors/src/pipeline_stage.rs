//! `PipelineStage`: one stage of a pipelined network — a block range on one or more
//! units — as a group of worker threads, one per (unit, stream), each owning its engine.
//!
//! The pipelining paper (Kang et al., JEDI, ACM TECS 2022) runs each stage on its own
//! unit with its own batch size and streams, joined to the next by bounded buffers.
//! Here the buffer in front of a stage is a bounded channel of images; a worker takes
//! one image (blocking), then as many more as are already waiting, up to the stage's
//! batch size (each stage batches on its own), runs its engine on the batch, and hands
//! each image on to the next stage's buffer — blocking while it is full, which is the
//! back-pressure. With several units (partial network duplication: DLA0 and DLA1) the
//! workers share the buffer, so batches alternate over the units as they free up.
//! Workers are dedicated OS threads, like `StreamWorker`s: engine calls block, and CUDA
//! and libtorch state is per thread. A stage stops when its input closes and its
//! workers have drained it; closing its output then stops the next stage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use metrics::{describe_counter, describe_histogram, Unit};
use mica_engines::{
    build_engine, BatchInput, CustomEngineBuilder, Engine, EngineContext, EngineError, EngineSpec,
};

/// Batches a stage ran, per `stage` and `unit`.
pub const STAGE_BATCHES_TOTAL: &str = "mica_pipeline_stage_batches_total";
/// Images a stage ran, per `stage` and `unit`.
pub const STAGE_IMAGES_TOTAL: &str = "mica_pipeline_stage_images_total";
/// Engine time of one stage batch (all its blocks), per `stage` and `unit`; the
/// `_seconds` buckets of `crate::metrics::SECONDS_BUCKETS`.
pub const STAGE_SERVICE_SECONDS: &str = "mica_pipeline_stage_service_seconds";
/// Stage batches whose engine failed, per `stage` and `unit`.
pub const STAGE_FAILURES_TOTAL: &str = "mica_pipeline_stage_failures_total";

/// Registers the stage series' descriptions with the installed recorder.
pub fn describe() {
    describe_counter!(
        STAGE_BATCHES_TOTAL,
        Unit::Count,
        "Batches a pipeline stage ran, per stage and unit"
    );
    describe_counter!(
        STAGE_IMAGES_TOTAL,
        Unit::Count,
        "Images a pipeline stage ran, per stage and unit"
    );
    describe_histogram!(
        STAGE_SERVICE_SECONDS,
        Unit::Seconds,
        "Engine time of one pipeline stage batch, per stage and unit"
    );
    describe_counter!(
        STAGE_FAILURES_TOTAL,
        Unit::Count,
        "Pipeline stage batches whose engine failed, per stage and unit"
    );
}

/// One image moving through the pipeline: the message between stages.
#[derive(Debug)]
pub struct StageItem {
    /// Request id, assigned at submission.
    pub id: u64,
    /// When it entered the pipeline.
    pub started: Instant,
    /// The activation (input of the next stage), or why an earlier stage failed.
    pub payload: Result<Vec<f32>, String>,
}

/// Counters of one stage (also exported as metrics).
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Batches run.
    pub batches: AtomicU64,
    /// Images run.
    pub images: AtomicU64,
    /// Nanoseconds the engines spent in `infer`, summed over workers.
    pub busy_ns: AtomicU64,
    /// Batches that failed.
    pub failures: AtomicU64,
}

/// Engines of one unit of a stage: one per stream, built on the worker's own thread.
#[derive(Debug, Clone)]
pub struct StageUnit {
    /// Unit id (metric label).
    pub id: String,
    /// One engine spec per stream (a torch stage of several blocks is one engine that
    /// chains them on its device: `EngineSpec::chained_models`).
    pub streams: Vec<EngineSpec>,
}

/// Everything a stage needs to start.
#[derive(Clone)]
pub struct StageSetup {
    /// Stage name (`stage0`, ...), the metric label.
    pub name: String,
    /// Its units.
    pub units: Vec<StageUnit>,
    /// Largest batch a worker forms.
    pub batch: u32,
    /// Builds this stage's engines in place of the pipeline's context (host-side
    /// stages such as CPU pre- and post-processing); `None`: the context's.
    pub builder: Option<CustomEngineBuilder>,
}

impl std::fmt::Debug for StageSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageSetup")
            .field("name", &self.name)
            .field("units", &self.units)
            .field("batch", &self.batch)
            .field("builder", &self.builder.is_some())
            .finish()
    }
}

/// A started stage: its worker threads.
pub struct PipelineStage {
    /// Stage name.
    pub name: String,
    /// Its counters.
    pub counters: Arc<StageCounters>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for PipelineStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineStage")
            .field("name", &self.name)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl PipelineStage {
    /// Starts the workers; returns once every engine is built and warmed up, or with
    /// the first error.
    pub fn start(
        setup: &StageSetup,
        context: &EngineContext,
        input: Arc<Mutex<Receiver<StageItem>>>,
        output: SyncSender<StageItem>,
    ) -> Result<Self, EngineError> {
        let counters = Arc::new(StageCounters::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), EngineError>>();
        let context = match &setup.builder {
            Some(builder) => EngineContext {
                hub: Arc::clone(&context.hub),
                custom: Some(Arc::clone(builder)),
            },
            None => context.clone(),
        };
        let mut workers = Vec::new();
        for unit in &setup.units {
            for (stream, spec) in unit.streams.iter().enumerate() {
                let spec = spec.clone();
                let context = context.clone();
                let input = Arc::clone(&input);
                let output = output.clone();
                let counters = Arc::clone(&counters);
                let ready = ready_tx.clone();
                let labels = (setup.name.clone(), unit.id.clone());
                let batch = setup.batch.max(1);
                let handle = std::thread::Builder::new()
                    .name(format!("mica-{}-{}-{stream}", setup.name, unit.id))
                    .spawn(move || {
                        let built = build_engine(&spec, &context).and_then(|mut engine| {
                            engine.warm_up()?;
                            Ok(engine)
                        });
                        let engine = match built {
                            Ok(engine) => {
                                let _ = ready.send(Ok(()));
                                engine
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        };
                        drop(ready);
                        work(engine, batch, &input, &output, &counters, &labels);
                    })
                    .map_err(|e| EngineError::Load(format!("cannot start a stage worker: {e}")))?;
                workers.push(handle);
            }
        }
        drop(ready_tx);
        for _ in 0..workers.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(RecvError) => {
                    return Err(EngineError::Load(
                        "a stage worker died while loading".into(),
                    ))
                }
            }
        }
        Ok(Self {
            name: setup.name.clone(),
            counters,
            workers,
        })
    }

    /// Waits for the workers to finish (after the input closed).
    pub fn join(self) {
        for worker in self.workers {
            if worker.join().is_err() {
                tracing::error!(stage = %self.name, "a stage worker panicked");
            }
        }
    }
}

/// The worker loop: form a batch, run it, hand each image on.
fn work(
    mut engine: Box<dyn Engine>,
    batch: u32,
    input: &Mutex<Receiver<StageItem>>,
    output: &SyncSender<StageItem>,
    counters: &StageCounters,
    (stage, unit): &(String, String),
) {
    let labels = [("stage", stage.clone()), ("unit", unit.clone())];
    // Handles made once; the counters show (at 0) before the first batch.
    let batches_total = metrics::counter!(STAGE_BATCHES_TOTAL, &labels);
    let images_total = metrics::counter!(STAGE_IMAGES_TOTAL, &labels);
    let failures_total = metrics::counter!(STAGE_FAILURES_TOTAL, &labels);
    let service_seconds = metrics::histogram!(STAGE_SERVICE_SECONDS, &labels);
    batches_total.increment(0);
    images_total.increment(0);
    failures_total.increment(0);
    // The batch's images gathered into one buffer, reused across batches: a fresh
    // buffer per batch (19 MiB at batch 32 of a 224x224 network) is page-faulted in
    // anew each time, and an element-wise gather does not run at memcpy speed.
    let mut gathered: Vec<f32> = Vec::new();
    loop {
        let mut items: Vec<StageItem> = Vec::with_capacity(batch as usize);
        {
            let Ok(receiver) = input.lock() else {
                return;
            };
            match receiver.recv() {
                Ok(item) => items.push(item),
                Err(RecvError) => return,
            }
            while items.len() < batch as usize {
                match receiver.try_recv() {
                    Ok(item) => items.push(item),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
        }
        let (ok, failed): (Vec<StageItem>, Vec<StageItem>) =
            items.into_iter().partition(|i| i.payload.is_ok());
        for item in failed {
            if output.send(item).is_err() {
                return;
            }
        }
        if ok.is_empty() {
            continue;
        }
        let images = ok.len() as u32;
        let data: &[f32] = match ok.as_slice() {
            [only] => only.payload.as_deref().unwrap_or(&[]),
            _ => {
                gathered.clear();
                for item in &ok {
                    gathered.extend_from_slice(item.payload.as_deref().unwrap_or(&[]));
                }
                &gathered
            }
        };
        let started = Instant::now();
        let result = engine
            .infer(BatchInput {
                images,
                data: Some(data),
            })
            .map(|out| (out.data, out.per_image));
        let elapsed = started.elapsed();
        counters
            .busy_ns
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .images
            .fetch_add(u64::from(images), Ordering::Relaxed);
        batches_total.increment(1);
        images_total.increment(u64::from(images));
        service_seconds.record(elapsed.as_secs_f64());
        let outputs: Vec<Result<Vec<f32>, String>> = match result {
            Ok((values, per_image)) if per_image > 0 && values.len() == per_image * ok.len() => {
                values.chunks(per_image).map(|c| Ok(c.to_vec())).collect()
            }
            Ok((values, per_image)) => {
                let message = format!(
                    "stage {stage} on {unit} returned {} values for {images} images ({per_image} each)",
                    values.len()
                );
                vec![Err(message); ok.len()]
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                failures_total.increment(1);
                tracing::warn!(stage = %stage, unit = %unit, error = %e, "stage batch failed");
                vec![Err(e.to_string()); ok.len()]
            }
        };
        for (item, payload) in ok.into_iter().zip(outputs) {
            let next = StageItem { payload, ..item };
            if output.send(next).is_err() {
                return;
            }
        }
    }
}
