"""Exceptions raised by sluice_client, one per gRPC status code sluice uses
(see DESIGN §1.3 of the server). Each keeps the server's message, which
names the path or session and what to do next."""

from __future__ import annotations

from typing import Dict, Type

import grpc


class SluiceError(Exception):
    """A call to sluice failed. `code` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: "grpc.StatusCode | None" = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFound(SluiceError):
    """Unknown or finished session (for example, the gateway restarted), or
    a path that does not exist. Recover from the last resume handle."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(SluiceError):
    """The session or handle can no longer do this: written after
    close-for-commit, recovered from a handle whose data is gone, or fenced
    by a later recovery."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AlreadyExists(SluiceError):
    """Commit (not after recovery) of a target that already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class InvalidArgument(SluiceError):
    """Malformed path, or a tampered, truncated or foreign handle."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class OutOfRange(SluiceError):
    """A write left a gap after the session's position."""

    code = grpc.StatusCode.OUT_OF_RANGE


class PermissionDenied(SluiceError):
    """The path, session or handle is not this caller's, or the store
    refused the gateway's credentials."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(SluiceError):
    """No valid credentials were sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(SluiceError):
    """No stream slot within the scheme's limit timeout, or a size limit."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(SluiceError):
    """The session was reclaimed after inactivity, or a second Write ran
    concurrently on it."""

    code = grpc.StatusCode.ABORTED


class Unimplemented(SluiceError):
    """The path's scheme has no backend configured."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Unavailable(SluiceError):
    """The gateway or its store could not be reached, after retries."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SluiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DataLoss(SluiceError):
    """Bytes were damaged on the way: a ``Write`` message that did not match
    its CRC32C (sent again while retries remain), or a CRC32C the server
    answered for the file that is not the one of the bytes written."""

    code = grpc.StatusCode.DATA_LOSS


class Internal(SluiceError):
    code = grpc.StatusCode.INTERNAL


#: A session that is gone: recover from the last resume handle.
SessionLost = NotFound

_BY_CODE: Dict[grpc.StatusCode, Type[SluiceError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        FailedPrecondition,
        AlreadyExists,
        InvalidArgument,
        OutOfRange,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        Aborted,
        Unimplemented,
        Unavailable,
        DeadlineExceeded,
        DataLoss,
        Internal,
    )
}


def from_rpc_error(error: grpc.RpcError) -> SluiceError:
    """The typed exception for a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, SluiceError)
    return cls(f"{code.name}: {details}", code)
