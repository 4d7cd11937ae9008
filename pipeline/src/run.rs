//! `Pipeline`: one network split into stages over several units, served as one model.
//!
//! The pipelining paper (Kang et al., "Scheduling DNN inference on GPU and DLA...
//! pipelining", journal version JEDI, ACM TECS 2022): cut the network at block
//! boundaries, run each stage on its own unit (options A–D: DLA→GPU, GPU→DLA→GPU,
//! DLA→DLA→GPU, GPU→DLA→DLA→GPU; or the first stage duplicated on both DLAs), join
//! the stages with bounded buffers so that every unit works on a different batch at
//! once. This handle owns the chain of `PipelineStage`s: it feeds the first stage's
//! buffer (blocking when it is full: the caller feels the back-pressure), collects the
//! last stage's output, and reports per-stage counters. Each stage's buffer holds
//! `buffer_images` images; the paper ties the number of buffers to the number of
//! streams, which `mica`'s config does through `[pipeline] buffers`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mica_engines::{Activation, EngineContext, EngineError};

use crate::stage::{PipelineStage, StageItem, StageSetup};

/// Everything a pipeline needs to start.
#[derive(Debug, Clone)]
pub struct PipelineSetup {
    /// The stages, input to output.
    pub stages: Vec<StageSetup>,
    /// Images each inter-stage buffer holds.
    pub buffer_images: usize,
    /// What the engines share (contention hub, custom builders).
    pub context: EngineContext,
}

/// One image's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutput {
    /// The id `submit` returned.
    pub id: u64,
    /// Time from submission to the last stage's output.
    pub latency: Duration,
    /// The network's output for the image, or the failing stage's error.
    pub result: Result<Vec<f32>, String>,
}

/// Per-stage figures.
#[derive(Debug, Clone, PartialEq)]
pub struct StageReport {
    /// Stage name.
    pub name: String,
    /// Batches run.
    pub batches: u64,
    /// Images run.
    pub images: u64,
    /// Seconds the stage's engines were busy, summed over its workers.
    pub busy_s: f64,
    /// Failed batches.
    pub failures: u64,
}

/// The pipeline was shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is closed")]
pub struct PipelineClosed;

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    /// `None` once closed.
    input: Mutex<Option<SyncSender<StageItem>>>,
    output: Mutex<Receiver<StageItem>>,
    stages: Vec<PipelineStage>,
    next_id: AtomicU64,
}

impl Pipeline {
    /// Starts every stage (engines built and warmed up) or fails with the first error.
    pub fn start(setup: PipelineSetup) -> Result<Self, EngineError> {
        if setup.stages.is_empty() {
            return Err(EngineError::Load(
                "a pipeline needs at least one stage".into(),
            ));
        }
        if setup.stages.last().is_some_and(|last| last.device_output) {
            return Err(EngineError::Load(
                "the last stage of a pipeline must hand its output to the host \
                 (device_output = false)"
                    .into(),
            ));
        }
        let capacity = setup.buffer_images.max(1);
        let (input, mut receiver) = sync_channel::<StageItem>(capacity);
        let mut stages = Vec::with_capacity(setup.stages.len());
        for stage in &setup.stages {
            let (sender, next) = sync_channel::<StageItem>(capacity);
            let shared = Arc::new(Mutex::new(receiver));
            stages.push(PipelineStage::start(stage, &setup.context, shared, sender)?);
            receiver = next;
        }
        Ok(Self {
            input: Mutex::new(Some(input)),
            output: Mutex::new(receiver),
            stages,
            next_id: AtomicU64::new(0),
        })
    }

    /// Puts one image (the first stage's input) in; blocks while the first buffer is
    /// full. Returns its id.
    pub fn submit(&self, data: Vec<f32>) -> Result<u64, PipelineClosed> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.submit_tagged(id, data)?;
        Ok(id)
    }

    /// Like [`Pipeline::submit`], under the caller's `id` (what `next_output` reports):
    /// for callers that must know the id before the image can come out. The caller
    /// keeps ids unique; do not mix with `submit` on one pipeline.
    pub fn submit_tagged(&self, id: u64, data: Vec<f32>) -> Result<(), PipelineClosed> {
        // Clone the sender so that a blocking send holds no lock (`close` stays free).
        let input = self
            .input
            .lock()
            .ok()
            .and_then(|guard| guard.clone())
            .ok_or(PipelineClosed)?;
        input
            .send(StageItem {
                id,
                started: Instant::now(),
                payload: Ok(Activation::Host(data)),
            })
            .map_err(|_| PipelineClosed)
    }

    /// Takes no more images: once every image already in has come out, `next_output`
    /// returns `None` and the workers end. (A `submit` blocked on a full buffer still
    /// delivers its image.)
    pub fn close(&self) {
        if let Ok(mut input) = self.input.lock() {
            input.take();
        }
    }

    /// The next finished image, in completion order; `None` once closed and drained.
    pub fn next_output(&self) -> Option<PipelineOutput> {
        let receiver = self.output.lock().ok()?;
        receiver.recv().ok().map(|item| PipelineOutput {
            id: item.id,
            latency: item.started.elapsed(),
            result: match item.payload {
                Ok(Activation::Host(values)) => Ok(values),
                Ok(Activation::Device(_)) => Err(
                    "the last stage left its output on a device (device_output must be off for it)"
                        .to_string(),
                ),
                Err(e) => Err(e),
            },
        })
    }

    /// Runs `inputs` through the pipeline (submitting from a second thread so the
    /// buffers stay full) and returns the outputs in input order.
    pub fn run_all(&self, inputs: Vec<Vec<f32>>) -> Result<Vec<PipelineOutput>, PipelineClosed> {
        let count = inputs.len();
        let first_id = std::thread::scope(|scope| {
            let submitter = scope.spawn(|| {
                let mut first = None;
                for data in inputs {
                    let id = self.submit(data)?;
                    first.get_or_insert(id);
                }
                Ok::<_, PipelineClosed>(first)
            });
            let mut outputs = Vec::with_capacity(count);
            while outputs.len() < count {
                match self.next_output() {
                    Some(output) => outputs.push(output),
                    None => break,
                }
            }
            let first = submitter.join().map_err(|_| PipelineClosed)??;
            Ok::<_, PipelineClosed>((first, outputs))
        })?;
        let (first, mut outputs) = first_id;
        if outputs.len() < count {
            return Err(PipelineClosed);
        }
        let first = first.unwrap_or(0);
        outputs.sort_by_key(|o| o.id.wrapping_sub(first));
        Ok(outputs)
    }

    /// Per-stage counters so far.
    pub fn report(&self) -> Vec<StageReport> {
        self.stages
            .iter()
            .map(|s| StageReport {
                name: s.name.clone(),
                batches: s.counters.batches.load(Ordering::Relaxed),
                images: s.counters.images.load(Ordering::Relaxed),
                busy_s: s.counters.busy_ns.load(Ordering::Relaxed) as f64 / 1e9,
                failures: s.counters.failures.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Closes the input, lets every stage drain, and joins the workers.
    pub fn shutdown(mut self) {
        self.close();
        // Drain what is still in flight so no worker blocks on a full buffer.
        while self.next_output().is_some() {}
        for stage in std::mem::take(&mut self.stages) {
            stage.join();
        }
    }
}
