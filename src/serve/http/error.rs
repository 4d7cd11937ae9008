//! The one place that maps an error kind to an HTTP status, and every error to the
//! `{"error": "..."}` body (with `Retry-After` on overload).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::serve::error::{ErrorKind, ServeError};

/// The HTTP status of an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::SlowClient => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::DeadlineExceeded | ErrorKind::OverBudget | ErrorKind::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON body of every error answer.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ResponseError for ServeError {
    fn status_code(&self) -> StatusCode {
        status_of(self.kind())
    }

    fn error_response(&self) -> HttpResponse {
        let message = self.to_string();
        let mut response = HttpResponse::build(self.status_code());
        if let Some(seconds) = self.retry_after_secs() {
            response.insert_header((header::RETRY_AFTER, seconds));
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
    use std::time::Duration;

    use actix_web::body::MessageBody;
    use mica_actors::InferError;

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
            (ServeError::TimedOut, 503),
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
    }
}
