//! The one error type of sluice's domain.
//!
//! Every failure a client can see is one variant here. The gRPC status code
//! of each variant is chosen in exactly one place, `api::status`, and each
//! message names the path or session it concerns and what to do next.

/// A failure of a gateway operation, as the client should learn of it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed: a bad path, a bad handle, a bad value.
    #[error("{0}")]
    InvalidArgument(String),

    /// The session id is unknown here (never opened, or lost in a restart).
    #[error("{0}")]
    SessionNotFound(String),

    /// A path the request names does not exist (read side).
    #[error("{0}")]
    NotFound(String),

    /// The operation does not fit the current state: write after close,
    /// recover of a committed handle, staged data gone, and so on.
    #[error("{0}")]
    FailedPrecondition(String),

    /// `Commit` would replace a target that already exists.
    #[error("{0}")]
    AlreadyExists(String),

    /// A write offset lies past the current position.
    #[error("{0}")]
    OutOfRange(String),

    /// A concurrent operation on the same session was refused.
    #[error("{0}")]
    Aborted(String),

    /// The path's scheme has no configured backend (or none exists yet).
    #[error("{0}")]
    Unimplemented(String),

    /// The call carries no valid bearer token while authentication is on.
    #[error("{0}")]
    Unauthenticated(String),

    /// The path lies outside what the caller may touch.
    #[error("{0}")]
    PermissionDenied(String),

    /// A stream limit reclaimed the session after it made no progress.
    #[error("{0}")]
    Reclaimed(String),

    /// Storage is full, or a limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),

    /// The storage behind a backend failed; nothing acknowledged is lost.
    #[error("{0}")]
    Unavailable(String),

    /// A bug or an unexpected local failure (sled, the runtime).
    #[error("{0}")]
    Internal(String),

    // ---- the RPC edge ----
    /// The gateway is at its bound of calls in flight; this one was shed.
    #[error("the gateway is at its bound of {limit} {what} in flight ({key}); retry with backoff")]
    Shed {
        limit: usize,
        what: &'static str,
        key: &'static str,
    },

    /// A unary call ran past `rpc.unary-timeout`, or a Write call sent no
    /// message for `rpc.write-idle-timeout`.
    #[error("{0}")]
    DeadlineExceeded(String),

    /// A message over `rpc.max-message-size` (what the decoder said).
    #[error("{0} (rpc.max-message-size); send smaller messages")]
    MessageTooLarge(String),

    /// A request message that does not decode (what the decoder said).
    #[error(
        "the request message does not decode ({0}); send a valid sluice.v1 message (string fields must be UTF-8)"
    )]
    Undecodable(String),
}

/// Shorthand for results of gateway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Self {
        match &err {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::StorageFull
                    || io.raw_os_error() == Some(libc::ENOSPC) =>
            {
                Error::ResourceExhausted(format!(
                    "the state store's disk is full ({err}): free space in the gateway's data dir, then restart the gateway (/readyz and /healthz say so meanwhile)"
                ))
            }
            sled::Error::Io(_) => Error::Unavailable(format!(
                "the state store (sled) failed to read or write its files ({err}); check the data dir's disk, then restart the gateway"
            )),
            _ => Error::Internal(format!("state store (sled) failed: {err}")),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a background task failed: {err}"))
    }
}
