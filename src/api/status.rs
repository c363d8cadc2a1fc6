//! The one place gRPC statuses are made: every domain error's code
//! (DESIGN.md 1.3), the edge's answers included, and how tonic's own
//! decoding failures are told from sluice's answers.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::error::Error;

/// Metadata on every status sluice makes, naming the error's cause
/// (`FailedPrecondition`, `Shed`, ...): a status without it is tonic's own.
pub const CAUSE_KEY: &str = "sluice-cause";

/// The gRPC code and the cause of each error.
pub fn code(err: &Error) -> (Code, &'static str) {
    match err {
        Error::InvalidArgument(_) => (Code::InvalidArgument, "InvalidArgument"),
        Error::SessionNotFound(_) => (Code::NotFound, "SessionNotFound"),
        Error::NotFound(_) => (Code::NotFound, "NotFound"),
        Error::FailedPrecondition(_) => (Code::FailedPrecondition, "FailedPrecondition"),
        Error::AlreadyExists(_) => (Code::AlreadyExists, "AlreadyExists"),
        Error::DataLoss(_) => (Code::DataLoss, "DataLoss"),
        Error::OutOfRange(_) => (Code::OutOfRange, "OutOfRange"),
        Error::OffsetGap { .. } => (Code::OutOfRange, "OffsetGap"),
        Error::SessionEnded(_) => (Code::FailedPrecondition, "SessionEnded"),
        Error::Aborted(_) => (Code::Aborted, "Aborted"),
        Error::Reclaimed(_) => (Code::Aborted, "Reclaimed"),
        Error::Unimplemented(_) => (Code::Unimplemented, "Unimplemented"),
        Error::Unauthenticated(_) => (Code::Unauthenticated, "Unauthenticated"),
        Error::PermissionDenied(_) => (Code::PermissionDenied, "PermissionDenied"),
        Error::ResourceExhausted(_) => (Code::ResourceExhausted, "ResourceExhausted"),
        Error::StoreUnavailable { .. } => (Code::Unavailable, "StoreUnavailable"),
        Error::StateUnavailable { .. } => (Code::Unavailable, "StateUnavailable"),
        Error::StateFull { .. } => (Code::ResourceExhausted, "StateFull"),
        Error::Internal(_) => (Code::Internal, "Internal"),
        Error::Shed { .. } => (Code::ResourceExhausted, "Shed"),
        Error::DeadlineExceeded(_) => (Code::DeadlineExceeded, "DeadlineExceeded"),
        Error::MessageTooLarge(_) => (Code::ResourceExhausted, "MessageTooLarge"),
        Error::Undecodable(_) => (Code::InvalidArgument, "Undecodable"),
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let (code, cause) = code(&err);
        if code == Code::Internal {
            tracing::error!(error = %err, "internal error");
        }
        let mut status = Status::new(code, err.to_string());
        status
            .metadata_mut()
            .insert(CAUSE_KEY, MetadataValue::from_static(cause));
        status
    }
}

/// Whether sluice made `status` (rather than tonic).
pub fn is_ours(status: &Status) -> bool {
    status.metadata().contains_key(CAUSE_KEY)
}

/// What a failure of tonic's own decoding of a request means for the
/// caller: a message over the size limit (tonic says `OUT_OF_RANGE`) is
/// `RESOURCE_EXHAUSTED`, one that does not decode (tonic says `INTERNAL`,
/// which would send the client looking for a server bug) is
/// `INVALID_ARGUMENT`. `None` for any other status: sluice's own, or a
/// broken connection (an HTTP/2 or body error, which tonic gives as the
/// status's source; a decoding failure has none).
pub fn decoding_failure(status: &Status) -> Option<Error> {
    if is_ours(status) || std::error::Error::source(status).is_some() {
        return None;
    }
    match status.code() {
        Code::OutOfRange => Some(Error::MessageTooLarge(status.message().to_string())),
        Code::Internal => Some(Error::Undecodable(status.message().to_string())),
        _ => None,
    }
}
