"""Fixtures for every test directory: a real Redis, and a fresh key namespace in it.

`redis_url` is REDIS_URL when that is set (.ci/run's second pass points it at Debian's
redis-server), else the unix-socket URL of an embedded redis-server started once per session.
`namespace` gives each test its own key prefix and deletes its keys afterwards: a REDIS_URL
database is never flushed. Every test that uses `redis_url`, directly or through another fixture,
is marked `redis`, so `pytest -m redis` runs exactly the tests that talk to that server.

No TensorFlow here: the store's modules import redis-py and numpy only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from feature_store.embedded import EmbeddedRedis

REDIS_FIXTURE = "redis_url"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `redis` every test whose fixture closure includes `redis_url`."""
    for item in items:
        if REDIS_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


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
    delete_namespace(redis_url, name)


def delete_namespace(redis_url: str, namespace: str) -> None:
    """Deletes every key under `namespace` (a REDIS_URL database is never flushed)."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client of the same server, to look at keys as they are stored."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
