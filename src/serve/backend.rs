//! What the HTTP layer needs from the inference service: the `InferBackend` seam.
//!
//! The live server runs on `mica_actors::Service`; tests run the same handlers on a
//! fake. The trait is object-safe so the server holds an `Arc<dyn InferBackend>`.

use std::future::Future;
use std::pin::Pin;

pub use mica_actors::{InferError, InferRequest, InferResponse, Service};

/// The future `InferBackend::submit` returns.
pub type InferFuture = Pin<Box<dyn Future<Output = Result<InferResponse, InferError>> + Send>>;

/// An inference service the HTTP layer can submit requests to.
pub trait InferBackend: Send + Sync + 'static {
    /// Queues a request; resolves to its answer (every accepted request is answered).
    fn submit(&self, request: InferRequest) -> InferFuture;

    /// Whether every unit has loaded and warmed up.
    fn is_ready(&self) -> bool;

    /// Largest batch any unit accepts.
    fn max_batch(&self) -> u32;

    /// Number of priority levels; requests name `0..levels`, 0 the most urgent.
    fn priority_levels(&self) -> u8;
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
}
