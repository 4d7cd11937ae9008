//! The `StreamWorker`: one engine instance on one dedicated thread (its own actix
//! `Arbiter`), running one batch at a time. It answers the batch's requests itself and
//! reports the batch to its unit. An engine error or panic fails that batch's requests
//! with an error and the worker keeps serving.

use std::panic::{catch_unwind, AssertUnwindSafe};

use actix::{Actor, Addr, Context, Handler, Message};
use mica_core::{Clock, UnitId};
use mica_engines::{build_engine, BatchInput, BatchOutput, Engine, EngineContext, EngineSpec};

use crate::dispatcher::Pending;
use crate::service::{InferError, InferResponse};
use crate::unit_actor::{UnitActor, WorkerFinished, WorkerLoaded};

/// Command: run one batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Execute {
    /// Batch id.
    pub batch: u64,
    /// Images in the batch.
    pub images: u32,
    /// Its requests.
    pub requests: Vec<Pending>,
}

/// One engine instance and its thread.
pub struct StreamWorker {
    unit: UnitId,
    unit_index: usize,
    worker: usize,
    generation: u64,
    spec: EngineSpec,
    context: EngineContext,
    engine: Option<Box<dyn Engine>>,
    engine_label: &'static str,
    load_error: Option<String>,
    unit_actor: Addr<UnitActor>,
    input: Vec<f32>,
    clock: Clock,
}

impl StreamWorker {
    /// A worker that builds its engine when started (on its own thread); it is stream
    /// `spec.stream` of its unit.
    pub(crate) fn new(
        unit: UnitId,
        unit_index: usize,
        generation: u64,
        spec: EngineSpec,
        context: EngineContext,
        unit_actor: Addr<UnitActor>,
        clock: Clock,
    ) -> Self {
        Self {
            unit,
            unit_index,
            worker: spec.stream as usize,
            generation,
            engine_label: spec.engine.as_str(),
            spec,
            context,
            engine: None,
            load_error: None,
            unit_actor,
            input: Vec::new(),
            clock,
        }
    }

    fn load(&mut self) -> Result<(), String> {
        let spec = self.spec.clone();
        let context = self.context.clone();
        let built = catch_unwind(AssertUnwindSafe(|| {
            let mut engine = build_engine(&spec, &context)?;
            engine.warm_up()?;
            Ok::<_, mica_engines::EngineError>(engine)
        }));
        match built {
            Ok(Ok(engine)) => {
                if let Some(bytes) = engine.graph_memory_bytes() {
                    let labels = [
                        ("unit", self.unit.to_string()),
                        ("stream", self.worker.to_string()),
                    ];
                    metrics::gauge!(crate::metrics::CUDA_GRAPH_MEMORY_BYTES, &labels)
                        .set(bytes as f64);
                }
                self.engine = Some(engine);
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(panic) => Err(format!(
                "engine panicked while loading: {}",
                panic_message(&panic)
            )),
        }
    }

    /// Runs the engine on the batch, turning errors and panics into a message.
    fn infer(&mut self, images: u32, requests: &[Pending]) -> Result<BatchOutput, String> {
        let Some(engine) = self.engine.as_mut() else {
            return Err(format!(
                "engine not loaded: {}",
                self.load_error.as_deref().unwrap_or("unknown error")
            ));
        };
        // One request's data is used in place; several are gathered into one buffer
        // reused across batches. Synthetic requests carry no data.
        let data: Option<&[f32]> = match requests {
            [only] => only.data.as_deref(),
            _ if requests.iter().all(|r| r.data.is_some()) => {
                self.input.clear();
                for request in requests {
                    self.input
                        .extend_from_slice(request.data.as_deref().unwrap_or(&[]));
                }
                Some(&self.input)
            }
            _ if requests.iter().all(|r| r.data.is_none()) => None,
            _ => return Err("a batch mixed synthetic and real inputs; this is a bug".into()),
        };
        match catch_unwind(AssertUnwindSafe(|| {
            engine.infer(BatchInput { images, data })
        })) {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => Err(error.to_string()),
            Err(panic) => Err(format!("engine panicked: {}", panic_message(&panic))),
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic".to_string()
    }
}

impl Actor for StreamWorker {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let result = self.load();
        let error = result.err();
        self.load_error.clone_from(&error);
        self.unit_actor.do_send(WorkerLoaded {
            worker: self.worker,
            generation: self.generation,
            error,
        });
    }
}

impl Handler<Execute> for StreamWorker {
    type Result = ();

    fn handle(&mut self, message: Execute, _ctx: &mut Self::Context) {
        let started = self.clock.now();
        let result = self.infer(message.images, &message.requests);
        let finished = self.clock.now();
        let service = finished.saturating_duration_since(started);
        let error = match result {
            Ok(output) => {
                let mut offset = 0usize;
                for request in message.requests {
                    let images = request.images;
                    let data = if output.data.is_empty() {
                        Vec::new()
                    } else {
                        let end =
                            (offset + images as usize * output.per_image).min(output.data.len());
                        let slice = output.data[offset.min(end)..end].to_vec();
                        offset = end;
                        slice
                    };
                    request.respond.answer(Ok(InferResponse {
                        images,
                        batch_images: message.images,
                        per_image: output.per_image,
                        data,
                        unit: self.unit.clone(),
                        unit_index: self.unit_index,
                        engine: self.engine_label,
                        queue_wait: request.queue_wait,
                        latency: finished.saturating_duration_since(request.admitted),
                    }));
                }
                None
            }
            Err(message_text) => {
                for request in message.requests {
                    request.fail(InferError::Engine(message_text.clone()));
                }
                Some(message_text)
            }
        };
        self.unit_actor.do_send(WorkerFinished {
            worker: self.worker,
            generation: self.generation,
            batch: message.batch,
            images: message.images,
            service,
            error,
        });
    }
}
