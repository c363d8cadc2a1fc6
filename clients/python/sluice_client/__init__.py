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
carry their offsets. A call that fails with ``UNAVAILABLE`` is sent again
from the last acknowledged offset: the server skips the bytes it already
has, so a retried chunk is never duplicated. Other failures raise the typed
exceptions of :mod:`sluice_client.errors`.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import grpc

from ._pb import gateway_pb2 as pb
from ._pb import gateway_pb2_grpc as pb_grpc
from .errors import (
    Aborted,
    AlreadyExists,
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
    "Internal",
]

T = TypeVar("T")

MiB = 1 << 20


@dataclass(frozen=True)
class RetryPolicy:
    """How calls are retried on ``UNAVAILABLE``: ``attempts`` in all, with
    exponential backoff from ``initial_backoff`` to ``max_backoff`` seconds
    (with jitter)."""

    attempts: int = 8
    initial_backoff: float = 0.05
    max_backoff: float = 2.0

    def backoff(self, attempt: int) -> float:
        delay = min(self.max_backoff, self.initial_backoff * (2**attempt))
        return delay * (0.5 + random.random() / 2)


@dataclass(frozen=True)
class Committed:
    """Where a commit landed."""

    path: str
    size: int


class Writer:
    """Connections to sluice (Flink's ``RecoverableWriter``): one for
    ``Write`` streams, one for every other call.

    ``target`` is ``host:port``. ``chunk_size`` is the size of one ``Write``
    message; ``batch_size`` how many bytes are gathered before they are
    sent in one call. ``interceptors`` are gRPC client interceptors, and
    ``credentials`` makes the channel use TLS.
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
    ) -> None:
        if chunk_size <= 0 or batch_size <= 0:
            raise ValueError("chunk_size and batch_size must be positive")
        self.chunk_size = chunk_size
        self.batch_size = max(batch_size, chunk_size)
        self.retry = retry
        self.timeout = timeout
        self.metadata = tuple(metadata)
        options = [
            ("grpc.max_send_message_length", chunk_size + 64 * 1024),
            ("grpc.max_receive_message_length", 64 * MiB),
            # Come back quickly after a gateway restart.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        def connect(extra: List[Tuple[str, int]]) -> grpc.Channel:
            if credentials is None:
                return grpc.insecure_channel(target, options=options + extra)
            return grpc.secure_channel(target, credentials, options=options + extra)

        # Write streams get a connection of their own (a local subchannel
        # pool keeps gRPC from sharing one): HTTP/2 flow control and TCP
        # order are per connection, so bytes in flight never hold back a
        # Persist or a Commit.
        self._channels = [connect([]), connect([("grpc.use_local_subchannel_pool", 1)])]
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
        opened = self._call(
            self._stub.Open, pb.OpenRequest(path=path, inject_entropy=inject_entropy)
        )
        return RecoverableStream(self, opened.session_id, opened.path, 0)

    def recover(self, handle: bytes) -> "RecoverableStream":
        """Continues the file of a resume handle at exactly its position;
        bytes written after the handle are discarded."""
        recovered = self._call(self._stub.Recover, pb.RecoverRequest(handle=bytes(handle)))
        return RecoverableStream(self, recovered.session_id, recovered.path, recovered.position)

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
                timeout=self.timeout,
                metadata=self.metadata,
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
        return self._retrying(lambda _attempt: method(request, timeout=self.timeout, metadata=self.metadata))

    def _retrying(self, attempt_call: Callable[[int], T]) -> T:
        """Runs a call, again on UNAVAILABLE while attempts remain."""
        attempt = 0
        while True:
            try:
                return attempt_call(attempt)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt + 1 < self.retry.attempts:
                    time.sleep(self.retry.backoff(attempt))
                    attempt += 1
                    continue
                raise from_rpc_error(error) from None


class RecoverableStream:
    """A file being written (Flink's ``RecoverableFsDataOutputStream``)."""

    def __init__(self, writer: Writer, session_id: str, path: str, position: int) -> None:
        self._writer = writer
        self.session_id = session_id
        #: The target as the server resolved it (scheme, entropy applied).
        self.path = path
        self._acked = position
        self._pending = bytearray()
        self._closed = False

    @property
    def position(self) -> int:
        """Bytes written so far, sent or not."""
        return self._acked + len(self._pending)

    def write(self, data: bytes) -> None:
        """Appends ``data``; it is sent once a batch has gathered."""
        self._check_open()
        self._pending += data
        if len(self._pending) >= self._writer.batch_size:
            self.flush()

    def flush(self) -> None:
        """Sends everything written and waits until the server has it."""
        self._check_open()
        if not self._pending:
            return
        data = bytes(self._pending)
        self._send(data)
        self._pending.clear()

    def persist(self) -> bytes:
        """Makes every byte written so far durable; returns the resume
        handle to store in the checkpoint."""
        self.flush()
        persisted = self._writer._call(
            self._writer._stub.Persist, pb.PersistRequest(session_id=self.session_id)
        )
        self._check_position(persisted.position)
        return persisted.handle

    def close_for_commit(self) -> "Committer":
        """Makes everything durable and closes the stream; the committer
        publishes the file."""
        self.flush()
        closed = self._writer._call(
            self._writer._stub.CloseForCommit,
            pb.CloseForCommitRequest(session_id=self.session_id),
        )
        self._check_position(closed.size)
        self._closed = True
        return Committer(self._writer, closed.handle)

    def abort(self) -> None:
        """Disposes of the stream with no durability promise (Flink's
        ``close()``)."""
        self._closed = True
        self._pending.clear()
        self._writer._call(self._writer._stub.Abort, pb.AbortRequest(session_id=self.session_id))

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition(f"session {self.session_id} is closed; open or recover a new one")

    def _check_position(self, server: int) -> None:
        if server != self._acked:
            raise Internal(
                f"session {self.session_id}: the server is at byte {server}, this client at {self._acked}"
            )

    def _messages(self, view: memoryview, offset: int) -> Iterator[pb.WriteRequest]:
        chunk = self._writer.chunk_size
        for start in range(0, len(view), chunk):
            yield pb.WriteRequest(
                session_id=self.session_id if start == 0 else "",
                offset=offset + start,
                data=bytes(view[start : start + chunk]),
            )

    def _send(self, data: bytes) -> None:
        """One Write call for ``data``, sent again from the acknowledged
        offset while the server answers UNAVAILABLE."""
        view = memoryview(data)
        offset = self._acked
        end = offset + len(data)
        writer = self._writer
        while True:
            position = writer._retrying(
                lambda _attempt: writer._data_stub.Write(
                    self._messages(view, offset), timeout=writer.timeout, metadata=writer.metadata
                ).position
            )
            if position == end:
                self._acked = end
                return
            if not offset <= position < end:
                raise Internal(
                    f"session {self.session_id}: the server acknowledged byte {position}, "
                    f"this client sent {offset}..{end}"
                )
            # Part of the batch was taken; send the rest.
            view = view[position - offset :]
            offset = position


class Committer:
    """Publishes a file (Flink's ``Committer``). ``handle`` is the commit
    handle to keep in the checkpoint until the commit is done."""

    def __init__(self, writer: Writer, handle: bytes) -> None:
        self._writer = writer
        self.handle = handle

    def commit(self) -> Committed:
        """Publishes the file; raises AlreadyExists when the target exists."""
        return self._commit(False)

    def commit_after_recovery(self) -> Committed:
        """Publishes the file from a restored checkpoint: a commit that
        already happened is recognised and succeeds."""
        return self._commit(True)

    def _commit(self, after_recovery: bool) -> Committed:
        writer = self._writer

        def attempt_call(attempt: int) -> pb.CommitResponse:
            # A retry may follow a commit that landed.
            request = pb.CommitRequest(handle=self.handle, after_recovery=after_recovery or attempt > 0)
            return writer._stub.Commit(request, timeout=writer.timeout, metadata=writer.metadata)

        committed = writer._retrying(attempt_call)
        return Committed(path=committed.path, size=committed.size)
