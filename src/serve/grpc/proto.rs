//! The Rust types and service of `proto/inference.proto`, generated at build time.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("inference");
