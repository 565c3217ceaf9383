"""What `store_latency.py` loads and looks up: the users and items, their four layouts, the requests.

USERS users and ITEMS items (10 numeric, 8 categorical and 2 ten-long sequence features each) are
loaded in four layouts, each under its own key prefix: the store's fixed-size records (through its
writer, `records.Record`), the msgpack arrays the store used before them (one per entity in its
version's column order, a live version of their own namespace, written as the store at git HEAD
did), a msgpack map per entity, and a Redis hash per entity. `requests` draws the lookups (a user
and candidate items, uniform or Zipf-distributed); the key and decoding helpers read each layout
without the store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
import redis
from previous_store import PreviousTables, previous_encode_row

from feature_store.keys import StoredEntity, entity_prefix, meta_key, pointer_key
from feature_store.records import Layout, Row
from feature_store.writer import StoreWriter
from ranker.schema import Schema

USERS, ITEMS = 20_000, 20_000
NUMERIC, CATEGORICAL, SEQUENCES, SEQ_LEN = 10, 8, 2, 10
NAMESPACE, ARRAY_NAMESPACE = "bench-rec", "bench-arr"  # records, arrays: keys of equal length
MAP_PREFIX, HASH_PREFIX = "bench-map", "bench-hash"
VERSION = 1  # the only version of NAMESPACE and ARRAY_NAMESPACE loaded
SEP = "\x1f"  # joins a sequence's elements in a hash field
REQUESTS = 200  # distinct requests, cycled

Request = tuple[str, list[str]]


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
