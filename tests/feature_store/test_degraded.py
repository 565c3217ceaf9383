"""An unreachable store fails fast with StoreUnavailable, and the store recovers when Redis does."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from feature_store.embedded import EmbeddedRedis, store_path
from feature_store.errors import StoreUnavailable
from feature_store.redis_store import open_store

pytestmark = pytest.mark.redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_nothing_listening_raises_store_unavailable_naming_the_url() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"
    with open_store(url=url, timeout=0.5) as store:
        with pytest.raises(StoreUnavailable, match=f"redis://127.0.0.1:{url.split(':')[2]}"):
            store.get_online_features("u1", ["i1"])
        with pytest.raises(StoreUnavailable):
            store.ping()


def test_killed_redis_then_restarted_redis(tmp_path: Path) -> None:
    store = open_store(data_dir=tmp_path, create=True, retry_after=0.0)
    assert store.embedded is not None and store.embedded.pid is not None
    store.write("item", [("i1", {"price": 2.5})])
    store.persist()  # SAVE, so a restarted server has the row

    os.kill(store.embedded.pid, signal.SIGKILL)
    os.waitpid(store.embedded.pid, 0)
    with pytest.raises(StoreUnavailable, match="embedded store"):
        store.get_online_features("u1", ["i1"])

    restarted = EmbeddedRedis(store_path(tmp_path)).start()
    try:
        # the same store object reconnects by itself: no reopen needed
        assert store.get_online_features("u1", ["i1"]).items == [{"price": 2.5}]
    finally:
        store.close()
        restarted.stop()


def test_after_a_failure_calls_are_refused_until_retry_after_or_a_ping(tmp_path: Path) -> None:
    server = EmbeddedRedis(store_path(tmp_path)).start()
    store = open_store(url=server.url, retry_after=3600.0)
    try:
        store.write("item", [("i1", {})])
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        os.waitpid(server.pid, 0)
        with pytest.raises(StoreUnavailable):
            store.read("item", ["i1"])
        server.start()
        with pytest.raises(
            StoreUnavailable, match="unreachable, next try"
        ):  # cool-down: not even tried
            store.read("item", ["i1"])
        store.ping()  # a readiness probe tries anyway, and ends the cool-down
        assert store.read("item", ["i1"]) == [None]  # reached the new, empty server
    finally:
        store.close()
        server.stop()


def test_a_restart_between_two_lookups_is_invisible(tmp_path: Path) -> None:
    server = EmbeddedRedis(store_path(tmp_path)).start()
    store = open_store(url=server.url)
    try:
        assert store.read("item", ["i1"]) == [None]  # a pooled connection now exists
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        os.waitpid(server.pid, 0)
        server.start()
        # the pooled connection is dead; the store replaces it instead of failing the request
        assert store.read("item", ["i1"]) == [None]
    finally:
        store.close()
        server.stop()


def test_a_hung_redis_times_out_into_store_unavailable(tmp_path: Path) -> None:
    server = EmbeddedRedis(store_path(tmp_path)).start()
    store = open_store(url=server.url, timeout=0.2, retry_after=3600.0)
    assert server.pid is not None
    try:
        store.ping()
        os.kill(server.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
        with pytest.raises(StoreUnavailable, match="Timeout"):
            store.get_online_features("u1", ["i1"])
        with pytest.raises(StoreUnavailable, match="unreachable, next try"):  # no second wait
            store.get_online_features("u1", ["i1"])
    finally:
        os.kill(server.pid, signal.SIGCONT)
        store.close()
        server.stop()
