"""The record stored under an entity key, and the layout of a version's records.

The value of an entity key (`feature_store.keys`) is a fixed-size binary record: the entity's stored features one after
the other, in the order and sizes that version N's meta record gives under `"columns"` (`Record`,
one per entity kind): a numeric feature is a little-endian float32 (NaN if missing); a categorical
one its UTF-8 bytes, NUL-padded to the column's `width` (all NUL, i.e. "", if missing); a sequence
`length` such strings, its non-empty elements first (the rest ""). Every record of one entity kind
in one version has the same size, so a reader joins the values of a lookup and reads them as one
numpy structured array (`Record.decode`): no Python object per feature, and each feature's column
is a strided view, handed to the model as it is. A msgpack array per entity (the layout before)
decoded 501 values of 20 features in about 1 ms; the records take 0.05 ms (measured in
`benchmarks/store_latency.py`). The price is paid in bytes: a string column is as wide as its
longest value in the version (materialization picks the widths, and stores sequences cut to the
schema's `max_length`), and strings cannot hold NUL characters. The key feature itself
(`user_id`, `item_id`) is never stored: the request carries it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, cast

import numpy as np

from feature_store.errors import CorruptValue
from feature_store.keys import StoredEntity, key_name

ColumnType = Literal["categorical", "numeric", "sequence"]
Value = str | float | list[str]
Row = dict[str, Value]
"""One entity's features by name: what writers are given, and what `Record.values` gives back."""


@dataclass(frozen=True)
class Column:
    """One stored feature of a record: name, type and, for strings, the bytes it takes.

    `width` is the size of each UTF-8 string (categorical, sequence elements), `length` how many
    elements a sequence holds; both at least 1 for the types that use them, 0 otherwise.
    """

    name: str
    type: ColumnType
    width: int = 0
    length: int = 0

    def __post_init__(self) -> None:
        if self.type not in ("categorical", "numeric", "sequence"):
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r}")
        needs_width = self.type != "numeric"
        if needs_width != (self.width >= 1) or (self.type == "sequence") != (self.length >= 1):
            raise ValueError(
                f"column {self.name!r}: a {self.type} column needs "
                + {
                    "numeric": "no width and no length",
                    "categorical": "a width >= 1 and no length",
                    "sequence": "a width >= 1 and a length >= 1",
                }[self.type]
                + f", got width {self.width}, length {self.length}"
            )

    @property
    def field(self) -> tuple[Any, ...]:
        """The column as a numpy structured dtype field."""
        if self.type == "numeric":
            return (self.name, "<f4")
        if self.type == "categorical":
            return (self.name, f"S{self.width}")
        return (self.name, f"S{self.width}", (self.length,))

    def to_record(self) -> dict[str, Any]:
        """The column as the meta record lists it: {"name", "type", "width"?, "length"?}."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.width:
            out["width"] = self.width
        if self.length:
            out["length"] = self.length
        return out


@dataclass(frozen=True)
class Record:
    """The fixed-size binary record one entity kind's values take in one version (module doc)."""

    columns: tuple[Column, ...] = ()

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @cached_property
    def dtype(self) -> np.dtype[np.void]:
        """The numpy structured dtype of one record: packed, little-endian."""
        return np.dtype([column.field for column in self.columns])

    @property
    def size(self) -> int:
        """Bytes per record."""
        return int(self.dtype.itemsize)

    @cached_property
    def missing(self) -> bytes:
        """A record with every value missing: NaN numbers, empty strings."""
        return self.empty(1).tobytes()

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {column.name: column for column in self.columns}

    def empty(self, rows: int) -> np.ndarray:
        """`rows` records with every value missing."""
        out = np.zeros(rows, self.dtype)
        for column in self.columns:
            if column.type == "numeric":
                out[column.name] = np.nan
        return out

    @classmethod
    def infer(cls, rows: Iterable[Mapping[str, Value]]) -> Record:
        """The smallest record holding `rows`: features in order of first use, typed by their
        first value (str: categorical, number: numeric, list: sequence), strings as wide as the
        longest. ValueError if a feature's values are of two types."""
        types: dict[str, ColumnType] = {}
        widths: dict[str, int] = {}
        lengths: dict[str, int] = {}
        for row in rows:
            for name, value in row.items():
                if value is None:
                    continue
                kind = _type_of(name, value)
                known = types.setdefault(name, kind)
                if known != kind:
                    raise ValueError(f"feature {name!r} has {known} and {kind} values")
                if kind == "categorical":
                    widths[name] = max(widths.get(name, 1), len(str(value).encode()))
                elif isinstance(value, list | tuple):
                    elements = [e.encode() for e in value if e]
                    widths[name] = max([widths.get(name, 1), *map(len, elements)])
                    lengths[name] = max(lengths.get(name, 1), len(elements))
        return cls(
            tuple(
                Column(name, kind, widths.get(name, 0), lengths.get(name, 0))
                for name, kind in types.items()
            )
        )

    def encode(self, rows: Sequence[Mapping[str, Value]]) -> list[bytes]:
        """One record per row (absent features missing). A feature outside the columns, a value
        of another type, or a string too wide for its column raises ValueError naming it."""
        for row in rows:
            unknown = row.keys() - self._by_name.keys()
            if unknown:
                raise ValueError(
                    f"features {sorted(unknown)} are not among the columns {list(self.names)}"
                )
        out = self.empty(len(rows))
        for column in self.columns:
            values = [row.get(column.name) for row in rows]
            if any(value is not None for value in values):
                out[column.name] = _pack(column, values)
        blob, size = out.tobytes(), self.size
        return [blob[i * size : (i + 1) * size] for i in range(len(rows))]

    def decode(self, blobs: Sequence[bytes | None], keys: Sequence[bytes]) -> np.ndarray:
        """The records `encode` wrote, as one structured array (a missing record where a blob is
        None). A value of another size raises CorruptValue naming its key."""
        size = self.size
        values = (
            [self.missing if blob is None else blob for blob in blobs]
            if None in blobs
            else cast("Sequence[bytes]", blobs)
        )
        if set(map(len, values)) - {size}:
            at = next(i for i, blob in enumerate(values) if len(blob) != size)
            raise CorruptValue(
                f"value at {key_name(keys[at])!r} is {len(values[at])} bytes, not a record of this "
                f"version ({size} bytes: {', '.join(self.names) or 'no columns'})"
            )
        if size == 0:
            return np.zeros(len(values), self.dtype)
        return np.frombuffer(b"".join(values), self.dtype)

    def values(self, record: np.void | np.ndarray) -> Row:
        """One record's features by name, as `encode` was given them; missing ones left out."""
        out: Row = {}
        for column in self.columns:
            value: Any = record[column.name]
            if column.type == "numeric":
                if not math.isnan(value):
                    out[column.name] = float(value)
            elif column.type == "categorical":
                if value:
                    out[column.name] = value.decode()
            else:
                elements = [element.decode() for element in value if element]
                if elements:
                    out[column.name] = elements
        return out

    def to_record(self) -> list[dict[str, Any]]:
        return [column.to_record() for column in self.columns]

    @classmethod
    def from_record(cls, columns: Sequence[Mapping[str, Any]]) -> Record:
        return cls(
            tuple(
                Column(c["name"], c["type"], int(c.get("width", 0)), int(c.get("length", 0)))
                for c in columns
            )
        )


@dataclass(frozen=True)
class Layout:
    """The records of the users and items of one version (its meta record's "columns")."""

    user: Record = field(default_factory=Record)
    item: Record = field(default_factory=Record)

    def of(self, entity: StoredEntity) -> Record:
        return self.user if entity == "user" else self.item

    def to_record(self) -> dict[str, list[dict[str, Any]]]:
        """The meta record's "columns" entry: {entity: [column, ...]}."""
        return {"user": self.user.to_record(), "item": self.item.to_record()}

    @classmethod
    def from_meta(cls, blob: bytes | str | None, key: bytes) -> Layout:
        """The layout recorded in the meta record `blob` read at `key` (CorruptValue if none)."""
        if blob is None:
            raise CorruptValue(
                f"{key_name(key)!r} is missing: the live version has no record layout"
            )
        try:
            columns: Any = json.loads(blob)["columns"]
            return cls(
                user=Record.from_record(columns.get("user", ())),
                item=Record.from_record(columns.get("item", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptValue(
                f'{key_name(key)!r} has no record layout ("columns" of typed columns): written by an '
                "older mtrank? materialize again"
            ) from None


def _type_of(name: str, value: Any) -> ColumnType:
    if isinstance(value, str):
        return "categorical"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "numeric"
    if isinstance(value, list | tuple) and all(isinstance(e, str) for e in value):
        return "sequence"
    raise ValueError(f"feature {name!r}: {value!r} is not a string, a number or a list of strings")


def _pack(column: Column, values: Sequence[Any]) -> np.ndarray:
    """`values` (None: missing) as the column's numpy values; ValueError naming what won't fit."""
    if column.type == "numeric":
        for value in values:
            if value is not None and _type_of(column.name, value) != "numeric":
                raise ValueError(f"column {column.name!r} is numeric, got {value!r}")
        return np.array([math.nan if v is None else v for v in values], dtype=np.float32)
    if column.type == "categorical":
        strings = [b"" if v is None else _bytes(column, v) for v in values]
        return np.array(strings, dtype=f"S{column.width}")
    out = np.zeros((len(values), column.length), dtype=f"S{column.width}")
    for row, value in enumerate(values):
        if value is None:
            continue
        if _type_of(column.name, value) != "sequence":
            raise ValueError(f"column {column.name!r} holds lists of strings, got {value!r}")
        elements = [_bytes(column, element) for element in value if element]
        if len(elements) > column.length:
            raise ValueError(
                f"column {column.name!r} holds {column.length} elements, got {len(elements)}"
            )
        out[row, : len(elements)] = elements
    return out


def _bytes(column: Column, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"column {column.name!r} holds strings, got {value!r}")
    encoded = value.encode()
    if len(encoded) > column.width:
        raise ValueError(
            f"column {column.name!r}: {value!r} takes {len(encoded)} bytes, more than the "
            f"{column.width} its records hold"
        )
    if b"\x00" in encoded:
        raise ValueError(
            f"column {column.name!r}: {value!r} contains NUL, which records cannot hold"
        )
    return encoded
