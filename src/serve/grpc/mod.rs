//! The gRPC front end: KServe v2 / Triton `GRPCInferenceService` on tonic, its
//! messages from `proto/inference.proto`. It knows the transport only; every answer
//! comes from the core (`crate::serve::Infer`), and errors map to codes in `status`.

pub mod convert;
pub mod deadline;
pub mod proto;
mod server;
mod service;
pub mod status;

pub use server::GrpcFrontEnd;
pub use service::STREAM_WINDOW;
