//! The front ends' one error type. Every variant has a protocol-neutral [`ErrorKind`];
//! each transport maps a kind to its status in one place (`http::error` to an HTTP
//! status, `grpc::status` to a gRPC code) and sends the same message text.

use std::time::Duration;

use mica_actors::InferError;
use thiserror::Error;

/// Why a request got no answer of its own.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ServeError {
    /// Malformed body, wrong shape or datatype, unknown input or parameter value.
    #[error("{0}")]
    BadRequest(String),
    /// No model of that name.
    #[error("unknown model {0:?}")]
    ModelNotFound(String),
    /// The model exists but not in that version.
    #[error("model {model:?} has no version {version:?}")]
    VersionNotFound {
        /// The model.
        model: String,
        /// The version asked for.
        version: String,
    },
    /// No route for the path (HTTP) or no such method (gRPC).
    #[error("no endpoint {0}")]
    RouteNotFound(String),
    /// The path exists but not for that method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The request is larger than `server.max_body_bytes`.
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Bytes received or announced.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body did not arrive within `server.body_timeout`.
    #[error("the request body did not arrive within {timeout:?} ({received} bytes received)")]
    BodyTimeout {
        /// Bytes that did arrive.
        received: usize,
        /// The limit.
        timeout: Duration,
    },
    /// The memory budget for request data (`server.memory_budget_bytes`) is in use.
    #[error("{0}, retry after 1s")]
    OverBudget(#[from] super::budget::OverBudget),
    /// A queue is full; the client should retry later.
    #[error("server overloaded, retry after {}s", retry_after_secs(*retry_after))]
    Overloaded {
        /// When to retry.
        retry_after: Duration,
    },
    /// The image pool's queue is full; the client should retry later.
    #[error("image decoding is at capacity ({threads} threads busy, {waiting} requests waiting; server.image_threads, server.image_queue), retry after 1s")]
    ImagePoolFull {
        /// Image threads.
        threads: usize,
        /// Requests waiting for one.
        waiting: usize,
    },
    /// The request's `timeout` (or its gRPC client's deadline) passed before it was
    /// answered.
    #[error("request timed out before it was answered")]
    TimedOut,
    /// The scheduler found no unit able to meet the request's deadline.
    #[error("request shed: its deadline cannot be met")]
    DeadlineCannotBeMet,
    /// The model's units are not loaded and warm yet.
    #[error("model {0:?} is not ready")]
    NotReady(String),
    /// No unit can run the request now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The server is stopping.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The protocol has the call but mica does not implement it (gRPC shared memory,
    /// trace and log settings, repository load/unload).
    #[error("{0} is not implemented by mica")]
    Unimplemented(String),
    /// The engine failed on the request's batch.
    #[error("inference failed: {0}")]
    Engine(String),
    /// A bug or an unexpected state in mica.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an error is, whatever the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is wrong; resending it unchanged fails again.
    InvalidArgument,
    /// The model, version or endpoint does not exist.
    NotFound,
    /// The endpoint exists, not for that method (HTTP only).
    MethodNotAllowed,
    /// The request is larger than the configured limit.
    TooLarge,
    /// The client did not send its request in time (a slow or unfinished body).
    SlowClient,
    /// A bounded queue is full; retry after the hint.
    Overloaded,
    /// The memory budget for request data is in use; retry after the hint.
    OverBudget,
    /// The request's own deadline passed (its `timeout`, or shed for it).
    DeadlineExceeded,
    /// Not ready, or stopping: try again later or elsewhere.
    Unavailable,
    /// The call exists in the protocol but not in mica.
    Unimplemented,
    /// mica or its engine failed.
    Internal,
}

impl ServeError {
    /// The error's kind, which each transport maps to its status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServeError::BadRequest(_) => ErrorKind::InvalidArgument,
            ServeError::ModelNotFound(_)
            | ServeError::VersionNotFound { .. }
            | ServeError::RouteNotFound(_) => ErrorKind::NotFound,
            ServeError::MethodNotAllowed(_) => ErrorKind::MethodNotAllowed,
            ServeError::PayloadTooLarge { .. } => ErrorKind::TooLarge,
            ServeError::BodyTimeout { .. } => ErrorKind::SlowClient,
            ServeError::OverBudget(_) => ErrorKind::OverBudget,
            ServeError::Overloaded { .. } | ServeError::ImagePoolFull { .. } => {
                ErrorKind::Overloaded
            }
            ServeError::TimedOut | ServeError::DeadlineCannotBeMet => ErrorKind::DeadlineExceeded,
            ServeError::NotReady(_) | ServeError::Unavailable(_) | ServeError::ShuttingDown => {
                ErrorKind::Unavailable
            }
            ServeError::Unimplemented(_) => ErrorKind::Unimplemented,
            ServeError::Engine(_) | ServeError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the fault is the server's (logged as a warning) rather than the
    /// client's (logged at debug, so clients cannot flood the log): malformed
    /// requests, and overload that clients cause (full queues, a spent byte budget).
    pub fn is_server_fault(&self) -> bool {
        matches!(self.kind(), ErrorKind::Internal)
            || matches!(
                self,
                ServeError::TimedOut
                    | ServeError::DeadlineCannotBeMet
                    | ServeError::NotReady(_)
                    | ServeError::Unavailable(_)
                    | ServeError::ShuttingDown
            )
    }

    /// When an overloaded client should retry, in whole seconds (never 0).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServeError::Overloaded { retry_after } => Some(retry_after_secs(*retry_after)),
            ServeError::OverBudget(_) | ServeError::ImagePoolFull { .. } => Some(1),
            _ => None,
        }
    }

    /// Short label for the `reason` of failure metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ServeError::BadRequest(_) => "invalid",
            ServeError::ModelNotFound(_) | ServeError::VersionNotFound { .. } => "unknown_model",
            ServeError::RouteNotFound(_) => "not_found",
            ServeError::MethodNotAllowed(_) => "method_not_allowed",
            ServeError::PayloadTooLarge { .. } => "too_large",
            ServeError::BodyTimeout { .. } => "body_timeout",
            ServeError::OverBudget(_) => "over_budget",
            ServeError::Overloaded { .. } | ServeError::ImagePoolFull { .. } => "overloaded",
            ServeError::TimedOut => "timeout",
            ServeError::DeadlineCannotBeMet => "shed",
            ServeError::NotReady(_) => "not_ready",
            ServeError::Unavailable(_) => "unavailable",
            ServeError::ShuttingDown => "shutting_down",
            ServeError::Unimplemented(_) => "unimplemented",
            ServeError::Engine(_) => "engine",
            ServeError::Internal(_) => "internal",
        }
    }

    /// A `BadRequest` with that message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ServeError::BadRequest(message.into())
    }
}

impl From<InferError> for ServeError {
    fn from(error: InferError) -> Self {
        match error {
            InferError::Overloaded { retry_after } => ServeError::Overloaded { retry_after },
            InferError::TimedOut => ServeError::TimedOut,
            InferError::DeadlineCannotBeMet => ServeError::DeadlineCannotBeMet,
            InferError::Invalid(message) => ServeError::BadRequest(message),
            InferError::Engine(message) => ServeError::Engine(message),
            InferError::Unavailable(message) => ServeError::Unavailable(message),
            InferError::ShuttingDown => ServeError::ShuttingDown,
        }
    }
}

/// Retry hints are whole seconds; never advise retrying at once.
fn retry_after_secs(retry_after: Duration) -> u64 {
    retry_after.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_keep_their_meaning() {
        assert_eq!(
            ServeError::from(InferError::TimedOut).kind(),
            ErrorKind::DeadlineExceeded
        );
        assert_eq!(
            ServeError::from(InferError::Invalid("x".into())).kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            ServeError::from(InferError::Engine("x".into())).reason(),
            InferError::Engine("x".into()).reason()
        );
        assert_eq!(
            ServeError::from(InferError::DeadlineCannotBeMet).reason(),
            InferError::DeadlineCannotBeMet.reason()
        );
    }

    #[test]
    fn overload_says_when_to_retry_in_whole_seconds() {
        let error = ServeError::from(InferError::Overloaded {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(error.retry_after_secs(), Some(2));
        assert_eq!(error.to_string(), "server overloaded, retry after 2s");
        let now = ServeError::Overloaded {
            retry_after: Duration::ZERO,
        };
        assert_eq!(now.retry_after_secs(), Some(1));
        assert_eq!(ServeError::TimedOut.retry_after_secs(), None);
    }

    #[test]
    fn server_faults_are_told_from_client_faults() {
        assert!(ServeError::Engine("x".into()).is_server_fault());
        assert!(ServeError::ShuttingDown.is_server_fault());
        assert!(!ServeError::bad_request("x").is_server_fault());
        assert!(!ServeError::ModelNotFound("m".into()).is_server_fault());
        let spent = super::super::budget::OverBudget {
            wanted: 1,
            limit: 1,
        };
        assert!(!ServeError::OverBudget(spent).is_server_fault());
        assert!(!ServeError::ImagePoolFull {
            threads: 1,
            waiting: 1
        }
        .is_server_fault());
        assert!(!ServeError::Overloaded {
            retry_after: Duration::ZERO
        }
        .is_server_fault());
    }
}
