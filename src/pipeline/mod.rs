//! Pipelines in the service: the serving backend that puts a `mica_pipeline::run::Pipeline`
//! behind the HTTP and gRPC front ends (`backend`), and `mica tune`, the search for the
//! best cut points and mapping by measurement (`tune`). The plan, the simulator and the
//! stage threads they run are the `mica-pipeline` crate; the `[pipeline]` config is read
//! and resolved by `crate::config`, and `setup` builds the stage threads a resolved
//! pipeline describes.

pub mod backend;
pub mod setup;
pub mod tune;

pub use backend::{PipelineBackend, PipelineOptions};
