//! The one mapping from domain errors to gRPC status codes (DESIGN.md 1.3).

use tonic::{Code, Status};

use crate::error::Error;

/// The gRPC code of each error.
pub fn code(err: &Error) -> Code {
    match err {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::SessionNotFound(_) | Error::NotFound(_) => Code::NotFound,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::OutOfRange(_) => Code::OutOfRange,
        Error::Aborted(_) | Error::Reclaimed(_) => Code::Aborted,
        Error::Unimplemented(_) => Code::Unimplemented,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let code = code(&err);
        if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        Status::new(code, err.to_string())
    }
}
