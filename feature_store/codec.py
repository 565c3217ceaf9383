"""How entities are laid out in Redis: one key per entity, one msgpack map per key.

Key format, pinned byte for byte by the tests (change it only together with a migration)::

    {namespace}:{entity}:{entity_id}        e.g. b"mtrank:user:u42", b"mtrank:item:1007"
    {namespace}:meta                        JSON: what was materialized, when, from where

The value of an entity key is a msgpack map `{feature_name: raw_value}` holding the entity's
stored features in the raw conventions of `ranker.schema` (categorical: str, numeric: float32,
sequence: list[str], unpadded). A feature absent from the map is missing; readers fill it with
`Feature.missing_value`. The key feature itself (`user_id`, `item_id`) is never stored: the request
carries it. One map per key lets a reader fetch a user and all candidate items with one MGET.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

import msgpack

from feature_store.errors import CorruptValue

StoredEntity = Literal["user", "item"]
Value = str | float | list[str]
Row = dict[str, Value]

DEFAULT_NAMESPACE = "mtrank"
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_namespace(namespace: str) -> str:
    """Return `namespace` if it can prefix keys and SCAN patterns safely, else raise ValueError."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace must be letters, digits, '_', '.' or '-', got {namespace!r}")
    return namespace


def entity_prefix(namespace: str, entity: StoredEntity) -> bytes:
    """The bytes every key of `entity` starts with: b"{namespace}:{entity}:"."""
    return f"{namespace}:{entity}:".encode()


def entity_key(namespace: str, entity: StoredEntity, entity_id: str) -> bytes:
    """The Redis key of one entity: b"{namespace}:{entity}:{entity_id}" (id in UTF-8)."""
    return f"{namespace}:{entity}:{entity_id}".encode()


def meta_key(namespace: str) -> bytes:
    """The Redis key of the materialization record of `namespace`."""
    return f"{namespace}:meta".encode()


def encode_row(row: Mapping[str, Value]) -> bytes:
    """Pack one entity's features as a msgpack map; floats are packed as float32."""
    return msgpack.packb(dict(row), use_bin_type=True, use_single_float=True)


def decode_row(blob: bytes, key: bytes) -> Row:
    """Unpack a value written by `encode_row`; anything else raises CorruptValue naming `key`."""
    try:
        row = msgpack.unpackb(blob)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as err:
        raise CorruptValue(
            f"value at {key.decode(errors='replace')!r} is not msgpack: {err}"
        ) from None
    if type(row) is not dict:
        kind = type(row).__name__
        raise CorruptValue(
            f"value at {key.decode(errors='replace')!r} is a {kind}, not a feature map"
        )
    return row
