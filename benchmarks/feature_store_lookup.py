"""Online store latency: one user + N candidate items per lookup, and materialization throughput.

    .venv/bin/python benchmarks/feature_store_lookup.py [--redis URL] [--items 500] [--calls 500]

Without --redis it measures the embedded store (redis-server on a unix socket) in a temp dir.
Prints one JSON object: p50/p99 wall-clock ms (and this process's mean CPU ms) of
`get_online_features` alone and with `columns(schema)` (the raw columns serving batches), of a
lookup while the store is down (connection refused each time, and inside the cool-down after a
failure, where no connection is tried), and materialization rows/s. Users and items carry 10
stored features each (5 numeric, 4 categorical, a 20-long sequence; --sequence-length 0: 5
categorical instead).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from feature_store.errors import StoreUnavailable
from feature_store.materialize import materialize
from feature_store.redis_store import RedisOnlineStore, open_store
from feature_store.store import OnlineFeatures
from ranker.schema import Schema

USERS, ITEMS = 20_000, 20_000


def _schema(seq_len: int) -> Schema:
    features: list[dict[str, Any]] = []
    for entity in ("user", "item"):
        features.append(
            {"name": f"{entity}_id", "type": "categorical", "entity": entity, "num_buckets": 1000}
        )
        features += [
            {"name": f"{entity}_n{i}", "type": "numeric", "entity": entity} for i in range(5)
        ]
        features += [
            {"name": f"{entity}_c{i}", "type": "categorical", "entity": entity, "num_buckets": 100}
            for i in range(4)
        ]
        if seq_len:
            features.append(
                {
                    "name": f"{entity}_seq",
                    "type": "sequence",
                    "entity": entity,
                    "num_buckets": 1000,
                    "max_length": seq_len,
                }
            )
        else:
            features.append(
                {
                    "name": f"{entity}_c4",
                    "type": "categorical",
                    "entity": entity,
                    "num_buckets": 100,
                }
            )
    return Schema.from_dict({"features": features, "tasks": [{"name": "ctr", "label": "click"}]})


def _write_data(directory: Path, schema: Schema, seq_len: int) -> None:
    rng = np.random.default_rng(0)
    for entity, n in (("user", USERS), ("item", ITEMS)):
        columns: dict[str, Any] = {f"{entity}_id": [f"{entity[0]}{i}" for i in range(n)]}
        for i in range(5):
            columns[f"{entity}_n{i}"] = rng.normal(size=n)
        for i in range(4 if seq_len else 5):
            columns[f"{entity}_c{i}"] = rng.integers(0, 100, n)
        if seq_len:
            columns[f"{entity}_seq"] = [
                list(rng.integers(0, 1000, seq_len).astype(str)) for _ in range(n)
            ]
        pq.write_table(pa.table(columns), directory / f"{entity}s.parquet")
    schema.dump(directory / "schema.yaml")


def _percentiles(fn: Callable[[], object], calls: int) -> dict[str, float]:
    for _ in range(20):
        fn()
    gc.collect()
    gc.freeze()  # what a service does after warm-up; keeps full collections out of the tail
    times = []
    cpu_start = time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    cpu_ms = (time.process_time() - cpu_start) * 1e3 / calls
    gc.unfreeze()
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "client_cpu_ms": round(cpu_ms, 3),  # this process only: steadier on a busy machine
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="Redis URL (default: embedded store in a temp dir)")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument(
        "--sequence-length", type=int, default=20, help="0: a 5th categorical instead"
    )
    args = parser.parse_args()
    schema = _schema(args.sequence_length)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        _write_data(data, schema, args.sequence_length)
        if args.redis:
            store = open_store(url=args.redis, namespace="bench")
        else:
            store = open_store(data_dir=data, create=True)
        with store:
            start = time.perf_counter()
            materialize(store, data, schema)
            seconds = time.perf_counter() - start

            requests = itertools.cycle(
                [
                    (
                        f"u{rng.integers(0, USERS)}",
                        [f"i{j}" for j in rng.integers(0, ITEMS, args.items)],
                    )
                    for _ in range(100)
                ]
            )

            def lookup() -> OnlineFeatures:
                user_id, item_ids = next(requests)
                return store.get_online_features(user_id, item_ids)

            def lookup_columns() -> object:
                return lookup().columns(schema)

            result = {
                "store": store.description,
                "items_per_lookup": args.items,
                "sequence_length": args.sequence_length,
                "lookup": _percentiles(lookup, args.calls),
                "lookup_and_columns": _percentiles(lookup_columns, args.calls),
                "materialize_rows_per_s": round((USERS + ITEMS) / seconds),
            }
    if args.redis:  # leave a shared Redis as it was
        client = redis.Redis.from_url(args.redis)
        keys = list(client.scan_iter(match="bench:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down_url = f"redis://127.0.0.1:{port}/0"
    items = [f"i{j}" for j in range(args.items)]
    for name, retry_after in (("store_down_refused", 0.0), ("store_down_cool_down", 3600.0)):
        with open_store(url=down_url, retry_after=retry_after) as down:

            def degraded(store: RedisOnlineStore = down) -> None:
                with contextlib.suppress(StoreUnavailable):
                    store.get_online_features("u1", items)

            result[name] = _percentiles(degraded, args.calls)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
