"""sluice_client: write files through sluice exactly once, the way Apache
Flink's RecoverableWriter does.

    from sluice_client import Writer

    with Writer("127.0.0.1:50051") as writer:
        stream = writer.open("file:///data/out/part-0")
        stream.write(b"record\\n")
        handle = stream.persist()          # keep it in the checkpoint
        committer = stream.close_for_commit()
        committer.commit()

After a crash, ``writer.recover(handle)`` continues the file at exactly the
persisted position, and ``writer.recover_for_commit(handle).
commit_after_recovery()`` publishes a file whose commit may already have
happened.

Small writes are batched; each batch is one ``Write`` call whose messages
carry their offsets and CRC32Cs. A call that fails with ``UNAVAILABLE`` (or
``DATA_LOSS``: a message damaged on the way, of which nothing was applied)
is sent again from the last acknowledged offset: the server skips the bytes
it already has, so a retried chunk is never duplicated. The file's CRC32C
that ``Persist``, ``CloseForCommit`` and ``Commit`` answer is checked
against the bytes written. Other failures raise the typed exceptions of
:mod:`sluice_client.errors`. :mod:`sluice_client.aio` is the same API on
asyncio.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import grpc

from ._core import (
    DATA_CHANNEL,
    Committed,
    Options,
    RetryPolicy,
    StreamBase,
    StreamState,
    channel_options,
    check_commit,
    unary_retry,
    write_retry,
)
from ._pb import gateway_pb2 as pb
from ._pb import gateway_pb2_grpc as pb_grpc
from .errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    SessionLost,
    SluiceError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)

__all__ = [
    "Writer",
    "RecoverableStream",
    "Committer",
    "Committed",
    "RetryPolicy",
    "SluiceError",
    "NotFound",
    "SessionLost",
    "FailedPrecondition",
    "AlreadyExists",
    "InvalidArgument",
    "OutOfRange",
    "PermissionDenied",
    "Unauthenticated",
    "ResourceExhausted",
    "Aborted",
    "Unimplemented",
    "Unavailable",
    "DeadlineExceeded",
    "DataLoss",
    "Internal",
]

T = TypeVar("T")

MiB = 1 << 20


class Writer:
    """Connections to sluice (Flink's ``RecoverableWriter``): one for
    ``Write`` streams, one for every other call.

    ``target`` is ``host:port``. ``chunk_size`` is the size of one ``Write``
    message; ``batch_size`` how many bytes are gathered before they are
    sent in one call. ``interceptors`` are gRPC client interceptors, and
    ``credentials`` makes the channel use TLS. ``checksums`` (on by
    default) sends a CRC32C with every message and checks the file's.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        chunk_size: int = 1 * MiB,
        batch_size: int = 4 * MiB,
        retry: RetryPolicy = RetryPolicy(),
        timeout: Optional[float] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        metadata: Sequence[Tuple[str, str]] = (),
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
        checksums: bool = True,
    ) -> None:
        self.options = Options(chunk_size, batch_size, retry, timeout, metadata, checksums)
        options = channel_options(chunk_size)

        def connect(extra: List[Tuple[str, int]]) -> grpc.Channel:
            if credentials is None:
                return grpc.insecure_channel(target, options=options + extra)
            return grpc.secure_channel(target, credentials, options=options + extra)

        self._channels = [connect([]), connect(DATA_CHANNEL)]
        stubs = []
        for channel in self._channels:
            if interceptors:
                channel = grpc.intercept_channel(channel, *interceptors)
            stubs.append(pb_grpc.StorageGatewayStub(channel))
        self._stub, self._data_stub = stubs

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channels."""
        for channel in self._channels:
            channel.close()

    # The write side.

    def open(self, path: str, *, inject_entropy: bool = False) -> "RecoverableStream":
        """Starts a new file at ``path`` (a URI such as ``s3://bucket/key``,
        or a path the default scheme resolves). Nothing is visible there
        before the commit."""
        opened = self._call(self._stub.Open, pb.OpenRequest(path=path, inject_entropy=inject_entropy))
        return RecoverableStream(self, StreamState(self.options, opened.session_id, opened.path, 0, 0))

    def recover(self, handle: bytes) -> "RecoverableStream":
        """Continues the file of a resume handle at exactly its position;
        bytes written after the handle are discarded."""
        r = self._call(self._stub.Recover, pb.RecoverRequest(handle=bytes(handle)))
        return RecoverableStream(self, StreamState(self.options, r.session_id, r.path, r.position, r.crc32c))

    def recover_for_commit(self, handle: bytes) -> "Committer":
        """A committer for a commit (or resume) handle from a checkpoint."""
        return Committer(self, bytes(handle))

    def cleanup(self, handle: bytes) -> bool:
        """Frees what only this resume handle keeps (tail objects). True when
        something was removed; never fails because it was already cleaned."""
        return self._call(self._stub.Cleanup, pb.CleanupRequest(handle=bytes(handle))).cleaned

    def capabilities(self, path: str) -> pb.CapabilitiesResponse:
        """What the scheme of ``path`` promises: resume support, part size,
        the limits in force."""
        return self._call(self._stub.Capabilities, pb.CapabilitiesRequest(path=path))

    # The read side.

    def read(self, path: str, offset: int = 0, length: int = 0) -> bytes:
        """Reads ``length`` bytes (0: to the end) of a committed file."""
        try:
            parts = self._stub.Read(
                pb.ReadRequest(path=path, offset=offset, length=length),
                timeout=self.options.timeout,
                metadata=self.options.metadata,
            )
            return b"".join(part.data for part in parts)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def list(self, path: str) -> List[pb.FileStatus]:
        """The entries one level below a directory, sorted by name; staging
        never shows. Large directories come in pages, fetched here in turn."""
        entries: List[pb.FileStatus] = []
        token = ""
        while True:
            page = self._call(self._stub.List, pb.ListRequest(path=path, page_token=token))
            entries.extend(page.entries)
            token = page.next_page_token
            if not token:
                return entries

    def exists(self, path: str) -> bool:
        return self._call(self._stub.Exists, pb.ExistsRequest(path=path)).exists

    def delete(self, path: str, *, recursive: bool = False) -> bool:
        return self._call(self._stub.Delete, pb.DeleteRequest(path=path, recursive=recursive)).deleted

    # Calls.

    def _call(self, method: Callable[..., T], request: object) -> T:
        o = self.options
        return self._retrying(lambda _attempt: method(request, timeout=o.timeout, metadata=o.metadata))

    def _retrying(self, attempt_call: Callable[[int], T], retry_on: Callable[[grpc.RpcError], bool] = unary_retry) -> T:
        """Runs a call, again while ``retry_on`` says so and attempts remain."""
        attempt = 0
        while True:
            try:
                return attempt_call(attempt)
            except grpc.RpcError as error:
                if retry_on(error) and attempt + 1 < self.options.retry.attempts:
                    time.sleep(self.options.retry.backoff(attempt))
                    attempt += 1
                    continue
                raise from_rpc_error(error) from None


class RecoverableStream(StreamBase):
    """A file being written (Flink's ``RecoverableFsDataOutputStream``)."""

    _writer: Writer

    def write(self, data: bytes) -> None:
        """Appends ``data``; it is sent once a batch has gathered."""
        if self._state.add(data):
            self.flush()

    def flush(self) -> None:
        """Sends everything written and waits until the server has it."""
        self._state.check_open()
        if self._state.pending:
            self._send(self._state.take())

    def persist(self) -> bytes:
        """Makes every byte written so far durable; returns the resume
        handle to store in the checkpoint."""
        self.flush()
        persisted = self._writer._call(self._writer._stub.Persist, pb.PersistRequest(session_id=self.session_id))
        self._state.check(persisted.position, persisted.crc32c, "Persist")
        return persisted.handle

    def close_for_commit(self) -> "Committer":
        """Makes everything durable and closes the stream; the committer
        publishes the file."""
        self.flush()
        closed = self._writer._call(
            self._writer._stub.CloseForCommit,
            pb.CloseForCommitRequest(session_id=self.session_id),
        )
        self._state.check(closed.size, closed.crc32c, "CloseForCommit")
        self._state.closed = True
        expected = closed.crc32c if self._writer.options.checksums else None
        return Committer(self._writer, closed.handle, expected)

    def abort(self) -> None:
        """Disposes of the stream with no durability promise (Flink's
        ``close()``)."""
        self._state.closed = True
        self._state.pending.clear()
        self._writer._call(self._writer._stub.Abort, pb.AbortRequest(session_id=self.session_id))

    def _send(self, data: bytes) -> None:
        """One Write call for ``data``, sent again from the acknowledged
        offset while the server answers UNAVAILABLE or DATA_LOSS."""
        view = memoryview(data)
        offset = self._state.acked
        end = offset + len(data)
        writer, o = self._writer, self._writer.options
        while True:
            position = writer._retrying(
                lambda _attempt: (
                    writer._data_stub.Write(
                        self._state.messages(view, offset), timeout=o.timeout, metadata=o.metadata
                    ).position
                ),
                write_retry,
            )
            rest = self._state.acknowledged(position, offset, end)
            if rest is None:
                return
            # Part of the batch was taken; send the rest.
            view = view[rest - offset :]
            offset = rest


class Committer:
    """Publishes a file (Flink's ``Committer``). ``handle`` is the commit
    handle to keep in the checkpoint until the commit is done."""

    def __init__(self, writer: Writer, handle: bytes, crc32c: Optional[int] = None) -> None:
        self._writer = writer
        self.handle = handle
        self._crc32c = crc32c

    def commit(self) -> Committed:
        """Publishes the file; raises AlreadyExists when the target exists."""
        return self._commit(False)

    def commit_after_recovery(self) -> Committed:
        """Publishes the file from a restored checkpoint: a commit that
        already happened is recognised and succeeds."""
        return self._commit(True)

    def _commit(self, after_recovery: bool) -> Committed:
        writer, o = self._writer, self._writer.options

        def attempt_call(attempt: int) -> pb.CommitResponse:
            # A retry may follow a commit that landed.
            request = pb.CommitRequest(handle=self.handle, after_recovery=after_recovery or attempt > 0)
            return writer._stub.Commit(request, timeout=o.timeout, metadata=o.metadata)

        return check_commit(self._crc32c, writer._retrying(attempt_call))
