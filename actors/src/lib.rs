//! mica-actors: the running service.
//!
//! A `Dispatcher` actor admits requests and asks the policy (through the synchronous
//! `Scheduler` core) where each batch goes; one `UnitActor` per compute unit owns that
//! unit's `StreamWorker`s, each an engine instance on its own thread. `Service` is the
//! handle the HTTP server and the load generator use. Every actor reads the time from
//! the service's `Clock` (`ServiceSetup::clock`) and waits on it through `timer`, so
//! tests run the actors on a `ManualClock`.

pub mod batch_deadline;
pub mod dispatcher;
pub mod liveness;
pub mod metrics;
pub mod responder;
pub mod service;
pub mod stream_worker;
pub mod timer;
pub mod unit_actor;

pub use batch_deadline::BatchDeadline;
pub use liveness::Dead;
pub use service::{
    InferError, InferRequest, InferResponse, Service, ServiceSetup, ServiceStatus, StartError,
    UnitSetup,
};
