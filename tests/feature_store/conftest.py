"""Fixtures for the feature store tests: a real Redis, and small data directories.

The Redis is the one at REDIS_URL when that is set (CI's second pass runs these tests against
Debian's redis-server), else an embedded redis-server started once for the session. Each test
gets its own key namespace and its keys are deleted afterwards: a REDIS_URL database is never
flushed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from feature_store.embedded import EmbeddedRedis
from feature_store.redis_store import RedisOnlineStore, open_store
from ranker.schema import Schema

SCHEMA: dict[str, Any] = {
    "features": [
        {"name": "user_id", "type": "categorical", "entity": "user", "num_buckets": 100},
        {"name": "age", "type": "numeric", "entity": "user", "default": -1.0},
        {"name": "segment", "type": "categorical", "entity": "user", "num_buckets": 10},
        {
            "name": "recent",
            "type": "sequence",
            "entity": "user",
            "num_buckets": 50,
            "max_length": 3,
        },
        {"name": "item_id", "type": "categorical", "entity": "item", "num_buckets": 100},
        {"name": "price", "type": "numeric", "entity": "item"},
        {"name": "category", "type": "categorical", "entity": "item", "num_buckets": 10},
        {"name": "device", "type": "categorical", "entity": "context", "vocabulary": ["ios"]},
    ],
    "tasks": [{"name": "ctr", "label": "click"}],
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis: talks to a Redis server (REDIS_URL or embedded)")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL if set, else the URL of an embedded redis-server living for the session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis") / "online_store") as server:
        yield server.url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A fresh key namespace; every key under it is deleted after the test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def store(redis_url: str, namespace: str) -> Iterator[RedisOnlineStore]:
    with open_store(url=redis_url, namespace=namespace) as opened:
        yield opened


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client of the same server, to look at keys as they are stored."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def schema() -> Schema:
    return Schema.from_dict(SCHEMA)


@pytest.fixture
def make_data_dir() -> Callable[..., Path]:
    """`make_data_dir(path, users=..., items=..., schema=...)` writes a data directory."""
    return _write_data_dir


def _write_data_dir(
    directory: Path,
    users: dict[str, list[Any]] | None = None,
    items: dict[str, list[Any]] | None = None,
    schema: dict[str, Any] | None = None,
) -> Path:
    """A data directory with schema.yaml and the given users/items tables (defaults below)."""
    directory.mkdir(parents=True, exist_ok=True)
    Schema.from_dict(schema or SCHEMA).dump(directory / "schema.yaml")
    if users is None:
        users = {
            "user_id": [1, 2, 3],
            "age": [30.0, None, 41.5],
            "segment": ["a", "b", None],
            "recent": [[7, 8], None, []],
        }
    if items is None:
        items = {"item_id": ["i1", "i2"], "price": [0.1, float("nan")], "category": [7, None]}
    if users:
        pq.write_table(pa.table(users), directory / "users.parquet")
    if items:
        pq.write_table(pa.table(items), directory / "items.parquet")
    return directory
