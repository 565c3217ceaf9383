"""Feast's side of `benchmarks/store_latency.py`: its SDK's online lookup, timed, as one JSON line.

    FEAST_VENV/bin/python benchmarks/peers/feast_run.py --port PORT --calls 100 --items 500 \
        --users 20000 --item-count 20000 --numeric 10 --categorical 8 --sequences 2

Runs in a separate venv with feast[redis] (never a project dependency; store_latency.py runs it
with `--feast-python`) and imports nothing of mtrank. In a Feast repo in a temporary folder, with
the redis-server on 127.0.0.1:PORT as its online store (Feast's own Redis layout), it writes
`--users` users and `--item-count` items with store_latency.py's feature names and kinds (float32
numbers, categorical strings, ten-long string sequences) through `write_to_online_store`
(`load_s`), then times one lookup of a user and `--items` items: `get_online_features` for the
user, then for the items, each `.to_dict()`, cycling through 200 random requests. After 10 lookups
of warm-up, `--calls` lookups are timed with `gc.freeze()` (`feast_sdk`), then as many without it
(`feast_sdk_gc_not_frozen`): p50, p99 and mean ms.

The last line of stdout is the result as one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import feast
import numpy as np
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Array, Float32, String

REQUESTS = 200  # distinct requests, cycled
WARMUP = 10  # untimed lookups before each timing
SEQ_LEN = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ("port", "calls", "items", "users", "item_count", "numeric", "categorical", "sequences")
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    return parser.parse_args()


def write_config(repo: Path, port: int) -> None:
    """feature_store.yaml: a local registry, a file offline store, the redis-server online."""
    (repo / "feature_store.yaml").write_text(
        f"project: mtrank_bench\nregistry: {repo / 'registry.db'}\nprovider: local\n"
        f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{port}\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )


def feature_views(
    repo: Path, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[list[Any], dict[str, pd.DataFrame], dict[str, list[str]]]:
    """Each entity's key and view (written to Parquet in `repo`), its rows, and its feature refs."""
    now = datetime.now(timezone.utc)  # noqa: UP017  (the Feast venv's Python may be older than 3.11)
    views: list[Any] = []
    frames: dict[str, pd.DataFrame] = {}
    refs: dict[str, list[str]] = {}
    for entity, n in (("user", args.users), ("item", args.item_count)):
        df = pd.DataFrame({entity + "_id": [entity[0] + str(i) for i in range(n)]})
        fields = []
        for i in range(args.numeric):
            df[f"{entity}_n{i}"] = rng.normal(size=n).astype(np.float32)
            fields.append(Field(name=f"{entity}_n{i}", dtype=Float32))
        for i in range(args.categorical):
            df[f"{entity}_c{i}"] = rng.integers(0, 100, n).astype(str)
            fields.append(Field(name=f"{entity}_c{i}", dtype=String))
        for i in range(args.sequences):
            df[f"{entity}_s{i}"] = list(rng.integers(0, 1000, (n, SEQ_LEN)).astype(str).tolist())
            fields.append(Field(name=f"{entity}_s{i}", dtype=Array(String)))
        df["event_timestamp"] = now
        path = repo / f"{entity}s.parquet"
        df.to_parquet(path)
        key = Entity(name=entity, join_keys=[entity + "_id"])
        view = FeatureView(
            name=entity + "_features",
            entities=[key],
            schema=fields,
            ttl=timedelta(days=365),
            source=FileSource(path=str(path), timestamp_field="event_timestamp"),
            online=True,
        )
        views.append((key, view))
        frames[view.name] = df
        refs[entity] = [f"{view.name}:{f.name}" for f in fields]
    return views, frames, refs


def timed(lookup: Callable[[int], object], calls: int, freeze: bool) -> dict[str, float]:
    """p50/p99/mean ms of `calls` lookups after WARMUP, with or without `gc.freeze()`."""
    for k in range(WARMUP):
        lookup(k)
    gc.collect()
    if freeze:
        gc.freeze()
    times = []
    for k in range(calls):
        t = time.perf_counter()
        lookup(k)
        times.append((time.perf_counter() - t) * 1e3)
    gc.unfreeze()
    return {
        "p50_ms": round(float(np.percentile(times, 50)), 3),
        "p99_ms": round(float(np.percentile(times, 99)), 3),
        "mean_ms": round(float(np.mean(times)), 3),
    }


def main() -> None:
    args = parse_args()
    rng = np.random.default_rng(0)
    repo = Path(tempfile.mkdtemp())
    write_config(repo, args.port)
    views, frames, refs = feature_views(repo, args, rng)
    store = FeatureStore(repo_path=str(repo))
    store.apply([x for pair in views for x in pair])
    started = time.perf_counter()
    for name, df in frames.items():
        store.write_to_online_store(name, df)
    load_s = time.perf_counter() - started
    user_refs, item_refs = refs["user"], refs["item"]
    requests = [
        (
            f"u{rng.integers(0, args.users)}",
            [f"i{j}" for j in rng.integers(0, args.item_count, args.items)],
        )
        for _ in range(REQUESTS)
    ]

    def lookup(k: int) -> tuple[dict[str, Any], dict[str, Any]]:
        user_id, item_ids = requests[k % len(requests)]
        u = store.get_online_features(
            features=user_refs, entity_rows=[{"user_id": user_id}]
        ).to_dict()
        i = store.get_online_features(
            features=item_refs, entity_rows=[{"item_id": x} for x in item_ids]
        ).to_dict()
        return u, i

    out: dict[str, Any] = {"feast_version": feast.__version__, "load_s": round(load_s, 1)}
    out["feast_sdk"] = timed(lookup, args.calls, freeze=True)
    out["feast_sdk_gc_not_frozen"] = timed(lookup, args.calls, freeze=False)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
