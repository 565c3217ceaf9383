"""The store on a real local Redis Cluster (six redis-server processes, `redis_cluster.py`): the same
keys and the same lookups as on one Redis, byte for byte; versions that never mix without a
transaction; a materialization killed halfway that leaves readers on the version before."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.cluster
from redis.crc import key_slot

from feature_store.cache import CacheConfig, EntityCacheConfig
from feature_store.cluster_store import ClusterOnlineStore, Slotted
from feature_store.cluster_writer import ClusterStoreWriter
from feature_store.connection import locate
from feature_store.errors import StoreConfigError, StoreUnavailable
from feature_store.keys import entity_key, pointer_key
from feature_store.materialize import materialize
from feature_store.online_features import OnlineFeatures
from feature_store.redis_store import RedisOnlineStore, open_async_store
from feature_store.writer import StoreWriter, VersionConflict, open_writer
from ranker.schema import Schema
from tests.feature_store.redis_cluster import LocalCluster, local_cluster

USERS, ITEMS = 300, 2000
TIMEOUT_S = 5.0  # functional tests on a busy machine: not the 50 ms serving default
REQUESTS = [
    ("u7", [f"i{i}" for i in range(0, 1500, 3)]),  # 500 items, on every master
    ("u299", ["i1", "nope", "i1999", "i1", "also-nope"]),  # absent items, a repeated one
    ("nobody", ["i42"]),  # an absent user
    ("u0", []),  # no items
    ("u150", ["x"] * 3),  # only absent items
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def data(make_data_dir: Callable[..., Path], tmp_path: Path) -> Path:
    """USERS users and ITEMS items with every kind of value, missing ones included."""
    rng = np.random.default_rng(7)
    users = {
        "user_id": [f"u{i}" for i in range(USERS)],
        "age": [None if i % 7 == 0 else float(rng.normal(40, 9)) for i in range(USERS)],
        "segment": [None if i % 5 == 0 else f"seg-{i % 11}" for i in range(USERS)],
        "recent": [[f"r{j}" for j in range(i % 4)] if i % 6 else None for i in range(USERS)],
    }
    items = {
        "item_id": [f"i{i}" for i in range(ITEMS)],
        "price": [float("nan") if i % 9 == 0 else float(rng.gamma(2.0, 3.0)) for i in range(ITEMS)],
        "category": [None if i % 4 == 0 else f"c{i % 13}" for i in range(ITEMS)],
    }
    return make_data_dir(tmp_path / "data", users=users, items=items)


def _reader(url: str, namespace: str, cache: CacheConfig | None = None) -> RedisOnlineStore:
    return open_async_store(url=url, namespace=namespace, timeout=TIMEOUT_S, cache=cache)


def _lookups(store: RedisOnlineStore) -> list[OnlineFeatures]:
    async def scenario() -> list[OnlineFeatures]:
        async with store:
            return [await store.get_online_features(u, items) for u, items in REQUESTS]

    return asyncio.run(scenario())


def _bytes(found: OnlineFeatures, schema: Schema) -> dict[str, Any]:
    """Everything a lookup returned, as bytes: the stored records and the model's columns."""
    columns = found.columns(schema)
    return {
        "user_row": None if found.user_row is None else found.user_row.tobytes(),
        "item_rows": found.item_rows.tobytes(),
        "layout": (found.layout.user.to_record(), found.layout.item.to_record()),
        "absent": list(found.absent_items),
        "degraded": found.degraded,
        "columns": {name: (column.dtype.str, column.tobytes()) for name, column in columns.items()},
    }


def test_a_cluster_url_selects_the_cluster_clients_and_plain_urls_keep_theirs() -> None:
    url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"
    store = open_async_store(url=url)
    assert type(store) is ClusterOnlineStore
    assert type(open_async_store(url="redis://127.0.0.1:6379/0")) is RedisOnlineStore
    assert type(open_writer(url="redis://127.0.0.1:6379/0")) is StoreWriter
    with pytest.raises(StoreUnavailable, match=r"redis\+cluster://127\.0\.0\.1:1: .*refused"):
        open_writer(url="redis+cluster://127.0.0.1:1")  # reads the slot map as it is made
    assert store.description == url  # contacted on the first call only, not here
    assert open_async_store(url="rediss+cluster://:pw@h:7000").description == (
        "rediss+cluster://:***@h:7000"
    )
    for bad, why in [
        ("redis+cluster://h1", "cluster node 'h1' is not host:port"),
        ("redis+cluster://h1:7000/3", "a Redis Cluster has only database 0, not '3'"),
        ("redis+cluster://h1:7000?colour=red", "option 'colour' is not one a Redis Cluster"),
    ]:
        with pytest.raises(StoreConfigError, match=re.escape(f"bad Redis URL '{bad}': {why}")):
            open_async_store(url=bad)


def test_lookups_equal_the_single_node_stores_byte_for_byte(
    cluster: LocalCluster,
    redis_url: str,
    namespace: str,
    data: Path,
    schema: Schema,
    raw_redis: redis.Redis,
) -> None:
    with open_writer(url=redis_url, namespace=namespace) as single:
        materialize(single, data, schema)
    with open_writer(url=cluster.url, namespace=namespace) as clustered:
        done = materialize(clustered, data, schema)
    assert (done.version, done.previous) == (1, None)

    # The same keys, spread over every master (a multi-key command would be CROSSSLOT).
    on_one = set(raw_redis.scan_iter(match=f"{namespace}:*", count=5000))
    per_master = {
        port: set(cluster.client(port).scan_iter(match=f"{namespace}:*", count=5000))
        for port in cluster.masters()
    }
    assert set().union(*per_master.values()) == on_one
    assert len(on_one) == USERS + ITEMS + 3  # the rows, meta, pointer, counter
    assert all(len(keys) > len(on_one) / 6 for keys in per_master.values()), per_master.keys()

    both = CacheConfig(user=EntityCacheConfig(100), item=EntityCacheConfig(100))
    for cache in (CacheConfig.off(), both):
        expected = _lookups(_reader(redis_url, namespace, cache))
        found = _lookups(_reader(cluster.url, namespace, cache))
        for request, one, many in zip(REQUESTS, expected, found, strict=True):
            assert _bytes(many, schema) == _bytes(one, schema), request
    assert found[1].missing_items == ["nope", "also-nope"] and found[2].missing_user
    assert found[0].user is not None and found[0].missing_items == []  # so the test can fail


class _Interleaved(ClusterOnlineStore):
    """A reader that, once `interleave` is set, sends the pointer's GET of its next round alone,
    lets `between()` run, then sends the rest: the race the second pointer read guards against,
    made to happen. `first_replies` are the replies of that round."""

    interleave = False
    between: Callable[[], object] = staticmethod(lambda: None)
    first_replies: list[Any] = []

    async def _round(self, commands: list[Slotted]) -> list[Any]:
        if not self.interleave:
            return await super()._round(commands)
        self.interleave = False
        pointer = await super()._round(commands[:1])
        await asyncio.to_thread(self.between)
        self.first_replies = pointer + await super()._round(commands[1:])
        return self.first_replies


def test_keys_deleted_after_the_pointer_was_read_are_read_again_from_the_live_version(
    cluster: LocalCluster, namespace: str, data: Path, schema: Schema
) -> None:
    writer = open_writer(url=cluster.url, namespace=namespace)
    materialize(writer, data, schema)
    client = locate(url=cluster.url).async_cluster_client(TIMEOUT_S)
    reader = _Interleaved(client, namespace=namespace, timeout=TIMEOUT_S, cache=CacheConfig.off())
    reader.between = lambda: materialize(writer, data, schema)

    async def scenario() -> tuple[OnlineFeatures, OnlineFeatures]:
        async with reader:
            await reader.get_online_features("u1", [])  # learns version 1
            reader.interleave = True  # version 2 goes live and version 1 is deleted mid-round
            raced = await reader.get_online_features("u7", ["i3", "i4"])
            return raced, await reader.get_online_features("u7", ["i3", "i4"])

    try:
        raced, after = asyncio.run(scenario())
    finally:
        writer.close()
    assert reader.first_replies[0] == b"1"  # the pointer said version 1 ...
    assert all(values == [None] * len(values) for values in reader.first_replies[1:])  # ... gone
    assert reader.version == 2
    assert _bytes(raced, schema) == _bytes(after, schema)  # read again, from version 2
    assert raced.user is not None and raced.missing_items == []  # so the test can fail


def test_a_slot_that_moved_is_followed_and_the_slot_map_patched(
    cluster: LocalCluster, namespace: str, data: Path, schema: Schema
) -> None:
    with open_writer(url=cluster.url, namespace=namespace) as writer:
        materialize(writer, data, schema)
    store = _reader(cluster.url, namespace)
    assert isinstance(store, ClusterOnlineStore)
    slot = key_slot(pointer_key(namespace))  # read by every lookup
    target = next(port for port in cluster.masters() if port != cluster.master_of_slot(slot))

    async def scenario() -> tuple[OnlineFeatures, OnlineFeatures, int]:
        async with store:
            before = await store.get_online_features(*REQUESTS[0])
            await asyncio.to_thread(cluster.move_slot, slot, target)
            after = await store.get_online_features(*REQUESTS[0])  # MOVED, followed
            return before, after, int(store._cluster.nodes_manager.get_node_from_slot(slot).port)

    before, after, now_at = asyncio.run(scenario())
    assert _bytes(after, schema) == _bytes(before, schema)
    assert now_at == target  # the next lookups go to the new owner directly


def test_a_materialization_killed_halfway_leaves_readers_on_the_old_version(
    cluster: LocalCluster, namespace: str, data: Path, schema: Schema
) -> None:
    with open_writer(url=cluster.url, namespace=namespace) as writer:
        materialize(writer, data, schema)
    before = _lookups(_reader(cluster.url, namespace))
    # A writer process that stops after its first batch of users (50 rows) until it is killed.
    script = textwrap.dedent(f"""
        import sys, time
        import feature_store.materialize as m
        from feature_store.writer import open_writer
        from ranker.schema import Schema

        def stop_after_first_batch(entity, done, total):
            print(entity, done, total, flush=True)
            time.sleep(600)

        m.READ_BATCH = 50
        writer = open_writer(url={cluster.url!r}, namespace={namespace!r})
        m.materialize(writer, {str(data)!r}, Schema.load({str(data / "schema.yaml")!r}),
                      progress=stop_after_first_batch)
    """)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline() == f"user 50 {USERS}\n".encode()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()

    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    try:
        assert client.get(pointer_key(namespace)) == b"1"
        assert client.exists(entity_key(namespace, 2, "user", "u49")) == 1  # halfway: in ...
        assert client.exists(entity_key(namespace, 2, "user", "u50")) == 0  # ... and not
        after = _lookups(_reader(cluster.url, namespace))
        for request, old, now in zip(REQUESTS, before, after, strict=True):
            assert _bytes(now, schema) == _bytes(old, schema), request

        with open_writer(url=cluster.url, namespace=namespace) as writer:
            done = materialize(writer, data, schema)  # the next one removes what was left
        assert (done.version, done.previous) == (3, 1)
        assert done.deleted_keys == 50 + (USERS + ITEMS + 1)  # version 2's rows, version 1
        left = set(client.scan_iter(match=f"{namespace}:v[0-9]*:*", count=5000))
        assert {key.split(b":")[1] for key in left} == {b"v3"}
    finally:
        client.close()


def test_flips_only_move_forward_and_versions_stay_above_a_lost_counter(
    cluster: LocalCluster, namespace: str
) -> None:
    with open_writer(url=cluster.url, namespace=namespace) as writer:
        assert type(writer) is ClusterStoreWriter
        older, newer = writer.begin(), writer.begin()
        assert (older, newer) == (1, 2)
        writer.write(older, "item", [("i1", {"price": 1.0})])
        writer.write(newer, "item", [("i1", {"price": 2.0})], ttl_s=600)
        assert writer.flip(newer) is None
        with pytest.raises(VersionConflict, match="already serves version 2, newer than 1"):
            writer.flip(older)
        assert writer.current_version() == 2
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        try:
            assert client.exists(entity_key(namespace, older, "item", "i1")) == 0  # discarded
            assert 0 < client.ttl(entity_key(namespace, newer, "item", "i1")) <= 600
            client.delete(f"{namespace}:version")  # the counter lost, as in a failover
        finally:
            client.close()
        assert writer.begin() == 3  # above the live version all the same
