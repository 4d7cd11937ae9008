//! The protocol-neutral inference core (TGI's `Infer`): every front end calls it, and
//! only the edge knows the transport. It owns the served model, the backend, the
//! preprocessing pool, the statistics and the drain, and answers every KServe call on
//! plain types: health, server and model metadata, model configuration, statistics,
//! repository index, and inference (readiness, validation, preprocessing on the pool,
//! timeouts, submission, the response built, stats and metrics recorded per protocol).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;
use tracing::{debug, warn};

use super::backend::{InferBackend, InferRequest};
use super::budget::ByteBudget;
use super::drain::Drain;
use super::error::ServeError;
use super::metrics::{self, ModelSeries};
use super::model::{ModelConfig, ModelMetadata, ServedModel};
use super::pool::PreprocessPool;
use super::request::{
    carries_images, prepare, prepare_with, timeout_of, Decoding, Prepared, TensorRequest,
};
use super::response::{build, InferResult};
use super::stats::{ModelStats, Phases, StatsResponse};
use crate::config::{ModelSettings, ServerSettings};

/// Extensions reported in the server metadata.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "binary_tensor_data",
    "model_configuration",
    "statistics",
];

/// Requests up to this size are parsed and checked inline rather than on the
/// preprocessing pool: a hop to the pool and back costs more than parsing them.
pub const INLINE_DECODE_BYTES: usize = 16 * 1024;

/// The transport a request came over (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// KServe v2 over HTTP/REST.
    Http,
    /// KServe v2 over gRPC.
    Grpc,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// KServe server metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerMetadata {
    /// Server name (`mica`).
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Protocol extensions supported.
    pub extensions: &'static [&'static str],
}

/// One model of the repository index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexEntry<'a> {
    /// Model name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why not ready ("" when ready).
    pub reason: &'static str,
}

/// One inference call as a front end received it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The transport.
    pub protocol: Protocol,
    /// When it arrived.
    pub start: Instant,
    /// The model it names.
    pub model: &'a str,
    /// The version it names (`None` or empty: the one served).
    pub version: Option<&'a str>,
}

/// The parsing of a request, run inline or on the preprocessing pool.
pub type Parse = Box<dyn FnOnce(&ServedModel) -> Result<TensorRequest, ServeError> + Send>;

/// What parsing a request hands on.
enum Parsed {
    /// A tensor request, checked.
    Ready(Prepared),
    /// A request with raw images, for the image pool.
    Images(TensorRequest),
}

/// Parses a request and checks it, unless it carries raw images: those are decoded on
/// the image pool.
fn parse_stage(model: &ServedModel, parse: Parse) -> Result<Parsed, ServeError> {
    let request = parse(model)?;
    if carries_images(model, &request) {
        Ok(Parsed::Images(request))
    } else {
        prepare(model, request).map(Parsed::Ready)
    }
}

/// The inference core shared by every front end.
pub struct Infer {
    model: ServedModel,
    backend: Arc<dyn InferBackend>,
    pool: PreprocessPool,
    images: PreprocessPool,
    stats: ModelStats,
    http_series: ModelSeries,
    grpc_series: ModelSeries,
    drain: Drain,
    max_request_bytes: usize,
    budget: Arc<ByteBudget>,
}

impl std::fmt::Debug for Infer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Infer")
            .field("model", &self.model.settings.name)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish()
    }
}

impl Infer {
    /// The core for `model` over `backend` (resolved against it), with the
    /// preprocessing and image pools started.
    pub fn new(
        server: &ServerSettings,
        model: &ModelSettings,
        backend: Arc<dyn InferBackend>,
    ) -> anyhow::Result<Self> {
        let served =
            ServedModel::new(model, server, backend.as_ref()).map_err(anyhow::Error::msg)?;
        let pool = PreprocessPool::new(server.preprocess_threads, server.preprocess_queue)
            .context("cannot start the preprocessing threads")?;
        let images = PreprocessPool::named("image", server.image_threads, server.image_queue)
            .context("cannot start the image threads")?;
        let (name, version) = (&served.settings.name, &served.settings.version);
        Ok(Self {
            http_series: ModelSeries::new(name, version, Protocol::Http),
            grpc_series: ModelSeries::new(name, version, Protocol::Grpc),
            model: served,
            backend,
            pool,
            images,
            stats: ModelStats::default(),
            drain: Drain::default(),
            max_request_bytes: server.max_body_bytes,
            budget: ByteBudget::new(server.memory_budget_bytes),
        })
    }

    /// The model served.
    pub fn model(&self) -> &ServedModel {
        &self.model
    }

    /// Shutdown progress.
    pub fn drain(&self) -> &Drain {
        &self.drain
    }

    /// Largest request accepted, in bytes (`server.max_body_bytes`).
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// The byte budget every front end's request data draws on
    /// (`server.memory_budget_bytes`).
    pub fn budget(&self) -> &Arc<ByteBudget> {
        &self.budget
    }

    /// Threads of the preprocessing pool.
    pub fn preprocess_threads(&self) -> usize {
        self.pool.threads()
    }

    /// Threads of the image pool.
    pub fn image_threads(&self) -> usize {
        self.images.threads()
    }

    /// Checks a model name and optional version.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> Result<(), ServeError> {
        self.model.resolve(model, version)
    }

    /// Whether the backend is ready and no drain has begun.
    pub fn is_ready(&self) -> bool {
        self.backend.is_ready() && !self.drain.is_draining()
    }

    /// Server readiness, with why not; when ready, the parts that failed to load and
    /// are left out (empty unless the backend runs on what is left).
    pub fn server_ready(&self) -> Result<Vec<String>, ServeError> {
        let missing = self.backend.missing();
        if self.is_ready() {
            Ok(missing)
        } else if self.drain.is_draining() {
            Err(ServeError::ShuttingDown)
        } else if !missing.is_empty() {
            Err(ServeError::Unavailable(format!(
                "not ready: {}",
                missing.join("; ")
            )))
        } else {
            Err(ServeError::Unavailable(
                "units are still loading".to_string(),
            ))
        }
    }

    /// Model readiness.
    pub fn model_ready(&self, model: &str, version: Option<&str>) -> Result<(), ServeError> {
        self.resolve(model, version)?;
        if self.is_ready() {
            Ok(())
        } else {
            Err(ServeError::NotReady(self.model.settings.name.clone()))
        }
    }

    /// Server metadata.
    pub fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "mica",
            version: env!("CARGO_PKG_VERSION"),
            extensions: EXTENSIONS,
        }
    }

    /// The repository index: the one model and its state.
    pub fn repository_index(&self) -> Vec<IndexEntry<'_>> {
        let settings = &self.model.settings;
        vec![IndexEntry {
            name: &settings.name,
            version: &settings.version,
            state: if self.is_ready() {
                "READY"
            } else {
                "UNAVAILABLE"
            },
            reason: "",
        }]
    }

    /// Model metadata.
    pub fn metadata(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelMetadata<'_>, ServeError> {
        self.resolve(model, version)?;
        Ok(self.model.metadata())
    }

    /// Triton's model configuration.
    pub fn config(
        &self,
        model: &str,
        version: Option<&str>,
    ) -> Result<ModelConfig<'_>, ServeError> {
        self.resolve(model, version)?;
        Ok(self.model.config())
    }

    /// Triton's statistics: of the named model, or of every model (the one) when
    /// `model` is `None` or empty.
    pub fn statistics(
        &self,
        model: Option<&str>,
        version: Option<&str>,
    ) -> Result<StatsResponse<'_>, ServeError> {
        if let Some(model) = model.filter(|m| !m.is_empty()) {
            self.resolve(model, version)?;
        }
        let settings = &self.model.settings;
        Ok(StatsResponse {
            model_stats: vec![self.stats.snapshot(&settings.name, &settings.version)],
        })
    }

    fn series(&self, protocol: Protocol) -> &ModelSeries {
        match protocol {
            Protocol::Http => &self.http_series,
            Protocol::Grpc => &self.grpc_series,
        }
    }

    /// Runs one inference call. `receive` reads the request (its size in bytes and its
    /// parsing); `encode` turns the result into the transport's answer. Every failure
    /// past the model check is counted and logged; past the drain time the answer is
    /// "server is shutting down".
    pub async fn infer<R, E, T>(
        self: &Arc<Self>,
        call: Call<'_>,
        receive: R,
        encode: E,
    ) -> Result<T, ServeError>
    where
        R: Future<Output = Result<(usize, Parse), ServeError>>,
        E: FnOnce(&ServedModel, InferResult) -> Result<T, ServeError>,
    {
        self.infer_until(call, None, receive, encode).await
    }

    /// Runs one inference call as [`infer`](Self::infer) does, for a client that gives
    /// up at `deadline` (a gRPC client's `grpc-timeout`): the request's timeout is at
    /// most what is left of the deadline, as if it had sent that `timeout` parameter,
    /// and once the deadline passes the answer is `TimedOut`, whatever still runs.
    pub async fn infer_until<R, E, T>(
        self: &Arc<Self>,
        call: Call<'_>,
        deadline: Option<tokio::time::Instant>,
        receive: R,
        encode: E,
    ) -> Result<T, ServeError>
    where
        R: Future<Output = Result<(usize, Parse), ServeError>>,
        E: FnOnce(&ServedModel, InferResult) -> Result<T, ServeError>,
    {
        self.resolve(call.model, call.version)?;
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = self.run(call, deadline, receive, encode) => result,
            () = self.drain.deadline_passed() => Err(ServeError::ShuttingDown),
            () = expired => Err(ServeError::TimedOut),
        };
        if let Err(error) = &result {
            let settings = &self.model.settings;
            self.stats.record_failure(call.start.elapsed());
            metrics::record_failure(&settings.name, &settings.version, call.protocol, error);
            let protocol = call.protocol.as_str();
            if error.is_server_fault() {
                warn!(protocol, reason = error.reason(), %error, "inference request failed");
            } else {
                debug!(protocol, reason = error.reason(), %error, "inference request refused");
            }
        }
        result
    }

    async fn run<R, E, T>(
        self: &Arc<Self>,
        call: Call<'_>,
        deadline: Option<tokio::time::Instant>,
        receive: R,
        encode: E,
    ) -> Result<T, ServeError>
    where
        R: Future<Output = Result<(usize, Parse), ServeError>>,
        E: FnOnce(&ServedModel, InferResult) -> Result<T, ServeError>,
    {
        let start = call.start;
        if !self.backend.is_ready() {
            return Err(ServeError::NotReady(self.model.settings.name.clone()));
        }
        let (size, parse) = receive.await?;
        let prepared = self.prepare(start, deadline, size, parse).await?;
        let input_done = Instant::now();

        let asked = prepared
            .timeout
            .map(|timeout| timeout.saturating_sub(start.elapsed()));
        let deadline_left = deadline
            .map(|deadline| deadline.saturating_duration_since(tokio::time::Instant::now()));
        let timeout = match (asked, deadline_left) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (one, other) => one.or(other),
        };
        if timeout.is_some_and(|left| left.is_zero()) {
            return Err(ServeError::TimedOut);
        }
        let answer = self
            .backend
            .submit(InferRequest {
                images: prepared.images,
                data: Some(prepared.data),
                priority: prepared.priority,
                timeout,
            })
            .await?;
        let infer_done = Instant::now();
        let (queue, latency) = (answer.queue_wait, answer.latency);
        let images = prepared.images;
        let result = build(&self.model, prepared.output, prepared.id, images, answer)?;
        let answer = encode(&self.model, result)?;
        let end = Instant::now();
        let phases = Phases {
            total: end - start,
            input: input_done - start,
            queue,
            infer: latency.saturating_sub(queue),
            output: end - infer_done,
        };
        self.stats.record_success(images, phases);
        self.series(call.protocol).record_success(images, &phases);
        Ok(answer)
    }

    /// Parses and checks a request of `size` bytes that arrived at `start` (from a
    /// client that gives up at `deadline`): small ones inline, large ones (big tensors)
    /// on the preprocessing pool so they never block the async executor; raw images on
    /// the image pool, so image requests never hold up the threads that parse tensor
    /// bodies.
    async fn prepare(
        self: &Arc<Self>,
        start: Instant,
        deadline: Option<tokio::time::Instant>,
        size: usize,
        parse: Parse,
    ) -> Result<Prepared, ServeError> {
        let parsed = if size <= INLINE_DECODE_BYTES {
            parse_stage(&self.model, parse)?
        } else {
            let core = Arc::clone(self);
            self.pool
                .spawn(move || parse_stage(&core.model, parse))?
                .await?
        };
        match parsed {
            Parsed::Ready(prepared) => Ok(prepared),
            Parsed::Images(request) => {
                let deadline = deadline.map(tokio::time::Instant::into_std);
                self.decode_images(start, deadline, request).await
            }
        }
    }

    /// Decodes a request's raw images on the image pool within its `timeout` (counted
    /// from `start`) and its client's `deadline`: past either the request is answered
    /// as timed out at once, whether it still waits for a thread or is decoding (no
    /// further image of it starts). A full pool is a 429.
    async fn decode_images(
        self: &Arc<Self>,
        start: Instant,
        deadline: Option<Instant>,
        request: TensorRequest,
    ) -> Result<Prepared, ServeError> {
        let asked = timeout_of(&request.parameters)?.and_then(|t| start.checked_add(t));
        let deadline = match (asked, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (one, other) => one.or(other),
        };
        let core = Arc::clone(self);
        let work = self
            .images
            .spawn(move || {
                let decoding = Decoding {
                    deadline,
                    budget: Some(&core.budget),
                };
                prepare_with(&core.model, request, decoding)
            })
            .map_err(|error| match error {
                ServeError::Overloaded { .. } => ServeError::ImagePoolFull {
                    threads: self.images.threads(),
                    waiting: self.images.capacity(),
                },
                other => other,
            })?;
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), work)
                .await
                .unwrap_or(Err(ServeError::TimedOut)),
            None => work.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use mica_core::UnitId;

    use super::*;
    use crate::serve::backend::{
        InferError, InferFuture, InferResponse, ReadyFuture, Serves, ShutdownFuture,
    };
    use crate::serve::error::ErrorKind;
    use crate::serve::params::Param;
    use crate::serve::request::{InputData, InputTensor, OutputRequest, TensorData};
    use crate::serve::response::OutputValues;

    /// Answers each image with `[sum, sum + 1, sum + 2]`.
    struct Sums {
        ready: AtomicBool,
    }

    impl InferBackend for Sums {
        fn submit(&self, request: InferRequest) -> InferFuture {
            Box::pin(async move {
                let data = request.data.ok_or(InferError::Invalid("no data".into()))?;
                let per_image = data.len() / (request.images.max(1) as usize);
                let out = data
                    .chunks_exact(per_image.max(1))
                    .flat_map(|image| {
                        let sum: f32 = image.iter().sum();
                        [sum, sum + 1.0, sum + 2.0]
                    })
                    .collect();
                Ok(InferResponse {
                    images: request.images,
                    batch_images: request.images,
                    per_image: 3,
                    data: out,
                    unit: UnitId::new("cpu0"),
                    unit_index: 0,
                    engine: "sums",
                    queue_wait: Duration::ZERO,
                    latency: Duration::ZERO,
                })
            })
        }
        fn is_ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
        fn max_batch(&self) -> u32 {
            4
        }
        fn priority_levels(&self) -> u8 {
            2
        }
        fn serves(&self) -> Serves {
            Serves {
                part: "unit",
                unanswered: "requests",
            }
        }
        fn wait_ready(&self) -> ReadyFuture {
            Box::pin(async { Ok(()) })
        }
        fn alive(&self) -> Result<(), String> {
            Ok(())
        }
        fn shutdown(&self, _drain: Duration) -> ShutdownFuture {
            Box::pin(async { 0 })
        }
    }

    fn core(ready: bool) -> Arc<Infer> {
        let model = ModelSettings {
            name: "m".into(),
            input_shape: vec![2],
            output_shape: vec![3],
            ..ModelSettings::default()
        };
        let server = ServerSettings {
            preprocess_threads: 1,
            ..ServerSettings::default()
        };
        let backend = Arc::new(Sums {
            ready: AtomicBool::new(ready),
        });
        Arc::new(Infer::new(&server, &model, backend).unwrap())
    }

    fn request(values: Vec<f32>, classification: Option<i64>) -> TensorRequest {
        TensorRequest {
            id: Some("r".into()),
            inputs: vec![InputTensor {
                name: "input".into(),
                shape: vec![(values.len() / 2) as i64, 2],
                datatype: "FP32".into(),
                data: InputData::Values(TensorData::Numbers(values)),
            }],
            outputs: classification.map(|k| {
                vec![OutputRequest {
                    name: "output".into(),
                    parameters: [("classification".to_string(), Param::Int(k))].into(),
                }]
            }),
            ..TensorRequest::default()
        }
    }

    fn call(model: &str) -> Call<'_> {
        Call {
            protocol: Protocol::Grpc,
            start: Instant::now(),
            model,
            version: None,
        }
    }

    fn run(core: &Arc<Infer>, model: &str, req: TensorRequest) -> Result<InferResult, ServeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(core.infer(
            call(model),
            async move {
                let parse: Parse = Box::new(move |_| Ok(req));
                Ok((0, parse))
            },
            |_, result| Ok(result),
        ))
    }

    #[test]
    fn a_request_is_answered_without_any_server() {
        let core = core(true);
        let result = run(&core, "m", request(vec![1.0, 2.0, 3.0, 4.0], None)).unwrap();
        assert_eq!(result.id.as_deref(), Some("r"));
        assert_eq!(result.output.shape, vec![2, 3]);
        assert_eq!(
            result.output.values,
            OutputValues::Fp32(vec![3.0, 4.0, 5.0, 7.0, 8.0, 9.0])
        );
        let classified = run(&core, "m", request(vec![1.0, 2.0], Some(1))).unwrap();
        assert_eq!(
            classified.output.values,
            OutputValues::Bytes(vec!["5.000000:2".into()])
        );
        let stats = core.statistics(None, None).unwrap();
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["model_stats"][0]["inference_count"], 3);
    }

    #[test]
    fn failures_have_their_kinds_and_are_counted() {
        let core = core(true);
        let error = run(&core, "other", request(vec![1.0, 2.0], None)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotFound);
        let error = run(&core, "m", request(vec![1.0, 2.0, 3.0], None)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(error.to_string().contains("shape"), "{error}");
        let json = serde_json::to_value(core.statistics(Some("m"), None).unwrap()).unwrap();
        // The unknown model is refused before it counts as an inference of "m".
        assert_eq!(
            json["model_stats"][0]["inference_stats"]["fail"]["count"],
            1
        );
        let not_ready = self::core(false);
        let error = run(&not_ready, "m", request(vec![1.0, 2.0], None)).unwrap_err();
        assert_eq!(error, ServeError::NotReady("m".into()));
        assert_eq!(
            not_ready.server_ready().unwrap_err().kind(),
            ErrorKind::Unavailable
        );
    }

    /// A core serving 4x4 raw images, with one image thread and one waiting slot.
    fn image_core() -> Arc<Infer> {
        let mut model = ModelSettings {
            name: "m".into(),
            input_shape: vec![3, 4, 4],
            output_shape: vec![3],
            image_input: Some("image".into()),
            ..ModelSettings::default()
        };
        model.preprocessing.resize_shorter = 4;
        let server = ServerSettings {
            preprocess_threads: 1,
            image_threads: 1,
            image_queue: 1,
            ..ServerSettings::default()
        };
        let backend = Arc::new(Sums {
            ready: AtomicBool::new(true),
        });
        Arc::new(Infer::new(&server, &model, backend).unwrap())
    }

    fn image_request(timeout_us: Option<i64>) -> TensorRequest {
        use image::ImageEncoder;
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[90; 8 * 8 * 3], 8, 8, image::ExtendedColorType::Rgb8)
            .unwrap();
        TensorRequest {
            parameters: timeout_us
                .map(|us| ("timeout".to_string(), Param::Int(us)))
                .into_iter()
                .collect(),
            inputs: vec![InputTensor {
                name: "image".into(),
                shape: vec![1],
                datatype: "BYTES".into(),
                data: InputData::Elements(vec![png.into()]),
            }],
            ..TensorRequest::default()
        }
    }

    fn infer_now(
        core: &Arc<Infer>,
        req: TensorRequest,
    ) -> impl Future<Output = Result<InferResult, ServeError>> + '_ {
        core.infer(
            call("m"),
            async move {
                let parse: Parse = Box::new(move |_| Ok(req));
                Ok((0, parse))
            },
            |_, result| Ok(result),
        )
    }

    #[test]
    fn images_decode_on_their_own_pool_within_the_request_timeout() {
        let core = image_core();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let answer = runtime.block_on(infer_now(&core, image_request(None)));
        assert_eq!(answer.unwrap().output.shape, vec![1, 3]);
        // Hold the one image thread.
        let (started, begun) = std::sync::mpsc::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let held = core
            .images
            .spawn(move || {
                started.send(()).unwrap();
                let _ = gate.recv();
                Ok(())
            })
            .unwrap();
        begun.recv().unwrap();
        runtime.block_on(async {
            // A request with a 20 ms timeout waits in the one slot ...
            let mut waiting = std::pin::pin!(infer_now(&core, image_request(Some(20_000))));
            assert!(futures::poll!(&mut waiting).is_pending());
            // ... so the next one finds the pool full: 429 with Retry-After.
            let full = infer_now(&core, image_request(None)).await.unwrap_err();
            assert!(
                matches!(
                    full,
                    ServeError::ImagePoolFull {
                        threads: 1,
                        waiting: 1
                    }
                ),
                "{full:?}"
            );
            assert_eq!(full.kind(), ErrorKind::Overloaded);
            assert_eq!(full.retry_after_secs(), Some(1));
            // The waiting one is answered as timed out while the thread is still held.
            assert_eq!(waiting.await.unwrap_err(), ServeError::TimedOut);
        });
        // A tensor request never waits for the image pool.
        let tensor = run(&core, "m", {
            let mut r = request(vec![0.5; 48], None);
            r.inputs[0].shape = vec![1, 3, 4, 4];
            r
        });
        assert!(tensor.is_ok(), "{tensor:?}");
        release.send(()).unwrap();
        runtime.block_on(held).unwrap();
        // The thread takes the timed-out request's job next and skips it; until it has
        // taken it the one slot is still occupied (a bounded wait on that state).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while core.images.queued() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the skipped job stays queued"
            );
            std::thread::yield_now();
        }
        // The timed-out request's job was skipped; the pool serves the next one.
        let answer = runtime.block_on(infer_now(&core, image_request(None)));
        assert!(answer.is_ok(), "{answer:?}");
    }

    #[test]
    fn draining_makes_the_server_not_ready() {
        let core = core(true);
        assert!(core.server_ready().is_ok());
        assert_eq!(core.repository_index()[0].state, "READY");
        core.drain().begin();
        assert_eq!(core.server_ready(), Err(ServeError::ShuttingDown));
        assert_eq!(core.repository_index()[0].state, "UNAVAILABLE");
        assert!(core.model_ready("m", Some("1")).is_err());
        assert_eq!(
            core.metadata("m", Some("9")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}
