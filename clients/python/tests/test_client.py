"""sluice_client against a real gateway."""

from __future__ import annotations

import hashlib
from pathlib import Path
import threading

import pytest

import sluice_client
from sluice_client import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    RetryPolicy,
    Unavailable,
    Unimplemented,
    Writer,
)


def pattern(size: int, seed: int) -> bytes:
    out = bytearray()
    block = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest()
        block += 1
    return bytes(out[:size])


def test_stubs_come_from_the_repository_proto():
    from sluice_client._pb import gateway_pb2

    service = gateway_pb2.DESCRIPTOR.services_by_name["StorageGateway"]
    assert service.full_name == "sluice.v1.StorageGateway"
    assert {"Open", "Write", "Persist", "Recover", "CloseForCommit", "Commit", "Cleanup", "Abort"} <= set(
        service.methods_by_name
    )


def test_write_persist_recover_commit(gateway):
    data = pattern(300_000, 1)
    target = gateway.uri("out/part-0")
    with Writer(gateway.address, chunk_size=4096, batch_size=16384) as writer:
        stream = writer.open(target)
        assert stream.path == target
        for i in range(0, 100_000, 77):
            stream.write(data[i : min(i + 77, 100_000)])
        handle = stream.persist()
        assert isinstance(handle, bytes) and stream.position == 100_000
        stream.write(data[100_000:150_000])  # lost with the crash below
        stream.abort()

        resumed = writer.recover(handle)
        assert resumed.position == 100_000
        resumed.write(data[100_000:])
        committer = resumed.close_for_commit()
        assert not (gateway.files / "out" / "part-0").exists(), "visible before commit"
        committed = committer.commit()
        assert (committed.path, committed.size) == (target, len(data))
        assert (gateway.files / "out" / "part-0").read_bytes() == data
        assert writer.read(target) == data

        with pytest.raises(AlreadyExists):
            committer.commit()
        again = writer.recover_for_commit(committer.handle).commit_after_recovery()
        assert again.size == len(data)
        assert writer.cleanup(handle) in (True, False)
        assert [e.name for e in writer.list(gateway.uri("out"))] == ["part-0"]


def test_errors_are_typed_with_the_servers_message(gateway):
    with Writer(gateway.address, retry=RetryPolicy(attempts=1)) as writer:
        with pytest.raises(Unimplemented) as err:
            writer.open("nope://bucket/x")
        assert "file" in err.value.message  # lists the schemes served
        with pytest.raises(InvalidArgument):
            writer.recover(b"not a handle")
        stream = writer.open(gateway.uri("typed/a"))
        stream.write(b"abc")
        committer = stream.close_for_commit()
        with pytest.raises(FailedPrecondition):
            stream.write(b"more")
        committer.commit()
        assert isinstance(NotFound("x"), sluice_client.SluiceError)


def test_session_lost_after_a_gateway_restart(gateway):
    """A gateway killed with -9 loses live sessions (NotFound), never a
    persisted handle."""
    with Writer(gateway.address) as writer:
        stream = writer.open(gateway.uri("restart/a"))
        stream.write(b"kept")
        handle = stream.persist()
        stream.write(b" lost")
        stream.flush()
        gateway.kill()
        gateway.start()  # same port, same data dir
        with pytest.raises(sluice_client.SessionLost) as err:
            stream.persist()
        assert "restart" in err.value.message
        resumed = writer.recover(handle)
        assert resumed.position == 4
        resumed.write(b" again")
        resumed.close_for_commit().commit()
        assert (gateway.files / "restart" / "a").read_bytes() == b"kept again"


def test_unavailable_is_retried_by_offset_without_duplicates(gateway, proxy):
    data = pattern(12 << 20, 2)
    target = gateway.uri("cut/part-0")
    retry = RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.2)
    with Writer(proxy.address, chunk_size=64 << 10, batch_size=512 << 10, retry=retry) as writer:
        stream = writer.open(target)
        cuts = 0
        stop = threading.Event()

        def cutter() -> None:
            nonlocal cuts
            while not stop.wait(0.15):
                cuts += proxy.cut()

        thread = threading.Thread(target=cutter)
        thread.start()
        try:
            for i in range(0, len(data), 256 << 10):
                stream.write(data[i : i + (256 << 10)])
                if i % (4 << 20) == 0:
                    stream.persist()
            committer = stream.close_for_commit()
        finally:
            stop.set()
            thread.join()
        committer.commit()
    assert cuts >= 5, f"only {cuts} connections were cut"
    assert (gateway.files / "cut" / "part-0").read_bytes() == data


def test_write_streams_use_a_connection_of_their_own(gateway, proxy):
    # Bytes a Write has in flight must never sit ahead of a Persist or a
    # Commit: HTTP/2 flow control and TCP order are per connection.
    data = pattern(6 << 20, 4)
    target = gateway.uri("separate/part-0")
    with Writer(proxy.address) as writer:
        stream = writer.open(target)
        stream.write(data[: 3 << 20])
        stream.persist()
        stream.write(data[3 << 20 :])
        stream.close_for_commit().commit()
        carried = sorted(proxy.upstream_bytes)
    assert len(carried) == 2, f"bytes per connection: {carried}"
    assert carried[0] < 64 << 10, f"Write data went over the control connection: {carried}"
    assert carried[1] >= 6 << 20, f"bytes per connection: {carried}"
    assert (gateway.files / "separate" / "part-0").read_bytes() == data


def test_unavailable_after_retries_is_typed():
    with Writer("127.0.0.1:1", retry=RetryPolicy(attempts=2, initial_backoff=0.01)) as writer:
        with pytest.raises(Unavailable):
            writer.open("file:///tmp/x")


def test_readme_examples_run_as_written(gateway, capsys):
    """Both Python blocks of the README: the synchronous client and its
    asyncio twin."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    blocks = [part.split("```", 1)[0] for part in readme.split("```python\n")[1:]]
    assert len(blocks) == 2, "the README has a synchronous and an asyncio example"
    for block in blocks:
        exec(compile(block.replace("127.0.0.1:50051", gateway.address), "README.md", "exec"), {})
        assert capsys.readouterr().out == "first record\nsecond record\n"


def test_bearer_token_as_metadata(tmp_path):
    from conftest import Gateway

    token = "python-job-token"
    digest = hashlib.sha256(token.encode()).hexdigest()
    files = (tmp_path / "files").resolve()
    gw = Gateway(
        tmp_path,
        config=(f"auth.principals.pyjob.token-sha256: {digest}\nauth.principals.pyjob.prefixes: file://{files}/jobs\n"),
    )
    try:
        with Writer(gw.address) as anonymous:
            with pytest.raises(Unauthenticated):
                anonymous.open(gw.uri("jobs/part-0"))
        with Writer(gw.address, metadata=[("authorization", f"Bearer {token}")]) as writer:
            with pytest.raises(PermissionDenied):
                writer.open(gw.uri("elsewhere/part-0"))
            stream = writer.open(gw.uri("jobs/part-0"))
            stream.write(b"with a token")
            handle = stream.persist()
            writer.recover(handle).close_for_commit().commit()
        assert (files / "jobs/part-0").read_bytes() == b"with a token"
    finally:
        gw.kill()


def test_damaged_writes_are_caught_and_sent_again(gateway, corrupting_proxy):
    """Every 100th large HTTP/2 DATA frame towards the gateway has a byte
    flipped: the damaged messages are refused (DATA_LOSS) and sent again,
    and the file is exactly the bytes written, with the CRC32C the commit
    answers. Without checksums, the same damage is published."""
    data = pattern(8 << 20, 6)
    retry = RetryPolicy(attempts=50, initial_backoff=0.001, max_backoff=0.02)
    for checksums, name in ((True, "checked"), (False, "unchecked")):
        before = corrupting_proxy.flipped
        with Writer(
            corrupting_proxy.address,
            chunk_size=256 << 10,
            batch_size=1 << 20,
            retry=retry,
            checksums=checksums,
        ) as writer:
            stream = writer.open(gateway.uri(f"crc/{name}"))
            for i in range(0, len(data), 1 << 20):
                stream.write(data[i : i + (1 << 20)])
                if i % (4 << 20) == 0:
                    stream.persist()
            committed = stream.close_for_commit().commit()
        assert corrupting_proxy.flipped - before >= 3, "the proxy flipped too few bytes"
        stored = (gateway.files / "crc" / name).read_bytes()
        if checksums:
            assert stored == data, "a damaged message was applied"
            assert committed.crc32c == sluice_client._core.crc32c(data)
        else:
            assert len(stored) == len(data) and stored != data
