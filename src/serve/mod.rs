//! `mica serve`'s front ends over one protocol-neutral inference core.
//!
//! The core ([`Infer`]) answers every KServe v2 / Triton call on plain types: request
//! validation ([`request`]), response building with classification ([`response`]),
//! model metadata and configuration ([`model`]), statistics, readiness and the drain,
//! with one error type ([`ServeError`]) whose kind each transport maps to its status in
//! one place. The front ends ([`http`]) know only their transport; they sit behind the
//! [`FrontEnd`] trait, start together and drain together ([`start`], [`serve`]). The
//! core calls an [`InferBackend`]: the scheduler's `Service`, or a
//! [`PipelineBackend`] for a config with `[pipeline]`.

pub(crate) mod backend;
pub mod binary;
pub mod budget;
mod drain;
mod error;
mod frontend;
pub mod grpc;
pub mod http;
mod infer;
pub mod metrics;
pub mod model;
pub mod params;
mod pool;
mod preprocess;
pub mod request;
pub mod response;
mod running;
mod stats;

pub use crate::config::{Layout, ModelSettings, PreprocessSettings, ServerSettings};
pub use crate::pipeline::backend::{PipelineBackend, PipelineOptions};
pub use backend::{InferBackend, InferFuture, ReadyFuture, Serves, ShutdownFuture};
pub use budget::{ByteBudget, BytePermit, OverBudget};
pub use drain::Drain;
pub use error::{ErrorKind, ServeError};
pub use frontend::{stop_signal, FrontEnd, FrontEnds, Stopped};
pub use http::HEADER_LENGTH;
pub use infer::{Call, IndexEntry, Infer, Parse, Protocol, ServerMetadata, EXTENSIONS};
pub use preprocess::Preprocessor;
pub use running::{serve, start, RunningServer};
