"""What the synchronous and the asyncio client share: the options, the
bookkeeping of a stream (acknowledged position, unsent bytes, the running
CRC32C) and the checks of the server's answers. Nothing here does I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import google_crc32c
import grpc

from ._pb import gateway_pb2 as pb
from .errors import DataLoss, FailedPrecondition, Internal

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
    """Where a commit landed, and the CRC32C of the published file."""

    path: str
    size: int
    crc32c: int = 0


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    return google_crc32c.extend(crc, data)


def unary_retry(error: grpc.RpcError) -> bool:
    """A unary call is sent again on UNAVAILABLE."""
    return error.code() == grpc.StatusCode.UNAVAILABLE


def write_retry(error: grpc.RpcError) -> bool:
    """A Write call is sent again from the acknowledged offset (offsets make
    that safe) on UNAVAILABLE; on DATA_LOSS, a message damaged on the way of
    which nothing was applied; and on an INTERNAL that the server did not
    send (no ``sluice-cause``): grpc.aio reports a connection cut while it
    sends a stream's messages as "Internal error from Core"."""
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS):
        return True
    if code != grpc.StatusCode.INTERNAL:
        return False
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return not any(key == "sluice-cause" for key, _ in (trailers or ()))


def channel_options(chunk_size: int) -> List[Tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", chunk_size + 64 * 1024),
        ("grpc.max_receive_message_length", 64 * MiB),
        # Come back quickly after a gateway restart.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


#: Write streams get a connection of their own (a local subchannel pool
#: keeps gRPC from sharing one): HTTP/2 flow control and TCP order are per
#: connection, so bytes in flight never hold back a Persist or a Commit.
DATA_CHANNEL = [("grpc.use_local_subchannel_pool", 1)]


class Options:
    """What a writer was configured with."""

    def __init__(
        self,
        chunk_size: int,
        batch_size: int,
        retry: RetryPolicy,
        timeout: Optional[float],
        metadata: Sequence[Tuple[str, str]],
        checksums: bool,
    ) -> None:
        if chunk_size <= 0 or batch_size <= 0:
            raise ValueError("chunk_size and batch_size must be positive")
        self.chunk_size = chunk_size
        self.batch_size = max(batch_size, chunk_size)
        self.retry = retry
        self.timeout = timeout
        self.metadata = tuple(metadata)
        self.checksums = checksums


class StreamState:
    """A stream's bookkeeping: what the server acknowledged, what waits to
    be sent, and the CRC32C of every byte written."""

    def __init__(self, options: Options, session_id: str, path: str, position: int, crc: int) -> None:
        self.options = options
        self.session_id = session_id
        self.path = path
        self.acked = position
        self.pending = bytearray()
        self.crc = crc
        self.closed = False

    @property
    def position(self) -> int:
        return self.acked + len(self.pending)

    def add(self, data: bytes) -> bool:
        """Takes ``data``; true when a batch has gathered and should go."""
        self.check_open()
        if self.options.checksums:
            self.crc = crc32c(data, self.crc)
        self.pending += data
        return len(self.pending) >= self.options.batch_size

    def take(self) -> bytes:
        data = bytes(self.pending)
        self.pending.clear()
        return data

    def messages(self, view: memoryview, offset: int) -> Iterator[pb.WriteRequest]:
        """``view`` as Write messages from ``offset``, each with its
        CRC32C."""
        chunk = self.options.chunk_size
        for start in range(0, len(view), chunk):
            data = bytes(view[start : start + chunk])
            message = pb.WriteRequest(
                session_id=self.session_id if start == 0 else "",
                offset=offset + start,
                data=data,
            )
            if self.options.checksums:
                message.crc32c = crc32c(data)
            yield message

    def acknowledged(self, position: int, offset: int, end: int) -> Optional[int]:
        """Settles a Write call that sent ``offset..end``; returns where the
        rest starts when the server took only part of it, None when done."""
        if position == end:
            self.acked = end
            return None
        if not offset <= position < end:
            raise Internal(
                f"session {self.session_id}: the server acknowledged byte {position}, this client sent {offset}..{end}"
            )
        return position

    def check_open(self) -> None:
        if self.closed:
            raise FailedPrecondition(f"session {self.session_id} is closed; open or recover a new one")

    def check(self, position: int, crc: int, call: str) -> None:
        """The server's position and CRC32C after a flush must be this
        client's."""
        if position != self.acked:
            raise Internal(f"session {self.session_id}: the server is at byte {position}, this client at {self.acked}")
        if self.options.checksums and crc != self.crc:
            raise DataLoss(
                f"session {self.session_id}: {call} answered CRC32C {crc:#010x} for the file's "
                f"{position} bytes, but the bytes this client wrote have {self.crc:#010x}"
            )


class StreamBase:
    """What a stream shows, in both clients."""

    def __init__(self, writer: object, state: StreamState) -> None:
        self._writer = writer
        self._state = state
        self.session_id = state.session_id
        #: The target as the server resolved it (scheme, entropy applied).
        self.path = state.path

    @property
    def position(self) -> int:
        """Bytes written so far, sent or not."""
        return self._state.position

    @property
    def crc32c(self) -> int:
        """CRC32C of the bytes written so far (when checksums are on)."""
        return self._state.crc


def check_commit(expected: Optional[int], committed: pb.CommitResponse) -> Committed:
    """Commit's CRC32C must be the one CloseForCommit answered."""
    if expected is not None and committed.crc32c != expected:
        raise DataLoss(
            f"Commit of {committed.path} answered CRC32C {committed.crc32c:#010x}, CloseForCommit {expected:#010x}"
        )
    return Committed(path=committed.path, size=committed.size, crc32c=committed.crc32c)
