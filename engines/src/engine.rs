//! The `Engine` trait: one instance of a model on one unit, driven by one stream worker.
//!
//! An engine call blocks its thread for the whole batch; stream workers own a dedicated
//! OS thread each, so no engine ever runs on the async executor.

use std::any::Any;

use thiserror::Error;

/// A batch handed to an engine.
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    /// Images in the batch.
    pub images: u32,
    /// The input tensor, `images` × the model's per-image input elements, row-major,
    /// FP32. `None` for synthetic load (benchmarks): the engine uses data of its own.
    pub data: Option<&'a [f32]>,
}

/// What an engine returns for a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutput {
    /// Images in the batch.
    pub images: u32,
    /// Output elements per image.
    pub per_image: usize,
    /// `images` × `per_image` values, row-major. Empty when the input was synthetic
    /// and the engine computed no output worth returning.
    pub data: Vec<f32>,
}

impl BatchOutput {
    /// The output of image `index`, if the engine returned data.
    pub fn image(&self, index: usize) -> Option<&[f32]> {
        let start = index.checked_mul(self.per_image)?;
        self.data.get(start..start + self.per_image)
    }
}

/// One image's activation left in an accelerator's memory by a pipeline stage, for
/// the next stage to take without a round trip through host memory. Opaque: only the
/// engine kind that made it reads it (the torch engine: a tensor on its device).
pub struct DeviceActivation(Box<dyn Any + Send>);

impl DeviceActivation {
    /// Wraps an engine's own per-image value.
    pub fn new<T: Any + Send>(value: T) -> Self {
        Self(Box::new(value))
    }

    /// The engine's value back, if it is a `T`.
    pub fn downcast<T: Any>(self) -> Result<T, Self> {
        self.0.downcast::<T>().map(|value| *value).map_err(Self)
    }
}

impl std::fmt::Debug for DeviceActivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceActivation(..)")
    }
}

/// One image's input or output of a pipeline stage.
#[derive(Debug)]
pub enum Activation {
    /// FP32 values in host memory, row-major.
    Host(Vec<f32>),
    /// Kept on the device that computed it.
    Device(DeviceActivation),
}

/// Static facts about an engine instance.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineInfo {
    /// `sim`, `null`, `torch`, ... — exported as the `engine` metric label.
    pub engine: &'static str,
    /// Largest batch the engine accepts.
    pub max_batch: u32,
    /// Input elements per image.
    pub input_len: usize,
    /// Output elements per image.
    pub output_len: usize,
}

/// Why a batch or a load failed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    /// The engine could not be created (missing model file, bad device, ...).
    #[error("engine could not be loaded: {0}")]
    Load(String),
    /// The batch is larger than the engine accepts.
    #[error("batch of {images} images exceeds the engine's maximum of {max_batch}")]
    BatchTooLarge {
        /// Images asked for.
        images: u32,
        /// The engine's limit.
        max_batch: u32,
    },
    /// The input has the wrong number of elements.
    #[error("input has {got} values, expected {expected} ({images} images)")]
    BadInput {
        /// Elements given.
        got: usize,
        /// Elements expected.
        expected: usize,
        /// Images in the batch.
        images: u32,
    },
    /// The inference itself failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// This engine was not compiled into this binary.
    #[error("engine {0:?} is not built into this binary (rebuild with `--features {0}`)")]
    NotBuilt(&'static str),
}

/// One model instance on one unit.
pub trait Engine: Send {
    /// Static facts about the instance.
    fn info(&self) -> EngineInfo;

    /// Runs the model a few times so that the first real batch does not pay for lazy
    /// initialization (allocator, autotuning, graph capture). Readiness waits for it.
    fn warm_up(&mut self) -> Result<(), EngineError> {
        Ok(())
    }

    /// Runs one batch, blocking until its output is ready.
    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError>;

    /// Device memory held by the engine's captured CUDA graphs (their private memory
    /// pool), once warm-up has captured them; `None` for engines without graphs.
    fn graph_memory_bytes(&self) -> Option<u64> {
        None
    }

    /// Whether [`Engine::infer_activations`] works: the engine takes activations kept
    /// on a device and can leave its own there.
    fn keeps_activations_on_device(&self) -> bool {
        false
    }

    /// Runs one pipeline-stage batch of per-image activations, host or device (made by
    /// an engine of the same kind), blocking until done. Returns one activation per
    /// image: on the device when `output_on_device`, else in host memory. Only for
    /// engines whose [`Engine::keeps_activations_on_device`] is true.
    fn infer_activations(
        &mut self,
        inputs: Vec<Activation>,
        output_on_device: bool,
    ) -> Result<Vec<Activation>, EngineError> {
        let _ = (inputs, output_on_device);
        Err(EngineError::Inference(format!(
            "engine {:?} cannot take or keep activations on a device",
            self.info().engine
        )))
    }
}

/// Checks a batch against an engine's limits: shared by every engine.
pub fn check_input(info: &EngineInfo, input: &BatchInput<'_>) -> Result<(), EngineError> {
    if input.images == 0 || input.images > info.max_batch {
        return Err(EngineError::BatchTooLarge {
            images: input.images,
            max_batch: info.max_batch,
        });
    }
    if let Some(data) = input.data {
        let expected = input.images as usize * info.input_len;
        if data.len() != expected {
            return Err(EngineError::BadInput {
                got: data.len(),
                expected,
                images: input.images,
            });
        }
    }
    Ok(())
}
