//! Starting every configured front end over one core, and stopping them together.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::info;

use super::backend::InferBackend;
use super::frontend::{FrontEnd, FrontEnds};
use super::grpc::GrpcFrontEnd;
use super::http::HttpFrontEnd;
use super::infer::{Infer, Protocol};
use crate::config::{ModelSettings, ServerSettings};

/// The running front ends.
#[derive(Debug)]
pub struct RunningServer {
    ends: FrontEnds,
}

/// Builds the core for `model` over `backend` and starts every front end on it. Call
/// from within the actix system (or a tokio runtime).
pub fn start(
    server: &ServerSettings,
    model: &ModelSettings,
    backend: Arc<dyn InferBackend>,
) -> anyhow::Result<RunningServer> {
    let core = Arc::new(Infer::new(server, model, backend)?);
    let mut ends: Vec<Box<dyn FrontEnd>> =
        vec![Box::new(HttpFrontEnd::start(server, core.clone())?)];
    if server.grpc_port != 0 {
        ends.push(Box::new(GrpcFrontEnd::start(server, core.clone())?));
    }
    info!(
        model = %model.name,
        preprocess_threads = core.preprocess_threads(),
        image_threads = core.image_threads(),
        "front ends started"
    );
    Ok(RunningServer {
        ends: FrontEnds::new(core, ends, server.drain_time),
    })
}

impl RunningServer {
    /// The address the HTTP front end listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.ends
            .addr(Protocol::Http)
            .expect("the HTTP front end always runs; this is a bug")
    }

    /// The address of the front end of `protocol`, if it runs.
    pub fn addr(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.ends.addr(protocol)
    }

    /// Serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        self.ends.run_until_signal().await
    }

    /// Serves until SIGTERM or SIGINT, or until `stop` resolves (to the reason), then
    /// shuts down gracefully.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = String>,
    ) -> anyhow::Result<()> {
        self.ends.run_until(stop).await
    }

    /// Stops accepting, answers every accepted request (refused past the drain time),
    /// then returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.ends.shutdown().await
    }
}

/// Starts the front ends and serves until SIGTERM/SIGINT, then drains and returns. The
/// caller stops the inference service afterwards.
pub async fn serve(
    server: &ServerSettings,
    model: &ModelSettings,
    backend: Arc<dyn InferBackend>,
) -> anyhow::Result<()> {
    start(server, model, backend)?.run_until_signal().await
}
