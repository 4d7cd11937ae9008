//! The `torch` engine: a TorchScript model or an AOTInductor package (`model.rs`) run
//! through libtorch (tch 0.24, libtorch 2.11.0) on the host CPU or one CUDA device, in
//! the precision of its unit kind (see `mode.rs`).
//!
//! Per instance (one per stream worker): its own CUDA stream from libtorch's pool, made
//! current for the calling thread at every batch (so the engine may be built on one
//! thread and driven from another); a host staging buffer of `max_batch` images,
//! page-locked for CUDA units, from which the batch is copied to the device
//! asynchronously; a synthetic input kept on the device for benchmark batches
//! (`BatchInput::data == None`), made once, of which each batch size uses the leading
//! rows. Every batch ends with the stream synchronized, so `infer` returns only when the
//! batch is done and the staging buffer is free again. On a GPU a batch runs padded to
//! the next warmed-up size (powers of two and `max_batch`), so dynamic batching never
//! meets a shape cuDNN has not autotuned yet (`run_size`).
//!
//! **CUDA graphs** (`cuda_graphs = true`, every GPU unit kind): after warm-up, the
//! model's forward at every warm-up size is captured into a graph (`graphs.rs`), largest
//! first, all of one engine's graphs sharing one private memory pool; a static device
//! input of `max_batch` images is what every graph reads. A batch then copies its input
//! (pinned host -> device, on the instance's stream) into the static input's leading
//! rows, replays the graph of its padded size and reads that graph's static output.
//!
//! Not done: a per-unit TF32 switch (process-wide in libtorch, see `cuda.rs`).

use std::path::PathBuf;

use mica_core::UnitKind;
use tch::{Device, Kind, Tensor};
use tracing::{info, warn};

use super::cuda;
use super::ffi::{self, CudaGraph, CudaStream};
use super::graphs::{Captured, Graphs};
use super::mode::RunMode;
use super::model::Model;
use crate::batch_sizes::{padded_batch, warmup_sizes};
use crate::engine::{
    check_input, Activation, BatchInput, BatchOutput, DeviceActivation, Engine, EngineError,
    EngineInfo,
};
use crate::factory::EngineSpec;
use crate::settings::EngineSettings;

/// A model instance (TorchScript or AOTInductor package) on one unit.
pub struct TorchEngine {
    info: EngineInfo,
    unit_kind: UnitKind,
    mode: RunMode,
    model_path: PathBuf,
    model: Model,
    /// Models run after `model` on its output, on the device (a staged model's blocks).
    chained: Vec<Model>,
    /// `[max_batch, ...input_shape]`, FP32, on the host (pinned for CUDA units).
    staging: Tensor,
    /// `[max_batch, ...input_shape]`, FP32, on the unit's device; made at the first
    /// synthetic batch.
    synthetic: Option<Tensor>,
    /// Per-image input shape as libtorch wants it.
    image_shape: Vec<i64>,
    /// The instance's own stream (CUDA units).
    stream: Option<CudaStream>,
    warmup_batches: u32,
    /// Whether to capture CUDA graphs after warm-up (`cuda_graphs`, CUDA units).
    want_graphs: bool,
    /// The captured graphs, once warm-up has captured them.
    graphs: Option<Graphs>,
}

impl std::fmt::Debug for TorchEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchEngine")
            .field("unit_kind", &self.unit_kind)
            .field("mode", &self.mode)
            .field("model_path", &self.model_path)
            .field("info", &self.info)
            .field("stream", &self.stream)
            .field("graphs", &self.graphs)
            .finish_non_exhaustive()
    }
}

impl TorchEngine {
    /// Loads the model of `spec` onto its unit. Does not run it: the stream worker calls
    /// [`Engine::warm_up`] before the unit reports ready.
    pub fn load(spec: &EngineSpec) -> Result<Self, EngineError> {
        let mode = RunMode::for_unit(spec.unit_kind, spec.device)?;
        let EngineSettings::Torch(settings) = &spec.engine else {
            return Err(EngineError::Load(format!(
                "the torch engine cannot run {:?} settings",
                spec.engine.as_str()
            )));
        };
        let mut models = spec.models.iter();
        let model_path = models.next().cloned().ok_or_else(|| {
            EngineError::Load(
                "the torch engine needs `model` (a TorchScript file, or an AOTInductor \
                 package .pt2)"
                    .into(),
            )
        })?;
        if !model_path.is_file() {
            return Err(EngineError::Load(format!(
                "model file {} does not exist (export one with scripts/export_model.py)",
                model_path.display()
            )));
        }
        if spec.max_batch == 0 {
            return Err(EngineError::Load("max_batch must be at least 1".into()));
        }
        if spec.input_shape.is_empty() || spec.input_shape.contains(&0) {
            return Err(EngineError::Load(format!(
                "input shape {:?} has no elements",
                spec.input_shape
            )));
        }
        if spec.output_len == 0 {
            return Err(EngineError::Load("output_len must be at least 1".into()));
        }
        if settings.cuda_graphs && !mode.is_cuda() {
            warn!(
                unit = spec.unit,
                unit_kind = %spec.unit_kind,
                "cuda_graphs is ignored on a cpu unit"
            );
        }
        let image_shape = spec
            .input_shape
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| EngineError::Load("input shape does not fit in i64".into()))?;

        let stream = match mode.cuda_index() {
            Some(index) => {
                let runtime = cuda::runtime(index)?;
                if let Some(allow) = mode.tf32 {
                    cuda::claim_tf32(allow, spec.unit_kind)?;
                }
                let device = i32::try_from(index)
                    .map_err(|_| EngineError::Load(format!("GPU index {index} is too large")))?;
                let stream =
                    CudaStream::from_pool(runtime, device, false).map_err(EngineError::Load)?;
                // Loading the weights and allocating below go to this stream too.
                stream.make_current().map_err(EngineError::Load)?;
                Some(stream)
            }
            None => None,
        };

        let model = Model::load(&model_path, spec.unit_kind, &mode)?;
        if let Some(limit) = model.max_batch() {
            if spec.max_batch > limit {
                return Err(EngineError::Load(format!(
                    "the AOTInductor package {} runs batches of at most {limit} images, but \
                     the unit's max_batch is {}; lower max_batch or export the package for \
                     a larger batch",
                    model_path.display(),
                    spec.max_batch
                )));
            }
        }
        if let Some(fixed) = model.fixed_batch() {
            if spec.max_batch < fixed {
                return Err(EngineError::Load(format!(
                    "the AOTInductor package {} is compiled for batches of exactly {fixed} \
                     images, and every batch runs padded to that size, but the unit's \
                     max_batch is {}; set max_batch = {fixed}",
                    model_path.display(),
                    spec.max_batch
                )));
            }
        }
        if model
            .package_input()
            .is_some_and(|form| form.channels_last && image_shape.len() != 3)
        {
            return Err(EngineError::Load(format!(
                "the AOTInductor package {} takes a channels-last image batch [N, C, H, W], \
                 but the model's input_shape {:?} is not [C, H, W]",
                model_path.display(),
                spec.input_shape
            )));
        }
        let chained = models
            .map(|path| {
                if path.is_file() {
                    Model::load(path, spec.unit_kind, &mode)
                } else {
                    Err(EngineError::Load(format!(
                        "chained model file {} does not exist",
                        path.display()
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let staging = staging_buffer(spec.max_batch, &image_shape, mode.device)?;
        if let Some(stream) = &stream {
            stream.synchronize().map_err(EngineError::Load)?;
        }
        info!(
            unit = spec.unit,
            unit_kind = %spec.unit_kind,
            device = ?mode.device,
            stream = spec.stream,
            model = %model_path.display(),
            cuda_graphs = settings.cuda_graphs && mode.is_cuda(),
            "torch engine loaded"
        );
        Ok(Self {
            info: EngineInfo {
                engine: "torch",
                max_batch: spec.max_batch,
                input_len: spec.input_len(),
                output_len: spec.output_len,
            },
            unit_kind: spec.unit_kind,
            mode,
            model_path,
            model,
            chained,
            staging,
            synthetic: None,
            image_shape,
            stream,
            warmup_batches: settings.warmup_batches,
            want_graphs: settings.cuda_graphs && mode.is_cuda(),
            graphs: None,
        })
    }

    /// The batch shape `[images, ...input_shape]`.
    fn batch_shape(&self, images: i64) -> Vec<i64> {
        let mut shape = Vec::with_capacity(self.image_shape.len() + 1);
        shape.push(images);
        shape.extend_from_slice(&self.image_shape);
        shape
    }

    /// The device input of a batch of `images` rows: the request's data through the
    /// staging buffer (it may hold fewer images than `images`: the rest are padding
    /// rows, left as they were), or the leading rows of the synthetic input.
    fn device_input(&mut self, images: i64, data: Option<&[f32]>) -> Result<Tensor, EngineError> {
        let shape = self.batch_shape(images);
        match data {
            Some(data) => {
                let host = self.staging.f_narrow(0, 0, images).map_err(inference)?;
                ffi::fill_host_f32(&host, data).map_err(EngineError::Inference)?;
                self.upload_staging(images)
            }
            None => {
                let rows = self
                    .synthetic()?
                    .f_narrow(0, 0, images)
                    .map_err(inference)?;
                debug_assert_eq!(rows.size(), shape);
                Ok(rows)
            }
        }
    }

    /// The synthetic input, `[max_batch, ...input_shape]` on the device, made at the
    /// first call (random values): FP32, or for a package the element type and layout
    /// it takes, so that a benchmark batch runs the model and no conversion a request's
    /// data would need. With CUDA graphs it is also the graphs' static input.
    fn synthetic(&mut self) -> Result<&Tensor, EngineError> {
        if self.synthetic.is_none() {
            let full = self.batch_shape(i64::from(self.info.max_batch));
            let mut tensor = Tensor::f_randn(full.as_slice(), (Kind::Float, self.mode.device))
                .map_err(inference)?;
            if let Some(form) = self.model.package_input() {
                tensor = form.convert(&tensor).map_err(EngineError::Inference)?;
            }
            self.synthetic = Some(tensor);
        }
        Ok(self.synthetic.as_ref().expect("set above"))
    }

    /// Queues one batch on the unit and returns its (device) output.
    fn forward(&mut self, images: i64, data: Option<&[f32]>) -> Result<Tensor, EngineError> {
        let _no_grad = tch::no_grad_guard();
        let input = self.device_input(images, data)?;
        self.run_modules(images, input)
    }

    /// Runs the model (and its chained blocks) on `input`, a batch of `images` on this
    /// engine's device, in any floating kind.
    fn run_modules(&self, images: i64, input: Tensor) -> Result<Tensor, EngineError> {
        let stream = self.stream.as_ref();
        let mut output = self
            .model
            .forward(&input, &self.mode, stream)
            .map_err(EngineError::Inference)?;
        // A chain of blocks stays on the device: each takes the previous one's output.
        for model in &self.chained {
            output = model
                .forward(&output, &self.mode, stream)
                .map_err(EngineError::Inference)?;
        }
        let expected = [images, output_len_i64(self.info.output_len)?];
        let numel: i64 = output.size().iter().product();
        if numel != expected[0] * expected[1] {
            return Err(EngineError::Inference(format!(
                "model {} returned shape {:?}, expected {:?}",
                self.model_path.display(),
                output.size(),
                expected
            )));
        }
        Ok(output)
    }

    /// The batch size a batch of `images` runs at. On a GPU, the smallest warm-up size
    /// that holds it (the next power of two, or `max_batch`): with cuDNN autotuning on,
    /// every new input shape is autotuned once, which takes from a tenth of a second to
    /// seconds, so a dynamically batched stream of odd sizes would stall on each new one.
    /// Padding costs at most the extra rows' compute; the padded rows' outputs are
    /// dropped. On the CPU there is no autotuning: batches run at their own size. A
    /// package compiled for one batch size runs every batch padded to it.
    fn run_size(&self, images: u32) -> u32 {
        if let Some(fixed) = self.model.fixed_batch() {
            fixed
        } else if self.mode.is_cuda() {
            padded_batch(images, self.info.max_batch)
        } else {
            images
        }
    }

    /// Runs one batch to completion.
    fn run(&mut self, images: u32, data: Option<&[f32]>) -> Result<BatchOutput, EngineError> {
        let count = i64::from(images);
        let padded = i64::from(self.run_size(images));
        let output = if self.graphs.is_some() {
            if let Some(data) = data {
                let host = self.staging.f_narrow(0, 0, count).map_err(inference)?;
                ffi::fill_host_f32(&host, data).map_err(EngineError::Inference)?;
            }
            self.replay(padded, data.map(|_| count))?
        } else {
            self.forward(padded, data)?
        };
        let values = match data {
            // Benchmark batches: the stream synchronization in `infer` is the wait.
            None => Vec::new(),
            Some(_) => {
                let rows = output_len_i64(self.info.output_len)?;
                let output = output.f_reshape([padded, rows]).map_err(inference)?;
                self.host_values(&output, count)?
            }
        };
        Ok(BatchOutput {
            images,
            per_image: self.info.output_len,
            data: values,
        })
    }

    /// The first `rows` rows of the staging buffer on this engine's device: from pinned
    /// memory an asynchronous copy on the current stream; on the host the staging rows
    /// themselves.
    fn upload_staging(&self, rows: i64) -> Result<Tensor, EngineError> {
        self.staging
            .f_narrow(0, 0, rows)
            .and_then(|host| host.f_to_device_(self.mode.device, Kind::Float, true, false))
            .map_err(inference)
    }

    /// Whether `tensor`'s data lies in the staging buffer.
    fn aliases_staging(&self, tensor: &Tensor) -> bool {
        if tensor.device() != self.staging.device() {
            return false;
        }
        let start = self.staging.data_ptr() as usize;
        let end = start + self.staging.numel() * std::mem::size_of::<f32>();
        (start..end).contains(&(tensor.data_ptr() as usize))
    }

    /// The first `images` rows of `output` (`[padded, output_len]`, on the device) as
    /// FP32 values in host memory: a blocking copy on the current stream, so it waits
    /// for the batch; padding rows are dropped.
    fn host_values(&self, output: &Tensor, images: i64) -> Result<Vec<f32>, EngineError> {
        let host = output
            .f_narrow(0, 0, images)
            .and_then(|t| t.f_to_device_(Device::Cpu, Kind::Float, false, false))
            .and_then(|t| t.f_contiguous())
            .map_err(inference)?;
        let len = usize::try_from(images).unwrap_or(0) * self.info.output_len;
        let mut values = vec![0.0_f32; len];
        host.f_copy_data(&mut values, len).map_err(inference)?;
        Ok(values)
    }

    /// Batch sizes run at warm-up (see [`warmup_sizes`]); a fixed-batch package only
    /// runs at its own size.
    fn warmup_sizes(&self) -> Vec<u32> {
        match self.model.fixed_batch() {
            Some(fixed) => vec![fixed],
            None => warmup_sizes(self.info.max_batch),
        }
    }

    /// Replays the graph of `padded` rows. With `staged`, first copies that many rows of
    /// the staging buffer into the graphs' static input (pinned host -> device, queued on
    /// the current stream). Returns the graph's static output, which the next replay of
    /// any of this engine's graphs overwrites.
    fn replay(&self, padded: i64, staged: Option<i64>) -> Result<Tensor, EngineError> {
        let graphs = self
            .graphs
            .as_ref()
            .ok_or_else(|| EngineError::Inference("no CUDA graphs captured".into()))?;
        let captured = graphs.get(padded).ok_or_else(|| {
            EngineError::Inference(format!("no CUDA graph was captured for {padded} images"))
        })?;
        if let Some(rows) = staged {
            // Pinned host -> device asynchronously, then device -> static input (both
            // queued on the stream; copy_ from a pinned host tensor would wait).
            let uploaded = self.upload_staging(rows)?;
            let mut target = graphs.input().f_narrow(0, 0, rows).map_err(inference)?;
            target.f_copy_(&uploaded).map_err(inference)?;
        }
        captured.graph.replay().map_err(EngineError::Inference)?;
        Ok(captured.output.shallow_clone())
    }

    /// Replays the graph of `input`'s rows after copying `input` (a device batch of
    /// `padded` rows, any floating kind) into the static input.
    fn replay_device(&self, padded: i64, input: &Tensor) -> Result<Tensor, EngineError> {
        let graphs = self
            .graphs
            .as_ref()
            .ok_or_else(|| EngineError::Inference("no CUDA graphs captured".into()))?;
        let mut target = graphs.input().f_narrow(0, 0, padded).map_err(inference)?;
        target.f_copy_(input).map_err(inference)?;
        self.replay(padded, None)
    }

    /// Captures one CUDA graph per warm-up size, largest first, sharing one private
    /// memory pool (the smaller graphs mostly fit in what the largest reserved). The
    /// model must have run at each size already: cuDNN's autotuning cannot run inside a
    /// capture.
    fn capture_graphs(&mut self) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let device = self
            .stream
            .as_ref()
            .map(CudaStream::device)
            .ok_or_else(|| {
                EngineError::Load("CUDA graphs need a CUDA unit (this one has no stream)".into())
            })?;
        let shim = cuda::graph_shim()?;
        let input = self.synthetic()?.shallow_clone();
        let rows = output_len_i64(self.info.output_len)?;
        let mut sizes = self.warmup_sizes();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let mut captured: Vec<Captured> = Vec::with_capacity(sizes.len());
        let mut reserved_before = 0_u64;
        let _no_grad = tch::no_grad_guard();
        for size in sizes {
            let batch = i64::from(size);
            let static_input = input.f_narrow(0, 0, batch).map_err(inference)?;
            let share = captured.first().map(|c| &c.graph);
            let (graph, output) = CudaGraph::capture(shim, device, share, || {
                self.run_modules(batch, static_input)
                    .and_then(|out| out.f_reshape([batch, rows]).map_err(inference))
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| {
                EngineError::Load(format!(
                    "cannot capture a CUDA graph of {} at batch {size}: {e} (set \
                     cuda_graphs = false for this unit)",
                    self.model_path.display()
                ))
            })?;
            let (reserved, allocated) = graph.pool_bytes().map_err(EngineError::Load)?;
            info!(
                unit_kind = %self.unit_kind,
                device,
                batch = size,
                pool_reserved_bytes = reserved,
                pool_allocated_bytes = allocated,
                graph_added_bytes = reserved.saturating_sub(reserved_before),
                "captured cuda graph"
            );
            reserved_before = reserved;
            captured.push(Captured {
                size,
                graph,
                output,
            });
        }
        // `on_stream` waits for the stream before warm-up reports the unit ready.
        let graphs = Graphs::new(input, captured);
        info!(
            unit_kind = %self.unit_kind,
            device,
            graphs = graphs.len(),
            pool_reserved_bytes = reserved_before,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "cuda graphs captured"
        );
        self.graphs = Some(graphs);
        Ok(())
    }

    /// The batch of `inputs` on this engine's device, `padded` rows, in the shape the
    /// model takes. Device activations are joined where they are (one copy when they
    /// share a device) and moved here: GPU to GPU without the host.
    fn activations_input(
        &mut self,
        inputs: Vec<Activation>,
        padded: i64,
    ) -> Result<Tensor, EngineError> {
        let images = inputs.len();
        let bad_input = |got: usize| EngineError::BadInput {
            got,
            expected: self.info.input_len,
            images: images as u32,
        };
        if inputs.iter().all(|a| matches!(a, Activation::Host(_))) {
            // Each image straight into its row of the (pinned) staging buffer: one host
            // copy, not a gather and then a second copy.
            for (row, input) in inputs.iter().enumerate() {
                if let Activation::Host(values) = input {
                    if values.len() != self.info.input_len {
                        return Err(bad_input(values.len()));
                    }
                    let target = self.staging.f_narrow(0, row as i64, 1).map_err(inference)?;
                    ffi::fill_host_f32(&target, values).map_err(EngineError::Inference)?;
                }
            }
            return self.upload_staging(padded);
        }
        let mut rows = Vec::with_capacity(images);
        for input in inputs {
            let tensor = match input {
                Activation::Device(activation) => {
                    activation.downcast::<Tensor>().map_err(|_| {
                        EngineError::Inference(
                            "a device activation of another engine kind reached a torch stage"
                                .into(),
                        )
                    })?
                }
                Activation::Host(values) => Tensor::f_from_slice(&values).map_err(inference)?,
            };
            let numel = tensor.numel();
            if numel != self.info.input_len {
                return Err(bad_input(numel));
            }
            rows.push(tensor.f_reshape(self.batch_shape(1)).map_err(inference)?);
        }
        let first = &rows[0];
        let alike = rows
            .iter()
            .all(|r| r.device() == first.device() && r.kind() == first.kind());
        let joined = if alike {
            Tensor::f_cat(&rows, 0)
                .and_then(|t| t.f_to_device(self.mode.device))
                .map_err(inference)?
        } else {
            let moved = rows
                .iter()
                .map(|r| {
                    r.f_to_device(self.mode.device)
                        .and_then(|t| t.f_to_kind(self.mode.compute))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(inference)?;
            Tensor::f_cat(&moved, 0).map_err(inference)?
        };
        let missing = padded - images as i64;
        if missing <= 0 {
            return Ok(joined);
        }
        let pad = Tensor::f_zeros(
            self.batch_shape(missing).as_slice(),
            (joined.kind(), self.mode.device),
        )
        .map_err(inference)?;
        Tensor::f_cat(&[joined, pad], 0).map_err(inference)
    }

    /// `infer_activations` inside the stream: see there.
    fn run_activations(
        &mut self,
        inputs: Vec<Activation>,
        output_on_device: bool,
    ) -> Result<Vec<Activation>, EngineError> {
        let images = u32::try_from(inputs.len())
            .map_err(|_| EngineError::Inference("batch too large".into()))?;
        check_input(&self.info, &BatchInput { images, data: None })?;
        let _no_grad = tch::no_grad_guard();
        let padded = i64::from(self.run_size(images));
        // The inputs (views of the previous stage's batches) are dropped when this
        // returns, before `on_stream` waits: only work queued on this engine's stream
        // reads them, and a freed block of the caching allocator is reused in stream
        // order on its own device.
        let input = self.activations_input(inputs, padded)?;
        let replayed = self.graphs.is_some();
        let output = if replayed {
            self.replay_device(padded, &input)?
        } else {
            self.run_modules(padded, input)?
        };
        let rows = output_len_i64(self.info.output_len)?;
        let output = output.f_reshape([padded, rows]).map_err(inference)?;
        if output_on_device {
            // On the host a model that returns (a view of) its input would hand over the
            // staging rows, which the next batch overwrites: copy those. A graph's static
            // output is overwritten by the next replay: copy it too.
            let output = if replayed || self.aliases_staging(&output) {
                output.f_detach_copy().map_err(inference)?
            } else {
                output
            };
            // Views of one batch tensor, which lives until the next stage drops them.
            return (0..i64::from(images))
                .map(|i| {
                    output
                        .f_narrow(0, i, 1)
                        .map(|row| Activation::Device(DeviceActivation::new(row)))
                        .map_err(inference)
                })
                .collect();
        }
        let per_image = self.info.output_len;
        let values = self.host_values(&output, i64::from(images))?;
        Ok(values
            .chunks_exact(per_image)
            .map(|row| Activation::Host(row.to_vec()))
            .collect())
    }
}

impl Engine for TorchEngine {
    fn info(&self) -> EngineInfo {
        self.info.clone()
    }

    fn warm_up(&mut self) -> Result<(), EngineError> {
        // While one worker captures, another worker's warm-up (cuDNN autotuning, the
        // allocator growing) may synchronize the device, which invalidates the capture
        // (seen on the H200 as CUDNN_STATUS_EXECUTION_FAILED): CUDA warm-ups of one
        // process run one at a time.
        let _one_at_a_time = self.mode.is_cuda().then(cuda::warm_up_lock);
        // Graphs are captured after the model has run at each size (cuDNN autotuning,
        // cuBLAS workspaces and lazy initialization happen outside the capture).
        let batches = if self.want_graphs {
            self.warmup_batches.max(MIN_WARMUP_BEFORE_CAPTURE)
        } else {
            self.warmup_batches
        };
        if batches > 0 {
            let started = std::time::Instant::now();
            for images in self.warmup_sizes() {
                for _ in 0..batches {
                    self.infer(BatchInput { images, data: None })?;
                }
            }
            info!(
                unit_kind = %self.unit_kind,
                device = ?self.mode.device,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "torch engine warmed up"
            );
        }
        if self.want_graphs && self.graphs.is_none() {
            self.on_stream(Self::capture_graphs)?;
        }
        Ok(())
    }

    fn graph_memory_bytes(&self) -> Option<u64> {
        self.graphs.as_ref().and_then(Graphs::pool_reserved_bytes)
    }

    fn infer(&mut self, input: BatchInput<'_>) -> Result<BatchOutput, EngineError> {
        check_input(&self.info, &input)?;
        self.on_stream(|engine| engine.run(input.images, input.data))
    }

    fn keeps_activations_on_device(&self) -> bool {
        true
    }

    fn infer_activations(
        &mut self,
        inputs: Vec<Activation>,
        output_on_device: bool,
    ) -> Result<Vec<Activation>, EngineError> {
        self.on_stream(|engine| engine.run_activations(inputs, output_on_device))
    }
}

impl TorchEngine {
    /// Runs `work` with this engine's CUDA stream current, then waits for the stream:
    /// when it returns, every result `work` produced is ready to be read anywhere.
    fn on_stream<T>(
        &mut self,
        work: impl FnOnce(&mut Self) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        if let Some(stream) = &self.stream {
            stream.make_current().map_err(EngineError::Inference)?;
        }
        let result = work(self);
        // Always wait, on errors too: a copy still in flight must not read the staging
        // buffer while the next batch overwrites it.
        if let Some(stream) = &self.stream {
            if let Err(e) = stream.synchronize() {
                warn!(device = stream.device(), error = %e, "cuda stream failed");
                return Err(EngineError::Inference(e));
            }
        }
        result
    }
}

/// Eager batches per size before CUDA graphs are captured, whatever `warmup_batches`
/// says (the first autotunes cuDNN, the second runs as the capture will).
const MIN_WARMUP_BEFORE_CAPTURE: u32 = 2;

fn inference(e: tch::TchError) -> EngineError {
    EngineError::Inference(e.to_string())
}

fn output_len_i64(len: usize) -> Result<i64, EngineError> {
    i64::try_from(len).map_err(|_| EngineError::Inference("output_len too large".into()))
}

/// The host staging buffer: page-locked for CUDA units (so host-to-device copies can be
/// asynchronous), plain memory for the CPU.
fn staging_buffer(max_batch: u32, image: &[i64], device: Device) -> Result<Tensor, EngineError> {
    let mut shape = vec![i64::from(max_batch)];
    shape.extend_from_slice(image);
    let host = Tensor::f_empty(shape.as_slice(), (Kind::Float, Device::Cpu))
        .map_err(|e| EngineError::Load(format!("cannot allocate the staging buffer: {e}")))?;
    if device.is_cuda() {
        host.f_pin_memory(device)
            .map_err(|e| EngineError::Load(format!("cannot page-lock the staging buffer: {e}")))
    } else {
        Ok(host)
    }
}
