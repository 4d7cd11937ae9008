//! The gRPC ceiling for mica's overhead measurement: a tonic server with mica's own
//! `GRPCInferenceService` whose `ModelMetadata`, `ModelInfer` and `ModelStreamInfer`
//! answer at once, with no validation, batching, scheduling or engine behind them
//! (every other RPC answers UNIMPLEMENTED). `scripts/grpc-overhead.sh` loads it and
//! `mica serve` (null engine) the same way and compares.
//!
//! `cargo run --release --example grpc_ceiling -- 127.0.0.1:18101`

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use mica::serve::grpc::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use mica::serve::grpc::proto::model_infer_response::InferOutputTensor;
use mica::serve::grpc::proto::model_metadata_response::TensorMetadata;
use mica::serve::grpc::proto::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelStreamInferResponse,
};
use tonic::{Request, Response, Status, Streaming};

struct Ceiling;

fn tensor(name: &str) -> TensorMetadata {
    TensorMetadata {
        name: name.to_string(),
        datatype: "FP32".to_string(),
        shape: vec![-1, 4],
    }
}

/// A fixed one-image answer, after reading the request as a server must.
fn answer(request: &ModelInferRequest) -> ModelInferResponse {
    let _ = request.raw_input_contents.len();
    ModelInferResponse {
        model_name: "null".to_string(),
        model_version: "1".to_string(),
        id: request.id.clone(),
        outputs: vec![InferOutputTensor {
            name: "output".to_string(),
            datatype: "FP32".to_string(),
            shape: vec![1, 4],
            ..InferOutputTensor::default()
        }],
        raw_output_contents: vec![Bytes::from_static(&[0; 16])],
        ..ModelInferResponse::default()
    }
}

type Answers = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Ceiling {
    async fn model_metadata(
        &self,
        _request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Ok(Response::new(ModelMetadataResponse {
            name: "null".to_string(),
            versions: vec!["1".to_string()],
            platform: "ceiling".to_string(),
            inputs: vec![tensor("input")],
            outputs: vec![tensor("output")],
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        Ok(Response::new(answer(request.get_ref())))
    }

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let answers = request.into_inner().map(|message| {
            message.map(|request| ModelStreamInferResponse {
                error_message: String::new(),
                infer_response: Some(answer(&request)),
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18101".to_string())
        .parse()?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(GrpcInferenceServiceServer::new(Ceiling))
            .serve(address)
            .await
    })?;
    Ok(())
}
