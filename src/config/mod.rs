//! The config file: its schema, one section per file, and the one function that turns
//! it into a resolved, validated [`ResolvedConfig`] (`ResolvedConfig::load`), with one
//! error type, [`ConfigError`], naming the file, the key and the problem once each.
//!
//! A TOML file (see `config/orin-agx-sim.toml`); `MICA__SECTION__KEY` environment
//! variables override its keys. Every struct refuses unknown keys and every key has a
//! default where one makes sense. The policies' parameters and the contention models
//! are the policies crate's own types (their `validate` errors are converted into
//! [`ConfigError`] here); the engines' settings are the engines crate's.

mod admin;
mod error;
mod file;
mod load;
mod pipeline;
mod serve;
mod units;

pub use admin::{AdminConfig, AdminToken, MIN_TOKEN_LEN};
pub use error::{ConfigError, Invalid};
pub use file::{Config, MetricsConfig, PlatformConfig, SchedulerConfig};
pub use load::ResolvedConfig;
pub use pipeline::{auto_buffers, PipelineConfig, ResolvedPipeline, StageConfig, TuneSpaceConfig};
pub use serve::{Labels, Layout, ModelSettings, PreprocessSettings, ServerSettings};
pub use units::{ResolvedUnit, UnitConfig, MAX_BATCH_LIMIT, MAX_STREAMS};
