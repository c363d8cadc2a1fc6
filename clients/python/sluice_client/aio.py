"""The asyncio twin of :mod:`sluice_client`, on ``grpc.aio``: the same
classes and methods, awaited.

    from sluice_client.aio import Writer

    async with Writer("127.0.0.1:50051") as writer:
        stream = await writer.open("memory://demo/out/part-0")
        await stream.write(b"record\\n")
        handle = await stream.persist()
        committer = await stream.close_for_commit()
        await committer.commit()

Retries, offsets and checksums work as in the synchronous client.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, List, Optional, Sequence, Tuple, TypeVar

import grpc
import grpc.aio

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
from .errors import from_rpc_error

__all__ = ["Writer", "RecoverableStream", "Committer", "Committed", "RetryPolicy"]

T = TypeVar("T")

MiB = 1 << 20


class Writer:
    """Connections to sluice on asyncio: one for ``Write`` streams, one for
    every other call. The arguments are the synchronous ``Writer``'s."""

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
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        checksums: bool = True,
    ) -> None:
        self.options = Options(chunk_size, batch_size, retry, timeout, metadata, checksums)
        options = channel_options(chunk_size)

        def connect(extra: List[Tuple[str, int]]) -> grpc.aio.Channel:
            if credentials is None:
                return grpc.aio.insecure_channel(target, options=options + extra, interceptors=interceptors)
            return grpc.aio.secure_channel(target, credentials, options=options + extra, interceptors=interceptors)

        self._channels = [connect([]), connect(DATA_CHANNEL)]
        self._stub, self._data_stub = (pb_grpc.StorageGatewayStub(c) for c in self._channels)

    async def __aenter__(self) -> "Writer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channels."""
        for channel in self._channels:
            await channel.close()

    # The write side.

    async def open(self, path: str, *, inject_entropy: bool = False) -> "RecoverableStream":
        """Starts a new file at ``path``; nothing is visible there before the
        commit."""
        opened = await self._call(self._stub.Open, pb.OpenRequest(path=path, inject_entropy=inject_entropy))
        return RecoverableStream(self, StreamState(self.options, opened.session_id, opened.path, 0, 0))

    async def recover(self, handle: bytes) -> "RecoverableStream":
        """Continues the file of a resume handle at exactly its position."""
        r = await self._call(self._stub.Recover, pb.RecoverRequest(handle=bytes(handle)))
        return RecoverableStream(self, StreamState(self.options, r.session_id, r.path, r.position, r.crc32c))

    def recover_for_commit(self, handle: bytes) -> "Committer":
        """A committer for a commit (or resume) handle from a checkpoint."""
        return Committer(self, bytes(handle))

    async def cleanup(self, handle: bytes) -> bool:
        """Frees what only this resume handle keeps; never fails because it
        was already cleaned."""
        return (await self._call(self._stub.Cleanup, pb.CleanupRequest(handle=bytes(handle)))).cleaned

    async def capabilities(self, path: str) -> pb.CapabilitiesResponse:
        return await self._call(self._stub.Capabilities, pb.CapabilitiesRequest(path=path))

    # The read side.

    async def read(self, path: str, offset: int = 0, length: int = 0) -> bytes:
        """Reads ``length`` bytes (0: to the end) of a committed file."""
        o = self.options
        try:
            call = self._stub.Read(
                pb.ReadRequest(path=path, offset=offset, length=length),
                timeout=o.timeout,
                metadata=o.metadata,
            )
            return b"".join([part.data async for part in call])
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def list(self, path: str) -> List[pb.FileStatus]:
        """The entries one level below a directory, every page."""
        entries: List[pb.FileStatus] = []
        token = ""
        while True:
            page = await self._call(self._stub.List, pb.ListRequest(path=path, page_token=token))
            entries.extend(page.entries)
            token = page.next_page_token
            if not token:
                return entries

    async def exists(self, path: str) -> bool:
        return (await self._call(self._stub.Exists, pb.ExistsRequest(path=path))).exists

    async def delete(self, path: str, *, recursive: bool = False) -> bool:
        return (await self._call(self._stub.Delete, pb.DeleteRequest(path=path, recursive=recursive))).deleted

    # Calls.

    async def _call(self, method: Callable[..., Awaitable[T]], request: object) -> T:
        o = self.options
        return await self._retrying(lambda _attempt: method(request, timeout=o.timeout, metadata=o.metadata))

    async def _retrying(
        self,
        attempt_call: Callable[[int], Awaitable[T]],
        retry_on: Callable[[grpc.RpcError], bool] = unary_retry,
    ) -> T:
        """Runs a call, again while ``retry_on`` says so and attempts remain."""
        attempt = 0
        while True:
            try:
                return await attempt_call(attempt)
            except grpc.RpcError as error:
                if retry_on(error) and attempt + 1 < self.options.retry.attempts:
                    await asyncio.sleep(self.options.retry.backoff(attempt))
                    attempt += 1
                    continue
                raise from_rpc_error(error) from None


class RecoverableStream(StreamBase):
    """A file being written, on asyncio."""

    _writer: Writer

    async def write(self, data: bytes) -> None:
        """Appends ``data``; it is sent once a batch has gathered."""
        if self._state.add(data):
            await self.flush()

    async def flush(self) -> None:
        """Sends everything written and waits until the server has it."""
        self._state.check_open()
        if self._state.pending:
            await self._send(self._state.take())

    async def persist(self) -> bytes:
        """Makes every byte written so far durable; returns the resume
        handle to store in the checkpoint."""
        await self.flush()
        w = self._writer
        persisted = await w._call(w._stub.Persist, pb.PersistRequest(session_id=self.session_id))
        self._state.check(persisted.position, persisted.crc32c, "Persist")
        return persisted.handle

    async def close_for_commit(self) -> "Committer":
        """Makes everything durable and closes the stream."""
        await self.flush()
        w = self._writer
        closed = await w._call(w._stub.CloseForCommit, pb.CloseForCommitRequest(session_id=self.session_id))
        self._state.check(closed.size, closed.crc32c, "CloseForCommit")
        self._state.closed = True
        return Committer(w, closed.handle, closed.crc32c if w.options.checksums else None)

    async def abort(self) -> None:
        """Disposes of the stream with no durability promise."""
        self._state.closed = True
        self._state.pending.clear()
        w = self._writer
        await w._call(w._stub.Abort, pb.AbortRequest(session_id=self.session_id))

    async def _send(self, data: bytes) -> None:
        """One Write call for ``data``, sent again from the acknowledged
        offset while the server answers UNAVAILABLE or DATA_LOSS."""
        view = memoryview(data)
        offset = self._state.acked
        end = offset + len(data)
        w, o = self._writer, self._writer.options
        while True:

            async def messages() -> AsyncIterator[pb.WriteRequest]:
                for message in self._state.messages(view, offset):
                    yield message

            async def attempt_call(_attempt: int) -> int:
                call = w._data_stub.Write(messages(), timeout=o.timeout, metadata=o.metadata)
                return (await call).position

            position = await w._retrying(attempt_call, write_retry)
            rest = self._state.acknowledged(position, offset, end)
            if rest is None:
                return
            view = view[rest - offset :]
            offset = rest


class Committer:
    """Publishes a file, on asyncio."""

    def __init__(self, writer: Writer, handle: bytes, crc32c: Optional[int] = None) -> None:
        self._writer = writer
        self.handle = handle
        self._crc32c = crc32c

    async def commit(self) -> Committed:
        """Publishes the file; raises AlreadyExists when the target exists."""
        return await self._commit(False)

    async def commit_after_recovery(self) -> Committed:
        """Publishes the file from a restored checkpoint: a commit that
        already happened is recognised and succeeds."""
        return await self._commit(True)

    async def _commit(self, after_recovery: bool) -> Committed:
        w, o = self._writer, self._writer.options

        async def attempt_call(attempt: int) -> pb.CommitResponse:
            request = pb.CommitRequest(handle=self.handle, after_recovery=after_recovery or attempt > 0)
            return await w._stub.Commit(request, timeout=o.timeout, metadata=o.metadata)

        return check_commit(self._crc32c, await w._retrying(attempt_call))
