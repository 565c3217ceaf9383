"""The async store against a real Redis: layout on the server, one round trip per lookup,
versions resolved per lookup, the user cache in front."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis

from feature_store.cache import CacheConfig, EntityCacheConfig
from feature_store.connection import redact
from feature_store.errors import CorruptValue, StoreConfigError
from feature_store.redis_store import RedisOnlineStore, open_async_store
from feature_store.writer import StoreWriter

Reader = Callable[..., RedisOnlineStore]
Publish = Callable[..., int]

TABLES = {
    "user": [("u1", {"age": 30.0, "recent": ["7", "8"]})],
    "item": [("i1", {"price": 2.5, "category": "7"}), ("i2", {})],
}

BOTH_CACHED = CacheConfig(user=EntityCacheConfig(100), item=EntityCacheConfig(100))


def test_lookup_returns_rows_in_request_order_and_none_where_absent(
    reader: Reader, publish: Publish
) -> None:
    publish(TABLES)

    async def scenario() -> None:
        async with reader() as store:
            found = await store.get_online_features("u1", ["i2", "nope", "i1", "i1"])
            assert found.user == {"age": 30.0, "recent": ["7", "8"]}
            assert found.items == [
                {},
                None,
                {"price": 2.5, "category": "7"},
                {"price": 2.5, "category": "7"},
            ]
            assert found.missing_items == ["nope"]
            assert (await store.get_online_features("u2", [])).missing_user
            assert store.version == 1

    asyncio.run(scenario())


def test_the_keys_on_the_server_are_exactly_the_documented_layout(
    publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    publish(TABLES)
    version = publish(TABLES)  # the second version replaces the first
    assert version == 2
    ns = namespace.encode()
    assert sorted(set(raw_redis.scan_iter(match=f"{namespace}:*"))) == [  # SCAN may repeat a key
        ns + b":current",
        ns + b":v2:item:i1",
        ns + b":v2:item:i2",
        ns + b":v2:meta",
        ns + b":v2:user:u1",
        ns + b":version",
    ]
    assert raw_redis.get(ns + b":current") == b"2"
    assert raw_redis.type(ns + b":v2:user:u1") == b"string"
    meta = json.loads(raw_redis.get(ns + b":v2:meta") or b"null")
    assert meta["columns"] == {
        "user": [
            {"name": "age", "type": "numeric"},
            {"name": "recent", "type": "sequence", "width": 1, "length": 2},
        ],
        "item": [
            {"name": "price", "type": "numeric"},
            {"name": "category", "type": "categorical", "width": 1},
        ],
    }
    assert raw_redis.get(ns + b":v2:item:i1") == b"\x00\x00\x20\x40" + b"7"  # 2.5, "7"
    assert raw_redis.get(ns + b":v2:item:i2") == b"\x00\x00\xc0\x7f" + b"\0"  # NaN, ""


def test_a_lookup_is_one_transaction_of_the_pointer_and_one_mget(
    reader: Reader, publish: Publish, raw_redis: redis.Redis
) -> None:
    publish(TABLES)

    async def scenario() -> dict[str, int]:
        async with reader() as store:
            await store.get_online_features("u1", ["i1"])  # learns the version, opens a connection
            before = raw_redis.info("commandstats")
            await store.get_online_features("u1", [f"i{n}" for n in range(500)])
            after = raw_redis.info("commandstats")
        return {
            name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"]
            for name in after
            if name != "cmdstat_info"
        }

    calls = asyncio.run(scenario())
    assert {name: n for name, n in calls.items() if n} == {
        "cmdstat_multi": 1,
        "cmdstat_get": 1,
        "cmdstat_mget": 1,
        "cmdstat_exec": 1,
    }


def test_an_error_reply_in_the_transaction_is_raised_and_the_connection_stays_in_step(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    """A key of the wrong type makes Redis answer one command of the transaction with an error:
    the lookup raises it, and the next lookup, on the same pooled connection, reads correctly
    (every reply of the failed one was read, none is left to be taken for the next's)."""
    publish(TABLES)

    async def scenario() -> None:
        async with reader(cache=CacheConfig.off()) as store:
            await store.get_online_features("u1", ["i1"])  # learns version 1, one connection
            raw_redis.rename(f"{namespace}:current", f"{namespace}:pointer")
            raw_redis.rpush(f"{namespace}:current", b"1")  # GET of a list: WRONGTYPE
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await store.get_online_features("u1", ["i1"])
            raw_redis.delete(f"{namespace}:current")
            raw_redis.rename(f"{namespace}:pointer", f"{namespace}:current")
            found = await store.get_online_features("u1", ["i2", "i1"])
            assert found.items == [{}, {"price": 2.5, "category": "7"}]
            assert found.user == {"age": 30.0, "recent": ["7", "8"]}

    asyncio.run(scenario())


def test_the_first_lookup_of_a_version_reads_its_columns_in_the_same_transaction(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    publish(TABLES)

    async def scenario() -> list[dict[str, int]]:
        counts = []
        async with reader() as store:
            await store.get_online_features("u1", [])  # learns the version and its columns
            publish({"item": [("i1", {"category": "8", "price": 3.0})]})  # other columns
            for _ in range(2):
                before = raw_redis.info("commandstats")
                found = await store.get_online_features("u1", ["i1"])
                after = raw_redis.info("commandstats")
                assert (found.user, found.items) == (None, [{"category": "8", "price": 3.0}])
                counts.append(
                    {
                        name: n
                        for name in after
                        if name != "cmdstat_info"
                        and (n := after[name]["calls"] - before.get(name, {"calls": 0})["calls"])
                    }
                )
        return counts

    flipped, next_one = asyncio.run(scenario())
    # the stale version's read, then the live one's with its meta record: two transactions
    assert flipped == {"cmdstat_multi": 2, "cmdstat_get": 3, "cmdstat_mget": 2, "cmdstat_exec": 2}
    assert next_one == {"cmdstat_multi": 1, "cmdstat_get": 1, "cmdstat_mget": 1, "cmdstat_exec": 1}


def test_a_live_version_without_a_record_layout_raises_naming_its_meta_key(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    publish(TABLES)
    raw_redis.set(f"{namespace}:v1:meta", b'{"format": 2}')  # as an older mtrank wrote it

    async def scenario() -> None:
        async with reader() as store:
            await store.get_online_features("u1", ["i1"])

    with pytest.raises(CorruptValue, match=f"'{namespace}:v1:meta' has no record layout"):
        asyncio.run(scenario())


def test_a_flip_is_seen_by_the_next_lookup_and_clears_the_caches(
    reader: Reader, publish: Publish
) -> None:
    publish(TABLES)

    async def scenario() -> None:
        async with reader(cache=BOTH_CACHED) as store:
            assert (await store.get_online_features("u1", ["i1"])).user == TABLES["user"][0][1]
            publish({"user": [("u1", {"age": 31.0})], "item": [("i1", {"price": 3.0})]})
            found = await store.get_online_features("u1", ["i1", "i2"])  # i2 not cached
            assert (found.user, found.items) == ({"age": 31.0}, [{"price": 3.0}, None])
            assert store.version == 2

    asyncio.run(scenario())


def test_lookups_the_caches_answer_see_a_flip_once_the_pointer_check_is_due(
    reader: Reader, publish: Publish, raw_redis: redis.Redis
) -> None:
    publish(TABLES)

    async def scenario() -> None:
        async with reader(cache=BOTH_CACHED) as store:
            await store.get_online_features("u1", ["i1"])
            publish({"user": [("u1", {"age": 31.0})], "item": [("i1", {"price": 3.0})]})
            before = raw_redis.info("commandstats").get("cmdstat_get", {"calls": 0})["calls"]
            cached = await store.get_online_features("u1", ["i1"])  # within pointer_check_s
            assert raw_redis.info("commandstats")["cmdstat_get"]["calls"] == before  # no I/O
            assert cached.user == TABLES["user"][0][1]
            store.pointer_check_s = 0.0  # as if a second had passed
            found = await store.get_online_features("u1", ["i1"])
            assert (found.user, found.items) == ({"age": 31.0}, [{"price": 3.0}])

    asyncio.run(scenario())


def test_cached_users_are_served_without_fetching_them(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    publish(TABLES)
    config = CacheConfig(user=EntityCacheConfig(100), item=EntityCacheConfig(100))

    async def scenario() -> None:
        async with reader(cache=config) as store:
            await store.get_online_features("u1", ["i1", "i2"])
            # changed behind the store's back, in place: a cached row is served as it was
            assert store.layout is not None
            changed = store.layout.user.encode([{"age": 99.0}])[0]
            raw_redis.set(f"{namespace}:v1:user:u1", changed)
            found = await store.get_online_features("u1", ["i1"])
            assert found.user == {"age": 30.0, "recent": ["7", "8"]}
            stats = store.cache_stats()
            assert stats["user"] == {"hits": 1, "misses": 1, "hit_ratio": 0.5, "size": 1}
            assert stats["item"]["hits"] == 1 and stats["item"]["size"] == 2

    asyncio.run(scenario())


def test_without_a_cache_every_lookup_reads_redis(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    publish(TABLES)

    async def scenario() -> None:
        async with reader(cache=CacheConfig.off()) as store:
            await store.get_online_features("u1", [])
            assert store.layout is not None
            changed = store.layout.user.encode([{"age": 99.0}])[0]
            raw_redis.set(f"{namespace}:v1:user:u1", changed)
            assert (await store.get_online_features("u1", [])).user == {"age": 99.0}
            assert store.cache_stats() == {}

    asyncio.run(scenario())


def test_nothing_materialized_means_everything_absent_not_degraded(reader: Reader) -> None:
    async def scenario() -> None:
        async with reader() as store:
            found = await store.get_online_features("u1", ["i1"])
            assert found.missing_user and found.missing_items == ["i1"]
            assert not found.degraded
            assert await store.metadata() is None

    asyncio.run(scenario())


def test_metadata_is_the_live_versions_record(reader: Reader, writer: StoreWriter) -> None:
    version = writer.begin()
    writer.write_metadata(version, {"format": 3, "entities": {"user": {"rows": 3}}})

    async def metadata() -> object:
        async with reader() as store:
            return await store.metadata()

    assert asyncio.run(metadata()) is None  # written, but not flipped to
    writer.flip(version)
    assert asyncio.run(metadata()) == {
        "format": 3,
        "entities": {"user": {"rows": 3}},
        "columns": {"user": [], "item": []},  # added by the writer: nothing written
    }


def test_a_foreign_value_under_the_namespace_raises_naming_its_key(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    publish(TABLES)
    raw_redis.set(f"{namespace}:v1:item:bad", b"not a record \xc1")

    async def scenario() -> None:
        async with reader() as store:
            await store.get_online_features("u1", ["bad"])

    with pytest.raises(CorruptValue, match=f"'{namespace}:v1:item:bad'"):
        asyncio.run(scenario())


def test_a_bad_value_among_hundreds_is_named_and_absent_items_stay_none(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    items = [(f"i{n}", {"price": float(n), "category": str(n % 7)}) for n in range(400)]
    publish({"user": TABLES["user"], "item": items})
    wanted = [f"i{n}" for n in range(0, 400, 2)] + ["nope", "i7"]

    async def lookup() -> list[dict[str, object] | None]:
        async with reader() as store:
            return (await store.get_online_features("u1", wanted)).items

    found = asyncio.run(lookup())
    assert found[:3] == [
        {"price": 0.0, "category": "0"},
        {"price": 2.0, "category": "2"},
        {"price": 4.0, "category": "4"},
    ]
    assert found[-2:] == [None, {"price": 7.0, "category": "0"}]
    # one byte too many: joined with the others, it would shift every record after it
    raw_redis.set(f"{namespace}:v1:item:i200", b"\x00\x00\x20\x40" + b"12")
    with pytest.raises(CorruptValue, match=f"'{namespace}:v1:item:i200' is 6 bytes, not a rec"):
        asyncio.run(lookup())


def test_a_bad_value_fetched_among_cached_ones_is_named_and_the_cached_ones_still_serve(
    reader: Reader, publish: Publish, raw_redis: redis.Redis, namespace: str
) -> None:
    items = [(f"i{n}", {"price": float(n), "category": str(n % 7)}) for n in range(300)]
    publish({"user": TABLES["user"], "item": items})
    cached = [f"i{n}" for n in range(0, 300, 3)]
    # one byte too many: joined with cached values, it would shift every record after it
    raw_redis.set(f"{namespace}:v1:item:i100", b"\x00\x00\x20\x40" + b"12")

    async def scenario() -> None:
        async with reader(cache=BOTH_CACHED) as store:
            first = await store.get_online_features("u1", cached[:90])
            with pytest.raises(CorruptValue, match=f"'{namespace}:v1:item:i100' is 6 bytes"):
                await store.get_online_features("u1", [*cached[:90], "i100", "i5"])
            assert store.item_cache is not None and len(store.item_cache) == 90  # nothing added
            again = await store.get_online_features("u1", cached[:90])
            assert again.items == first.items
            assert again.items[:2] == [
                {"price": 0.0, "category": "0"},
                {"price": 3.0, "category": "3"},
            ]

    asyncio.run(scenario())


def test_namespaces_do_not_see_each_other(publish: Publish, redis_url: str, namespace: str) -> None:
    publish(TABLES)

    async def scenario() -> None:
        async with open_async_store(url=redis_url, namespace=f"{namespace}x", timeout=5) as other:
            assert (await other.get_online_features("u1", ["i1"])).missing_items == ["i1"]

    asyncio.run(scenario())


def test_urls_are_checked_and_shown_without_their_password() -> None:
    assert redact("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact("redis://me:s3:cr@et@db/1") == "redis://me:***@db/1"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(StoreConfigError, match="bad Redis URL 'http://:\\*\\*\\*@x'"):
        open_async_store(url="http://:pw@x")
    with pytest.raises(ValueError, match="exactly one of url= or data_dir="):
        open_async_store()
    with pytest.raises(ValueError, match="timeout must be > 0 seconds, got 0"):
        open_async_store(url="redis://127.0.0.1/0", timeout=0)
