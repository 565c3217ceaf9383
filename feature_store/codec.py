"""How entities are laid out in Redis: versioned tables, one key per entity, one msgpack array each.

Key format, pinned byte for byte by the tests (change it only together with a migration)::

    {namespace}:current                     the live version N, in ASCII decimal: b"7"
    {namespace}:version                     INCR counter that hands out version numbers
    {namespace}:v{N}:user:{user_id}         e.g. b"mtrank:v7:user:u42"
    {namespace}:v{N}:item:{item_id}         e.g. b"mtrank:v7:item:1007"
    {namespace}:v{N}:meta                   JSON: what version N holds, its column order

A materialization writes version N = INCR {namespace}:version, then sets {namespace}:current to N
(a compare-and-set that only moves forward), then deletes every older version. Readers resolve
`current` in the same round trip as their MGET, so they never see a half-written version.

The value of an entity key is a msgpack array of the entity's stored features, in the order that
version N's meta record gives under `"columns"` (`Layout`), in the raw conventions of
`ranker.schema` (categorical: str, numeric: float32, sequence: list[str], unpadded); nil marks a
missing value, which readers fill with `Feature.missing_value`. The key feature itself (`user_id`,
`item_id`) is never stored: the request carries it. One array per key lets a reader fetch a user
and all candidate items with one MGET, and decodes about 2.5x faster than a map of the same
features (no key strings to build): measured in `benchmarks/store_latency.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import msgpack

from feature_store.errors import CorruptValue

StoredEntity = Literal["user", "item"]
Value = str | float | list[str]
Row = dict[str, Value]
"""One entity's features by name: what writers are given."""
Values = list[Value | None]
"""One entity's features as stored: in its version's column order, None where missing."""

DEFAULT_NAMESPACE = "mtrank"
_NAMESPACE = re.compile(r"^[A-Za-z0-9_.-]+$")


def check_namespace(namespace: str) -> str:
    """Return `namespace` if it can prefix keys and SCAN patterns safely, else raise ValueError."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(f"namespace must be letters, digits, '_', '.' or '-', got {namespace!r}")
    return namespace


def pointer_key(namespace: str) -> bytes:
    """The key holding the live version number: b"{namespace}:current"."""
    return f"{namespace}:current".encode()


def counter_key(namespace: str) -> bytes:
    """The counter that hands out version numbers: b"{namespace}:version"."""
    return f"{namespace}:version".encode()


def version_prefix(namespace: str, version: int) -> bytes:
    """The bytes every key of one version starts with: b"{namespace}:v{version}:"."""
    return f"{namespace}:v{version}:".encode()


def versions_pattern(namespace: str) -> bytes:
    """A SCAN pattern matching the keys of every version of `namespace`."""
    return f"{namespace}:v[0-9]*:*".encode()


def key_version(namespace: str, key: bytes) -> int | None:
    """The N of a key b"{namespace}:v{N}:...", or None if `key` is not a versioned key."""
    head = f"{namespace}:v".encode()
    if not key.startswith(head):
        return None
    digits, sep, _ = key[len(head) :].partition(b":")
    return int(digits) if sep and digits.isdigit() else None


def entity_prefix(namespace: str, version: int, entity: StoredEntity) -> bytes:
    """The bytes every key of `entity` in `version` starts with: b"{namespace}:v{N}:{entity}:"."""
    return version_prefix(namespace, version) + f"{entity}:".encode()


def entity_key(namespace: str, version: int, entity: StoredEntity, entity_id: str) -> bytes:
    """The Redis key of one entity: b"{namespace}:v{N}:{entity}:{entity_id}" (id in UTF-8)."""
    return entity_prefix(namespace, version, entity) + entity_id.encode()


def meta_key(namespace: str, version: int) -> bytes:
    """The key of the materialization record of one version: b"{namespace}:v{N}:meta"."""
    return version_prefix(namespace, version) + b"meta"


def parse_version(blob: bytes | str | None, key: bytes) -> int | None:
    """The version stored at the pointer key (None when nothing was ever flipped)."""
    if blob is None:
        return None
    if not blob.isdigit():
        raise CorruptValue(f"value at {_name(key)!r} is not a version: {blob!r}")
    return int(blob)


@dataclass(frozen=True)
class Layout:
    """The column order of the user and item arrays of one version (its meta record's "columns")."""

    user: tuple[str, ...] = ()
    item: tuple[str, ...] = ()

    def of(self, entity: StoredEntity) -> tuple[str, ...]:
        return self.user if entity == "user" else self.item

    def to_record(self) -> dict[str, list[str]]:
        """The meta record's "columns" entry: {entity: [feature, ...]}."""
        return {"user": list(self.user), "item": list(self.item)}

    @classmethod
    def from_meta(cls, blob: bytes | str | None, key: bytes) -> Layout:
        """The layout recorded in the meta record `blob` read at `key` (CorruptValue if none)."""
        if blob is None:
            raise CorruptValue(f"{_name(key)!r} is missing: the live version has no column order")
        try:
            columns: Any = json.loads(blob)["columns"]
            return cls(user=tuple(columns.get("user", ())), item=tuple(columns.get("item", ())))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptValue(
                f'{_name(key)!r} has no column order ("columns"): written by an older mtrank? '
                "materialize again"
            ) from None


def encode_row(row: Mapping[str, Value], columns: Sequence[str]) -> bytes:
    """Pack one entity's features as a msgpack array in `columns` order (nil where absent);
    floats are packed as float32. A feature not in `columns` raises ValueError."""
    unknown = row.keys() - set(columns)
    if unknown:
        raise ValueError(f"features {sorted(unknown)} are not among the columns {list(columns)}")
    return msgpack.packb(
        [row.get(name) for name in columns], use_bin_type=True, use_single_float=True
    )


def decode_rows(
    blobs: Sequence[bytes | None], keys: Sequence[bytes], widths: Sequence[int]
) -> list[Values | None]:
    """Unpack the values `encode_row` wrote (None stays None); `widths[i]` is how many columns
    `blobs[i]` must have. Anything else raises CorruptValue naming its key.

    One `msgpack.unpackb` of all the blobs joined under an array header (nil for None), then one
    shape check; only when that fails are the blobs unpacked one by one, to name the culprit.
    """
    try:
        rows = msgpack.unpackb(_joined(blobs))
    except _NOT_MSGPACK:
        rows = None
    if type(rows) is list and len(rows) == len(blobs) and _shaped(rows, widths):
        return rows
    return _decode_one_by_one(blobs, keys, widths)


def _joined(blobs: Sequence[bytes | None]) -> bytes:
    """The blobs as the elements of one msgpack array: its header, then each blob (nil for None)."""
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


def _shaped(rows: list[Any], widths: Sequence[int]) -> bool:
    """True if each row is None or a list of its width."""
    for row, width in zip(rows, widths, strict=True):
        if row is not None and (type(row) is not list or len(row) != width):
            return False
    return True


def _decode_one_by_one(
    blobs: Sequence[bytes | None], keys: Sequence[bytes], widths: Sequence[int]
) -> list[Values | None]:
    """`decode_rows` value by value: slower, but a bad value raises CorruptValue naming its key."""
    rows: list[Values | None] = []
    for blob, key, width in zip(blobs, keys, widths, strict=True):
        if blob is None:
            rows.append(None)
            continue
        try:
            row = msgpack.unpackb(blob)
        except _NOT_MSGPACK as err:
            raise CorruptValue(f"value at {_name(key)!r} is not msgpack: {err}") from None
        if type(row) is not list or len(row) != width:
            kind = type(row).__name__ if type(row) is not list else f"list of {len(row)}"
            raise CorruptValue(
                f"value at {_name(key)!r} is a {kind}, not an array of the {width} columns"
            )
        rows.append(row)
    return rows


_NIL = b"\xc0"
_NOT_MSGPACK = (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError)


def _name(key: bytes) -> str:
    return key.decode(errors="replace")
