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

    /// Bytes damaged on the way or in the store: a Write message whose
    /// CRC32C does not match its data, a published object whose CRC32C is
    /// not the handle's.
    #[error("{0}")]
    DataLoss(String),

    /// A read offset past the end, or a write offset that overflows.
    #[error("{0}")]
    OutOfRange(String),

    /// A write offset past the session's position: the bytes between are
    /// missing.
    #[error(
        "write at offset {offset} on session {session} leaves a gap: the position is {position}; resend from {position}"
    )]
    OffsetGap {
        session: String,
        offset: u64,
        position: u64,
    },

    /// The session ended (closed for commit, aborted, taken over by a
    /// Recover or Commit, or failed); the message says how and what next.
    #[error("{0}")]
    SessionEnded(String),

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

    /// The storage behind a backend failed (after its client's own
    /// retries); nothing acknowledged is lost.
    #[error("{message}")]
    StoreUnavailable {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The state store (sled) cannot read or write its files.
    #[error("{message}")]
    StateUnavailable {
        message: String,
        #[source]
        source: sled::Error,
    },

    /// The state store's disk is full.
    #[error("{message}")]
    StateFull {
        message: String,
        #[source]
        source: sled::Error,
    },

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

/// Why sluice cannot start (or a tool cannot read its options): the
/// message names the key or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration key (or a tool's option) has a value sluice cannot
    /// use, or keys that belong together are not all set.
    #[error("{0}")]
    Config(String),
    /// The data dir, a file root, the state store or the signing key cannot
    /// be used.
    #[error("{0}")]
    Files(String),
    /// The TLS certificate, key or CA files cannot be read or used.
    #[error("{0}")]
    Tls(String),
}

/// Shorthand for results of start-up and configuration.
pub type StartResult<T> = std::result::Result<T, StartError>;

impl From<Error> for StartError {
    /// A domain failure during start-up (opening sled, creating a root).
    fn from(err: Error) -> Self {
        StartError::Files(err.to_string())
    }
}

impl From<sled::Error> for Error {
    fn from(err: sled::Error) -> Self {
        match &err {
            sled::Error::Io(io)
                if io.kind() == std::io::ErrorKind::StorageFull
                    || io.raw_os_error() == Some(libc::ENOSPC) =>
            {
                Error::StateFull {
                    message: format!(
                        "the state store's disk is full ({err}): free space in the gateway's data dir, then restart the gateway (/readyz and /healthz say so meanwhile)"
                    ),
                    source: err,
                }
            }
            sled::Error::Io(_) => Error::StateUnavailable {
                message: format!(
                    "the state store (sled) failed to read or write its files ({err}); check the data dir's disk, then restart the gateway"
                ),
                source: err,
            },
            _ => Error::Internal(format!("state store (sled) failed: {err}")),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a background task failed: {err}"))
    }
}
