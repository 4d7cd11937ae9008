//! The HTTP front end: KServe v2 over HTTP/REST with Triton's binary tensor data
//! extension, on actix-web. It knows the transport only; every answer comes from the
//! core (`crate::serve::Infer`).

mod binary;
mod body;
mod error;
mod json;
mod routes;
mod server;

pub use binary::HEADER_LENGTH;
pub use error::status_of;
pub use server::HttpFrontEnd;
