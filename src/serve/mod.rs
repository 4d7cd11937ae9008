//! `mica serve`'s HTTP layer: the KServe v2 protocol with Triton's extensions
//! (binary tensor data, classification, model configuration, statistics), raw-image
//! preprocessing on a pool of threads, admission answers (429, 503) and graceful
//! shutdown.
//!
//! Entry points: [`serve`] (start, run until SIGTERM/SIGINT, drain) and [`start`]
//! (for callers and tests that stop the server themselves). The handlers call an
//! [`InferBackend`]: the scheduler's `Service`, or a [`PipelineBackend`] for a config
//! with `[pipeline]`.

mod backend;
mod binary;
mod error;
pub mod metrics;
mod model;
mod pipeline_backend;
mod pool;
mod preprocess;
mod protocol;
mod request;
mod response;
mod routes;
mod server;
mod settings;
mod stats;

pub use backend::{InferBackend, InferFuture};
pub use binary::HEADER_LENGTH;
pub use error::ServeError;
pub use pipeline_backend::{PipelineBackend, PipelineOptions};
pub use preprocess::Preprocessor;
pub use server::{serve, start, RunningServer};
pub use settings::{Layout, ModelSettings, PreprocessSettings, ServerSettings};
