//! mica: Multi-Instance inference on Concurrent Accelerators.
//!
//! The service crate: command line, config loading, HTTP server, metrics and the wiring
//! of policies, engines and actors into a running service.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod experiment;
pub mod logging;
pub mod metrics;
pub mod serve;
pub mod wiring;
