"""The Redis store against a real Redis: layout on the server, one round trip per lookup."""

from __future__ import annotations

import msgpack
import pytest
import redis

from feature_store.errors import CorruptValue
from feature_store.redis_store import RedisOnlineStore, redact

pytestmark = pytest.mark.redis


def _fill(store: RedisOnlineStore) -> None:
    store.write("user", [("u1", {"age": 30.0, "recent": ["7", "8"]})])
    store.write("item", [("i1", {"price": 2.5, "category": "7"}), ("i2", {})])


def test_lookup_returns_rows_in_request_order_and_none_where_absent(
    store: RedisOnlineStore,
) -> None:
    _fill(store)
    found = store.get_online_features("u1", ["i2", "nope", "i1", "i1"])
    assert found.user == {"age": 30.0, "recent": ["7", "8"]}
    assert found.items == [
        {},
        None,
        {"price": 2.5, "category": "7"},
        {"price": 2.5, "category": "7"},
    ]
    assert found.missing_items == ["nope"]
    assert store.get_online_features("u2", []).missing_user


def test_rows_sit_at_the_pinned_keys_as_msgpack_maps(
    store: RedisOnlineStore, raw_redis: redis.Redis, namespace: str
) -> None:
    _fill(store)
    blob = raw_redis.get(f"{namespace}:item:i1".encode())
    assert blob is not None
    assert msgpack.unpackb(blob) == {"price": 2.5, "category": "7"}
    assert raw_redis.type(f"{namespace}:user:u1") == b"string"
    assert sorted(raw_redis.scan_iter(match=f"{namespace}:*")) == [
        f"{namespace}:item:i1".encode(),
        f"{namespace}:item:i2".encode(),
        f"{namespace}:user:u1".encode(),
    ]


def test_a_lookup_is_one_mget_and_nothing_else(
    store: RedisOnlineStore, raw_redis: redis.Redis
) -> None:
    _fill(store)
    store.ping()  # the connection is open before counting
    before = raw_redis.info("commandstats")
    store.get_online_features("u1", [f"i{n}" for n in range(500)])
    after = raw_redis.info("commandstats")
    calls = {
        name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
        for name in after
        if name != "cmdstat_info"
    }
    assert {name: n for name, n in calls.items() if n} == {"cmdstat_mget": 1}


def test_writes_replace_rows_and_delete_removes_them(store: RedisOnlineStore) -> None:
    _fill(store)
    store.write("item", [("i1", {"price": 9.0})])
    assert store.read("item", ["i1"]) == [{"price": 9.0}]
    assert sorted(store.entity_ids("item")) == ["i1", "i2"]
    assert store.delete("item", ["i2", "never-there"]) == 1
    assert store.entity_ids("item") == ["i1"]
    assert store.entity_ids("user") == ["u1"]


def test_many_rows_are_written_in_batches(store: RedisOnlineStore) -> None:
    assert store.write("item", ((f"i{n}", {"price": float(n)}) for n in range(2500))) == 2500
    assert store.read("item", ["i0", "i1999", "i2499"]) == [
        {"price": 0.0},
        {"price": 1999.0},
        {"price": 2499.0},
    ]


def test_metadata_is_none_until_written(store: RedisOnlineStore) -> None:
    assert store.metadata() is None
    store.write_metadata({"format": 1, "entities": {"user": {"rows": 3}}})
    assert store.metadata() == {"format": 1, "entities": {"user": {"rows": 3}}}


def test_a_foreign_value_under_the_namespace_raises_naming_its_key(
    store: RedisOnlineStore, raw_redis: redis.Redis, namespace: str
) -> None:
    raw_redis.set(f"{namespace}:item:bad", b"not msgpack \xc1")
    with pytest.raises(CorruptValue, match=f"'{namespace}:item:bad'"):
        store.get_online_features("u1", ["bad"])


def test_namespaces_do_not_see_each_other(
    store: RedisOnlineStore, redis_url: str, namespace: str
) -> None:
    _fill(store)
    other = RedisOnlineStore(redis.Redis.from_url(redis_url), namespace=f"{namespace}x")
    try:
        assert other.read("item", ["i1"]) == [None]
        assert other.entity_ids("item") == []
    finally:
        other.close()


def test_urls_are_shown_without_their_password() -> None:
    assert redact("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact("redis://me:s3:cr@et@db/1") == "redis://me:***@db/1"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
