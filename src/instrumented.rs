//! `Instrumented`: an `InferBackend` that records Triton's per-model execution series
//! around another backend (the live `mica_actors::Service`).
//!
//! The HTTP layer counts requests, images and their phase durations
//! (`crate::serve::metrics`); this wrapper adds what only the answered requests know:
//! `nv_inference_exec_count` (model executions: each request adds its share
//! `images / batch_images` of its batch, so a batch of eight one-image requests counts
//! once) and `nv_inference_pending_request_count` (submitted, not yet answered; the
//! count is released on drop, so a request whose client went away is not leaked).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge};

use crate::metrics::{EXEC_COUNT, PENDING_REQUEST_COUNT};
use crate::serve::{InferBackend, InferFuture, ReadyFuture, Serves, ShutdownFuture};
use mica_actors::InferRequest;

/// Fixed-point scale of the execution shares (a share is `images / batch_images`).
const SHARE_SCALE: u64 = 1 << 20;

/// The handles one model records into.
#[derive(Debug)]
struct ModelMetrics {
    exec: Counter,
    pending: Gauge,
    /// Executions so far, in units of `1 / SHARE_SCALE`.
    shares: AtomicU64,
}

/// A backend whose answers are counted under Triton's names, labelled `model` and
/// `version`.
pub struct Instrumented<B> {
    inner: B,
    metrics: Arc<ModelMetrics>,
}

impl<B> std::fmt::Debug for Instrumented<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("metrics", &self.metrics)
            .finish()
    }
}

impl<B: InferBackend> Instrumented<B> {
    /// Wraps `inner`; its series carry `model` and `version`.
    pub fn new(inner: B, model: &str, version: &str) -> Self {
        let labels = [
            ("model", model.to_string()),
            ("version", version.to_string()),
        ];
        let exec = metrics::counter!(EXEC_COUNT, &labels);
        exec.increment(0);
        let pending = metrics::gauge!(PENDING_REQUEST_COUNT, &labels);
        pending.set(0.0);
        Self {
            inner,
            metrics: Arc::new(ModelMetrics {
                exec,
                pending,
                shares: AtomicU64::new(0),
            }),
        }
    }
}

/// Holds one pending request's count; releases it when dropped.
struct PendingGuard(Arc<ModelMetrics>);

impl PendingGuard {
    fn new(metrics: Arc<ModelMetrics>) -> Self {
        metrics.pending.increment(1.0);
        Self(metrics)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.decrement(1.0);
    }
}

impl ModelMetrics {
    /// A request answered with `images` out of a batch of `batch_images`.
    fn answered(&self, images: u32, batch_images: u32) {
        let share = u64::from(images) * SHARE_SCALE / u64::from(batch_images.max(images).max(1));
        let total = self.shares.fetch_add(share, Ordering::Relaxed) + share;
        // Rounded to whole executions; `absolute` keeps the largest value written, so
        // concurrent answers never make the counter go back.
        self.exec.absolute((total + SHARE_SCALE / 2) / SHARE_SCALE);
    }
}

impl<B: InferBackend> InferBackend for Instrumented<B> {
    fn submit(&self, request: InferRequest) -> InferFuture {
        let guard = PendingGuard::new(self.metrics.clone());
        let answer = self.inner.submit(request);
        Box::pin(async move {
            let result = answer.await;
            if let Ok(response) = &result {
                guard.0.answered(response.images, response.batch_images);
            }
            drop(guard);
            result
        })
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    fn max_batch(&self) -> u32 {
        self.inner.max_batch()
    }

    fn priority_levels(&self) -> u8 {
        self.inner.priority_levels()
    }

    fn serves(&self) -> Serves {
        self.inner.serves()
    }

    fn wait_ready(&self) -> ReadyFuture {
        self.inner.wait_ready()
    }

    fn missing(&self) -> Vec<String> {
        self.inner.missing()
    }

    fn alive(&self) -> Result<(), String> {
        self.inner.alive()
    }

    fn shutdown(&self, drain: Duration) -> ShutdownFuture {
        self.inner.shutdown(drain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelMetrics {
        ModelMetrics {
            exec: Counter::noop(),
            pending: Gauge::noop(),
            shares: AtomicU64::new(0),
        }
    }

    #[test]
    fn a_batch_of_several_requests_counts_once() {
        let metrics = model();
        for _ in 0..3 {
            metrics.answered(1, 3);
        }
        metrics.answered(8, 8);
        let total = metrics.shares.load(Ordering::Relaxed);
        assert_eq!((total + SHARE_SCALE / 2) / SHARE_SCALE, 2);
    }
}
