//! The `onnx` engine: one ONNX model (or a pipeline stage's chain of block models) in
//! one ONNX Runtime session per model, per stream worker (`Session::run` takes `&mut`).
//!
//! A batch is copied into the instance's staging buffer when it must be padded (a model
//! with a fixed batch, as DLA engines need, or a GPU session padding to its warmed-up
//! sizes) or when the session is on a GPU (the buffer is then page-locked, from the
//! session's own CUDA stream's context); a CPU batch of the model's own size runs
//! straight from the request's memory. The outputs of the last model are copied out
//! for the batch's images only. Chained models pass their activations in host memory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cudarc::driver::PinnedHostSlice;
use mica_core::UnitKind;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use tracing::{info, warn};

use super::cuda::SessionStream;
use super::providers::ProviderPlan;
use super::runtime::{self, Runtime};
use crate::engine::{check_input, BatchInput, BatchOutput, Engine, EngineError, EngineInfo};
use crate::factory::EngineSpec;
use crate::settings::{EngineSettings, OnnxEngineConfig, OnnxProvider};

/// One model's session and the shapes it was exported with.
struct ModelSession {
    path: PathBuf,
    session: Session,
    input: String,
    output: String,
    /// Per-image input dims (the model's, or the config's where the model's are
    /// symbolic).
    image_dims: Vec<i64>,
    /// The model's fixed batch, if its batch axis is not dynamic.
    fixed_batch: Option<u32>,
    /// Per-image output values, when the model's output shape says.
    output_per_image: Option<usize>,
}

/// Where a padded or GPU-bound batch is staged.
enum Staging {
    Host(Vec<f32>),
    Pinned(PinnedHostSlice<f32>),
}

impl Staging {
    fn slice_mut(&mut self) -> Result<&mut [f32], EngineError> {
        match self {
            Staging::Host(values) => Ok(values),
            Staging::Pinned(pinned) => pinned
                .as_mut_slice()
                .map_err(|e| EngineError::Inference(format!("pinned staging buffer: {e}"))),
        }
    }

    fn slice(&self) -> Result<&[f32], EngineError> {
        match self {
            Staging::Host(values) => Ok(values),
            Staging::Pinned(pinned) => pinned
                .as_slice()
                .map_err(|e| EngineError::Inference(format!("pinned staging buffer: {e}"))),
        }
    }
}

/// An ONNX model instance on one unit (see the module docs).
pub struct OnnxEngine {
    info: EngineInfo,
    unit: usize,
    unit_kind: UnitKind,
    plan: ProviderPlan,
    /// The sessions, in the order they run. Declared before `stream`: dropped first,
    /// while the stream they compute on still exists.
    models: Vec<ModelSession>,
    /// `run_size(max_batch)` images of input, zeroed; synthetic batches use it as is.
    staging: Staging,
    /// Whether the staging buffer holds a request's data (then padding must be cleared).
    staging_dirty: bool,
    warmup_batches: u32,
    stream: Option<SessionStream>,
}

impl std::fmt::Debug for OnnxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxEngine")
            .field("unit", &self.unit)
            .field("unit_kind", &self.unit_kind)
            .field("plan", &self.plan)
            .field("info", &self.info)
            .field(
                "models",
                &self.models.iter().map(|m| &m.path).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl OnnxEngine {
    /// Loads the models of `spec` into sessions on its unit's provider. Fails, naming
    /// the cause, when the library, the provider or a model cannot be had: never falls
    /// back to another provider.
    pub fn load(spec: &EngineSpec) -> Result<Self, EngineError> {
        let EngineSettings::Onnx(settings) = &spec.engine else {
            return Err(EngineError::Load(format!(
                "the onnx engine cannot run {:?} settings",
                spec.engine.as_str()
            )));
        };
        settings
            .validate(&crate::settings::UnitFacts {
                kind: spec.unit_kind,
                dla_core: spec.dla_core,
                has_profile: spec.profile.is_some(),
            })
            .map_err(|e| EngineError::Load(e.to_string()))?;
        if spec.models.is_empty() {
            return Err(EngineError::Load(
                "the onnx engine needs a model file".into(),
            ));
        }
        if spec.max_batch == 0 || spec.input_len() == 0 || spec.output_len == 0 {
            return Err(EngineError::Load(format!(
                "max_batch {}, input shape {:?} and output length {} must all be non-zero",
                spec.max_batch, spec.input_shape, spec.output_len
            )));
        }
        for path in &spec.models {
            if !path.is_file() {
                return Err(EngineError::Load(format!(
                    "model file {} does not exist (export one with scripts/export_model.py \
                     --onnx)",
                    path.display()
                )));
            }
        }
        let runtime = runtime::runtime(settings.library.as_deref())?;
        let plan = ProviderPlan::new(settings, spec.unit_kind, spec.device, spec.dla_core);
        check_provider_built(&plan, runtime)?;
        if let Some(cache) = &plan.engine_cache {
            std::fs::create_dir_all(cache).map_err(|e| {
                EngineError::Load(format!("engine cache folder {}: {e}", cache.display()))
            })?;
        }
        let stream = match plan.provider {
            OnnxProvider::Cpu => None,
            OnnxProvider::Cuda | OnnxProvider::Tensorrt => {
                Some(SessionStream::new(plan.device.unwrap_or(0)).map_err(EngineError::Load)?)
            }
        };

        let mut models = Vec::with_capacity(spec.models.len());
        let mut image_shape: Vec<i64> = spec.input_shape.iter().map(|&d| d as i64).collect();
        for (index, path) in spec.models.iter().enumerate() {
            let model = open_model(
                runtime,
                path,
                settings,
                &plan,
                stream.as_ref(),
                &image_shape,
                spec,
            )?;
            if index == 0 {
                let per_image: i64 = model.image_dims.iter().product();
                if per_image as usize != spec.input_len() {
                    return Err(EngineError::Load(format!(
                        "{} takes {per_image} values per image (input {:?} of shape {:?}), \
                         but the config's input_shape {:?} has {}",
                        path.display(),
                        model.input,
                        model.image_dims,
                        spec.input_shape,
                        spec.input_len()
                    )));
                }
            }
            image_shape = model
                .output_per_image
                .map_or_else(Vec::new, |n| vec![n as i64]);
            models.push(model);
        }
        let last = models.last().expect("at least one model, checked above");
        if let Some(per_image) = last.output_per_image {
            if per_image != spec.output_len {
                return Err(EngineError::Load(format!(
                    "{} returns {per_image} values per image, but the config's output_shape \
                     has {}",
                    last.path.display(),
                    spec.output_len
                )));
            }
        }
        let fixed = fixed_batch(&models)?;
        if let Some(fixed) = fixed {
            if spec.max_batch > fixed {
                return Err(EngineError::Load(format!(
                    "the model runs batches of exactly {fixed} images, but the unit's \
                     max_batch is {}: set max_batch = {fixed} or export with a larger batch \
                     (scripts/export_model.py --onnx-batches)",
                    spec.max_batch
                )));
            }
        } else if spec.unit_kind == UnitKind::Dla {
            return Err(EngineError::Load(format!(
                "{} has a dynamic batch axis, and DLA engines need static shapes: export a \
                 fixed-batch model (scripts/export_model.py --onnx-batches {})",
                spec.models[0].display(),
                spec.max_batch
            )));
        }
        let staged_images = run_size(spec.max_batch, spec.max_batch, fixed, plan.provider);
        let staged_len = staged_images as usize * spec.input_len();
        let staging = match &stream {
            Some(stream) => Staging::Pinned(stream.pinned(staged_len).map_err(EngineError::Load)?),
            None => Staging::Host(vec![0.0; staged_len]),
        };
        info!(
            unit = spec.unit,
            unit_kind = %spec.unit_kind,
            stream = spec.stream,
            provider = %plan.provider,
            device = ?plan.device,
            dla_core = ?plan.dla_core,
            fixed_batch = ?fixed,
            models = models.len(),
            model = %spec.models[0].display(),
            "onnx engine loaded"
        );
        Ok(Self {
            info: EngineInfo {
                engine: "onnx",
                max_batch: spec.max_batch,
                input_len: spec.input_len(),
                output_len: spec.output_len,
            },
            unit: spec.unit,
            unit_kind: spec.unit_kind,
            plan,
            models,
            staging,
            staging_dirty: false,
            warmup_batches: settings.warmup_batches,
            stream,
        })
    }

    /// The batch size a batch of `images` runs at.
    fn run_size(&self, images: u32) -> u32 {
        run_size(
            images,
            self.info.max_batch,
            self.models[0].fixed_batch,
            self.plan.provider,
        )
    }

    /// Runs the chain on `padded` images of `input` (the staging buffer when `None`);
    /// returns the last model's output.
    fn run_chain(&mut self, input: Option<&[f32]>, padded: u32) -> Result<Vec<f32>, EngineError> {
        let staged_len = padded as usize * self.info.input_len;
        let mut current: Option<Vec<f32>> = None;
        for model in &mut self.models {
            let activations: &[f32] = match (&current, input) {
                (Some(previous), _) => previous,
                (None, Some(data)) => data,
                (None, None) => &self.staging.slice()?[..staged_len],
            };
            let values = run_model(model, activations, padded)?;
            current = Some(values);
        }
        if let Some(stream) = &self.stream {
            stream.synchronize().map_err(EngineError::Inference)?;
        }
        Ok(current.unwrap_or_default())
    }
}

/// Runs one model on `padded` images of `activations`, returning its first output.
fn run_model(
    model: &mut ModelSession,
    activations: &[f32],
    padded: u32,
) -> Result<Vec<f32>, EngineError> {
    let per_image = activations.len() / padded as usize;
    let mut shape = Vec::with_capacity(model.image_dims.len() + 1);
    shape.push(i64::from(padded));
    if model.image_dims.iter().product::<i64>() as usize == per_image {
        shape.extend_from_slice(&model.image_dims);
    } else {
        shape.push(per_image as i64);
    }
    let tensor = TensorRef::from_array_view((shape, activations)).map_err(|e| {
        EngineError::Inference(format!("input tensor for {}: {e}", model.path.display()))
    })?;
    let outputs = model
        .session
        .run(ort::inputs![model.input.as_str() => tensor])
        .map_err(|e| EngineError::Inference(format!("{}: {e}", model.path.display())))?;
    let (_, values) = outputs[model.output.as_str()]
        .try_extract_tensor::<f32>()
        .map_err(|e| {
            EngineError::Inference(format!(
                "{} output {:?} is not an FP32 tensor: {e}",
                model.path.display(),
                model.output
            ))
        })?;
    if values.len() % padded as usize != 0 {
        return Err(EngineError::Inference(format!(
            "{} returned {} values for a batch of {padded}",
            model.path.display(),
            values.len()
        )));
    }
    Ok(values.to_vec())
}

impl Engine for OnnxEngine {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn warm_up(&mut self) -> Result<(), EngineError> {
        let started = Instant::now();
        let tensorrt = self.plan.provider == OnnxProvider::Tensorrt;
        if tensorrt {
            info!(
                unit = self.unit,
                cache = ?self.plan.engine_cache,
                "tensorrt engine build (or cache load) started; the unit is not ready until it ends"
            );
        }
        let mut sizes = vec![self.run_size(self.info.max_batch)];
        if self.plan.provider != OnnxProvider::Cpu {
            let mut size = 1;
            while size < self.info.max_batch {
                sizes.push(self.run_size(size));
                size *= 2;
            }
        } else {
            sizes.push(self.run_size(1));
        }
        sizes.sort_unstable();
        sizes.dedup();
        for _ in 0..self.warmup_batches.max(1) {
            for &size in sizes.iter().rev() {
                let output = self.infer(BatchInput {
                    images: size.min(self.info.max_batch),
                    data: None,
                })?;
                if output.per_image != self.info.output_len {
                    return Err(EngineError::Load(format!(
                        "the model returned {} values per image, expected {}",
                        output.per_image, self.info.output_len
                    )));
                }
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if tensorrt {
            info!(
                unit = self.unit,
                cache = ?self.plan.engine_cache,
                seconds,
                "tensorrt engine build (or cache load) ended"
            );
        } else {
            info!(unit = self.unit, seconds, sizes = ?sizes, "onnx engine warmed up");
        }
        Ok(())
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info, &input)?;
        let images = input.images;
        let padded = self.run_size(images);
        let per_image_in = self.info.input_len;
        let direct = match input.data {
            Some(data) if padded == images && self.stream.is_none() => Some(data),
            Some(data) => {
                let staging = self.staging.slice_mut()?;
                staging[..data.len()].copy_from_slice(data);
                staging[data.len()..padded as usize * per_image_in].fill(0.0);
                self.staging_dirty = true;
                None
            }
            None => {
                if self.staging_dirty {
                    self.staging.slice_mut()?.fill(0.0);
                    self.staging_dirty = false;
                }
                None
            }
        };
        let mut values = self.run_chain(direct, padded)?;
        let per_image = values.len() / padded as usize;
        if per_image != self.info.output_len {
            return Err(EngineError::Inference(format!(
                "the model returned {per_image} values per image, expected {}",
                self.info.output_len
            )));
        }
        values.truncate(images as usize * per_image);
        Ok(BatchOutput {
            images,
            per_image,
            data: if input.data.is_some() {
                values
            } else {
                Vec::new()
            },
        })
    }
}

/// The batch size a batch of `images` runs at: the model's fixed batch; on a GPU, the
/// next power of two (at most `max_batch`), the sizes warm-up ran; on the CPU, as is.
fn run_size(images: u32, max_batch: u32, fixed: Option<u32>, provider: OnnxProvider) -> u32 {
    match (fixed, provider) {
        (Some(fixed), _) => fixed,
        (None, OnnxProvider::Cpu) => images,
        (None, _) => images.next_power_of_two().min(max_batch).max(images),
    }
}

/// The chain's fixed batch: every model's, which must agree; `None` when all are
/// dynamic.
fn fixed_batch(models: &[ModelSession]) -> Result<Option<u32>, EngineError> {
    let mut fixed = None;
    for model in models {
        match (fixed, model.fixed_batch) {
            (None, Some(batch)) => fixed = Some(batch),
            (Some(a), Some(b)) if a != b => {
                return Err(EngineError::Load(format!(
                    "the chained models have different fixed batches ({a} and {b} in {})",
                    model.path.display()
                )))
            }
            _ => {}
        }
    }
    if fixed.is_some() && models.iter().any(|m| m.fixed_batch.is_none()) {
        return Err(EngineError::Load(
            "the chained models mix fixed and dynamic batch axes".into(),
        ));
    }
    Ok(fixed)
}

/// Fails unless the library has the plan's provider compiled in, naming both.
fn check_provider_built(plan: &ProviderPlan, runtime: &Runtime) -> Result<(), EngineError> {
    use ort::ep::ExecutionProvider;
    let available = match plan.provider {
        OnnxProvider::Cpu => Ok(true),
        OnnxProvider::Cuda => ort::ep::CUDA::is_available(),
        OnnxProvider::Tensorrt => ort::ep::TensorRT::is_available().and_then(|trt| {
            // TensorRT nodes it declines run on CUDA: both must be there.
            Ok(trt && ort::ep::CUDA::is_available()?)
        }),
    }
    .map_err(|e| EngineError::Load(format!("asking ONNX Runtime for its providers: {e}")))?;
    if !available {
        return Err(EngineError::Load(format!(
            "{} is not enabled in this ONNX Runtime build ({}, version {}); provider {:?} \
             needs a build with it (on a Jetson: JetPack's or jetson-containers' \
             onnxruntime-gpu; scripts/fetch-onnxruntime.sh fetches the CPU build only)",
            if plan.provider == OnnxProvider::Tensorrt {
                "the TensorRT (and CUDA) execution provider"
            } else {
                "the CUDA execution provider"
            },
            runtime.path.display(),
            runtime.version,
            plan.provider.as_str()
        )));
    }
    Ok(())
}

/// Opens one model's session; `image_shape` is what its input should take per image
/// (the config's for the first model, the previous model's output for the others).
fn open_model(
    runtime: &Runtime,
    path: &Path,
    settings: &OnnxEngineConfig,
    plan: &ProviderPlan,
    stream: Option<&SessionStream>,
    image_shape: &[i64],
    spec: &EngineSpec,
) -> Result<ModelSession, EngineError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        EngineError::Load(format!("{}: {what}: {e}", path.display()))
    };
    // TensorRT needs the model's input name and dims before its session exists (they
    // decide the optimization profile): a first session without providers reads them,
    // one more parse of the file. Other providers read them from their own session.
    let probed = if plan.provider == OnnxProvider::Tensorrt {
        let probe = Session::builder(&runtime.environment)
            .map_err(|e| fail("session options", &e))?
            .with_optimization_level(GraphOptimizationLevel::Disable)
            .map_err(|e| fail("session options", &e))?
            .commit_from_file(path)
            .map_err(|e| fail("not a model ONNX Runtime can load", &e))?;
        Some(Outlets::of(&probe, path, image_shape)?)
    } else {
        None
    };
    let plan = match &probed {
        Some(outlets) if outlets.fixed_batch.is_none() => {
            plan.clone()
                .with_batch_profile(&outlets.input, &outlets.image_dims, spec.max_batch)
        }
        _ => plan.clone(),
    };
    let mut builder = Session::builder(&runtime.environment)
        .map_err(|e| fail("session options", &e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| fail("session options", &e))?;
    if let Some(threads) = settings.intra_threads {
        builder = builder
            .with_intra_threads(threads as usize)
            .map_err(|e| fail("intra_threads", &e))?;
    }
    builder = builder
        .with_execution_providers(plan.dispatches(stream.map(SessionStream::raw)))
        .map_err(|e| fail(&format!("registering {}", plan.ort_name()), &e))?;
    let started = Instant::now();
    if plan.provider == OnnxProvider::Tensorrt {
        info!(
            unit = spec.unit,
            model = %path.display(),
            cache = ?plan.engine_cache,
            "tensorrt session creation started (builds engines not in the cache; minutes on an Orin)"
        );
    }
    let session = builder.commit_from_file(path).map_err(|e| {
        fail(
            &format!("not a model ONNX Runtime can load on {}", plan.ort_name()),
            &e,
        )
    })?;
    if plan.provider == OnnxProvider::Tensorrt {
        info!(
            unit = spec.unit,
            model = %path.display(),
            seconds = started.elapsed().as_secs_f64(),
            "tensorrt session creation ended"
        );
    }
    let outlets = match probed {
        Some(outlets) => outlets,
        None => Outlets::of(&session, path, image_shape)?,
    };
    if session.outputs().len() > 1 {
        warn!(
            model = %path.display(),
            output = %outlets.output,
            "the model has several outputs; mica returns the first"
        );
    }
    Ok(ModelSession {
        path: path.to_path_buf(),
        session,
        input: outlets.input,
        output: outlets.output,
        image_dims: outlets.image_dims,
        fixed_batch: outlets.fixed_batch,
        output_per_image: outlets.output_per_image,
    })
}

/// A model's input and first output as its session describes them.
struct Outlets {
    input: String,
    output: String,
    /// Per-image input dims: the model's, or `image_shape` where they are symbolic.
    image_dims: Vec<i64>,
    fixed_batch: Option<u32>,
    output_per_image: Option<usize>,
}

impl Outlets {
    fn of(session: &Session, path: &Path, image_shape: &[i64]) -> Result<Self, EngineError> {
        let (input, input_dims) = single_input(session, path)?;
        let output = session
            .outputs()
            .first()
            .ok_or_else(|| EngineError::Load(format!("{} has no outputs", path.display())))?;
        let output_dims: Option<Vec<i64>> = output.dtype().tensor_shape().map(|s| s.to_vec());
        let fixed_batch = match input_dims.first() {
            Some(&b) if b > 0 => Some(u32::try_from(b).map_err(|_| {
                EngineError::Load(format!("{}: batch {b} is too large", path.display()))
            })?),
            _ => None,
        };
        let model_image: Vec<i64> = input_dims.iter().skip(1).copied().collect();
        let image_dims = if !model_image.is_empty() && model_image.iter().all(|&d| d > 0) {
            model_image
        } else {
            image_shape.to_vec()
        };
        let output_per_image = output_dims.and_then(|dims| {
            let rest = &dims[1.min(dims.len())..];
            (!rest.is_empty() && rest.iter().all(|&d| d > 0))
                .then(|| rest.iter().product::<i64>() as usize)
        });
        Ok(Self {
            input,
            output: output.name().to_string(),
            image_dims,
            fixed_batch,
            output_per_image,
        })
    }
}

/// The model's one FP32 input: its name and dims (`-1` where symbolic).
fn single_input(session: &Session, path: &Path) -> Result<(String, Vec<i64>), EngineError> {
    let inputs = session.inputs();
    let [input] = inputs else {
        return Err(EngineError::Load(format!(
            "{} has {} inputs; the onnx engine runs models with one (an image batch)",
            path.display(),
            inputs.len()
        )));
    };
    let dtype = input.dtype();
    if dtype.tensor_type() != Some(ort::value::TensorElementType::Float32) {
        return Err(EngineError::Load(format!(
            "{} input {:?} is {dtype:?}; the onnx engine feeds FP32 (export FP16 models \
             with an FP32 input and a cast inside)",
            path.display(),
            input.name()
        )));
    }
    let dims = dtype.tensor_shape().map(|s| s.to_vec()).unwrap_or_default();
    Ok((input.name().to_string(), dims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_batches_pad_every_batch_to_the_models_size() {
        for provider in [OnnxProvider::Cpu, OnnxProvider::Tensorrt] {
            assert_eq!(run_size(1, 4, Some(4), provider), 4);
            assert_eq!(run_size(4, 4, Some(4), provider), 4);
        }
    }

    #[test]
    fn gpu_sessions_pad_to_powers_of_two_and_cpu_sessions_do_not() {
        assert_eq!(run_size(3, 64, None, OnnxProvider::Cuda), 4);
        assert_eq!(run_size(33, 48, None, OnnxProvider::Cuda), 48);
        assert_eq!(run_size(48, 48, None, OnnxProvider::Tensorrt), 48);
        assert_eq!(run_size(3, 64, None, OnnxProvider::Cpu), 3);
    }
}
