"""A streaming job shaped like a Flink job with a two-phase-commit file sink,
written against sluice with sluice_client.

It reads a replayable source (a deterministic generated log: record i is
the same on every run), transforms each record, and writes rolling part
files through sluice:

- every --checkpoint-every records it checkpoints: it persists the part in
  progress and stores, atomically in a local file, the source offset, the
  resume handle and the commit handles of the parts closed since the last
  checkpoint;
- once that checkpoint is durable it commits those parts (Flink's
  notifyCheckpointComplete) and cleans up the previous resume handle;
- a part rolls (close for commit) every --records-per-part records.

On start it restores from the checkpoint: commit_after_recovery for every
pending part, recover for the part in progress, and it replays the source
from the stored offset. Run it, kill it anywhere, run it again: the
committed parts hold every record exactly once.

--crash injects a crash for the harness (harness.py): METHOD:N:VICTIM:WHEN
kills the job, the gateway or both at the N-th call of METHOD (Write,
Persist, CloseForCommit, Commit, Recover, Open), before it is sent, while it
is in flight, or after its answer arrived but before the job saw it.

Exit codes: 0 done; 75 the gateway went away (restart the job); 1 a real
error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

try:
    import grpc

    from sluice_client import (
        Aborted,
        NotFound,
        RetryPolicy,
        SluiceError,
        Unavailable,
        Writer,
    )
except ModuleNotFoundError as missing:  # pragma: no cover - a set-up error
    sys.exit(
        f"{missing}: the job needs the Python client; install it into a venv first:\n"
        "  python3 -m venv target/harness-venv && "
        "target/harness-venv/bin/pip install ./clients/python 'moto[server]==5.2.5'\n"
        "then run the harness with target/harness-venv/bin/python"
    )

GATEWAY_LOST = 75


def source_record(i: int) -> str:
    """Record i of the replayable source."""
    digest = hashlib.sha256(f"record-{i}".encode()).hexdigest()[:24]
    return f"{i} {digest}"


def transform(record: str) -> bytes:
    """The job's transformation: one output line per record."""
    offset, payload = record.split(" ", 1)
    return f"{int(offset):09d}|{payload.upper()}|{len(payload)}\n".encode()


def part_name(out: str, index: int) -> str:
    return f"{out}/part-{index:05d}"


class Checkpoints:
    """The job's checkpoint store: one JSON file replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Optional[Dict[str, Any]]:
        if not self.path.exists():
            return None
        state = json.loads(self.path.read_text())
        state["in_progress"] = _unb64(state["in_progress"])
        state["pending"] = [_unb64(h) for h in state["pending"]]
        return state

    def store(self, state: Dict[str, Any]) -> None:
        encoded = dict(state)
        encoded["in_progress"] = _b64(state["in_progress"])
        encoded["pending"] = [_b64(h) for h in state["pending"]]
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(encoded, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _b64(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else base64.b64decode(text)


class CrashHook(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Kills the job and/or the gateway at the N-th call of one method."""

    def __init__(self, spec: str, gateway_pid: int, log: Optional[Path]) -> None:
        method, n, victim, when = spec.split(":")
        assert victim in ("job", "gateway", "both"), spec
        assert when in ("before", "during", "after"), spec
        self.spec, self.method, self.n, self.victim, self.when = spec, method, int(n), victim, when
        self.gateway_pid = gateway_pid
        self.log = log
        self.calls = 0
        self.fired = False

    def _matches(self, details: grpc.ClientCallDetails) -> bool:
        if self.fired or details.method.rsplit("/", 1)[-1] != self.method:
            return False
        self.calls += 1
        return self.calls == self.n

    def fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(self.spec + "\n")
                f.flush()
                os.fsync(f.fileno())
        if self.victim in ("gateway", "both"):
            try:
                os.kill(self.gateway_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.victim in ("job", "both"):
            os.kill(os.getpid(), signal.SIGKILL)

    def _fire_soon(self) -> None:
        # In flight: somewhere between sent and answered.
        threading.Timer(random.uniform(0, 0.004), self.fire).start()

    def _around(self, continuation, details, request, during):
        """Sends the call, crashing before, during (``during`` arms it and
        returns the request to send) or after it as the spec says."""
        if self.when == "before":
            self.fire()
        elif self.when == "during":
            request = during(request)
        outcome = continuation(details, request)
        if self.when == "after":
            try:
                outcome.result()
            except grpc.RpcError:
                pass
            self.fire()
        return outcome

    def _arm_timer(self, request: Any) -> Any:
        self._fire_soon()
        return request

    def intercept_unary_unary(self, continuation, client_call_details, request):
        if not self._matches(client_call_details):
            return continuation(client_call_details, request)
        return self._around(continuation, client_call_details, request, self._arm_timer)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        if not self._matches(client_call_details):
            return continuation(client_call_details, request_iterator)
        return self._around(continuation, client_call_details, request_iterator, self._cut_after_first)

    def _cut_after_first(self, messages: Iterator[Any]) -> Iterator[Any]:
        """Mid-stream: the first message goes out, then the crash."""
        for i, message in enumerate(messages):
            if i == 1:
                self.fire()
            yield message
        self._fire_soon()


class Job:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.checkpoints = Checkpoints(Path(args.checkpoint))
        interceptors = []
        if args.crash:
            log = Path(args.crash_log) if args.crash_log else None
            interceptors.append(CrashHook(args.crash, args.gateway_pid, log))
        self.writer = Writer(
            args.gateway,
            chunk_size=args.chunk_size,
            batch_size=args.batch_size,
            retry=RetryPolicy(attempts=10, initial_backoff=0.05, max_backoff=0.5),
            timeout=30,
            interceptors=interceptors,
        )

    def run(self) -> None:
        a = self.args
        state = self.checkpoints.load() or {
            "offset": 0,
            "part": 0,
            "part_records": 0,
            "in_progress": None,
            "pending": [],
        }
        # Restore: finish the commits the last checkpoint promised...
        for handle in state["pending"]:
            self.writer.recover_for_commit(handle).commit_after_recovery()
        # ...and continue the part in progress where the checkpoint left it.
        stream = self.writer.recover(state["in_progress"]) if state["in_progress"] else None
        last_handle = state["in_progress"]
        print("restored", flush=True)
        offset, part, part_records = state["offset"], state["part"], state["part_records"]
        closed: List[bytes] = []

        while True:
            if offset < a.records:
                if stream is None:
                    stream = self.writer.open(part_name(a.out, part))
                stream.write(transform(source_record(offset)))
                offset += 1
                part_records += 1
                if part_records == a.records_per_part:
                    closed.append(stream.close_for_commit().handle)
                    stream, part, part_records = None, part + 1, 0
            if offset % a.checkpoint_every == 0 or offset == a.records:
                done = offset == a.records
                if done and stream is not None:
                    closed.append(stream.close_for_commit().handle)
                    stream, part, part_records = None, part + 1, 0
                handle = stream.persist() if stream is not None else None
                self.checkpoints.store(
                    {
                        "offset": offset,
                        "part": part,
                        "part_records": part_records,
                        "in_progress": handle,
                        "pending": closed,
                    }
                )
                # The checkpoint is durable: commit what it covers.
                for pending in closed:
                    self.writer.recover_for_commit(pending).commit()
                closed = []
                if last_handle is not None and last_handle != handle:
                    self.writer.cleanup(last_handle)
                last_handle = handle
                if done:
                    return


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", required=True, help="host:port of a sluice gateway")
    p.add_argument("--out", required=True, help="URI of the output directory, e.g. s3://bucket/job")
    p.add_argument("--checkpoint", required=True, help="local checkpoint file")
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--records-per-part", type=int, default=250)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--crash", help="METHOD:N:VICTIM:WHEN, see above")
    p.add_argument("--crash-log", help="file the crash hook appends its spec to when it fires")
    p.add_argument("--gateway-pid", type=int, default=0)
    args = p.parse_args()
    try:
        Job(args).run()
    except (NotFound, Unavailable, Aborted) as lost:
        print(f"job: gateway lost ({lost}); restart me to resume from the checkpoint", file=sys.stderr)
        return GATEWAY_LOST
    except SluiceError as error:
        print(f"job: failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
