//! The one place that maps an error kind to a gRPC code, and every error to a
//! `Status` with the same message text the HTTP front end sends (and, on overload, the
//! retry hint in the `retry-after` metadata, whole seconds).

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::serve::error::{ErrorKind, ServeError};

/// Metadata key of the retry hint of an overloaded answer.
pub const RETRY_AFTER: &str = "retry-after";

/// The gRPC code of an error kind.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::MethodNotAllowed | ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::TooLarge | ErrorKind::Overloaded | ErrorKind::OverBudget => {
            Code::ResourceExhausted
        }
        ErrorKind::DeadlineExceeded | ErrorKind::SlowClient => Code::DeadlineExceeded,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status a client gets for `error`.
pub fn status_of(error: &ServeError) -> Status {
    let mut status = Status::new(code_of(error.kind()), error.to_string());
    if let Some(seconds) = error.retry_after_secs() {
        status
            .metadata_mut()
            .insert(RETRY_AFTER, MetadataValue::from(seconds));
    }
    status
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_kind_has_its_code_and_the_same_text() {
        let cases = [
            (
                ServeError::bad_request("input \"x\": bad"),
                Code::InvalidArgument,
            ),
            (ServeError::ModelNotFound("m".into()), Code::NotFound),
            (
                ServeError::VersionNotFound {
                    model: "m".into(),
                    version: "9".into(),
                },
                Code::NotFound,
            ),
            (ServeError::TimedOut, Code::DeadlineExceeded),
            (ServeError::DeadlineCannotBeMet, Code::DeadlineExceeded),
            (ServeError::NotReady("m".into()), Code::Unavailable),
            (ServeError::ShuttingDown, Code::Unavailable),
            (ServeError::Unimplemented("x".into()), Code::Unimplemented),
            (ServeError::Engine("boom".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let status = status_of(&error);
            assert_eq!(status.code(), code, "{error}");
            assert_eq!(status.message(), error.to_string());
            assert!(status.metadata().get(RETRY_AFTER).is_none());
        }
    }

    #[test]
    fn overload_is_resource_exhausted_with_the_retry_hint() {
        let error = ServeError::Overloaded {
            retry_after: Duration::from_millis(1500),
        };
        let status = status_of(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get(RETRY_AFTER).unwrap(), "2");
    }

    #[test]
    fn a_spent_byte_budget_is_resource_exhausted_with_the_retry_hint() {
        let error = ServeError::OverBudget(crate::serve::OverBudget {
            wanted: 768,
            limit: 1024,
        });
        let status = status_of(&error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), error.to_string());
        assert_eq!(status.metadata().get(RETRY_AFTER).unwrap(), "1");
    }
}
