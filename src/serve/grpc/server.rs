//! The gRPC front end: tonic's server on its own multi-threaded tokio runtime
//! (`server.http_workers` threads), over the core. The message size limit is the
//! configured request limit (`server.max_body_bytes`), not tonic's 4 MiB default,
//! which is smaller than one batch of 224×224 FP32 images.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use tonic::body::Body;
use tower::util::MapRequestLayer;

use super::deadline;
use super::proto::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::service::Service;
use crate::config::ServerSettings;
use crate::serve::frontend::{FrontEnd, Stopped};
use crate::serve::infer::{Infer, Protocol};

/// How the server is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    Graceful,
    Now,
}

/// A running gRPC server.
#[derive(Debug)]
pub struct GrpcFrontEnd {
    addr: SocketAddr,
    stop: watch::Sender<Stop>,
    ended: Option<oneshot::Receiver<anyhow::Result<()>>>,
}

impl GrpcFrontEnd {
    /// Binds `server.address:server.grpc_port` and starts serving `core`.
    pub fn start(server: &ServerSettings, core: Arc<Infer>) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind((server.address, server.grpc_port))
            .with_context(|| {
                format!(
                    "cannot listen for gRPC on {}:{}",
                    server.address, server.grpc_port
                )
            })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(server.http_workers)
            .thread_name("mica-grpc")
            .enable_all()
            .build()
            .context("cannot start the gRPC runtime")?;
        let limit = core.max_request_bytes();
        let model = core.model();
        let largest_answer = model.max_batch as usize * model.settings.output_len() * 4;
        let service = GrpcInferenceServiceServer::new(Service::new(core))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit.max(largest_answer + (64 << 10)));
        let (stop, mut stopping) = watch::channel(Stop::Running);
        let (done, ended) = oneshot::channel();
        std::thread::Builder::new()
            .name("mica-grpc-server".into())
            .spawn(move || {
                let result = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let incoming = TcpListenerStream::new(listener).map(|stream| {
                        stream.inspect(|s| {
                            let _ = s.set_nodelay(true);
                        })
                    });
                    let mut graceful = stopping.clone();
                    let serving = tonic::transport::Server::builder()
                        .layer(MapRequestLayer::new(deadline::mark::<Body>))
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, async move {
                            let _ = graceful.wait_for(|s| *s != Stop::Running).await;
                        });
                    tokio::select! {
                        served = serving => served.context("the gRPC server failed"),
                        _ = stopping.wait_for(|s| *s == Stop::Now) => Ok(()),
                    }
                });
                runtime.shutdown_background();
                let _ = done.send(result);
            })
            .context("cannot start the gRPC server thread")?;
        info!(%addr, "serving KServe v2 over gRPC");
        Ok(Self {
            addr,
            stop,
            ended: Some(ended),
        })
    }
}

impl FrontEnd for GrpcFrontEnd {
    fn protocol(&self) -> Protocol {
        Protocol::Grpc
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn begin_stop(&self) {
        self.stop.send_if_modified(|s| {
            let running = *s == Stop::Running;
            if running {
                *s = Stop::Graceful;
            }
            running
        });
    }

    fn stop_now(&self) {
        self.stop.send_replace(Stop::Now);
    }

    fn take_stopped(&mut self) -> Stopped {
        let ended = self.ended.take();
        Box::pin(async move {
            let Some(ended) = ended else {
                anyhow::bail!("the gRPC server's end was already taken");
            };
            ended
                .await
                .context("the gRPC server thread ended without a word")?
        })
    }
}

impl Drop for GrpcFrontEnd {
    fn drop(&mut self) {
        self.stop.send_replace(Stop::Now);
    }
}
