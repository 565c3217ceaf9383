"""The online store as it was before fixed-size records (git 8d005dd), for `store_latency.py`'s
same-run comparison: msgpack arrays per entity in the version's column order, decoded with one
`unpackb` of the values joined under an array header, `OnlineFeatures.columns` as lists, and
serving's conversion of those lists to the model's numpy arrays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import msgpack
import numpy as np
import redis.asyncio

from feature_store.errors import CorruptValue
from feature_store.keys import entity_prefix, parse_version, pointer_key
from feature_store.records import Row, Value
from ranker.schema import Feature, Schema
from serving.batcher import broadcast, check_value, column
from serving.errors import InvalidInput

PreviousValues = list[Value | None]
"""One entity's features as HEAD stored them: in its version's column order, None where missing."""

_NIL = b"\xc0"
_NOT_MSGPACK = (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError)


def previous_encode_row(row: Mapping[str, Value], columns: Sequence[str]) -> bytes:
    """HEAD's `codec.encode_row`: one entity's features as a msgpack array in `columns` order
    (nil where absent), floats packed as float32."""
    unknown = row.keys() - set(columns)
    if unknown:
        raise ValueError(f"features {sorted(unknown)} are not among the columns {list(columns)}")
    return msgpack.packb(
        [row.get(name) for name in columns], use_bin_type=True, use_single_float=True
    )


def previous_decode_rows(
    blobs: Sequence[bytes | None], keys: Sequence[bytes], widths: Sequence[int]
) -> list[PreviousValues | None]:
    """HEAD's `codec.decode_rows`: one `msgpack.unpackb` of all the blobs joined under an array
    header (nil for None), then one shape check; only when that fails are the blobs unpacked one
    by one, to name the culprit."""
    try:
        rows = msgpack.unpackb(previous_joined(blobs))
    except _NOT_MSGPACK:
        rows = None
    if type(rows) is list and len(rows) == len(blobs) and previous_shaped(rows, widths):
        return rows
    return previous_decode_one_by_one(blobs, keys, widths)


def previous_joined(blobs: Sequence[bytes | None]) -> bytes:
    """HEAD's `codec._joined`: the blobs as the elements of one msgpack array."""
    n = len(blobs)
    if n < 16:
        header = bytes([0x90 | n])
    elif n < 1 << 16:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    if None in blobs:  # absent keys: nil in their place
        blobs = [_NIL if blob is None else blob for blob in blobs]
    return b"".join([header, *cast("Sequence[bytes]", blobs)])


def previous_shaped(rows: list[Any], widths: Sequence[int]) -> bool:
    """HEAD's `codec._shaped`: True if each row is None or a list of its width."""
    for row, width in zip(rows, widths, strict=True):
        if row is not None and (type(row) is not list or len(row) != width):
            return False
    return True


def previous_decode_one_by_one(
    blobs: Sequence[bytes | None], keys: Sequence[bytes], widths: Sequence[int]
) -> list[PreviousValues | None]:
    """HEAD's `codec._decode_one_by_one` (only reached with a bad value): raise naming its key."""
    rows: list[PreviousValues | None] = []
    for blob, key, width in zip(blobs, keys, widths, strict=True):
        try:
            row = None if blob is None else msgpack.unpackb(blob)
        except _NOT_MSGPACK as err:
            raise CorruptValue(f"value at {key!r} is not msgpack: {err}") from None
        if row is not None and (type(row) is not list or len(row) != width):
            raise CorruptValue(f"value at {key!r} is not an array of the {width} columns")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class PreviousFeatures:
    """HEAD's `OnlineFeatures`: each entity's values as unpacked, in its column order."""

    user_id: str
    item_ids: Sequence[str]
    user_columns: tuple[str, ...]
    item_columns: tuple[str, ...]
    user_values: PreviousValues | None
    item_values: Sequence[PreviousValues | None]

    @property
    def user(self) -> Row | None:
        return by_name(self.user_values, self.user_columns)

    @property
    def items(self) -> list[Row | None]:
        return [by_name(values, self.item_columns) for values in self.item_values]


def by_name(values: PreviousValues | None, columns: Sequence[str]) -> Row | None:
    if values is None:
        return None
    return {name: v for name, v in zip(columns, values, strict=True) if v is not None}


@dataclass(frozen=True)
class PreviousTables:
    """Where the msgpack arrays are: namespace, live version, and each entity's column order."""

    namespace: str
    version: int
    user_columns: tuple[str, ...]
    item_columns: tuple[str, ...]


async def previous_lookup(
    client: redis.asyncio.Redis, tables: PreviousTables, user_id: str, item_ids: Sequence[str]
) -> PreviousFeatures:
    """`get_online_features` as it was, in steady state without caches (version and column order
    known): the keys planned as a whole, MULTI/EXEC of GET pointer + MGET on the hiredis-packed
    client, then `previous_decode_rows`."""
    namespace, version = tables.namespace, tables.version
    pointer = pointer_key(namespace)
    async with asyncio.timeout(1.0):
        item = entity_prefix(namespace, version, "item")
        keys = [item + item_id.encode() for item_id in item_ids]
        keys.insert(0, entity_prefix(namespace, version, "user") + user_id.encode())
        async with client.pipeline(transaction=True) as pipe:
            pipe.get(pointer)
            pipe.mget(keys)
            live, blobs = await pipe.execute()
        assert parse_version(live, pointer) == version
        user_columns, item_columns = tables.user_columns, tables.item_columns
        widths = [len(user_columns)] + [len(item_columns)] * len(item_ids)
        rows = previous_decode_rows(blobs, keys, widths)
        return PreviousFeatures(user_id, item_ids, user_columns, item_columns, rows[0], rows[1:])


def previous_columns(found: PreviousFeatures, schema: Schema) -> dict[str, list[Value]]:
    """HEAD's `OnlineFeatures.columns`: one list of `len(item_ids)` raw values per user and item
    feature, defaults filled in, item columns cut out column-wise (`zip(*rows)`)."""
    n = len(found.item_ids)
    out: dict[str, list[Value]] = {}
    user = found.user_values
    user_at = {name: at for at, name in enumerate(found.user_columns)}
    for feature in schema.entity_features("user"):
        if feature.name == schema.keys.user:
            out[feature.name] = [found.user_id] * n
            continue
        at = user_at.get(feature.name)
        value = None if user is None or at is None else user[at]
        out[feature.name] = [feature.missing_value if value is None else value] * n
    rows = found.item_values
    if None in rows:  # absent items: a row of nils each
        nils: PreviousValues = [None] * len(found.item_columns)
        rows = [nils if values is None else values for values in rows]
    stored = dict(zip(found.item_columns, zip(*rows, strict=True), strict=False))
    for feature in schema.entity_features("item"):
        if feature.name == schema.keys.item:
            out[feature.name] = list(found.item_ids)
            continue
        default = feature.missing_value
        values = stored.get(feature.name)
        if values is None:  # not stored at all in this version
            out[feature.name] = [default] * n
        else:
            out[feature.name] = [default if v is None else v for v in values]
    return out


def previous_batch(found: PreviousFeatures, schema: Schema) -> dict[str, np.ndarray]:
    """What serving made of HEAD's lookup (`FeatureBatcher.rank_batch` at HEAD, for the user and
    item features; this schema has no context): `previous_columns`, then the user values
    converted once and broadcast, each item column converted with `previous_column`."""
    n = len(found.item_ids)
    columns = previous_columns(found, schema)
    batch: dict[str, np.ndarray] = {}
    for feature in schema.features:
        if feature.entity == "user":  # the same value in every row: convert it once
            value = previous_stored(feature, columns[feature.name][0])
            batch[feature.name] = broadcast(feature, value, n)
        elif feature.entity == "item":
            batch[feature.name] = previous_column(feature, columns[feature.name])
    return batch


def previous_column(feature: Feature, values: Sequence[Any]) -> np.ndarray:
    """The previous `serving.batcher.column`: numbers fell back to the default one by one when
    a stored value had the wrong type; strings and sequences are laid out as `column` still does."""
    if feature.type == "numeric":
        try:
            return np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):  # a stored value of the wrong type: use the default
            return np.asarray([previous_stored(feature, v) for v in values], dtype=np.float32)
    return column(feature, values)


def previous_stored(feature: Feature, value: Any) -> Value:
    """HEAD's `serving.batcher._stored`: a stored value checked by `check_value` (unchanged
    since HEAD), or the default if it is not of the feature's type."""
    try:
        return check_value(feature, value, ("store", feature.name))
    except InvalidInput:
        return feature.missing_value
