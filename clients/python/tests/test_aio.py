"""sluice_client.aio against a real gateway: the same behaviour as the
synchronous client, awaited."""

from __future__ import annotations

import asyncio

import pytest

import sluice_client
from sluice_client import AlreadyExists, FailedPrecondition, InvalidArgument, RetryPolicy, Unimplemented
from sluice_client.aio import Writer

from test_client import pattern


async def test_write_persist_recover_commit(gateway):
    data = pattern(300_000, 11)
    target = gateway.uri("aio/part-0")
    async with Writer(gateway.address, chunk_size=4096, batch_size=16384) as writer:
        stream = await writer.open(target)
        assert stream.path == target
        for i in range(0, 100_000, 77):
            await stream.write(data[i : min(i + 77, 100_000)])
        handle = await stream.persist()
        assert stream.position == 100_000
        await stream.write(data[100_000:150_000])
        await stream.abort()

        resumed = await writer.recover(handle)
        assert (resumed.position, resumed.crc32c) == (100_000, sluice_client._core.crc32c(data[:100_000]))
        await resumed.write(data[100_000:])
        committer = await resumed.close_for_commit()
        assert not (gateway.files / "aio" / "part-0").exists(), "visible before commit"
        committed = await committer.commit()
        assert (committed.path, committed.size) == (target, len(data))
        assert committed.crc32c == sluice_client._core.crc32c(data)
        assert await writer.read(target) == data
        with pytest.raises(AlreadyExists):
            await committer.commit()
        again = await writer.recover_for_commit(committer.handle).commit_after_recovery()
        assert again.size == len(data)
        assert [e.name for e in await writer.list(gateway.uri("aio"))] == ["part-0"]
        assert await writer.exists(target)
        assert await writer.delete(target)


async def test_errors_are_typed(gateway):
    async with Writer(gateway.address, retry=RetryPolicy(attempts=1)) as writer:
        with pytest.raises(Unimplemented):
            await writer.open("nope://bucket/x")
        with pytest.raises(InvalidArgument):
            await writer.recover(b"not a handle")
        stream = await writer.open(gateway.uri("aio/typed"))
        await stream.write(b"abc")
        committer = await stream.close_for_commit()
        with pytest.raises(FailedPrecondition):
            await stream.write(b"more")
        await committer.commit()


async def test_cut_connections_are_retried_without_duplicates(gateway, proxy):
    data = pattern(8 << 20, 12)
    retry = RetryPolicy(attempts=20, initial_backoff=0.01, max_backoff=0.2)
    async with Writer(proxy.address, chunk_size=64 << 10, batch_size=512 << 10, retry=retry) as writer:
        stream = await writer.open(gateway.uri("aio/cut"))
        cuts = 0
        for i in range(0, len(data), 256 << 10):
            await stream.write(data[i : i + (256 << 10)])
            if i % (1 << 20) == 0:
                await asyncio.sleep(0.005)
                cuts += proxy.cut()
            if i % (4 << 20) == 0:
                await stream.persist()
        committer = await stream.close_for_commit()
        await committer.commit()
    assert cuts >= 5, f"only {cuts} connections were cut"
    assert (gateway.files / "aio" / "cut").read_bytes() == data


async def test_damaged_writes_are_caught_and_sent_again(gateway, corrupting_proxy):
    data = pattern(8 << 20, 13)
    retry = RetryPolicy(attempts=50, initial_backoff=0.001, max_backoff=0.02)
    async with Writer(corrupting_proxy.address, chunk_size=256 << 10, batch_size=1 << 20, retry=retry) as writer:
        stream = await writer.open(gateway.uri("aio/crc"))
        for i in range(0, len(data), 1 << 20):
            await stream.write(data[i : i + (1 << 20)])
        committed = await (await stream.close_for_commit()).commit()
    assert corrupting_proxy.flipped >= 3
    assert (gateway.files / "aio" / "crc").read_bytes() == data
    assert committed.crc32c == sluice_client._core.crc32c(data)
