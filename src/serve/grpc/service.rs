//! `GRPCInferenceService` over the core: each RPC converts its message, calls the
//! core, and converts the answer back; failures become statuses in `status.rs` alone.
//!
//! `ModelStreamInfer` answers the requests of a stream in their order, up to
//! [`STREAM_WINDOW`] of them running at once; a failed request is answered with its
//! `error_message` and the stream goes on. Once a drain begins the stream takes no
//! new request, answers those it took, and ends UNAVAILABLE ("server is shutting
//! down"). A client's deadline (`grpc-timeout`) bounds a unary call's request and,
//! on a stream, every request of it; past it a stream takes no new request and ends
//! DEADLINE_EXCEEDED.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::{
    config_of, index_of, metadata_of, request_of, request_size, response_of, statistics_of,
};
use super::deadline::ClientDeadline;
use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::*;
use super::status::status_of;
use crate::serve::error::ServeError;
use crate::serve::infer::{Call, Infer, Parse, Protocol};

/// Requests of one stream running at once; the stream reads no more until the
/// oldest is answered.
pub const STREAM_WINDOW: usize = 64;

/// The service over one core.
#[derive(Debug, Clone)]
pub struct Service {
    core: Arc<Infer>,
}

impl Service {
    /// The service of `core`.
    pub fn new(core: Arc<Infer>) -> Self {
        Self { core }
    }
}

fn version(version: &str) -> Option<&str> {
    Some(version).filter(|v| !v.is_empty())
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(status_of(&ServeError::Unimplemented(what.to_string())))
}

/// One inference request through the core, answered by the client's `deadline` if
/// it set one. The request's tensor bytes are held on the core's byte budget until it
/// is answered (refused RESOURCE_EXHAUSTED when they do not fit).
async fn infer(
    core: &Arc<Infer>,
    request: ModelInferRequest,
    start: Instant,
    deadline: Option<tokio::time::Instant>,
) -> Result<ModelInferResponse, ServeError> {
    let model = request.model_name.clone();
    let version_asked = request.model_version.clone();
    let call = Call {
        protocol: Protocol::Grpc,
        start,
        model: &model,
        version: version(&version_asked),
    };
    let mut held = core.budget().permit();
    let receive = async {
        let size = request_size(&request);
        held.hold(size)?;
        let parse: Parse = Box::new(move |_| request_of(request));
        Ok((size, parse))
    };
    let answer = core
        .infer_until(call, deadline, receive, |model, result| {
            Ok(response_of(model, result))
        })
        .await;
    drop(held);
    answer
}

/// The deadline [`deadline::mark`](super::deadline::mark) found on a call.
fn deadline_of<T>(request: &Request<T>) -> Option<tokio::time::Instant> {
    request
        .extensions()
        .get::<ClientDeadline>()
        .map(|deadline| deadline.0)
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        match self
            .core
            .model_ready(&request.name, version(&request.version))
        {
            Ok(()) => Ok(Response::new(ModelReadyResponse { ready: true })),
            Err(ServeError::NotReady(_)) => Ok(Response::new(ModelReadyResponse { ready: false })),
            Err(error) => Err(status_of(&error)),
        }
    }

    async fn server_metadata(
        &self,
        _request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let metadata = self.core.server_metadata();
        Ok(Response::new(ServerMetadataResponse {
            name: metadata.name.to_string(),
            version: metadata.version.to_string(),
            extensions: metadata.extensions.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let metadata = self
            .core
            .metadata(&request.name, version(&request.version))
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(metadata_of(&metadata)))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let start = Instant::now();
        let deadline = deadline_of(&request);
        infer(&self.core, request.into_inner(), start, deadline)
            .await
            .map(Response::new)
            .map_err(|e| status_of(&e))
    }

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let core = self.core.clone();
        let deadline = deadline_of(&request);
        let begun = {
            let core = core.clone();
            async move { core.drain().begun().await }
        };
        let expired = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let answers = request
            .into_inner()
            .take_until(begun)
            .take_until(expired)
            .map(move |message| {
                let core = core.clone();
                async move {
                    let request = message?;
                    let start = Instant::now();
                    let id = request.id.clone();
                    Ok(match infer(&core, request, start, deadline).await {
                        Ok(response) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(response),
                        },
                        // The id tells the client which request failed.
                        Err(error) => ModelStreamInferResponse {
                            error_message: error.to_string(),
                            infer_response: Some(ModelInferResponse {
                                model_name: core.model().settings.name.clone(),
                                model_version: core.model().settings.version.clone(),
                                id,
                                ..ModelInferResponse::default()
                            }),
                        },
                    })
                }
            })
            .buffered(STREAM_WINDOW);
        let core = self.core.clone();
        let end = futures::stream::once(async move {
            if core.drain().is_draining() {
                Some(Err(status_of(&ServeError::ShuttingDown)))
            } else if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                Some(Err(status_of(&ServeError::TimedOut)))
            } else {
                None
            }
        })
        .filter_map(std::future::ready);
        Ok(Response::new(Box::pin(answers.chain(end))))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let request = request.into_inner();
        let config = self
            .core
            .config(&request.name, version(&request.version))
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(config_of(&config)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let stats = self
            .core
            .statistics(Some(&request.name), version(&request.version))
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(statistics_of(&stats)))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(index_of(
            &self.core.repository_index(),
            request.ready,
        )))
    }

    async fn repository_model_load(
        &self,
        _request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        unimplemented("repository model load (the model comes from the config)")
    }

    async fn repository_model_unload(
        &self,
        _request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        unimplemented("repository model unload (the model comes from the config)")
    }

    async fn system_shared_memory_status(
        &self,
        _request: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        unimplemented("system shared memory")
    }

    async fn system_shared_memory_register(
        &self,
        _request: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        unimplemented("system shared memory")
    }

    async fn system_shared_memory_unregister(
        &self,
        _request: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        unimplemented("system shared memory")
    }

    async fn cuda_shared_memory_status(
        &self,
        _request: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        unimplemented("CUDA shared memory")
    }

    async fn cuda_shared_memory_register(
        &self,
        _request: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        unimplemented("CUDA shared memory")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _request: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        unimplemented("CUDA shared memory")
    }

    async fn trace_setting(
        &self,
        _request: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        unimplemented("trace settings")
    }

    async fn log_settings(
        &self,
        _request: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        unimplemented("log settings")
    }
}
