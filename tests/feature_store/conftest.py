"""Fixtures for the feature store tests: writers and readers on the session's Redis, data dirs.

`redis_url`, `namespace` and `raw_redis` come from tests/conftest.py. Readers are asyncio objects:
a test opens one (`reader()`) and uses it inside a single `asyncio.run`, since redis-py's asyncio
connections belong to the event loop that made them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_store.cache import CacheConfig
from feature_store.keys import StoredEntity
from feature_store.records import Row
from feature_store.redis_store import RedisOnlineStore, open_async_store
from feature_store.writer import StoreWriter, open_writer
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

TEST_TIMEOUT_S = 5.0  # functional tests on a busy machine: not the 50 ms serving default


@pytest.fixture
def writer(redis_url: str, namespace: str) -> Iterator[StoreWriter]:
    with open_writer(url=redis_url, namespace=namespace) as opened:
        yield opened


@pytest.fixture
def reader(redis_url: str, namespace: str) -> Callable[..., RedisOnlineStore]:
    """`reader(cache=..., timeout=...)`: a new async store on the test's namespace, cache off."""

    def open_reader(
        cache: CacheConfig | None = None, timeout: float = TEST_TIMEOUT_S
    ) -> RedisOnlineStore:
        return open_async_store(
            url=redis_url,
            namespace=namespace,
            timeout=timeout,
            cache=cache or CacheConfig.off(),
        )

    return open_reader


Tables = Mapping[StoredEntity, Sequence[tuple[str, Row]]]


@pytest.fixture
def publish(writer: StoreWriter) -> Callable[[Tables], int]:
    """`publish({"user": [(id, row), ...], "item": [...]})`: write a new version (its columns:
    the features its rows use, recorded by the flip), flip to it, delete older versions; returns
    the version."""

    def write_and_flip(tables: Tables) -> int:
        version = writer.begin()
        for entity, rows in tables.items():
            writer.write(version, entity, rows)
        writer.flip(version)
        writer.delete_versions_below(version)
        return version

    return write_and_flip


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
