//! mica: Multi-Instance inference on Concurrent Accelerators.
//!
//! The service crate: command line, config loading, HTTP and gRPC front ends, metrics and the wiring
//! of policies, engines and actors into a running service.

pub mod admin;
pub mod bench;
pub mod bench_context;
pub mod bench_grpc;
pub mod bench_http;
pub mod cli;
pub mod commands;
pub mod config;
pub mod experiment;
pub mod instrumented;
pub mod logging;
pub mod metrics;
pub mod metrics_server;
pub mod pipeline;
pub mod reload;
pub mod serve;
pub mod systemd;
pub mod telemetry;
pub mod wiring;
