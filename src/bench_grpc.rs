//! The load generator's gRPC target: KServe v2 `ModelInfer` calls (`grpc://host:port`)
//! or requests on one `ModelStreamInfer` stream shared by every client
//! (`grpc-stream://host:port`), the input as `raw_input_contents`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use mica_actors::InferError;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::bench::{Answer, LoadTarget};
use crate::serve::grpc::convert::param_of;
use crate::serve::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::serve::grpc::proto::model_infer_request::InferInputTensor;
use crate::serve::grpc::proto::{ModelInferRequest, ModelInferResponse, ModelMetadataRequest};
use crate::serve::params::Param;

/// Answers a stream still owes, by request id.
type Waiting =
    Rc<RefCell<HashMap<String, oneshot::Sender<Result<ModelInferResponse, InferError>>>>>;

/// One stream shared by every client.
struct Stream {
    requests: mpsc::Sender<ModelInferRequest>,
    waiting: Waiting,
    next_id: RefCell<u64>,
}

/// One model on one server over gRPC.
pub struct GrpcTarget {
    client: GrpcInferenceServiceClient<Channel>,
    model: String,
    input_name: String,
    image_shape: Vec<i64>,
    image_bytes: usize,
    stream: Option<Stream>,
}

/// Whether `url` names a gRPC target.
pub fn is_grpc(url: &str) -> bool {
    url.starts_with("grpc://") || url.starts_with("grpc-stream://")
}

fn unavailable(status: tonic::Status) -> InferError {
    match status.code() {
        Code::ResourceExhausted => InferError::Overloaded {
            retry_after: status
                .metadata()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(1), Duration::from_secs),
        },
        Code::InvalidArgument => InferError::Invalid(status.message().to_string()),
        Code::Unavailable | Code::DeadlineExceeded => {
            InferError::Unavailable(status.message().to_string())
        }
        code => InferError::Engine(format!("{code:?}: {}", status.message())),
    }
}

impl GrpcTarget {
    /// Connects to `url` and reads `model`'s metadata; `grpc-stream://` opens the
    /// shared stream.
    pub async fn connect(url: &str, model: &str) -> anyhow::Result<Self> {
        let (streaming, address) = match url.split_once("://") {
            Some(("grpc", rest)) => (false, rest),
            Some(("grpc-stream", rest)) => (true, rest),
            _ => bail!("--url must start with grpc:// or grpc-stream:// (got {url:?})"),
        };
        let endpoint = Endpoint::from_shared(format!("http://{}", address.trim_end_matches('/')))
            .with_context(|| format!("--url {url:?} is not host:port"))?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120));
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let mut client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: model.to_string(),
                version: String::new(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{url}: model metadata: {}", s.message()))?
            .into_inner();
        let input = metadata
            .inputs
            .iter()
            .find(|i| i.datatype == "FP32")
            .with_context(|| format!("{url}: the model has no FP32 input"))?;
        let image_shape: Vec<i64> = input.shape.iter().skip(1).copied().collect();
        if image_shape.iter().any(|d| *d <= 0) {
            bail!(
                "{url}: input shape {:?} has variable dimensions past the batch",
                input.shape
            );
        }
        let elements: i64 = image_shape.iter().product();
        let stream = if streaming {
            Some(open_stream(&mut client).await?)
        } else {
            None
        };
        Ok(Self {
            client,
            model: model.to_string(),
            input_name: input.name.clone(),
            image_shape,
            image_bytes: elements as usize * 4,
            stream,
        })
    }

    fn request(&self, images: u32, id: String) -> ModelInferRequest {
        let mut shape = vec![i64::from(images)];
        shape.extend_from_slice(&self.image_shape);
        ModelInferRequest {
            model_name: self.model.clone(),
            id,
            inputs: vec![InferInputTensor {
                name: self.input_name.clone(),
                datatype: "FP32".to_string(),
                shape,
                ..InferInputTensor::default()
            }],
            raw_input_contents: vec![Bytes::from(vec![0u8; self.image_bytes * images as usize])],
            ..ModelInferRequest::default()
        }
    }

    async fn unary(&self, images: u32) -> Result<Answer, InferError> {
        let request = self.request(images, String::new());
        let response = self
            .client
            .clone()
            .model_infer(request)
            .await
            .map_err(unavailable)?
            .into_inner();
        answer(response, images)
    }

    async fn streamed(&self, stream: &Stream, images: u32) -> Result<Answer, InferError> {
        let id = {
            let mut next = stream.next_id.borrow_mut();
            *next += 1;
            next.to_string()
        };
        let (respond, answered) = oneshot::channel();
        stream.waiting.borrow_mut().insert(id.clone(), respond);
        if stream
            .requests
            .send(self.request(images, id))
            .await
            .is_err()
        {
            return Err(InferError::Unavailable("the stream ended".into()));
        }
        let response = answered
            .await
            .map_err(|_| InferError::Unavailable("the stream ended before answering".into()))??;
        answer(response, images)
    }
}

async fn open_stream(client: &mut GrpcInferenceServiceClient<Channel>) -> anyhow::Result<Stream> {
    let (requests, outgoing) = mpsc::channel::<ModelInferRequest>(1024);
    let mut answers = client
        .model_stream_infer(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .map_err(|s| anyhow::anyhow!("cannot open the stream: {}", s.message()))?
        .into_inner();
    let waiting: Waiting = Rc::default();
    let pending = waiting.clone();
    actix_rt::spawn(async move {
        while let Some(message) = answers.next().await {
            let Ok(message) = message else { break };
            let Some(response) = message.infer_response else {
                continue;
            };
            let respond = pending.borrow_mut().remove(&response.id);
            let result = if message.error_message.is_empty() {
                Ok(response)
            } else {
                Err(InferError::Engine(message.error_message))
            };
            if let Some(respond) = respond {
                let _ = respond.send(result);
            }
        }
        pending.borrow_mut().clear();
    });
    Ok(Stream {
        requests,
        waiting,
        next_id: RefCell::new(0),
    })
}

fn answer(response: ModelInferResponse, images: u32) -> Result<Answer, InferError> {
    if response.outputs.is_empty() || response.raw_output_contents.is_empty() {
        return Err(InferError::Engine("response has no outputs".into()));
    }
    let text = |key: &str| match response.parameters.get(key).cloned().and_then(param_of) {
        Some(Param::String(s)) => Some(s),
        _ => None,
    };
    let number = |key: &str| match response.parameters.get(key).cloned().and_then(param_of) {
        Some(Param::UInt(u)) => Some(u),
        Some(Param::Int(i)) => u64::try_from(i).ok(),
        _ => None,
    };
    Ok(Answer {
        unit: text("mica_unit").unwrap_or_else(|| "server".to_string()),
        unit_index: None,
        engine: text("mica_engine").unwrap_or_else(|| "remote".to_string()),
        images,
        batch_images: number("mica_batch_images").map_or(images, |b| b as u32),
        queue_wait: Duration::from_micros(number("mica_queue_wait_us").unwrap_or(0)),
    })
}

impl LoadTarget for GrpcTarget {
    fn infer(&self, images: u32) -> LocalBoxFuture<'_, Result<Answer, InferError>> {
        match &self.stream {
            Some(stream) => Box::pin(self.streamed(stream, images)),
            None => Box::pin(self.unary(images)),
        }
    }
}
