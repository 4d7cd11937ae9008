//! The gRPC front end end to end, over a real loopback socket with tonic's client
//! generated from the same `proto/inference.proto`: health, metadata, configuration,
//! statistics and index RPCs; inference with raw and typed inputs, classification and
//! priority; the code of every kind of failure (INVALID_ARGUMENT, NOT_FOUND,
//! OUT_OF_RANGE past the message limit, RESOURCE_EXHAUSTED with its retry hint,
//! UNAVAILABLE, DEADLINE_EXCEEDED for the client's `grpc-timeout`, UNIMPLEMENTED) and
//! the server still serving after each; `ModelStreamInfer` round trips; and a graceful
//! stop with a stream open, its in-flight requests answered, then the stream closed
//! UNAVAILABLE ("server is shutting down"), in process and as `mica serve` on
//! simulated units under SIGTERM.
//!
//! In process the backend is a gate: a request waits until the test lets it through,
//! and the test is told when one arrives, so no case depends on how long anything
//! takes. Every wait is bounded, so a bug fails a test instead of hanging it.

mod serve_support;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use mica::serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use mica::serve::grpc::proto::infer_parameter::ParameterChoice;
use mica::serve::grpc::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use mica::serve::grpc::proto::*;
use mica::serve::grpc::{GrpcFrontEnd, STREAM_WINDOW};
use mica::serve::{
    FrontEnd, FrontEnds, Infer, InferBackend, InferFuture, ReadyFuture, ServerSettings, Serves,
    ShutdownFuture,
};
use mica_actors::{InferError, InferRequest, InferResponse};
use mica_core::UnitId;
use serve_support::{
    free_port, label_file, le_bytes, shipped_config, test_model, test_settings, ChildServer,
    INPUT_LEN, OUTPUT_LEN,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Longest any single wait of a test may take before the test fails.
const BOUND: Duration = Duration::from_secs(10);

/// `what` within [`BOUND`], or the test fails naming it.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {BOUND:?}"))
}

/// A backend answering `out[j] = sum(image) + j`; while `hold` is set each request
/// waits at the gate until the test releases it.
#[derive(Debug)]
struct GateBackend {
    ready: AtomicBool,
    overloaded: AtomicBool,
    /// Requests wait at the gate while set.
    hold: AtomicBool,
    /// A held request ignores its timeout (a hung unit) while set; otherwise it is
    /// answered `TimedOut` once its timeout passes, as the scheduler answers.
    hang: AtomicBool,
    gate: Arc<Semaphore>,
    /// Requests submitted so far.
    arrived: watch::Sender<usize>,
    /// Priority and timeout of the last request.
    last: Mutex<Option<(u8, Option<Duration>)>>,
}

impl GateBackend {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            ready: AtomicBool::new(true),
            overloaded: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            hang: AtomicBool::new(false),
            gate: Arc::new(Semaphore::new(0)),
            arrived: watch::channel(0).0,
            last: Mutex::new(None),
        })
    }

    /// Resolves once `count` requests in all have reached the backend.
    async fn arrivals(&self, count: usize) {
        let mut arrived = self.arrived.subscribe();
        within(&format!("request {count} reaching the backend"), async {
            arrived.wait_for(|&n| n >= count).await.unwrap();
        })
        .await;
    }

    fn arrived(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Lets `count` held requests through.
    fn release(&self, count: usize) {
        self.gate.add_permits(count);
    }

    fn last(&self) -> (u8, Option<Duration>) {
        self.last
            .lock()
            .unwrap()
            .expect("a request reached the backend")
    }
}

impl InferBackend for GateBackend {
    fn submit(&self, request: InferRequest) -> InferFuture {
        *self.last.lock().unwrap() = Some((request.priority, request.timeout));
        let overloaded = self.overloaded.load(Ordering::SeqCst);
        let gate = self.hold.load(Ordering::SeqCst).then(|| self.gate.clone());
        let timeout = request
            .timeout
            .filter(|_| !self.hang.load(Ordering::SeqCst));
        self.arrived.send_modify(|n| *n += 1);
        Box::pin(async move {
            if overloaded {
                return Err(InferError::Overloaded {
                    retry_after: Duration::from_millis(1500),
                });
            }
            if let Some(gate) = gate {
                let through = gate.acquire();
                let permit = match timeout {
                    Some(timeout) => tokio::time::timeout(timeout, through)
                        .await
                        .map_err(|_| InferError::TimedOut)?,
                    None => through.await,
                };
                permit.expect("the gate is never closed").forget();
            }
            let data = request
                .data
                .ok_or_else(|| InferError::Invalid("no data".into()))?;
            let out = data
                .chunks_exact(INPUT_LEN)
                .flat_map(|image| {
                    let sum: f32 = image.iter().sum();
                    (0..OUTPUT_LEN).map(move |j| sum + j as f32)
                })
                .collect();
            Ok(InferResponse {
                images: request.images,
                batch_images: request.images,
                per_image: OUTPUT_LEN,
                data: out,
                unit: UnitId::new("gate0"),
                unit_index: 0,
                engine: "gate",
                queue_wait: Duration::from_micros(10),
                latency: Duration::from_micros(20),
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
        3
    }

    fn serves(&self) -> Serves {
        Serves {
            part: "gate unit",
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

/// The gRPC front end over a core on the gate backend, on a free loopback port.
struct Fixture {
    core: Arc<Infer>,
    backend: Arc<GateBackend>,
    ends: FrontEnds,
    client: GrpcInferenceServiceClient<Channel>,
    addr: SocketAddr,
    drain_time: Duration,
    _labels: tempfile::NamedTempFile,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

async fn fixture_with(adjust: impl FnOnce(&mut ServerSettings)) -> Fixture {
    let labels = label_file();
    let mut settings = test_settings(labels.path());
    // Port 0 here is any free port (`mica serve` reads 0 as "off" before this).
    settings.grpc_port = 0;
    adjust(&mut settings);
    let backend = GateBackend::new();
    let core = Arc::new(Infer::new(&settings, &test_model(), backend.clone()).unwrap());
    let grpc = GrpcFrontEnd::start(&settings, core.clone()).unwrap();
    let addr = grpc.local_addr();
    let ends = FrontEnds::new(core.clone(), vec![Box::new(grpc)], settings.drain_time);
    let client = within(
        "connecting",
        GrpcInferenceServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .unwrap();
    Fixture {
        core,
        backend,
        ends,
        client,
        addr,
        drain_time: settings.drain_time,
        _labels: labels,
    }
}

impl Fixture {
    async fn infer(&self, request: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let mut client = self.client.clone();
        within("an infer answer", client.model_infer(request))
            .await
            .map(|r| r.into_inner())
    }

    /// The server answers a good request after whatever came before.
    async fn assert_still_serving(&self) {
        let mut client = self.client.clone();
        let live = within("ServerLive", client.server_live(ServerLiveRequest {}))
            .await
            .unwrap();
        assert!(live.into_inner().live);
        let answer = self.infer(raw_request(2)).await.unwrap();
        assert_eq!(outputs(&answer), expected(2));
    }
}

/// Image `i` of a batch filled with `i + 1`.
fn image_values(images: usize) -> Vec<f32> {
    (0..images)
        .flat_map(|i| std::iter::repeat_n((i + 1) as f32, INPUT_LEN))
        .collect()
}

/// What the gate backend answers for [`image_values`].
fn expected(images: usize) -> Vec<f32> {
    (0..images)
        .flat_map(|i| {
            let sum = ((i + 1) * INPUT_LEN) as f32;
            (0..OUTPUT_LEN).map(move |j| sum + j as f32)
        })
        .collect()
}

fn input(shape: Vec<i64>, datatype: &str) -> InferInputTensor {
    InferInputTensor {
        name: "input".into(),
        datatype: datatype.into(),
        shape,
        ..InferInputTensor::default()
    }
}

fn raw_request(images: usize) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "tiny".into(),
        id: "req-1".into(),
        inputs: vec![input(vec![images as i64, 3, 4, 4], "FP32")],
        raw_input_contents: vec![le_bytes(&image_values(images)).into()],
        ..ModelInferRequest::default()
    }
}

fn typed_request(images: usize) -> ModelInferRequest {
    let mut tensor = input(vec![images as i64, 3, 4, 4], "FP32");
    tensor.contents = Some(InferTensorContents {
        fp32_contents: image_values(images),
        ..InferTensorContents::default()
    });
    ModelInferRequest {
        model_name: "tiny".into(),
        id: "typed".into(),
        inputs: vec![tensor],
        ..ModelInferRequest::default()
    }
}

fn param(choice: ParameterChoice) -> InferParameter {
    InferParameter {
        parameter_choice: Some(choice),
    }
}

fn with_params(
    mut request: ModelInferRequest,
    params: &[(&str, ParameterChoice)],
) -> ModelInferRequest {
    request.parameters = params
        .iter()
        .map(|(key, choice)| (key.to_string(), param(choice.clone())))
        .collect();
    request
}

/// The FP32 output of an answer.
fn outputs(answer: &ModelInferResponse) -> Vec<f32> {
    assert_eq!(answer.outputs.len(), 1, "{answer:?}");
    assert_eq!(answer.outputs[0].datatype, "FP32");
    answer.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The BYTES elements of an answer (length-prefixed in `raw_output_contents`).
fn strings(answer: &ModelInferResponse) -> Vec<String> {
    let mut raw = &answer.raw_output_contents[0][..];
    let mut out = Vec::new();
    while !raw.is_empty() {
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(raw[4..4 + len].to_vec()).unwrap());
        raw = &raw[4 + len..];
    }
    out
}

/// The failure of `result`, checked for its code and a part of its message.
fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    needle: &str,
) -> Status {
    let status = result.expect_err("the call fails");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "{:?} lacks {needle:?}",
        status.message()
    );
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metadata_config_statistics_and_index() {
    let f = fixture().await;
    let mut client = f.client.clone();
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready("tiny", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        client
            .model_ready(ready("tiny", "1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert_status(
        client.model_ready(ready("nope", "")).await,
        Code::NotFound,
        "unknown model \"nope\"",
    );
    assert_status(
        client.model_ready(ready("tiny", "9")).await,
        Code::NotFound,
        "no version \"9\"",
    );

    let server = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "mica");
    assert_eq!(server.version, env!("CARGO_PKG_VERSION"));
    assert!(server.extensions.iter().any(|e| e == "classification"));

    let metadata = |name: &str| ModelMetadataRequest {
        name: name.into(),
        version: String::new(),
    };
    let model = client
        .model_metadata(metadata("tiny"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(model.name, "tiny");
    let tensor = model.inputs.iter().find(|t| t.name == "input").unwrap();
    assert_eq!(
        (tensor.datatype.as_str(), &tensor.shape[..]),
        ("FP32", &[-1, 3, 4, 4][..])
    );
    assert_eq!(model.outputs[0].shape, vec![-1, OUTPUT_LEN as i64]);
    assert_status(
        client.model_metadata(metadata("nope")).await,
        Code::NotFound,
        "unknown model \"nope\"",
    );

    let config = client
        .model_config(ModelConfigRequest {
            name: "tiny".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(config.name, "tiny");
    assert_eq!(config.max_batch_size, 4);
    assert_status(
        client
            .model_config(ModelConfigRequest {
                name: "nope".into(),
                version: String::new(),
            })
            .await,
        Code::NotFound,
        "nope",
    );

    let index = client
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), 1);
    assert_eq!(
        (
            index.models[0].name.as_str(),
            index.models[0].state.as_str()
        ),
        ("tiny", "READY")
    );

    // Statistics count what ran: one success, one failure.
    f.infer(raw_request(1)).await.unwrap();
    assert_status(
        f.infer(raw_request(5)).await,
        Code::InvalidArgument,
        "max_batch_size 4",
    );
    let stats = client
        .model_statistics(ModelStatisticsRequest {
            name: "tiny".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let stats = &stats.model_stats[0];
    assert_eq!(stats.inference_count, 1);
    let inference = stats.inference_stats.as_ref().unwrap();
    assert_eq!(inference.success.unwrap().count, 1);
    assert_eq!(inference.fail.unwrap().count, 1);
    assert_status(
        client
            .model_statistics(ModelStatisticsRequest {
                name: "other".into(),
                version: String::new(),
            })
            .await,
        Code::NotFound,
        "other",
    );

    // The protocol's calls mica does not serve say so.
    assert_status(
        client.log_settings(LogSettingsRequest {}).await,
        Code::Unimplemented,
        "log settings is not implemented",
    );
    f.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_with_raw_and_typed_inputs_classification_and_priority() {
    let f = fixture().await;
    let raw = f.infer(raw_request(3)).await.unwrap();
    assert_eq!(
        (raw.model_name.as_str(), raw.id.as_str()),
        ("tiny", "req-1")
    );
    assert_eq!(raw.outputs[0].shape, vec![3, OUTPUT_LEN as i64]);
    assert_eq!(outputs(&raw), expected(3));
    let unit = raw
        .parameters
        .get("mica_unit")
        .and_then(|p| p.parameter_choice.clone());
    assert_eq!(unit, Some(ParameterChoice::StringParam("gate0".into())));

    let typed = f.infer(typed_request(2)).await.unwrap();
    assert_eq!(typed.id, "typed");
    assert_eq!(outputs(&typed), expected(2));
    // No priority given: the lowest of 3 levels; no timeout.
    assert_eq!(f.backend.last(), (2, None));

    let mut classify = with_params(
        raw_request(2),
        &[
            ("priority", ParameterChoice::Int64Param(1)),
            ("timeout", ParameterChoice::Int64Param(5_000_000)),
        ],
    );
    classify.outputs = vec![InferRequestedOutputTensor {
        name: "output".into(),
        parameters: HashMap::from([(
            "classification".to_string(),
            param(ParameterChoice::Int64Param(2)),
        )]),
    }];
    let classified = f.infer(classify).await.unwrap();
    assert_eq!(classified.outputs[0].datatype, "BYTES");
    assert_eq!(classified.outputs[0].shape, vec![2, 2]);
    assert_eq!(
        strings(&classified),
        [
            "52.000000:4:four",
            "51.000000:3:three",
            "100.000000:4:four",
            "99.000000:3:three"
        ]
    );
    // Priority 1 of Triton's 1-based levels is mica's level 0; the timeout reaches the
    // backend less the time already spent.
    let (priority, timeout) = f.backend.last();
    assert_eq!(priority, 0);
    let timeout = timeout.unwrap();
    assert!(
        timeout <= Duration::from_secs(5) && timeout > Duration::from_secs(4),
        "{timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_naming_what_is_wrong() {
    let f = fixture().await;
    let with_input = |tensor: InferInputTensor, raw: Vec<u8>| ModelInferRequest {
        model_name: "tiny".into(),
        inputs: vec![tensor],
        raw_input_contents: vec![raw.into()],
        ..ModelInferRequest::default()
    };
    let one = le_bytes(&image_values(1));
    let cases: Vec<(ModelInferRequest, &str)> = vec![
        (
            with_input(input(vec![1, 3, 4], "FP32"), one.clone()),
            "shape [1, 3, 4]",
        ),
        (
            with_input(input(vec![1, 4, 4, 3], "FP32"), one.clone()),
            "[-1, 3, 4, 4]",
        ),
        (
            with_input(input(vec![1, 3, 4, 4], "INT32"), one.clone()),
            "datatype \"INT32\"",
        ),
        (
            with_input(
                input(vec![1, 3, 4, 4], "FP32"),
                one[..one.len() - 4].to_vec(),
            ),
            "47 values given",
        ),
        (
            with_input(input(vec![0, 3, 4, 4], "FP32"), Vec::new()),
            "batch size 0",
        ),
        (
            with_input(input(vec![-1, 3, 4, 4], "FP32"), one.clone()),
            "batch size -1",
        ),
        (raw_request(5), "max_batch_size 4"),
        (
            with_input(
                InferInputTensor {
                    name: "x".into(),
                    ..input(vec![1], "FP32")
                },
                vec![0; 4],
            ),
            "unknown input \"x\"",
        ),
        (
            ModelInferRequest {
                model_name: "tiny".into(),
                inputs: vec![input(vec![1, 3, 4, 4], "FP32")],
                ..ModelInferRequest::default()
            },
            "neither contents nor raw_input_contents",
        ),
        (
            ModelInferRequest {
                model_name: "tiny".into(),
                inputs: vec![InferInputTensor {
                    contents: Some(InferTensorContents {
                        int_contents: vec![1; INPUT_LEN],
                        ..InferTensorContents::default()
                    }),
                    ..input(vec![1, 3, 4, 4], "FP32")
                }],
                ..ModelInferRequest::default()
            },
            "FP32 values belong in fp32_contents, not int_contents",
        ),
        (
            ModelInferRequest {
                raw_input_contents: vec![one.clone().into(), one.clone().into()],
                ..raw_request(1)
            },
            "raw_input_contents has 2 entries but the request has 1 inputs",
        ),
        (
            ModelInferRequest {
                inputs: typed_request(1).inputs,
                ..raw_request(1)
            },
            "both contents and raw_input_contents",
        ),
        (
            with_params(
                raw_request(1),
                &[("priority", ParameterChoice::Int64Param(9))],
            ),
            "parameters.priority",
        ),
        (
            with_params(
                raw_request(1),
                &[("timeout", ParameterChoice::StringParam("soon".into()))],
            ),
            "parameters.timeout",
        ),
        (
            with_params(
                raw_request(1),
                &[("timeout", ParameterChoice::Int64Param(-5))],
            ),
            "parameters.timeout",
        ),
    ];
    for (request, needle) in cases {
        assert_status(f.infer(request).await, Code::InvalidArgument, needle);
    }
    let mut unknown_output = raw_request(1);
    unknown_output.outputs = vec![InferRequestedOutputTensor {
        name: "logits".into(),
        parameters: HashMap::new(),
    }];
    assert_status(
        f.infer(unknown_output).await,
        Code::InvalidArgument,
        "unknown output \"logits\"",
    );
    let unknown_model = ModelInferRequest {
        model_name: "nope".into(),
        ..raw_request(1)
    };
    assert_status(
        f.infer(unknown_model).await,
        Code::NotFound,
        "unknown model \"nope\"",
    );
    let unknown_version = ModelInferRequest {
        model_version: "9".into(),
        ..raw_request(1)
    };
    assert_status(
        f.infer(unknown_version).await,
        Code::NotFound,
        "no version \"9\"",
    );
    assert_eq!(f.backend.arrived(), 0, "no bad request reached the backend");
    f.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_past_the_configured_limit_are_out_of_range() {
    let limit = 4096;
    let f = fixture_with(|s| {
        s.max_body_bytes = limit;
        s.memory_budget_bytes = 1 << 20;
    })
    .await;
    // Four images (768 tensor bytes) fit; a message over the limit is refused before
    // it is decoded, with tonic's text naming both sizes.
    let mut big = raw_request(1);
    big.raw_input_contents = vec![vec![0u8; limit + 1].into()];
    let status = assert_status(f.infer(big).await, Code::OutOfRange, "too large");
    assert!(
        status
            .message()
            .contains(&format!("limit is: {limit} bytes")),
        "{status:?}"
    );
    assert_eq!(f.backend.arrived(), 0);
    f.assert_still_serving().await;
    let answer = f.infer(raw_request(4)).await.unwrap();
    assert_eq!(outputs(&answer), expected(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_and_a_spent_byte_budget_are_resource_exhausted_with_a_retry_hint() {
    // The budget takes one request of four images (768 tensor bytes), not two.
    let f = fixture_with(|s| {
        s.max_body_bytes = 1024;
        s.memory_budget_bytes = 1024;
    })
    .await;
    f.backend.overloaded.store(true, Ordering::SeqCst);
    let status = assert_status(
        f.infer(raw_request(1)).await,
        Code::ResourceExhausted,
        "server overloaded, retry after 2s",
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
    f.backend.overloaded.store(false, Ordering::SeqCst);

    f.backend.hold.store(true, Ordering::SeqCst);
    let held = {
        let mut client = f.client.clone();
        tokio::spawn(async move { client.model_infer(raw_request(4)).await })
    };
    f.backend.arrivals(2).await;
    let status = assert_status(
        f.infer(raw_request(4)).await,
        Code::ResourceExhausted,
        "memory budget for request data (1024 bytes) is in use",
    );
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    // A smaller request still fits beside the held one.
    f.backend.hold.store(false, Ordering::SeqCst);
    assert_eq!(
        outputs(&f.infer(raw_request(1)).await.unwrap()),
        expected(1)
    );
    f.backend.release(1);
    let answer = within("the held answer", held).await.unwrap().unwrap();
    assert_eq!(outputs(&answer.into_inner()), expected(4));
    // Its bytes went back to the budget with its answer.
    assert_eq!(f.core.budget().used(), 0);
    assert_eq!(
        outputs(&f.infer(raw_request(4)).await.unwrap()),
        expected(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_not_ready_is_unavailable_and_says_so() {
    let f = fixture().await;
    f.backend.ready.store(false, Ordering::SeqCst);
    let mut client = f.client.clone();
    assert!(
        !client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = ModelReadyRequest {
        name: "tiny".into(),
        version: String::new(),
    };
    assert!(!client.model_ready(ready).await.unwrap().into_inner().ready);
    assert_status(
        f.infer(raw_request(1)).await,
        Code::Unavailable,
        "model \"tiny\" is not ready",
    );
    let index = client
        .repository_index(RepositoryIndexRequest {
            repository_name: String::new(),
            ready: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models[0].state, "UNAVAILABLE");
    f.backend.ready.store(true, Ordering::SeqCst);
    f.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_deadline_is_the_request_timeout_and_answers_deadline_exceeded() {
    let f = fixture().await;
    f.backend.hold.store(true, Ordering::SeqCst);
    f.backend.hang.store(true, Ordering::SeqCst);
    let deadline = Duration::from_millis(300);
    let mut client = DeadlineToServer::connect(f.addr).await;
    let mut request = tonic::Request::new(raw_request(1));
    request.set_timeout(deadline);
    let sent = Instant::now();
    // The unit hangs: the answer comes from the deadline alone.
    let status = assert_status(
        within("the deadline's answer", client.model_infer(request)).await,
        Code::DeadlineExceeded,
        "request timed out before it was answered",
    );
    assert!(
        sent.elapsed() >= deadline - Duration::from_millis(1),
        "{:?}",
        sent.elapsed()
    );
    assert!(status.metadata().get("retry-after").is_none());
    // The backend was given what was left of the deadline as the request's timeout.
    let timeout = f
        .backend
        .last()
        .1
        .expect("the deadline reached the backend");
    assert!(
        timeout <= deadline && timeout > Duration::ZERO,
        "{timeout:?}"
    );

    // A `timeout` parameter shorter than the deadline wins; a longer one does not.
    f.backend.hang.store(false, Ordering::SeqCst);
    let mut request = tonic::Request::new(with_params(
        raw_request(1),
        &[("timeout", ParameterChoice::Int64Param(50_000))],
    ));
    request.set_timeout(Duration::from_secs(30));
    assert_status(
        within("the timeout's answer", client.model_infer(request)).await,
        Code::DeadlineExceeded,
        "timed out",
    );
    assert!(f.backend.last().1.unwrap() <= Duration::from_millis(50));
    f.backend.hold.store(false, Ordering::SeqCst);
    let mut request = tonic::Request::new(with_params(
        raw_request(1),
        &[("timeout", ParameterChoice::Int64Param(60_000_000))],
    ));
    request.set_timeout(Duration::from_secs(30));
    client.model_infer(request).await.unwrap();
    let timeout = f.backend.last().1.unwrap();
    assert!(timeout <= Duration::from_secs(30), "{timeout:?}");

    // Timeouts are counted as failures of the model.
    let stats = client
        .model_statistics(ModelStatisticsRequest {
            name: "tiny".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let fail = stats.model_stats[0].inference_stats.as_ref().unwrap().fail;
    assert_eq!(fail.unwrap().count, 2);

    // On a stream the deadline bounds every request, and the stream ends
    // DEADLINE_EXCEEDED.
    f.backend.hold.store(true, Ordering::SeqCst);
    let (send, requests) = mpsc::channel(4);
    send.send(raw_request(1)).await.unwrap();
    let mut call = tonic::Request::new(ReceiverStream::new(requests));
    call.set_timeout(deadline);
    let mut answers = within("the stream to open", client.model_stream_infer(call))
        .await
        .unwrap()
        .into_inner();
    let first = within("the stream's answer", answers.message())
        .await
        .unwrap()
        .expect("an answer before the end");
    assert!(first.error_message.contains("timed out"), "{first:?}");
    assert_eq!(first.infer_response.unwrap().id, "req-1");
    let end = within("the stream's end", answers.message()).await;
    assert_status(end, Code::DeadlineExceeded, "timed out");
    drop(send);
    f.backend.hold.store(false, Ordering::SeqCst);
    f.assert_still_serving().await;
}

/// A client connection that leaves a call's deadline to the server: tonic's `Channel`
/// cancels a call itself once its `grpc-timeout` passes, so through it a test could
/// not tell the server's answer from the client giving up.
#[derive(Clone)]
struct DeadlineToServer(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl DeadlineToServer {
    async fn connect(addr: SocketAddr) -> GrpcInferenceServiceClient<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        let origin = format!("http://{addr}").parse().unwrap();
        GrpcInferenceServiceClient::with_origin(Self(send), origin)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for DeadlineToServer {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let mut send = self.0.clone();
        Box::pin(async move { send.send_request(request).await })
    }
}

/// Sends `request` with `id` on a stream.
async fn send(stream: &mpsc::Sender<ModelInferRequest>, id: &str, images: usize) {
    let request = ModelInferRequest {
        id: id.into(),
        ..raw_request(images)
    };
    stream.send(request).await.expect("the stream is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_infer_answers_in_order_and_reports_failures_in_band() {
    let f = fixture().await;
    let mut client = f.client.clone();
    let (stream, requests) = mpsc::channel(8);
    let mut answers = within(
        "the stream to open",
        client.model_stream_infer(ReceiverStream::new(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    send(&stream, "a", 1).await;
    send(&stream, "too-big", 5).await;
    send(&stream, "b", 3).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            within("a stream answer", answers.message())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let ids: Vec<&str> = got
        .iter()
        .map(|a| a.infer_response.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(ids, ["a", "too-big", "b"]);
    assert_eq!(got[0].error_message, "");
    assert_eq!(
        outputs(got[0].infer_response.as_ref().unwrap()),
        expected(1)
    );
    assert!(
        got[1].error_message.contains("max_batch_size 4"),
        "{:?}",
        got[1]
    );
    assert_eq!(
        outputs(got[2].infer_response.as_ref().unwrap()),
        expected(3)
    );
    // The client closing its side ends the stream cleanly.
    drop(stream);
    let end = within("the stream's end", answers.message()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
    f.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_answers_the_open_streams_requests_then_closes_it() {
    let f = fixture().await;
    let Fixture {
        core,
        backend,
        ends,
        client,
        drain_time,
        ..
    } = f;
    backend.hold.store(true, Ordering::SeqCst);
    let mut streaming = client.clone();
    let (stream, requests) = mpsc::channel(8);
    let mut answers = within(
        "the stream to open",
        streaming.model_stream_infer(ReceiverStream::new(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    send(&stream, "in-flight-1", 1).await;
    send(&stream, "in-flight-2", 2).await;
    backend.arrivals(2).await;

    let started = Instant::now();
    let client_side = async {
        within("the drain to begin", core.drain().begun()).await;
        assert!(!core.is_ready());
        // A request sent once the drain began is not taken.
        send(&stream, "after-drain", 1).await;
        backend.release(2);
        for (id, images) in [("in-flight-1", 1), ("in-flight-2", 2)] {
            let answer = within("an in-flight answer", answers.message())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("the stream ended before {id} was answered"));
            assert_eq!(answer.error_message, "", "{answer:?}");
            let response = answer.infer_response.unwrap();
            assert_eq!(response.id, id);
            assert_eq!(outputs(&response), expected(images));
        }
        let end = within("the stream's end", answers.message()).await;
        assert_status(end, Code::Unavailable, "server is shutting down");
    };
    let (stopped, ()) = tokio::join!(within("the graceful stop", ends.shutdown()), client_side);
    stopped.unwrap();
    assert!(
        started.elapsed() < drain_time,
        "answered requests should not wait for the drain time: {:?}",
        started.elapsed()
    );
    assert_eq!(
        backend.arrived(),
        2,
        "the request sent after the drain began was taken"
    );
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_still_running_at_the_drain_deadline_are_unavailable_and_the_server_exits() {
    let f = fixture_with(|s| s.drain_time = Duration::from_millis(300)).await;
    let Fixture {
        backend,
        ends,
        client,
        drain_time,
        ..
    } = f;
    backend.hold.store(true, Ordering::SeqCst);
    let mut streaming = client.clone();
    let (stream, requests) = mpsc::channel(8);
    let mut answers = within(
        "the stream to open",
        streaming.model_stream_infer(ReceiverStream::new(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    send(&stream, "stuck", 1).await;
    let unary = {
        let mut client = client.clone();
        tokio::spawn(async move { client.model_infer(raw_request(1)).await })
    };
    backend.arrivals(2).await;

    let started = Instant::now();
    let client_side = async {
        // The gate never opens: the drain deadline answers both.
        let answer = within("the stuck request's answer", answers.message())
            .await
            .unwrap()
            .expect("the stuck request is answered before the stream ends");
        assert_eq!(answer.error_message, "server is shutting down");
        assert_eq!(answer.infer_response.unwrap().id, "stuck");
        let end = within("the stream's end", answers.message()).await;
        assert_status(end, Code::Unavailable, "server is shutting down");
        let unary = within("the unary answer", unary).await.unwrap();
        assert_status(unary, Code::Unavailable, "server is shutting down");
    };
    let (stopped, ()) = tokio::join!(within("the graceful stop", ends.shutdown()), client_side);
    stopped.unwrap();
    let took = started.elapsed();
    assert!(
        took >= drain_time,
        "answered before the drain time: {took:?}"
    );
    // The front ends allow 2 s past the drain time for the last answers to be written.
    assert!(
        took < drain_time + Duration::from_secs(2),
        "the drain took {took:?} with a {drain_time:?} drain time"
    );
    drop(stream);
}

/// One 3×224×224 image of zeros for the shipped resnet50 model.
fn resnet_request(id: String, image: &bytes::Bytes) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "resnet50".into(),
        id,
        inputs: vec![input(vec![1, 3, 224, 224], "FP32")],
        raw_input_contents: vec![image.clone()],
        ..ModelInferRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_an_open_stream_answers_what_it_took_closes_it_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, grpc_port) = (free_port(), free_port());
    let extra = format!("grpc_port = {grpc_port}\ndrain_time = \"10s\"");
    let config = shipped_config(
        "orin-agx-sim.toml",
        dir.path(),
        http_port,
        &extra,
        free_port(),
    );
    let mut server = ChildServer::start(&config, dir.path());
    server.wait_ready(([127, 0, 0, 1], http_port).into());
    let mut client = within(
        "connecting",
        GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{grpc_port}")),
    )
    .await
    .unwrap();
    let (stream, requests) = mpsc::channel(STREAM_WINDOW);
    let mut answers = within(
        "the stream to open",
        client.model_stream_infer(ReceiverStream::new(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    let image = bytes::Bytes::from(vec![0u8; 3 * 224 * 224 * 4]);
    for i in 0..STREAM_WINDOW {
        stream
            .send(resnet_request(format!("r{i}"), &image))
            .await
            .unwrap();
    }
    // The first answer shows the stream is served; the rest are queued or running.
    let first = within("the first answer", answers.message())
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!(first.error_message, "", "{first:?}");

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut ids = vec![first.infer_response.unwrap().id];
    let end = loop {
        match within("a stream answer after SIGTERM", answers.message()).await {
            Ok(Some(answer)) => {
                assert_eq!(answer.error_message, "", "{answer:?}\n{}", server.log());
                let response = answer.infer_response.unwrap();
                assert_eq!(response.outputs[0].shape, vec![1, 1000]);
                ids.push(response.id);
            }
            Ok(None) => panic!("the stream ended without a status\n{}", server.log()),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}\n{}", server.log());
    assert_eq!(end.message(), "server is shutting down");
    // Every request the server took is answered, in order; none is lost.
    let expected: Vec<String> = (0..ids.len()).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, expected);
    eprintln!(
        "answered {} of {STREAM_WINDOW} requests, {} after SIGTERM",
        ids.len(),
        ids.len() - 1
    );
    drop(stream);

    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "mica serve still running 20 s after SIGTERM (drain time 10 s)\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "mica serve exited with {status}\n{}",
        server.log()
    );
}
