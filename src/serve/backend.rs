//! What the front ends need from the inference service: the `InferBackend` seam, with
//! its lifecycle (ready, drain, stop) so that `mica serve` runs every backend the same
//! way.
//!
//! The live server runs on `mica_actors::Service` (the scheduler) or a
//! [`PipelineBackend`](super::PipelineBackend); tests run the same front ends on a
//! fake. The trait is object-safe so the server holds an `Arc<dyn InferBackend>`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use mica_actors::{InferError, InferRequest, InferResponse, Service};

/// The future `InferBackend::submit` returns.
pub type InferFuture = Pin<Box<dyn Future<Output = Result<InferResponse, InferError>> + Send>>;

/// The future `InferBackend::wait_ready` returns: the load error, if any.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// The future `InferBackend::shutdown` returns: what was left unanswered.
pub type ShutdownFuture = Pin<Box<dyn Future<Output = usize> + Send>>;

/// What a backend is made of, for its lifecycle messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serves {
    /// What loads and warms up (`unit`, `pipeline stage`).
    pub part: &'static str,
    /// What `shutdown`'s count counts (`requests in queue`, `images`).
    pub unanswered: &'static str,
}

/// An inference service the front ends can submit requests to.
pub trait InferBackend: Send + Sync + 'static {
    /// Queues a request; resolves to its answer (every accepted request is answered).
    fn submit(&self, request: InferRequest) -> InferFuture;

    /// Whether every part has loaded and warmed up.
    fn is_ready(&self) -> bool;

    /// Largest batch any unit accepts.
    fn max_batch(&self) -> u32;

    /// Number of priority levels; requests name `0..levels`, 0 the most urgent.
    fn priority_levels(&self) -> u8;

    /// What it is made of.
    fn serves(&self) -> Serves;

    /// Resolves once every part is loaded and warm, or with the load error.
    fn wait_ready(&self) -> ReadyFuture;

    /// The parts that failed to load, each as "unit <id>: <why>" (a service that runs
    /// on what is left, `[scheduler] require_all_units = false`); empty when all did.
    fn missing(&self) -> Vec<String> {
        Vec::new()
    }

    /// `Err` (why) once the backend is dead and cannot recover in place (the process
    /// should restart); `Ok` while it runs and once it shuts down on purpose.
    fn alive(&self) -> Result<(), String>;

    /// Takes no new request, lets the accepted ones finish (up to `drain`), stops.
    /// Resolves to the number left unanswered.
    fn shutdown(&self, drain: Duration) -> ShutdownFuture;
}

impl InferBackend for Service {
    fn submit(&self, request: InferRequest) -> InferFuture {
        Box::pin(Service::submit(self, request))
    }

    fn is_ready(&self) -> bool {
        Service::is_ready(self)
    }

    fn max_batch(&self) -> u32 {
        Service::max_batch(self)
    }

    fn priority_levels(&self) -> u8 {
        Service::priority_levels(self)
    }

    fn serves(&self) -> Serves {
        Serves {
            part: "unit",
            unanswered: "requests in queue",
        }
    }

    fn wait_ready(&self) -> ReadyFuture {
        let service = self.clone();
        Box::pin(async move { service.wait_ready().await.map_err(|e| e.to_string()) })
    }

    fn missing(&self) -> Vec<String> {
        self.missing_units()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn alive(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Ok(());
        }
        Service::alive(self).map_err(|dead| dead.to_string())
    }

    fn shutdown(&self, drain: Duration) -> ShutdownFuture {
        let service = self.clone();
        Box::pin(async move { service.shutdown(drain).await })
    }
}

impl<B: InferBackend + ?Sized> InferBackend for std::sync::Arc<B> {
    fn submit(&self, request: InferRequest) -> InferFuture {
        (**self).submit(request)
    }

    fn is_ready(&self) -> bool {
        (**self).is_ready()
    }

    fn max_batch(&self) -> u32 {
        (**self).max_batch()
    }

    fn priority_levels(&self) -> u8 {
        (**self).priority_levels()
    }

    fn serves(&self) -> Serves {
        (**self).serves()
    }

    fn wait_ready(&self) -> ReadyFuture {
        (**self).wait_ready()
    }

    fn missing(&self) -> Vec<String> {
        (**self).missing()
    }

    fn alive(&self) -> Result<(), String> {
        (**self).alive()
    }

    fn shutdown(&self, drain: Duration) -> ShutdownFuture {
        (**self).shutdown(drain)
    }
}
