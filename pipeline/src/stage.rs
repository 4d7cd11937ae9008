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
    build_engine, Activation, BatchInput, CustomEngineBuilder, Engine, EngineContext, EngineError,
    EngineSpec,
};

/// Batches a stage ran, per `stage` and `unit`.
pub const STAGE_BATCHES_TOTAL: &str = "mica_pipeline_stage_batches_total";
/// Images a stage ran, per `stage` and `unit`.
pub const STAGE_IMAGES_TOTAL: &str = "mica_pipeline_stage_images_total";
/// Engine time of one stage batch (all its blocks), per `stage` and `unit`; the
/// `_seconds` buckets of `mica_actors::metrics::SECONDS_BUCKETS`.
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
    pub payload: Result<Activation, String>,
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
    /// Leave the output on the device for the next stage (both stages' engines keep
    /// activations on a device: torch units), instead of copying it to host memory.
    pub device_output: bool,
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
            .field("device_output", &self.device_output)
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
                let device_output = setup.device_output;
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
                        work(
                            engine,
                            (batch, device_output),
                            &input,
                            &output,
                            &counters,
                            &labels,
                        );
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
    (batch, device_output): (u32, bool),
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
        // Failed images pass straight on; the rest form the batch.
        let mut batch_of = Vec::with_capacity(items.len());
        let mut inputs = Vec::with_capacity(items.len());
        for item in items {
            match item.payload {
                Ok(activation) => {
                    batch_of.push((item.id, item.started));
                    inputs.push(activation);
                }
                Err(e) => {
                    let failed = StageItem {
                        payload: Err(e),
                        ..item
                    };
                    if output.send(failed).is_err() {
                        return;
                    }
                }
            }
        }
        if inputs.is_empty() {
            continue;
        }
        let images = inputs.len() as u32;
        let started = Instant::now();
        let result = run_batch(engine.as_mut(), inputs, device_output, &mut gathered);
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
        let outputs: Vec<Result<Activation, String>> = match result {
            Ok(outputs) if outputs.len() == batch_of.len() => outputs.into_iter().map(Ok).collect(),
            Ok(outputs) => {
                let message = format!(
                    "stage {stage} on {unit} returned {} outputs for {images} images",
                    outputs.len()
                );
                (0..batch_of.len()).map(|_| Err(message.clone())).collect()
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                failures_total.increment(1);
                tracing::warn!(stage = %stage, unit = %unit, error = %e, "stage batch failed");
                let message = e.to_string();
                (0..batch_of.len()).map(|_| Err(message.clone())).collect()
            }
        };
        for ((id, started), payload) in batch_of.into_iter().zip(outputs) {
            let next = StageItem {
                id,
                started,
                payload,
            };
            if output.send(next).is_err() {
                return;
            }
        }
    }
}

/// Runs one batch on `engine`. An engine that keeps activations on a device takes the
/// per-image activations as they are (`infer_activations`: it copies host values
/// straight into its own staging memory); for the others, host values are gathered
/// into `gathered` (one buffer reused across batches: a fresh one per batch, 19 MiB at
/// batch 32 of a 224x224 network, is page-faulted in anew each time) and run by
/// `infer`.
fn run_batch(
    engine: &mut dyn Engine,
    inputs: Vec<Activation>,
    device_output: bool,
    gathered: &mut Vec<f32>,
) -> Result<Vec<Activation>, EngineError> {
    if engine.keeps_activations_on_device() {
        return engine.infer_activations(inputs, device_output);
    }
    let on_device = inputs.iter().any(|a| matches!(a, Activation::Device(_)));
    if on_device {
        return Err(EngineError::Inference(format!(
            "engine {:?} cannot take activations kept on a device by the stage before",
            engine.info().engine
        )));
    }
    let images = inputs.len() as u32;
    let data: &[f32] = match inputs.as_slice() {
        [Activation::Host(only)] => only,
        _ => {
            gathered.clear();
            for input in &inputs {
                if let Activation::Host(values) = input {
                    gathered.extend_from_slice(values);
                }
            }
            gathered
        }
    };
    let output = engine.infer(BatchInput {
        images,
        data: Some(data),
    })?;
    if output.per_image == 0 || output.data.len() != output.per_image * inputs.len() {
        return Err(EngineError::Inference(format!(
            "the engine returned {} values for {images} images ({} each)",
            output.data.len(),
            output.per_image
        )));
    }
    Ok(output
        .data
        .chunks_exact(output.per_image)
        .map(|row| Activation::Host(row.to_vec()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mica_core::contention::NoContention;
    use mica_core::UnitKind;
    use mica_engines::{
        BatchOutput, ContentionHub, DeviceActivation, EngineInfo, EngineSettings, NullEngine,
    };

    use super::*;
    use crate::run::{Pipeline, PipelineSetup};

    /// Stands in for an accelerator engine: adds `step` to every value; its "device"
    /// activations are the values wrapped in a `DeviceActivation`.
    struct AddOnDevice {
        step: f32,
        len: usize,
        handed_over: Arc<AtomicU64>,
    }

    impl Engine for AddOnDevice {
        fn info(&self) -> EngineInfo {
            EngineInfo {
                engine: "add-on-device",
                max_batch: 8,
                input_len: self.len,
                output_len: self.len,
            }
        }

        fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
            let data = input.data.unwrap_or(&[]).iter().map(|v| v + self.step);
            Ok(BatchOutput {
                images: input.images,
                per_image: self.len,
                data: data.collect(),
            })
        }

        fn keeps_activations_on_device(&self) -> bool {
            true
        }

        fn infer_activations(
            &mut self,
            inputs: Vec<Activation>,
            output_on_device: bool,
        ) -> Result<Vec<Activation>, EngineError> {
            inputs
                .into_iter()
                .map(|input| {
                    let values = match input {
                        Activation::Host(values) => values,
                        Activation::Device(on_device) => {
                            self.handed_over.fetch_add(1, Ordering::Relaxed);
                            on_device.downcast::<Vec<f32>>().map_err(|_| {
                                EngineError::Inference("not this engine's activation".into())
                            })?
                        }
                    };
                    let values: Vec<f32> = values.iter().map(|v| v + self.step).collect();
                    Ok(if output_on_device {
                        Activation::Device(DeviceActivation::new(values))
                    } else {
                        Activation::Host(values)
                    })
                })
                .collect()
        }
    }

    fn spec(stream: u32) -> EngineSpec {
        EngineSpec::new(EngineSettings::Null, UnitKind::TensorFp16, 8, vec![2], 2)
            .with_stream(stream)
    }

    fn stage(name: &str, step: f32, device_output: bool, seen: &Arc<AtomicU64>) -> StageSetup {
        let handed_over = Arc::clone(seen);
        StageSetup {
            name: name.into(),
            units: vec![StageUnit {
                id: "gpu0".into(),
                streams: vec![spec(0), spec(1)],
            }],
            batch: 4,
            device_output,
            builder: Some(Arc::new(move |_: &EngineSpec| {
                Ok(Box::new(AddOnDevice {
                    step,
                    len: 2,
                    handed_over: Arc::clone(&handed_over),
                }) as Box<dyn Engine>)
            })),
        }
    }

    fn context() -> EngineContext {
        EngineContext {
            hub: Arc::new(ContentionHub::new(Box::new(NoContention))),
            custom: None,
        }
    }

    #[test]
    fn activations_kept_on_the_device_reach_the_next_stage_and_come_out_on_the_host() {
        for device_output in [false, true] {
            let seen = Arc::new(AtomicU64::new(0));
            let pipeline = Pipeline::start(PipelineSetup {
                stages: vec![
                    stage("stage0", 1.0, device_output, &seen),
                    stage("stage1", 10.0, false, &seen),
                ],
                buffer_images: 8,
                context: context(),
            })
            .unwrap();
            let inputs: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32, -(i as f32)]).collect();
            let outputs = pipeline.run_all(inputs).unwrap();
            pipeline.shutdown();
            for (i, output) in outputs.into_iter().enumerate() {
                let i = i as f32;
                assert_eq!(output.result.unwrap(), vec![i + 11.0, -i + 11.0]);
            }
            let expected = if device_output { 20 } else { 0 };
            assert_eq!(seen.load(Ordering::Relaxed), expected, "{device_output}");
        }
    }

    #[test]
    fn an_engine_that_keeps_nothing_on_a_device_refuses_device_activations() {
        let mut engine = NullEngine::new(4, 2, 2);
        let inputs = vec![Activation::Device(DeviceActivation::new(vec![0.0_f32; 2]))];
        let error = run_batch(&mut engine, inputs, false, &mut Vec::new()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot take activations kept on a device"),
            "{error}"
        );
        // Host values are gathered in order and split per image.
        let inputs = vec![
            Activation::Host(vec![1.0; 2]),
            Activation::Host(vec![2.0; 2]),
        ];
        let outputs = run_batch(&mut engine, inputs, false, &mut Vec::new()).unwrap();
        assert_eq!(outputs.len(), 2);
        assert!(outputs
            .iter()
            .all(|o| matches!(o, Activation::Host(v) if v == &[0.0, 0.0])));
    }

    #[test]
    fn the_last_stage_must_hand_its_output_to_the_host() {
        let seen = Arc::new(AtomicU64::new(0));
        let error = Pipeline::start(PipelineSetup {
            stages: vec![stage("stage0", 1.0, true, &seen)],
            buffer_images: 8,
            context: context(),
        })
        .unwrap_err();
        assert!(error.to_string().contains("last stage"), "{error}");
    }
}
