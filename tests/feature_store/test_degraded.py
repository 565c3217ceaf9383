"""An unreachable store fails with StoreUnavailable within its timeout, and the same store object
reads again once Redis is back. Each test kills its own embedded redis-server (never the shared
REDIS_URL one)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_store.cache import CacheConfig
from feature_store.embedded import EmbeddedRedis, store_path
from feature_store.errors import StoreUnavailable
from feature_store.redis_store import open_async_store
from feature_store.writer import open_writer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of our own, holding version 1 with item i1, saved to its file."""
    started = EmbeddedRedis(store_path(tmp_path)).start()
    with open_writer(url=started.url, namespace="t") as writer:
        version = writer.begin()
        writer.write(version, "item", [("i1", {"price": 2.5})])
        writer.flip(version)
    client = started.client(timeout=5)
    client.save()  # so that a restarted server has the row
    client.close()
    yield started
    if started.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(started.pid, signal.SIGCONT)
    started.stop()


def _kill(server: EmbeddedRedis) -> None:
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    os.waitpid(server.pid, 0)


def test_nothing_listening_raises_store_unavailable_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"

    async def scenario() -> None:
        async with open_async_store(url=url, timeout=0.5) as store:
            with pytest.raises(StoreUnavailable, match=url):
                await store.get_online_features("u1", ["i1"])
            with pytest.raises(StoreUnavailable):
                await store.ping()

    asyncio.run(scenario())


def test_redis_killed_then_restarted_under_the_same_store_object(server: EmbeddedRedis) -> None:
    async def scenario() -> None:
        store = open_async_store(  # a generous timeout: this test is about reconnecting
            url=server.url, namespace="t", timeout=2.0, retry_after=0.0, cache=CacheConfig.off()
        )
        async with store:
            assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]
            _kill(server)
            with pytest.raises(StoreUnavailable, match=server.url):
                await store.get_online_features("u1", ["i1"])
            server.start()  # loads the saved file
            # no reopen: the pool replaces the dead connection by itself
            assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]

    asyncio.run(scenario())


def test_a_restart_between_two_lookups_is_invisible(server: EmbeddedRedis) -> None:
    async def scenario() -> None:
        async with open_async_store(
            url=server.url, namespace="t", timeout=2.0, cache=CacheConfig.off()
        ) as store:
            await store.get_online_features("u1", ["i1"])  # a pooled connection now exists
            _kill(server)
            server.start()
            # the pooled connection is dead; the store replaces it instead of failing the request
            assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]

    asyncio.run(scenario())


def test_a_hung_redis_gives_store_unavailable_within_the_timeout_then_recovers(
    server: EmbeddedRedis,
) -> None:
    assert server.pid is not None

    async def scenario() -> float:
        store = open_async_store(  # the default timeout: 50 ms
            url=server.url, namespace="t", retry_after=0.0, cache=CacheConfig.off()
        )
        async with store:
            await store.ping()
            os.kill(server.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no answer within 50 ms"):
                await store.get_online_features("u1", ["i1"])
            waited = time.monotonic() - started
            os.kill(server.pid, signal.SIGCONT)
            # the same store reads again; a just-woken server on a busy machine may miss 50 ms once
            for _ in range(20):
                try:
                    features = await store.get_online_features("u1", ["i1"])
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
            assert features.items == [{"price": 2.5}]
        return waited

    # not a speed claim: an upper bound far below "hangs" on a busy machine
    assert asyncio.run(scenario()) < 1.0


def test_after_a_failure_calls_are_refused_until_retry_after_or_a_ping(
    server: EmbeddedRedis,
) -> None:
    async def scenario() -> None:
        store = open_async_store(
            url=server.url, namespace="t", timeout=2.0, retry_after=3600.0, cache=CacheConfig.off()
        )
        async with store:
            _kill(server)
            with pytest.raises(StoreUnavailable, match=server.url):
                await store.get_online_features("u1", ["i1"])
            server.start()
            with pytest.raises(StoreUnavailable, match="unreachable, next try"):  # not even tried
                await store.get_online_features("u1", ["i1"])
            await store.ping()  # a readiness probe tries anyway, and ends the cool-down
            assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]

    asyncio.run(scenario())


def test_one_timeout_does_not_open_the_breaker_but_three_in_a_row_do(server: EmbeddedRedis) -> None:
    assert server.pid is not None

    async def scenario() -> None:
        store = open_async_store(
            url=server.url, namespace="t", timeout=0.05, retry_after=3600.0, cache=CacheConfig.off()
        )
        async with store:
            await store.ping()
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable, match="no answer within 50 ms"):
                    await store.get_online_features("u1", ["i1"])
            finally:
                os.kill(server.pid, signal.SIGCONT)
            # one slow answer is not an outage: the next lookup goes to Redis again
            for _ in range(20):
                try:
                    assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]
                    break
                except StoreUnavailable as err:
                    assert "next try" not in str(err)
                    await asyncio.sleep(0.1)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                for _ in range(3):
                    with pytest.raises(StoreUnavailable, match="no answer within"):
                        await store.get_online_features("u1", ["i1"])
                with pytest.raises(StoreUnavailable, match="unreachable, next try"):
                    await store.get_online_features("u1", ["i1"])
            finally:
                os.kill(server.pid, signal.SIGCONT)

    asyncio.run(scenario())


def test_timeouts_while_the_event_loop_was_blocked_do_not_open_the_breaker(
    server: EmbeddedRedis,
) -> None:
    async def scenario() -> None:
        store = open_async_store(
            url=server.url, namespace="t", timeout=0.05, retry_after=3600.0, cache=CacheConfig.off()
        )

        async def block_the_loop() -> None:
            time.sleep(0.3)  # what a blocking stretch in the process does: nothing else runs

        async with store:
            await store.ping()
            lookups = [store.get_online_features("u1", ["i1"]) for _ in range(6)]
            outcomes = await asyncio.gather(*lookups, block_the_loop(), return_exceptions=True)
            timed_out = [o for o in outcomes[:6] if isinstance(o, StoreUnavailable)]
            assert len(timed_out) >= store.failure_threshold  # enough to open it if counted
            assert all("no answer within" in str(o) for o in timed_out)
            # Redis answered all along: the breaker stays closed and the next lookup reads it
            assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]

    asyncio.run(scenario())
