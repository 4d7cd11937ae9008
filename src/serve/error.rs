//! The HTTP layer's one error type, and the one place that maps errors to an HTTP
//! status, a metric label and the `{"error": "..."}` body.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use mica_actors::InferError;
use thiserror::Error;

/// Why a request got no answer of its own.
#[derive(Debug, Error)]
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
    /// No route for the path.
    #[error("no endpoint {0}")]
    RouteNotFound(String),
    /// The path exists but not for that method.
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// The body is larger than `server.max_body_bytes`.
    #[error("request body of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Bytes received or announced.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A queue is full; the client should retry later.
    #[error("server overloaded, retry after {}s", retry_after_secs(*retry_after))]
    Overloaded {
        /// When to retry.
        retry_after: Duration,
    },
    /// The request's `timeout` passed before it ran.
    #[error("request timed out before it could run")]
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
    /// The engine failed on the request's batch.
    #[error("inference failed: {0}")]
    Engine(String),
    /// A bug or an unexpected state in mica.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// The HTTP status clients get.
    pub fn status(&self) -> StatusCode {
        match self {
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::ModelNotFound(_)
            | ServeError::VersionNotFound { .. }
            | ServeError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ServeError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ServeError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ServeError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServeError::TimedOut
            | ServeError::DeadlineCannotBeMet
            | ServeError::NotReady(_)
            | ServeError::Unavailable(_)
            | ServeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Engine(_) | ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            ServeError::Overloaded { .. } => "overloaded",
            ServeError::TimedOut => "timeout",
            ServeError::DeadlineCannotBeMet => "shed",
            ServeError::NotReady(_) => "not_ready",
            ServeError::Unavailable(_) => "unavailable",
            ServeError::ShuttingDown => "shutting_down",
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

/// `Retry-After` is whole seconds; never advise retrying at once.
fn retry_after_secs(retry_after: Duration) -> u64 {
    retry_after.as_secs_f64().ceil().max(1.0) as u64
}

/// The JSON body of every error answer.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ResponseError for ServeError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let message = self.to_string();
        let mut response = HttpResponse::build(self.status());
        if let ServeError::Overloaded { retry_after } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs(*retry_after)));
        }
        let body = serde_json::to_vec(&ErrorBody { error: &message })
            .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec());
        response
            .insert_header((
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ))
            .body(body)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body_of(error: &ServeError) -> serde_json::Value {
        let body = error.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn every_error_is_json_with_its_status() {
        let cases = [
            (ServeError::bad_request("input \"x\": bad"), 400),
            (ServeError::ModelNotFound("m".into()), 404),
            (ServeError::PayloadTooLarge { size: 10, limit: 5 }, 413),
            (ServeError::NotReady("m".into()), 503),
            (ServeError::Engine("boom".into()), 500),
        ];
        for (error, status) in cases {
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(
                response.headers().get(header::CONTENT_TYPE).unwrap(),
                "application/json"
            );
            assert_eq!(body_of(&error)["error"], error.to_string());
        }
    }

    #[test]
    fn overload_says_when_to_retry() {
        let error = ServeError::from(InferError::Overloaded {
            retry_after: Duration::from_millis(1500),
        });
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "2");
        let error = ServeError::Overloaded {
            retry_after: Duration::ZERO,
        };
        assert_eq!(
            error
                .error_response()
                .headers()
                .get(header::RETRY_AFTER)
                .unwrap(),
            "1"
        );
    }

    #[test]
    fn backend_errors_keep_their_meaning() {
        assert_eq!(ServeError::from(InferError::TimedOut).status(), 503);
        assert_eq!(
            ServeError::from(InferError::Invalid("x".into())).status(),
            400
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
}
