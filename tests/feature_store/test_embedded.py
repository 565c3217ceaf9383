"""The embedded store: a redis-server per data directory that keeps its data across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis

from feature_store.embedded import EmbeddedRedis, store_path
from feature_store.errors import StoreConfigError
from feature_store.redis_store import open_async_store
from feature_store.writer import open_writer


def test_rows_survive_closing_and_reopening_the_store(tmp_path: Path) -> None:
    with open_writer(data_dir=tmp_path) as writer:
        version = writer.begin()
        writer.write(version, "item", [("i1", {"price": 2.5})])
        writer.flip(version)
        writer.persist()
    assert (tmp_path / "online_store" / "dump.rdb").exists()

    async def scenario() -> None:
        async with open_async_store(data_dir=tmp_path, timeout=5) as store:
            assert (await store.get_online_features("u1", ["i1"])).items == [{"price": 2.5}]
        # the reader was the last client: the server is gone
        with pytest.raises(redis.ConnectionError):
            EmbeddedRedis(store_path(tmp_path)).client(timeout=1).ping()

    asyncio.run(scenario())


def test_closing_the_last_client_stops_the_server(tmp_path: Path) -> None:
    writer = open_writer(data_dir=tmp_path)
    writer.current_version()
    writer.close()
    with pytest.raises(redis.ConnectionError):
        EmbeddedRedis(store_path(tmp_path)).client(timeout=1).ping()


def test_a_second_opener_attaches_and_the_server_lives_while_either_uses_it(
    tmp_path: Path,
) -> None:
    first = EmbeddedRedis(store_path(tmp_path)).start()
    second = EmbeddedRedis(store_path(tmp_path)).start()
    assert first.pid is not None
    assert second.pid is None  # attached, started nothing
    a, b = first.client(timeout=5), second.client(timeout=5)
    try:
        a.set(b"k", b"v")
        assert b.get(b"k") == b"v"
        b.ping()  # `second` holds a connection...
        first.stop()  # ...so the starter leaves the server running
        assert b.get(b"k") == b"v"
    finally:
        a.close()
        b.close()
    second.stop()
    with pytest.raises(redis.ConnectionError):
        second.client(timeout=1).ping()


def test_serving_a_directory_never_materialized_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError, match=f"{tmp_path}: no embedded online store here"):
        open_async_store(data_dir=tmp_path)


def test_the_socket_path_stays_short_for_deep_directories(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 6)
    server = EmbeddedRedis(store_path(deep))
    assert len(str(server.socket_path)) < 100  # the kernel's limit is 107 bytes
    with server:
        server.client(timeout=5).ping()


def test_exactly_one_of_url_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        open_writer()
    with pytest.raises(ValueError, match="exactly one"):
        open_async_store(url="redis://127.0.0.1/0", data_dir=tmp_path)
